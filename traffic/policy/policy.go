// Package policy is the resiliency spec: the data that says which
// timeouts, retries, circuit breakers, throttles, bulkheads, rate limits,
// balancers and outlier detectors apply to which upstream services, in
// the spirit of Dapr's resiliency specs. It decides nothing at run time
// and does no I/O: package outbound builds the client chains from a Spec,
// and the SDK keeps one current from the config center.
//
// # Shape
//
// Policies are named, per kind, under policies; targets name, per
// upstream service, the policy of each kind that applies to calls to it;
// default names the policies for every upstream without a target of its
// own (and for what a target leaves unnamed):
//
//	policies:
//	  timeouts:
//	    general: 5s
//	  retries:
//	    standard: {max_attempts: 3, per_try_timeout: 1s}
//	  circuit_breakers:
//	    strict: {mode: error_rate, failure_rate: 0.3}
//	default:
//	  timeout: general
//	  retry: standard
//	targets:
//	  payments:
//	    circuit_breaker: strict
//	    retry: none
//
// A layer's policy is found in order: the target's name for it, else
// default's, else the built-in (Builtin); the name "none" turns the layer
// off for that upstream. Built in: retries with 3 attempts under a retry
// budget, an error-rate circuit breaker, outlier detection and the
// peak-EWMA balancer, each with its package's defaults; no timeout,
// throttle, bulkhead or rate limit.
//
// # Decoding and validation
//
// JSON is the canonical form; YAML (goccy/go-yaml, strict: unknown fields
// and duplicate keys are errors) is converted to it. Decoding is strict at
// every level and names the field path of what it rejects
// ("policies.retries.fast.max_atempts: is not a known field"). Validate
// checks every policy and reference and reports every problem at once,
// each a *meridian.Error with CodeInvalid whose Field is the path:
//
//	targets.orders.retry: unknown policy "fast" (policies.retries has: standard)
//	policies.retries.standard.max_attempts: 0 is out of range 1-10
//
// Parse does both. A Spec that passed Validate resolves (Resolve) to
// configs that every layer's constructor accepts.
package policy

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/goccy/go-yaml"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/traffic/balance"
	"github.com/meridian-platform/meridian/traffic/ratelimit"
	"github.com/meridian-platform/meridian/traffic/resilience/breaker"
	"github.com/meridian-platform/meridian/traffic/resilience/bulkhead"
	"github.com/meridian-platform/meridian/traffic/resilience/outlier"
	"github.com/meridian-platform/meridian/traffic/resilience/retry"
)

// KeyPrefix is where resiliency specs live in the config center: the spec
// of the service S's outbound calls is at KeyPrefix + S (Key).
const KeyPrefix = "meridian/resiliency/"

// Key is the config key of the spec that governs service's calls to its
// upstreams: "meridian/resiliency/<service>". The spec belongs to the
// caller, as a Dapr app's resiliency spec does; its targets name the
// services it calls.
func Key(service string) string { return KeyPrefix + service }

// None is the policy name that turns a layer off for a target.
const None = "none"

// Spec is a resiliency spec. The zero value is valid: every upstream gets
// the built-in policies.
type Spec struct {
	// Policies are the named policies, per kind.
	Policies Policies `json:"policies,omitzero"`
	// Default names the policies of every upstream without a target of its
	// own, and of the layers a target leaves unnamed.
	Default Target `json:"default,omitzero"`
	// Targets name the policies per upstream service (keyed by service
	// name).
	Targets map[string]Target `json:"targets,omitempty"`
}

// Policies are the named policies of each kind. Names are 1-64 letters,
// digits and _ . -, starting with a letter or digit; "none" is reserved.
type Policies struct {
	// Timeouts bound a whole call, retries and their backoff included:
	// deadline.Timeout, unless the caller's own deadline is sooner. 1ms-1h.
	Timeouts map[string]meridian.Duration `json:"timeouts,omitempty"`
	// Retries are retry.Policy and the upstream's retry budget.
	Retries map[string]Retry `json:"retries,omitempty"`
	// CircuitBreakers are breaker.Config.
	CircuitBreakers map[string]breaker.Config `json:"circuit_breakers,omitempty"`
	// Throttles are the SRE book's adaptive client throttle,
	// breaker.ThrottleConfig.
	Throttles map[string]breaker.ThrottleConfig `json:"throttles,omitempty"`
	// Bulkheads are bulkhead.Config.
	Bulkheads map[string]bulkhead.Config `json:"bulkheads,omitempty"`
	// RateLimits cap the calls this process makes to an upstream (one key
	// per upstream, exact GCRA): ratelimit.Limit. A call over the limit
	// fails at once, locally, with CodeRateLimited.
	RateLimits map[string]ratelimit.Limit `json:"rate_limits,omitempty"`
	// Balancers choose the balancing policy and its parameters.
	Balancers map[string]Balancer `json:"balancers,omitempty"`
	// OutlierDetectors are outlier.Config: passive health per endpoint.
	OutlierDetectors map[string]outlier.Config `json:"outlier_detectors,omitempty"`
}

