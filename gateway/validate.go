package gateway

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/internal/hopbyhop"
	"github.com/meridian-platform/meridian/traffic/identity"
	"github.com/meridian-platform/meridian/traffic/policy"
)

// Validate checks the whole document and returns every problem found,
// joined (errors.Join): each a *meridian.Error with CodeInvalid whose Field
// is the path of the offending field ("routes[2].match.path") and whose
// message names the route.
func (c *Config) Validate() error {
	v := &validator{}
	c.validatePolicies(v)
	for name, rl := range c.RateLimits {
		path := "rate_limits." + name
		if !policy.ValidName(name) {
			v.add(path, "%q is not a valid name: use 1-64 letters, digits and _ . -", name)
		}
		l := rl.Limit
		if err := l.Normalize(); err != nil {
			v.wrap(path, err)
		}
		if err := validLimitKey(rl.Key); err != nil {
			v.add(path+".key", "%v", err)
		}
	}
	if c.CORS != nil {
		v.wrap("cors", c.CORS.Validate())
	}
	if c.Compression != nil {
		v.wrap("compression", c.Compression.Validate())
	}
	v.wrap("auth", c.Auth.Validate())
	if len(c.Routes) == 0 {
		v.add("routes", "no routes: a gateway needs at least one")
	}
	names := map[string]int{}
	for i := range c.Routes {
		r := &c.Routes[i]
		rv := v.route(i, r.Name)
		if err := meridian.ValidateServiceName("name", r.Name); err != nil {
			rv.add("name", "%s", strings.TrimPrefix(err.Error(), "name: "))
		} else if j, dup := names[r.Name]; dup {
			rv.add("name", "%q is also the name of routes[%d]; route names are unique", r.Name, j)
		} else {
			names[r.Name] = i
		}
		c.validateRoute(rv, r)
	}
	return v.err()
}

func (c *Config) validatePolicies(v *validator) {
	spec := policy.Spec{Policies: c.Policies, Default: c.Default, Targets: map[string]policy.Target{}}
	field := map[string]string{}
	for i, r := range c.Routes {
		if r.Policies != (policy.Target{}) {
			key := fmt.Sprintf("r%d", i)
			spec.Targets[key] = r.Policies
			field["targets."+key] = fmt.Sprintf("routes[%d].policies", i)
		}
	}
	err := spec.Validate()
	for _, e := range meridian.Problems(err) {
		me := *e
		for from, to := range field {
			if rest, ok := strings.CutPrefix(me.Field, from); ok {
				me.Field = to + rest
			}
		}
		v.errs = append(v.errs, &me)
	}
}

