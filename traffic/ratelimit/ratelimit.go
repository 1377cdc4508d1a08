// Package ratelimit limits how often a key (a client, a user, a route) may
// do something. It is item 9 of the shared data path: the gateway, the
// sidecar and SDK servers put a Limiter in front of their handlers with
// Middleware, and the policy assembler picks the engine.
//
// # One algorithm: GCRA
//
// Every engine implements the generic cell rate algorithm (GCRA), the
// algorithm of Redis Cell and throttled: a key's whole state is one
// timestamp, its theoretical arrival time (TAT). A Limit of Rate units per
// Period with Burst gives an emission interval T = Period/Rate and a
// tolerance τ = Burst·T. A request of n units at time now is allowed when
//
//	max(TAT, now) + n·T − τ ≤ now
//
// and then moves TAT to max(TAT, now) + n·T. Over any span of time t a key
// is allowed at most Burst + ⌊t/T⌋ units, and a key that asks at least that
// often is allowed exactly that many: the limiter is exact, with no window
// edges (a fixed window allows 2× its quota across a boundary) and no
// floating-point token counts. Because the state is a timestamp rather than
// a count, a key whose TAT has passed is indistinguishable from a key never
// seen, so idle keys can be dropped (locally) or expire (in Redis) without
// changing any decision.
//
// T is Period/Rate truncated to a whole microsecond, the resolution both
// engines share; so at most 1,000,000 units per second per key, and a rate
// that does not divide evenly (3 per second) runs a hair fast (T = 333333 µs).
//
// # Engines
//
// Local (this package) keeps keys in process memory: exact per process, no
// I/O, no allocation for a key it already holds. The redis subpackage runs
// the same algorithm in one Lua script on a shared Redis, so a limit holds
// across every process that uses the same key prefix, with Redis' clock, not
// the callers'. A remote engine declares a FailPolicy for when its store does
// not answer in time.
package ratelimit

import (
	"context"
	"fmt"
	"time"

	"github.com/meridian-platform/meridian"
)

// Limiter decides whether n units of work under key may proceed now. It is
// the interface the policy assembler and Middleware consume; Local and
// redis.Limiter implement it, and ratelimittest.Run is the suite every
// implementation passes.
//
// An allowed decision consumes n units; a denied one consumes nothing, so a
// caller that waits RetryAfter and asks again will be allowed unless others
// took the units meanwhile. n = 0 consumes nothing and reports the key's
// state (Remaining, ResetAfter).
//
// The error is non-nil when the limiter could not decide: n is negative or
// larger than the Limit's Burst (it could never be allowed; the error has
// meridian.CodeInvalid), or a remote store failed under FailClosed (the
// error wraps ErrUnavailable). The Decision is meaningful even then: it
// carries the Limit and, for a store failure, StoreErr. Allow never blocks
// waiting for units to free up; it blocks only on a remote store's round
// trip, bounded by the engine's timeout and ctx.
type Limiter interface {
	Allow(ctx context.Context, key string, n int) (Decision, error)
}

// Decision is a Limiter's answer for one request.
type Decision struct {
	// Allowed reports whether the request may proceed.
	Allowed bool
	// Limit is the policy that decided, with defaults filled in. Middleware
	// advertises it in RateLimit-Policy.
	Limit Limit
	// Remaining is how many units the key could take right now after this
	// decision: Burst when the key is idle, 0 when it is exhausted.
	Remaining int
	// RetryAfter is, for a denied request, how long until the same request
	// would be allowed if nobody else takes units under the key meanwhile;
	// zero when Allowed.
	RetryAfter time.Duration
	// ResetAfter is how long until the key is idle again (Remaining back to
	// Burst) if it takes nothing more.
	ResetAfter time.Duration
	// StoreErr is non-nil when a remote store (Redis) did not decide in time
	// and the limiter's FailPolicy decided instead: it is the store's error
	// (a timeout, a refused connection). Allowed is then true under FailOpen
	// and false under FailClosed, and Remaining, RetryAfter and ResetAfter
	// are zero because nothing is known. Callers log or count it; Middleware
	// then sends no RateLimit fields.
	StoreErr error
}

// Limit is a GCRA policy: Rate units per Period sustained, up to Burst at
// once. The zero Period and Burst take defaults; see Normalize.
type Limit struct {
	// Rate is how many units a key may take per Period, sustained.
	// Required, at least 1; Period/Rate must be at least 1µs.
	Rate int `json:"rate"`
	// Period is the span Rate is counted over. Default 1s.
	Period meridian.Duration `json:"period,omitempty"`
	// Burst is how many units an idle key may take at once, and so the most
	// one request may ask for. Default Rate (a Period's worth).
	Burst int `json:"burst,omitempty"`
}

// PerSecond is a Limit of rate per second with the given burst.
func PerSecond(rate, burst int) Limit {
	return Limit{Rate: rate, Period: meridian.Duration(time.Second), Burst: burst}
}

// PerMinute is a Limit of rate per minute with the given burst.
func PerMinute(rate, burst int) Limit {
	return Limit{Rate: rate, Period: meridian.Duration(time.Minute), Burst: burst}
}

// maxTolerance bounds Burst·T so that TATs stay far inside int64
// nanoseconds and Lua's 2^53 microseconds.
const maxTolerance = 100 * 365 * 24 * time.Hour