// Retry is a retry policy: retry.Policy's fields, and the budget that
// bounds the retries to each upstream it applies to.
type Retry struct {
	retry.Policy
	// Budget bounds the retries (Finagle's retry budget). Zero fields take
	// retry.BudgetConfig's defaults: 20% of requests over 10s plus 10/s.
	Budget retry.BudgetConfig `json:"budget,omitzero"`
}

// Balancer is a balancing policy (see package balance for the algorithms).
type Balancer struct {
	// Policy is round_robin, weighted_round_robin, least_request,
	// peak_ewma (default) or ring_hash.
	Policy balance.Policy `json:"policy,omitempty"`
	// Decay is peak EWMA's time constant. Default 10s, at least 10ms.
	Decay meridian.Duration `json:"decay,omitempty"`
	// BalanceFactor bounds ring_hash loads (c). Default 1.25, above 1.
	BalanceFactor float64 `json:"balance_factor,omitempty"`
	// RingPoints is ring_hash's points per endpoint of the highest
	// weight. Default 160, at most 10000.
	RingPoints int `json:"ring_points,omitempty"`
	// HashHeader keys ring_hash by a request header ("X-User-Id"), and
	// HashCookie by a cookie; at most one of them, only with ring_hash.
	// Neither: every request hashes to a random point.
	HashHeader string `json:"hash_header,omitempty"`
	HashCookie string `json:"hash_cookie,omitempty"`
	// Zone turns zone preference on: the caller's own zone first (the
	// SDK's Config.Zone; a caller without a zone balances over all). Nil:
	// off.
	Zone *Zone `json:"zone,omitempty"`
}

// Zone tunes zone preference (balance.ZoneConfig).
type Zone struct {
	// Overprovisioning is Envoy's overprovisioning factor. Default 1.4.
	Overprovisioning float64 `json:"overprovisioning,omitempty"`
	// Overload spills to other zones when the local choice has this many
	// times the requests in flight of the other zones'. Default 4;
	// negative turns the rule off.
	Overload float64 `json:"overload,omitempty"`
}

// Config is the balance.Config for a caller in zone localZone.
func (b Balancer) Config(localZone string) balance.Config {
	c := balance.Config{Policy: b.Policy, Decay: b.Decay.D(), BalanceFactor: b.BalanceFactor, RingPoints: b.RingPoints}
	if b.Zone != nil {
		c.Zone = balance.ZoneConfig{Local: localZone, Overprovisioning: b.Zone.Overprovisioning, Overload: b.Zone.Overload}
	}
	return c
}

// Target names the policy of each layer for an upstream: a policy name of
// that kind, None to turn the layer off, or empty to inherit (from Default,
// then the built-in).
type Target struct {
	Timeout         string `json:"timeout,omitempty"`
	Retry           string `json:"retry,omitempty"`
	CircuitBreaker  string `json:"circuit_breaker,omitempty"`
	Throttle        string `json:"throttle,omitempty"`
	Bulkhead        string `json:"bulkhead,omitempty"`
	RateLimit       string `json:"rate_limit,omitempty"`
	Balancer        string `json:"balancer,omitempty"`
	OutlierDetector string `json:"outlier_detector,omitempty"`
}

// Resolved is what applies to one upstream: each layer's config, with the
// package defaults still to apply to its zero fields, or nil where the
// layer is off.
type Resolved struct {
	// Names are the policy names in effect per layer: a name from the
	// spec, None, or "" for the built-in.
	Names           Target
	Timeout         time.Duration // 0: none
	Retry           *Retry        // nil: one try only
	CircuitBreaker  *breaker.Config
	Throttle        *breaker.ThrottleConfig
	Bulkhead        *bulkhead.Config
	RateLimit       *ratelimit.Limit
	Balancer        Balancer
	OutlierDetector *outlier.Config
}

