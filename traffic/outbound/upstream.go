package outbound

import (
	"net/http"
	"net/textproto"
	"reflect"
	"time"

	"github.com/meridian-platform/meridian/traffic/balance"
	"github.com/meridian-platform/meridian/traffic/policy"
	"github.com/meridian-platform/meridian/traffic/ratelimit"
	"github.com/meridian-platform/meridian/traffic/resilience"
	"github.com/meridian-platform/meridian/traffic/resilience/breaker"
	"github.com/meridian-platform/meridian/traffic/resilience/bulkhead"
	"github.com/meridian-platform/meridian/traffic/resilience/deadline"
	"github.com/meridian-platform/meridian/traffic/resilience/outlier"
	"github.com/meridian-platform/meridian/traffic/resilience/retry"
)

// Upstream is one service's client layers under one version of the spec,
// immutable: a request takes the Upstream current when it starts and
// finishes on it. A reload makes new Upstreams that share with the old
// ones the state of every layer whose policy did not change. The getters
// return nil for a layer the policy turns off.
type Upstream struct {
	service  string
	resolved policy.Resolved
	rt       http.RoundTripper

	retry    retry.Policy // MaxAttempts 1 when retries are off
	budget   *retry.Budget
	breaker  *breaker.Breaker
	throttle *breaker.Throttle
	limiter  ratelimit.Limiter
	bulkhead *bulkhead.Bulkhead
	detector *outlier.Detector
	balancer *balance.Balancer
}

// Service is the upstream's service name.
func (u *Upstream) Service() string { return u.service }

// Policy is what the spec resolved to for the upstream.
func (u *Upstream) Policy() policy.Resolved { return u.resolved }

// RoundTrip sends req, whose URL host must be the upstream's service name,
// through the upstream's chain.
func (u *Upstream) RoundTrip(req *http.Request) (*http.Response, error) { return u.rt.RoundTrip(req) }

// The upstream's layers, for inspection (tests, a debug page): each is
// nil when the policy turns its layer off. The Balancer is the same for
// every Upstream of a service.
func (u *Upstream) Balancer() *balance.Balancer  { return u.balancer }
func (u *Upstream) Breaker() *breaker.Breaker    { return u.breaker }
func (u *Upstream) Throttle() *breaker.Throttle  { return u.throttle }
func (u *Upstream) Budget() *retry.Budget        { return u.budget }
func (u *Upstream) Bulkhead() *bulkhead.Bulkhead { return u.bulkhead }
func (u *Upstream) Limiter() ratelimit.Limiter   { return u.limiter }
func (u *Upstream) Detector() *outlier.Detector  { return u.detector }

// Timeout is the upstream's timeout, 0 for none.
func (u *Upstream) Timeout() time.Duration { return u.resolved.Timeout }

// RetryPolicy is the upstream's retry policy with its defaults filled in;
// MaxAttempts is 1 when retries are off.
func (u *Upstream) RetryPolicy() retry.Policy { return u.retry }

