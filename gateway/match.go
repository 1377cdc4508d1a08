package gateway

import (
	"cmp"
	"fmt"
	"maps"
	"net/http"
	"net/textproto"
	"slices"
	"strings"

	"github.com/meridian-platform/meridian"
)

// matcher is a route's compiled Match. It is immutable and matches
// without allocating, apart from the path parameters it captures.
type matcher struct {
	hosts    []hostPattern
	path     *pathPattern // exact or template; nil: none
	prefix   string       // "" or a prefix without its trailing '/' ("/" → "")
	anyPath  bool         // neither path nor prefix
	methods  []string
	headers  []kv
	query    []kv
	hasQuery bool
}

type kv struct{ key, value string } // value "*": present

// hostPattern is an exact host or, with wild, a suffix ".example.com".
type hostPattern struct {
	name string
	wild bool
}

// pathPattern is /a/{b}/c or /a/{rest...}: literal segments and
// parameters.
type pathPattern struct {
	segs   []segment
	rest   bool // the last segment takes the rest of the path
	params int
}

type segment struct {
	lit   string
	param string // "" for a literal
}

// match reports whether r matches, and the path parameters captured,
// appended to params.
func (m *matcher) match(r *http.Request, host string, params []string) ([]string, bool) {
	if len(m.hosts) > 0 && !matchHost(m.hosts, host) {
		return params, false
	}
	if len(m.methods) > 0 && !slices.Contains(m.methods, r.Method) {
		return params, false
	}
	path := r.URL.Path
	switch {
	case m.path != nil:
		var ok bool
		if params, ok = m.path.match(path, params); !ok {
			return params, false
		}
	case !m.anyPath:
		if !hasPathPrefix(path, m.prefix) {
			return params, false
		}
	}
	for _, h := range m.headers {
		v, ok := r.Header[h.key]
		if !ok || h.value != "*" && !slices.Contains(v, h.value) {
			return params, false
		}
	}
	if m.hasQuery {
		q := r.URL.Query()
		for _, p := range m.query {
			v, ok := q[p.key]
			if !ok || p.value != "*" && !slices.Contains(v, p.value) {
				return params, false
			}
		}
	}
	return params, true
}

// hasPathPrefix reports whether path starts with prefix at a segment
// boundary; prefix has no trailing '/', "" matches everything.
func hasPathPrefix(path, prefix string) bool {
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	return len(path) == len(prefix) || path[len(prefix)] == '/'
}

func matchHost(pats []hostPattern, host string) bool {
	for _, p := range pats {
		if !p.wild {
			if strings.EqualFold(host, p.name) {
				return true
			}
			continue
		}
		// "*.example.com" takes one or more labels in front.
		if len(host) > len(p.name) && strings.EqualFold(host[len(host)-len(p.name):], p.name) {
			return true
		}
	}
	return false
}

// requestHost is the request's host without port, as routes match it.
func requestHost(r *http.Request) string {
	h := r.Host
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.Contains(h[i:], "]") {
		h = h[:i]
	}
	return strings.TrimSuffix(h, ".")
}

func (p *pathPattern) match(path string, params []string) ([]string, bool) {
	if len(path) == 0 || path[0] != '/' {
		return params, false
	}
	start := len(params)
	rest := path[1:]
	for i, s := range p.segs {
		last := i == len(p.segs)-1
		if last && p.rest {
			params = append(params, rest)
			return params, true
		}
		var seg string
		j := strings.IndexByte(rest, '/')
		if j < 0 {
			seg, rest = rest, ""
			if !last {
				return params[:start], false
			}
		} else {
			if last {
				return params[:start], false
			}
			seg, rest = rest[:j], rest[j+1:]
		}
		if s.param == "" {
			if seg != s.lit {
				return params[:start], false
			}
			continue
		}
		if seg == "" {
			return params[:start], false
		}
		params = append(params, seg)
	}
	return params, true
}

// names returns the pattern's parameter names in order.
func (p *pathPattern) names() []string {
	var n []string
	for _, s := range p.segs {
		if s.param != "" {
			n = append(n, s.param)
		}
	}
	return n
}

// parsePath compiles a path or template. Errors are messages for the
// field "match.path".
func parsePath(s string) (*pathPattern, error) {
	if !strings.HasPrefix(s, "/") {
		return nil, fmt.Errorf("%q must start with /", s)
	}
	p := &pathPattern{}
	seen := map[string]bool{}
	parts := strings.Split(s[1:], "/")
	for i, part := range parts {
		if !strings.ContainsAny(part, "{}") {
			p.segs = append(p.segs, segment{lit: part})
			continue
		}
		if len(part) < 3 || part[0] != '{' || part[len(part)-1] != '}' {
			return nil, fmt.Errorf("%q: segment %q: a parameter is a whole segment, {name} or {name...}", s, part)
		}
		name := part[1 : len(part)-1]
		if n, ok := strings.CutSuffix(name, "..."); ok {
			if i != len(parts)-1 {
				return nil, fmt.Errorf("%q: {%s} must be the last segment", s, name)
			}
			name = n
			p.rest = true
		}
		if !validParam(name) {
			return nil, fmt.Errorf("%q: parameter name %q: use letters, digits and _, starting with a letter", s, name)
		}
		if seen[name] {
			return nil, fmt.Errorf("%q: parameter {%s} appears twice", s, name)
		}
		seen[name] = true
		p.segs = append(p.segs, segment{param: name})
		p.params++
	}
	if p.params > maxParams {
		return nil, fmt.Errorf("%q has %d parameters; at most %d", s, p.params, maxParams)
	}
	return p, nil
}