// Builtin is what applies where neither a target nor Default names a
// policy: retries (3 attempts, retry.Policy's and retry.BudgetConfig's
// defaults), a breaker in error-rate mode (breaker.Config's defaults:
// open when at least half of at least 20 tries in 10s failed), outlier
// detection (outlier.Config's defaults) and peak EWMA; no timeout,
// throttle, bulkhead or rate limit.
//
// The breaker judges by rate rather than by consecutive failures because
// it guards a whole upstream: when one instance of several dies, the
// requests in flight to it fail together, and a run of them must not
// cut off the instances that still serve. Outlier detection takes the
// dead instance out; the breaker opens when the upstream as a whole fails.
func Builtin() Resolved {
	return Resolved{
		Retry:           &Retry{Policy: retry.Policy{MaxAttempts: 3}},
		CircuitBreaker:  &breaker.Config{Mode: breaker.ModeErrorRate},
		Balancer:        Balancer{Policy: balance.DefaultPolicy},
		OutlierDetector: &outlier.Config{},
	}
}

// Resolve returns the policies that apply to calls to service. s must
// have passed Validate (a name that is not defined resolves as None).
func (s *Spec) Resolve(service string) Resolved {
	r := Builtin()
	if s == nil {
		return r
	}
	t := s.Targets[service]
	name := func(own, def string) string {
		if own != "" {
			return own
		}
		return def
	}
	d := s.Default
	r.Names = Target{
		Timeout:         name(t.Timeout, d.Timeout),
		Retry:           name(t.Retry, d.Retry),
		CircuitBreaker:  name(t.CircuitBreaker, d.CircuitBreaker),
		Throttle:        name(t.Throttle, d.Throttle),
		Bulkhead:        name(t.Bulkhead, d.Bulkhead),
		RateLimit:       name(t.RateLimit, d.RateLimit),
		Balancer:        name(t.Balancer, d.Balancer),
		OutlierDetector: name(t.OutlierDetector, d.OutlierDetector),
	}
	p := &s.Policies
	n := r.Names
	if n.Timeout != "" {
		r.Timeout = p.Timeouts[n.Timeout].D()
	}
	pick(&r.Retry, p.Retries, n.Retry)
	pick(&r.CircuitBreaker, p.CircuitBreakers, n.CircuitBreaker)
	pick(&r.Throttle, p.Throttles, n.Throttle)
	pick(&r.Bulkhead, p.Bulkheads, n.Bulkhead)
	pick(&r.RateLimit, p.RateLimits, n.RateLimit)
	pick(&r.OutlierDetector, p.OutlierDetectors, n.OutlierDetector)
	if b, ok := p.Balancers[n.Balancer]; ok {
		r.Balancer = b
	}
	return r
}

// pick sets *dst from the policy named name: left as built in when name is
// empty, nil when it is None or undefined.
func pick[T any](dst **T, m map[string]T, name string) {
	if name == "" {
		return
	}
	if v, ok := m[name]; ok {
		*dst = &v
		return
	}
	*dst = nil
}