func (c *Config) validateRoute(v *routeValidator, r *Route) {
	m := &r.Match
	if _, err := compileMatch(m); err != nil {
		var me *meridian.Error
		if errors.As(err, &me) {
			v.add("match."+me.Field, "%s", me.Message)
		}
	}
	targets := 0
	if r.Upstream != nil {
		targets++
		validateUpstream(v, "upstream", r.Upstream)
	}
	if len(r.Split) > 0 {
		targets++
		total := 0
		for i := range r.Split {
			b := &r.Split[i]
			path := fmt.Sprintf("split[%d]", i)
			validateUpstream(v, path, &b.Upstream)
			if b.Weight < 0 || b.Weight > 10000 {
				v.add(path+".weight", "%d is out of range 0-10000", b.Weight)
			}
			total += b.Weight
			if b.When != nil {
				if len(b.When.Headers) == 0 && len(b.When.Cookies) == 0 {
					v.add(path+".when", "is empty: give headers or cookies, or leave it out")
				}
				for k := range b.When.Headers {
					if !meridian.IsToken(k) {
						v.add(path+".when.headers."+k, "%q is not a valid header name", k)
					}
				}
			}
		}
		if total == 0 && !slices.ContainsFunc(r.Split, func(b Backend) bool { return b.When != nil }) {
			v.add("split", "every weight is 0 and no backend has a when: nothing would be served")
		}
	}
	if r.Aggregate != nil {
		targets++
		v.wrap("aggregate", r.Aggregate.Validate())
	}
	switch {
	case targets == 0:
		v.add("upstream", "is required: give upstream, split or aggregate")
	case targets > 1:
		v.add("upstream", "give only one of upstream, split and aggregate")
	}
	if r.Transcode != nil {
		v.wrap("transcode", r.Transcode.Validate())
		if r.Upstream == nil && len(r.Split) == 0 {
			v.add("transcode", "needs a gRPC upstream (upstream or split)")
		}
	}
	if rw := r.Rewrite; rw != nil {
		if rw.Path != "" && rw.StripPrefix {
			v.add("rewrite.path", "give path or strip_prefix, not both")
		}
		if rw.StripPrefix && m.PathPrefix == "" {
			v.add("rewrite.strip_prefix", "needs match.path_prefix")
		}
		if rw.Path != "" {
			if !strings.HasPrefix(rw.Path, "/") {
				v.add("rewrite.path", "%q must start with /", rw.Path)
			}
			var have []string
			if p, err := parsePath(m.Path); err == nil && m.Path != "" {
				have = p.names()
			}
			for _, ref := range compileTemplate(rw.Path).params {
				if !slices.Contains(have, ref) {
					v.add("rewrite.path", "{%s} is not a parameter of match.path", ref)
				}
			}
		}
		if rw.AddPrefix != "" && (!strings.HasPrefix(rw.AddPrefix, "/") || strings.HasSuffix(rw.AddPrefix, "/")) {
			v.add("rewrite.add_prefix", "%q must start with / and not end with /", rw.AddPrefix)
		}
		if rw.Host != "" && strings.ContainsAny(rw.Host, "/ \t") {
			v.add("rewrite.host", "%q is not a host", rw.Host)
		}
	}
	validateHeaderOp(v, "headers.request", r.Headers.Request)
	validateHeaderOp(v, "headers.response", r.Headers.Response)
	if mr := r.Mirror; mr != nil {
		validateUpstream(v, "mirror", &mr.Upstream)
		if mr.Percent < 0 || mr.Percent > 100 {
			v.add("mirror.percent", "%v is out of range 0-100", mr.Percent)
		}
	}
	if r.RateLimit != "" {
		if _, ok := c.RateLimits[r.RateLimit]; !ok {
			v.add("rate_limit", "%q is not defined in rate_limits", r.RateLimit)
		}
	}
	if r.Auth != nil {
		v.wrap("auth", r.Auth.Validate())
		methods := r.Auth.Methods
		if len(methods) == 0 && len(c.Auth.JWT) == 0 && len(c.Auth.APIKeys) == 0 {
			v.add("auth", "no caller could pass: auth declares no jwt provider and no api key")
		}
		for i, m := range methods {
			if m == identity.MethodJWT && len(c.Auth.JWT) == 0 || m == identity.MethodAPIKey && len(c.Auth.APIKeys) == 0 {
				v.add(fmt.Sprintf("auth.methods[%d]", i), "%q: auth declares none", m)
			}
		}
	}
	if r.CORS != nil {
		v.wrap("cors", r.CORS.Validate())
	}
	if r.MaxBodyBytes < -1 {
		v.add("max_body_bytes", "%d: use a size in bytes, 0 for the default (10 MiB) or -1 for no limit", r.MaxBodyBytes)
	}
}

func validateUpstream(v *routeValidator, path string, u *Upstream) {
	switch {
	case u.Service != "" && len(u.URLs) > 0:
		v.add(path+".service", "give service or urls, not both")
	case u.Service != "":
		if err := meridian.ValidateServiceName("service", u.Service); err != nil {
			v.add(path+".service", "%s", strings.TrimPrefix(err.Error(), "service: "))
		}
	case len(u.URLs) > 0:
		if len(u.Subset) > 0 {
			v.add(path+".subset", "applies to a service's instances, not to urls")
		}
		for i, raw := range u.URLs {
			if _, err := parseStaticURL(raw); err != nil {
				v.add(fmt.Sprintf("%s.urls[%d]", path, i), "%v", err)
			}
		}
	default:
		v.add(path, "give service or urls")
	}
	for k, val := range u.Subset {
		if k == "" || val == "" {
			v.add(path+".subset", "keys and values must not be empty")
		}
	}
	switch u.Protocol {
	case "", "http", "h2c", "grpc":
	default:
		v.add(path+".protocol", "%q is not http, h2c or grpc", u.Protocol)
	}
}