// Normalize fills the defaults into l and checks it; errors name the field
// ("rate", "period", "burst").
func (l *Limit) Normalize() error { return l.normalize("") }

func (l *Limit) normalize(prefix string) error {
	if l.Period == 0 {
		l.Period = meridian.Duration(time.Second)
	}
	if l.Period < 0 {
		return meridian.FieldError(prefix+"period", "%s must be positive", l.Period)
	}
	if l.Rate < 1 {
		return meridian.FieldError(prefix+"rate", "%d must be at least 1", l.Rate)
	}
	if l.Interval() < time.Microsecond {
		return meridian.FieldError(prefix+"rate", "%d per %s is more than one per microsecond", l.Rate, l.Period)
	}
	if l.Burst == 0 {
		l.Burst = l.Rate
	}
	if l.Burst < 1 {
		return meridian.FieldError(prefix+"burst", "%d must be at least 1", l.Burst)
	}
	if time.Duration(l.Burst) > maxTolerance/l.Interval() {
		return meridian.FieldError(prefix+"burst", "%d takes longer than 100 years to refill at %d per %s", l.Burst, l.Rate, l.Period)
	}
	return nil
}

// Interval is the emission interval T: Period/Rate truncated to a whole
// microsecond. A key regains one unit every T.
func (l Limit) Interval() time.Duration {
	if l.Rate <= 0 {
		return 0
	}
	return (l.Period.D() / time.Duration(l.Rate)).Truncate(time.Microsecond)
}

// Window is the time an exhausted key takes to become idle again: Burst·T.
func (l Limit) Window() time.Duration { return time.Duration(l.Burst) * l.Interval() }

func (l Limit) String() string {
	return fmt.Sprintf("%d per %s, burst %d", l.Rate, l.Period, l.Burst)
}

// CheckCost is the argument check every engine makes before deciding: n
// must be between 0 and Burst. l must be normalized.
func (l Limit) CheckCost(n int) error {
	if n < 0 {
		return meridian.FieldError("n", "%d is negative", n)
	}
	if n > l.Burst {
		return meridian.FieldError("n", "%d is more than the burst %d, so it could never be allowed", n, l.Burst)
	}
	return nil
}

// FailPolicy is what a limiter backed by a remote store does when the store
// does not answer within the limiter's timeout. There is no default: a
// remote limiter's config must declare one.
type FailPolicy string

const (
	// FailOpen allows the request: the store protects a downstream that can
	// take some excess better than a refusal of all traffic. The Decision's
	// StoreErr says the limit was not enforced.
	FailOpen FailPolicy = "open"
	// FailClosed denies the request with an error wrapping ErrUnavailable
	// (CodeUnavailable, HTTP 503): the limit guards something that must not
	// be exceeded (a paid upstream's quota, a login endpoint).
	FailClosed FailPolicy = "closed"
)

// ErrUnavailable is wrapped by the error a FailClosed limiter returns when
// its store did not decide; errors.Is(err, ErrUnavailable) tests for it, and
// the store's own error is wrapped beside it. Its code is CodeUnavailable,
// and problem.Write shows users only its message, never the store's error.
var ErrUnavailable = &meridian.Error{Code: meridian.CodeUnavailable, Message: "rate limiter unavailable"}

// Validate checks that p is one of FailOpen and FailClosed; field names it
// in the error.
func (p FailPolicy) Validate(field string) error {
	switch p {
	case FailOpen, FailClosed:
		return nil
	case "":
		return meridian.FieldError(field, "is required: %q or %q", FailOpen, FailClosed)
	}
	return meridian.FieldError(field, "%q is not %q or %q", p, FailOpen, FailClosed)
}

// Apply is the decision p makes for a request under limit when the store
// failed with cause. Every remote engine calls it, so that the policies mean
// the same everywhere.
func (p FailPolicy) Apply(limit Limit, cause error) (Decision, error) {
	d := Decision{Limit: limit, StoreErr: cause}
	if p == FailOpen {
		d.Allowed = true
		return d, nil
	}
	return d, fmt.Errorf("%w: %w", ErrUnavailable, cause)
}

// verdict is the outcome of one GCRA step, in nanoseconds.
type verdict struct {
	allowed    bool
	tat        int64 // the key's TAT after the step
	remaining  int64
	retryAfter int64
	resetAfter int64
}

// gcra is the algorithm, pure: a request of cost n at time now against a
// key whose TAT is tat, with emission interval t and tolerance tau = Burst·t
// (all nanoseconds on one clock). A key never seen has any tat ≤ now. The
// Lua script in the redis engine is this function in microseconds; keep the
// two in step.
func gcra(tat, now, t, tau, n int64) verdict {
	tat = max(tat, now)
	next := tat + n*t
	if allowAt := next - tau; allowAt > now {
		return verdict{tat: tat, remaining: (tau - (tat - now)) / t, retryAfter: allowAt - now, resetAfter: tat - now}
	}
	return verdict{allowed: true, tat: next, remaining: (tau - (next - now)) / t, resetAfter: next - now}
}

func (v verdict) decision(l Limit) Decision {
	return Decision{
		Allowed:    v.allowed,
		Limit:      l,
		Remaining:  int(v.remaining),
		RetryAfter: time.Duration(v.retryAfter),
		ResetAfter: time.Duration(v.resetAfter),
	}
}