// Parse decodes a spec in format (meridian.FormatJSON or FormatYAML) and
// validates it. Errors are *meridian.Error with CodeInvalid naming the
// field (YAML syntax errors carry the line instead); Validate's may be
// several, joined.
func Parse(format meridian.ConfigFormat, data []byte) (*Spec, error) {
	var s Spec
	switch format {
	case meridian.FormatJSON:
		if err := s.UnmarshalJSON(data); err != nil {
			return nil, err
		}
	case meridian.FormatYAML:
		// JSON is the canonical form: the YAML is converted to JSON and
		// decoded by Spec.UnmarshalJSON, so both read alike.
		if err := yaml.UnmarshalWithOptions(data, &s, yaml.Strict(), yaml.UseJSONUnmarshaler()); err != nil {
			var me *meridian.Error
			if errors.As(err, &me) {
				return nil, err
			}
			return nil, &meridian.Error{Code: meridian.CodeInvalid, Message: "malformed YAML", Err: err}
		}
	default:
		return nil, meridian.FieldError("format", "%q is not json or yaml", format)
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

var policyName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// ValidName reports whether name is a valid policy name: 1-64 letters,
// digits and _ . -, starting with a letter or digit. Documents that name
// things the way the spec names policies (the gateway's rate limits) use
// the same rule.
func ValidName(name string) bool { return policyName.MatchString(name) }

// Validate checks every policy, target and reference, and returns every
// problem found, joined (errors.Join), each a *meridian.Error with
// CodeInvalid whose Field is the path of the offending field, sorted by
// path; nil when the spec is valid.
func (s *Spec) Validate() error {
	var v validator
	p := &s.Policies
	each(&v, p.Timeouts, "timeouts", func(path string, d meridian.Duration) {
		if d.D() < time.Millisecond || d.D() > time.Hour {
			v.add(path, "%s is out of range 1ms-1h", d)
		}
	})
	each(&v, p.Retries, "retries", v.retry)
	each(&v, p.CircuitBreakers, "circuit_breakers", func(path string, c breaker.Config) {
		v.wrap(path, c.Validate())
		v.atMost(path+".consecutive_failures", c.ConsecutiveFailures, 10000)
		v.atMost(path+".min_requests", c.MinRequests, 1_000_000)
		v.atMost(path+".half_open_probes", c.HalfOpenProbes, 1000)
		v.atMost(path+".close_after", c.CloseAfter, 1000)
		v.durAtMost(path+".window", c.Window.D(), 10*time.Minute)
		v.durAtMost(path+".open_for", c.OpenFor.D(), time.Hour)
		v.durAtMost(path+".max_open_for", c.MaxOpenFor.D(), 24*time.Hour)
		v.finite(path+".open_for_growth", c.OpenForGrowth, 100)
	})
	each(&v, p.Throttles, "throttles", func(path string, c breaker.ThrottleConfig) {
		v.wrap(path, c.Validate())
		v.finite(path+".k", c.K, 1000)
		v.durAtMost(path+".window", c.Window.D(), 10*time.Minute)
	})
	each(&v, p.Bulkheads, "bulkheads", func(path string, c bulkhead.Config) {
		v.wrap(path, c.Validate())
		v.atMost(path+".max_concurrent", c.MaxConcurrent, 1_000_000)
		v.atMost(path+".max_queue", c.MaxQueue, 1_000_000)
		v.durAtMost(path+".queue_timeout", c.QueueTimeout.D(), time.Minute)
	})
	each(&v, p.RateLimits, "rate_limits", func(path string, l ratelimit.Limit) { v.wrap(path, l.Normalize()) })
	each(&v, p.Balancers, "balancers", v.balancer)
	each(&v, p.OutlierDetectors, "outlier_detectors", func(path string, c outlier.Config) {
		v.wrap(path, c.Validate())
		v.durAtMost(path+".interval", c.Interval.D(), time.Hour)
		v.durAtMost(path+".base_ejection_time", c.BaseEjectionTime.D(), 24*time.Hour)
		v.durAtMost(path+".max_ejection_time", c.MaxEjectionTime.D(), 24*time.Hour)
	})
	v.target("default", s.Default, p)
	for _, svc := range sortedKeys(s.Targets) {
		path := "targets." + svc
		if err := meridian.ValidateServiceName(path, svc); err != nil {
			v.errs = append(v.errs, err.(*meridian.Error))
			continue
		}
		v.target(path, s.Targets[svc], p)
	}
	return v.err()
}

type validator struct{ errs []*meridian.Error }

// each checks the name and, with check, the value of every policy of a
// kind, in name order.
func each[T any](v *validator, m map[string]T, kind string, check func(path string, c T)) {
	for _, name := range sortedKeys(m) {
		path := "policies." + kind + "." + name
		v.name(path, name)
		check(path, m[name])
	}
}

func (v *validator) add(field, format string, args ...any) {
	v.errs = append(v.errs, meridian.FieldError(field, format, args...))
}

// wrap adds err, a *meridian.Error naming a field relative to path, with
// the field made absolute.
func (v *validator) wrap(path string, err error) {
	if err == nil {
		return
	}
	var me *meridian.Error
	if !errors.As(err, &me) {
		v.add(path, "%v", err)
		return
	}
	c := *me
	c.Code = meridian.CodeInvalid
	if c.Field == "" {
		c.Field = path
	} else {
		c.Field = path + "." + c.Field
	}
	v.errs = append(v.errs, &c)
}

func (v *validator) name(path, name string) {
	switch {
	case name == None:
		v.add(path, "the name %q is reserved: in a target it turns the layer off", None)
	case !policyName.MatchString(name):
		v.add(path, "%q is not a valid policy name: use 1-64 letters, digits and _ . -, starting with a letter or digit", name)
	}
}

func (v *validator) atMost(field string, n, limit int) {
	if n > limit {
		v.add(field, "%d is out of range 0-%d", n, limit)
	}
}

func (v *validator) durAtMost(field string, d, limit time.Duration) {
	if d > limit {
		v.add(field, "%s is above the maximum %s", d, limit)
	}
}

func (v *validator) finite(field string, f, limit float64) {
	if math.IsNaN(f) || f > limit {
		v.add(field, "%v is above the maximum %v", f, limit)
	}
}

func (v *validator) retry(path string, r Retry) {
	if r.MaxAttempts < 1 || r.MaxAttempts > 10 {
		v.add(path+".max_attempts", "%d is out of range 1-10", r.MaxAttempts)
	}
	c := r.Policy
	c.MaxAttempts = 1 // checked above, with the spec's range
	v.wrap(path, c.Validate())
	v.durAtMost(path+".per_try_timeout", r.PerTryTimeout.D(), time.Hour)
	v.durAtMost(path+".base_delay", r.BaseDelay.D(), time.Minute)
	v.durAtMost(path+".max_delay", r.MaxDelay.D(), 10*time.Minute)
	v.durAtMost(path+".max_retry_after", r.MaxRetryAfter.D(), time.Hour)
	v.wrap(path+".budget", r.Budget.Validate())
	if w := r.Budget.Window.D(); w != 0 && (w < time.Second || w > 10*time.Minute) {
		v.add(path+".budget.window", "%s is out of range 1s-10m", w)
	}
	v.finite(path+".budget.min_per_second", r.Budget.MinPerSecond, 1_000_000)
}

func (v *validator) balancer(path string, b Balancer) {
	_, err := balance.New("validate", b.Config("zone"))
	v.wrap(path, err)
	if b.HashHeader != "" || b.HashCookie != "" {
		switch {
		case b.Policy != balance.RingHash:
			field := "hash_header"
			if b.HashHeader == "" {
				field = "hash_cookie"
			}
			v.add(path+"."+field, "only ring_hash uses a hash key; the policy is %q", cmpOr(b.Policy, balance.DefaultPolicy))
		case b.HashHeader != "" && b.HashCookie != "":
			v.add(path+".hash_cookie", "give hash_header or hash_cookie, not both")
		}
	}
	if h := b.HashHeader; h != "" && !meridian.IsToken(h) {
		v.add(path+".hash_header", "%q is not a header name", h)
	}
	if c := b.HashCookie; c != "" && !meridian.IsToken(c) {
		v.add(path+".hash_cookie", "%q is not a cookie name", c)
	}
}

func cmpOr(p, def balance.Policy) balance.Policy {
	if p == "" {
		return def
	}
	return p
}

// target checks that every name in t refers to a policy of its kind.
func (v *validator) target(path string, t Target, p *Policies) {
	ref := func(field, name, kind string, names []string) {
		switch {
		case name == "", name == None && field != "balancer":
		case name == None:
			v.add(path+"."+field, "%q is not allowed: every upstream is balanced", None)
		case !slices.Contains(names, name):
			has := "defines none"
			if len(names) > 0 {
				has = "has: " + strings.Join(names, ", ")
			}
			v.add(path+"."+field, "unknown policy %q (policies.%s %s)", name, kind, has)
		}
	}
	ref("timeout", t.Timeout, "timeouts", sortedKeys(p.Timeouts))
	ref("retry", t.Retry, "retries", sortedKeys(p.Retries))
	ref("circuit_breaker", t.CircuitBreaker, "circuit_breakers", sortedKeys(p.CircuitBreakers))
	ref("throttle", t.Throttle, "throttles", sortedKeys(p.Throttles))
	ref("bulkhead", t.Bulkhead, "bulkheads", sortedKeys(p.Bulkheads))
	ref("rate_limit", t.RateLimit, "rate_limits", sortedKeys(p.RateLimits))
	ref("balancer", t.Balancer, "balancers", sortedKeys(p.Balancers))
	ref("outlier_detector", t.OutlierDetector, "outlier_detectors", sortedKeys(p.OutlierDetectors))
}

func (v *validator) err() error {
	if len(v.errs) == 0 {
		return nil
	}
	slices.SortStableFunc(v.errs, func(a, b *meridian.Error) int { return strings.Compare(a.Field, b.Field) })
	errs := make([]error, len(v.errs))
	for i, e := range v.errs {
		errs[i] = e
	}
	return errors.Join(errs...)
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

// String is the spec's summary for logs: how many policies and targets.
func (s *Spec) String() string {
	p := &s.Policies
	n := len(p.Timeouts) + len(p.Retries) + len(p.CircuitBreakers) + len(p.Throttles) +
		len(p.Bulkheads) + len(p.RateLimits) + len(p.Balancers) + len(p.OutlierDetectors)
	return fmt.Sprintf("%d policies, %d targets", n, len(s.Targets))
}