func validateHeaderOp(v *routeValidator, path string, op HeaderOp) {
	for i, h := range op.Remove {
		if !meridian.IsToken(h) {
			v.add(fmt.Sprintf("%s.remove[%d]", path, i), "%q is not a valid header name", h)
		}
	}
	for _, m := range []struct {
		name string
		kv   map[string]string
	}{{"set", op.Set}, {"add", op.Add}} {
		for k, val := range m.kv {
			if !meridian.IsToken(k) {
				v.add(path+"."+m.name+"."+k, "%q is not a valid header name", k)
			}
			if strings.ContainsAny(val, "\r\n") {
				v.add(path+"."+m.name+"."+k, "the value has a line break")
			}
			if hopbyhop.Is(k) {
				v.add(path+"."+m.name+"."+k, "%s is a hop-by-hop header the proxy manages", k)
			}
		}
	}
}

// parseStaticURL checks a fixed upstream: http(s)://host[:port], no path.
func parseStaticURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%q is not a URL", raw)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("%q: the scheme must be http or https", raw)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("%q has no host", raw)
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.User != nil || u.Fragment != "" {
		return nil, fmt.Errorf("%q: give scheme://host[:port] only; rewrite paths with rewrite", raw)
	}
	return u, nil
}

func validLimitKey(k string) error {
	switch {
	case k == "", k == "ip", k == "subject", k == "api_key":
		return nil
	case strings.HasPrefix(k, "header:") && meridian.IsToken(k[len("header:"):]):
		return nil
	}
	return fmt.Errorf("%q is not ip, subject, api_key or header:<Name>", k)
}

var methods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
	http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace}

type validator struct{ errs []*meridian.Error }

func (v *validator) add(field, format string, args ...any) {
	v.errs = append(v.errs, meridian.FieldError(field, format, args...))
}

// wrap adds the problems in err, whose fields are relative to path.
func (v *validator) wrap(path string, err error) {
	for _, e := range meridian.Problems(err) {
		c := *e
		c.Code = meridian.CodeInvalid
		if c.Field == "" {
			c.Field = path
		} else {
			c.Field = path + "." + c.Field
		}
		v.errs = append(v.errs, &c)
	}
}

func (v *validator) route(i int, name string) *routeValidator {
	return &routeValidator{v: v, prefix: fmt.Sprintf("routes[%d]", i), name: name}
}

func (v *validator) err() error {
	if len(v.errs) == 0 {
		return nil
	}
	sort.SliceStable(v.errs, func(i, j int) bool { return v.errs[i].Field < v.errs[j].Field })
	errs := make([]error, len(v.errs))
	for i, e := range v.errs {
		errs[i] = e
	}
	return errors.Join(errs...)
}

// routeValidator names the route in every message, so an error in a long
// document says which route it is about.
type routeValidator struct {
	v      *validator
	prefix string
	name   string
}

func (rv *routeValidator) add(field, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if rv.name != "" {
		msg = fmt.Sprintf("route %q: %s", rv.name, msg)
	}
	rv.v.errs = append(rv.v.errs, &meridian.Error{Code: meridian.CodeInvalid, Field: rv.prefix + "." + field, Message: msg})
}

func (rv *routeValidator) wrap(path string, err error) {
	for _, e := range meridian.Problems(err) {
		field := path
		if e.Field != "" {
			field += "." + e.Field
		}
		rv.add(field, "%s", e.Message)
	}
}