func validParam(name string) bool {
	if name == "" || !isLetter(name[0]) {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !isLetter(c) && !('0' <= c && c <= '9') && c != '_' {
			return false
		}
	}
	return true
}

func isLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

// specificity orders routes: the most specific is tried first, as nginx
// picks a server by host and then a location by path. Host first (exact,
// then wildcard by length, then any), then path (exact, then template by
// literal segments, then prefix by length, then any), then the number of
// method, header and query conditions.
type specificity struct {
	host      int // 2 exact, 1 wildcard, 0 any
	hostLen   int
	pathKind  int // 3 exact, 2 template, 1 prefix, 0 any
	pathScore int // literal segments (template) or length (prefix)
	conds     int
}

func (m *matcher) specificity() specificity {
	var s specificity
	for _, h := range m.hosts {
		k := 2
		if h.wild {
			k = 1
		}
		// A route listing several hosts ranks by its least specific.
		if s.host == 0 || k < s.host || k == s.host && len(h.name) < s.hostLen {
			s.host, s.hostLen = k, len(h.name)
		}
	}
	switch {
	case m.path != nil && m.path.params == 0:
		s.pathKind, s.pathScore = 3, len(m.path.segs)
	case m.path != nil:
		s.pathKind = 2
		s.pathScore = len(m.path.segs) - m.path.params
	case !m.anyPath:
		s.pathKind, s.pathScore = 1, len(m.prefix)+1
	}
	if len(m.methods) > 0 {
		s.conds++
	}
	s.conds += len(m.headers) + len(m.query)
	return s
}

// compareSpecificity sorts the more specific first.
func compareSpecificity(a, b specificity) int {
	return cmp.Or(
		cmp.Compare(b.host, a.host),
		cmp.Compare(b.hostLen, a.hostLen),
		cmp.Compare(b.pathKind, a.pathKind),
		cmp.Compare(b.pathScore, a.pathScore),
		cmp.Compare(b.conds, a.conds),
	)
}

// compileMatch compiles m. Errors are *meridian.Error whose Field is
// relative to the match ("path", "hosts[1]").
func compileMatch(m *Match) (*matcher, error) {
	c := &matcher{anyPath: m.Path == "" && m.PathPrefix == ""}
	for i, h := range m.Hosts {
		name, wild := strings.CutPrefix(strings.ToLower(h), "*")
		if wild && !strings.HasPrefix(name, ".") || name == "" || strings.ContainsAny(name, "*/: ") {
			return nil, meridian.FieldError(fmt.Sprintf("hosts[%d]", i), "%q is not a host name or *.domain", h)
		}
		c.hosts = append(c.hosts, hostPattern{name: name, wild: wild})
	}
	if m.Path != "" && m.PathPrefix != "" {
		return nil, meridian.FieldError("path", "give path or path_prefix, not both")
	}
	if m.Path != "" {
		p, err := parsePath(m.Path)
		if err != nil {
			return nil, meridian.FieldError("path", "%v", err)
		}
		c.path = p
	}
	if m.PathPrefix != "" {
		if !strings.HasPrefix(m.PathPrefix, "/") || strings.ContainsAny(m.PathPrefix, "{}") {
			return nil, meridian.FieldError("path_prefix", "%q must start with / and hold no parameters", m.PathPrefix)
		}
		c.prefix = strings.TrimSuffix(m.PathPrefix, "/")
	}
	for i, meth := range m.Methods {
		if !slices.Contains(methods, meth) {
			return nil, meridian.FieldError(fmt.Sprintf("methods[%d]", i), "%q is not an HTTP method (use upper case: GET, POST, …)", meth)
		}
		c.methods = append(c.methods, meth)
	}
	for _, k := range sortedKeys(m.Headers) {
		if !meridian.IsToken(k) {
			return nil, meridian.FieldError("headers."+k, "%q is not a valid header name", k)
		}
		c.headers = append(c.headers, kv{textproto.CanonicalMIMEHeaderKey(k), m.Headers[k]})
	}
	for _, k := range sortedKeys(m.Query) {
		if k == "" {
			return nil, meridian.FieldError("query", "a parameter name is empty")
		}
		c.query = append(c.query, kv{k, m.Query[k]})
	}
	c.hasQuery = len(c.query) > 0
	return c, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := slices.Collect(maps.Keys(m))
	slices.Sort(keys)
	return keys
}