// build makes the upstream's layers for r, taking from prev (the current
// Upstream, nil for a new one) every layer whose config is unchanged, and
// compiles the chain. It starts nothing and changes nothing shared, so a
// failed build leaves no trace.
func (t *Transport) build(st *state, r policy.Resolved, prev *Upstream) (*Upstream, error) {
	svc := st.service
	m := t.opts.Metrics
	var pr policy.Resolved
	if prev != nil {
		pr = prev.resolved
	}
	u := &Upstream{service: svc, resolved: r, balancer: st.balancer, retry: retry.Policy{MaxAttempts: 1}}
	var err error

	var budgetCfg, prevBudgetCfg *retry.BudgetConfig
	if r.Retry != nil {
		u.retry = r.Retry.Policy.WithDefaults()
		budgetCfg = &r.Retry.Budget
	}
	if pr.Retry != nil {
		prevBudgetCfg = &pr.Retry.Budget
	}
	if u.budget, err = reuse(prevBudgetCfg, budgetCfg, prevOf(prev, (*Upstream).Budget), func(c retry.BudgetConfig) (*retry.Budget, error) {
		o := retry.BudgetOptions{}
		if m != nil {
			o.OnRetry = m.RetryBudget(svc)
		}
		return retry.NewBudget(c, o)
	}); err != nil {
		return nil, err
	}
	if u.breaker, err = reuse(pr.CircuitBreaker, r.CircuitBreaker, prevOf(prev, (*Upstream).Breaker), func(c breaker.Config) (*breaker.Breaker, error) {
		o := breaker.Options{}
		if m != nil {
			o.OnStateChange, o.OnReject = m.BreakerStateChange(svc), m.BreakerRejected(svc)
		}
		return breaker.New(c, o)
	}); err != nil {
		return nil, err
	}
	if u.throttle, err = reuse(pr.Throttle, r.Throttle, prevOf(prev, (*Upstream).Throttle), func(c breaker.ThrottleConfig) (*breaker.Throttle, error) {
		o := breaker.ThrottleOptions{}
		if m != nil {
			o.OnReject = m.ThrottleRejected(svc)
		}
		return breaker.NewThrottle(c, o)
	}); err != nil {
		return nil, err
	}
	if u.limiter, err = reuse(pr.RateLimit, r.RateLimit, prevOf(prev, (*Upstream).Limiter), func(l ratelimit.Limit) (ratelimit.Limiter, error) {
		if t.opts.Limiter != nil {
			return t.opts.Limiter(svc, r.Names.RateLimit, l)
		}
		return ratelimit.NewLocal(ratelimit.LocalConfig{Limit: l, MaxKeys: 1})
	}); err != nil {
		return nil, err
	}
	if u.bulkhead, err = reuse(pr.Bulkhead, r.Bulkhead, prevOf(prev, (*Upstream).Bulkhead), func(c bulkhead.Config) (*bulkhead.Bulkhead, error) {
		o := bulkhead.Options{}
		if m != nil {
			o.OnReject = m.BulkheadRejected(svc)
		}
		return bulkhead.New(c, o)
	}); err != nil {
		return nil, err
	}
	if u.detector, err = reuse(pr.OutlierDetector, r.OutlierDetector, prevOf(prev, (*Upstream).Detector), func(c outlier.Config) (*outlier.Detector, error) {
		var d *outlier.Detector
		o := outlier.Options{Eject: func(id string, ejected bool) { st.eject(d, id, ejected) }}
		if m != nil {
			o.OnChange = m.OutlierChange(svc)
		}
		d, err := outlier.New(c, o)
		return d, err
	}); err != nil {
		return nil, err
	}

	retryMW, err := retry.New(u.retry, u.budget, retry.Options{})
	if err != nil {
		return nil, err
	}
	mws := make([]resilience.Middleware, 0, 9)
	if r.Timeout > 0 {
		mws = append(mws, deadline.Timeout(r.Timeout))
	}
	mws = append(mws, retryMW)
	if u.breaker != nil {
		mws = append(mws, breaker.RoundTripper(u.breaker, nil))
	}
	if u.throttle != nil {
		mws = append(mws, breaker.RoundTripper(u.throttle, nil))
	}
	if u.limiter != nil {
		mws = append(mws, RateLimit(u.limiter, svc))
	}
	if u.bulkhead != nil {
		mws = append(mws, bulkhead.RoundTripper(u.bulkhead))
	}
	mws = append(mws, Balance(st.balancer, BalanceOptions{Source: t.src, Hash: hashOf(r.Balancer)}))
	if u.detector != nil {
		mws = append(mws, outlier.RoundTripper(u.detector, nil, nil))
	}
	mws = append(mws, deadline.Propagate)
	u.rt = resilience.Chain(t.base, mws...)
	return u, nil
}

// reuse returns the previous layer when its config equals the new one,
// else a new layer made by mk; the zero L when the layer is off (cfg nil).
func reuse[C, L any](prevCfg, cfg *C, prevLayer L, mk func(C) (L, error)) (L, error) {
	var zero L
	if cfg == nil {
		return zero, nil
	}
	if prevCfg != nil && same(prevCfg, cfg) && !reflect.ValueOf(&prevLayer).Elem().IsZero() {
		return prevLayer, nil
	}
	return mk(*cfg)
}

// prevOf is get(prev), or the zero L when there is no previous Upstream.
func prevOf[L any](prev *Upstream, get func(*Upstream) L) L {
	if prev == nil {
		var zero L
		return zero
	}
	return get(prev)
}

// same reports whether two policy values are equal.
func same[C any](a, b *C) bool { return reflect.DeepEqual(a, b) }

// hashOf is the ring-hash key function of a balancer policy: a header or a
// cookie; nil when it names neither.
func hashOf(b policy.Balancer) func(*http.Request) uint64 {
	switch {
	case b.HashHeader != "":
		name := textproto.CanonicalMIMEHeaderKey(b.HashHeader)
		return func(r *http.Request) uint64 { return balance.HashHeader(r.Header, name) }
	case b.HashCookie != "":
		name := b.HashCookie
		return func(r *http.Request) uint64 { return balance.HashCookie(r.Header, name) }
	}
	return nil
}
