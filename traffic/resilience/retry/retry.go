package retry

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/internal/backoff"
	"github.com/meridian-platform/meridian/traffic/resilience"
)

// IdempotencyKeyHeader marks a request that the upstream deduplicates, so
// that it may be retried whatever its method (IETF draft
// "The Idempotency-Key HTTP Header Field").
const IdempotencyKeyHeader = "Idempotency-Key"

// Policy says when and how to retry. The zero value means the defaults on
// the fields.
type Policy struct {
	// MaxAttempts is the number of tries, the first included. Default 3;
	// 1 turns retries off.
	MaxAttempts int `json:"max_attempts,omitempty"`
	// PerTryTimeout bounds each try (time to the response headers and
	// the body read after). Zero: only the caller's deadline applies.
	// It costs about three allocations per request.
	PerTryTimeout meridian.Duration `json:"per_try_timeout,omitempty"`
	// BaseDelay and MaxDelay shape the backoff before a retry: a uniform
	// random delay in (0, min(MaxDelay, BaseDelay·2^(n-1))] before the
	// n-th retry ("full jitter"). Defaults 25ms and 1s.
	BaseDelay meridian.Duration `json:"base_delay,omitempty"`
	MaxDelay  meridian.Duration `json:"max_delay,omitempty"`
	// RetryOn are the statuses that make a try fail and be retried.
	// Default 502, 503, 504.
	RetryOn []int `json:"retry_on,omitempty"`
	// MaxRetryAfter caps the wait a Retry-After header asks for before a
	// retry. Default 10s.
	MaxRetryAfter meridian.Duration `json:"max_retry_after,omitempty"`
}

// Validate reports the first field out of range.
func (p Policy) Validate() error {
	switch {
	case p.MaxAttempts < 0:
		return meridian.FieldError("max_attempts", "must not be negative")
	case p.PerTryTimeout < 0:
		return meridian.FieldError("per_try_timeout", "must not be negative")
	case p.BaseDelay < 0:
		return meridian.FieldError("base_delay", "must not be negative")
	case p.MaxDelay < 0:
		return meridian.FieldError("max_delay", "must not be negative")
	case p.MaxDelay > 0 && p.MaxDelay < p.BaseDelay:
		return meridian.FieldError("max_delay", "must not be less than base_delay")
	case p.MaxRetryAfter < 0:
		return meridian.FieldError("max_retry_after", "must not be negative")
	}
	for i, s := range p.RetryOn {
		if s < 100 || s > 599 {
			return meridian.FieldError("retry_on["+strconv.Itoa(i)+"]", "%d is not an HTTP status", s)
		}
	}
	return nil
}

// WithDefaults returns p with the defaults of its zero fields filled in,
// as New applies them; for callers that retry other protocols (gRPC) by
// the same policy.
func (p Policy) WithDefaults() Policy {
	if p.MaxAttempts == 0 {
		p.MaxAttempts = 3
	}
	if p.BaseDelay == 0 {
		p.BaseDelay = meridian.Duration(25 * time.Millisecond)
	}
	if p.MaxDelay == 0 {
		p.MaxDelay = max(meridian.Duration(time.Second), p.BaseDelay)
	}
	if p.RetryOn == nil {
		p.RetryOn = []int{http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout}
	}
	if p.MaxRetryAfter == 0 {
		p.MaxRetryAfter = meridian.Duration(10 * time.Second)
	}
	return p
}

// Options are the retry layer's collaborators. The zero value works.
type Options struct {
	// Now is the clock, used for Retry-After dates and deadlines. Default
	// time.Now.
	Now func() time.Time
	// Sleep waits for d or until ctx ends and reports whether d passed.
	// Default backoff.Sleep.
	Sleep func(ctx context.Context, d time.Duration) bool
}

// New returns the retry layer for one upstream: budget is that upstream's
// (nil means no budget, which only tests should want).
//
// A request is tried again only when all of these hold:
//
//   - its body can be replayed: no body, http.NoBody, or GetBody set (as
//     http.NewRequest does for in-memory bodies);
//   - the try failed: a transport error, or a status in RetryOn. A
//     transport error is retried if the method is idempotent (RFC 9110
//     §9.2.2: GET, HEAD, OPTIONS, TRACE, PUT, DELETE) or the request has an
//     Idempotency-Key header; for other methods only when the connection
//     could not be made at all (the request was never sent). A status in
//     RetryOn is retried under the same method rule. A per-try timeout is a
//     transport error; the caller's own cancellation or deadline, and a
//     request refused locally (resilience.ErrRejected: breaker, throttle,
//     bulkhead), are never retried;
//   - fewer than MaxAttempts tries were made;
//   - the delay fits before the caller's deadline. The delay is the
//     jittered backoff, or the answer's Retry-After (delta-seconds or an
//     HTTP-date, capped at MaxRetryAfter) when that is longer;
//   - the budget allows it.
//
// Otherwise the last answer or error is returned as it is. The response
// of a discarded try is drained (up to 4 KiB, so the connection can be
// reused) and closed.
//
// Each try carries a resilience.Attempt in its context: number, the
// endpoints that earlier tries failed on (the balancer's avoid list) and
// the last failure; and its own copy of the URL (Attempt.TryURL), which
// the balancer stage rewrites in place. Without a per-try timeout the
// layer allocates twice per request (the Attempt and the request copy);
// each retry adds its URL copy.
func New(p Policy, budget *Budget, opts Options) (func(next http.RoundTripper) http.RoundTripper, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	p = p.WithDefaults()
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Sleep == nil {
		opts.Sleep = backoff.Sleep
	}
	return func(next http.RoundTripper) http.RoundTripper {
		return &roundTripper{p: p, budget: budget, opts: opts, next: next}
	}, nil
}

type roundTripper struct {
	p      Policy
	budget *Budget
	opts   Options
	next   http.RoundTripper
}

func (rt *roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	if rt.budget != nil {
		rt.budget.Request()
	}
	parent := req.Context()
	ctx, a := resilience.NewAttempt(parent)
	idempotent := isIdempotent(req)
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	bo := backoff.Backoff{Base: rt.p.BaseDelay.D(), Max: rt.p.MaxDelay.D()}
	for n := 1; ; n++ {
		a.N, a.Endpoint = n, ""
		tryCtx := ctx
		if d := rt.p.PerTryTimeout.D(); d > 0 {
			var cancel context.CancelFunc
			tryCtx, cancel = context.WithTimeout(ctx, d)
			a.Defer(cancel)
		}
		try := req.WithContext(tryCtx)
		try.URL = a.TryURL(req.URL)
		if n > 1 && req.Body != nil && req.Body != http.NoBody {
			body, err := req.GetBody()
			if err != nil {
				a.Release()
				return nil, err
			}
			try.Body = body
		}
		resp, err := rt.next.RoundTrip(try)

		retry, status := false, 0
		switch {
		case err != nil:
			if parent.Err() == nil && !errors.Is(err, resilience.ErrRejected) {
				retry = idempotent || isDialError(err)
			}
		case slices.Contains(rt.p.RetryOn, resp.StatusCode):
			retry, status = idempotent, resp.StatusCode
		}
		if !retry || !replayable || n >= rt.p.MaxAttempts {
			return rt.finish(a, resp, err)
		}
		delay := bo.Next()
		if resp != nil {
			if ra, ok := retryAfter(resp.Header.Get("Retry-After"), rt.opts.Now()); ok {
				delay = max(delay, min(ra, rt.p.MaxRetryAfter.D()))
			}
		}
		if dl, ok := parent.Deadline(); ok && !rt.opts.Now().Add(delay).Before(dl) {
			return rt.finish(a, resp, err)
		}
		if rt.budget != nil && !rt.budget.TryRetry() {
			return rt.finish(a, resp, err)
		}
		if a.Endpoint != "" {
			a.Failed = append(a.Failed, a.Endpoint)
		}
		a.Err, a.Status = err, status
		if resp != nil {
			discard(resp.Body)
		}
		a.Release()
		if !rt.opts.Sleep(parent, delay) {
			return nil, parent.Err()
		}
	}
}

// finish hands the last try's result to the caller.
func (rt *roundTripper) finish(a *resilience.Attempt, resp *http.Response, err error) (*http.Response, error) {
	if err != nil {
		a.Release()
		return nil, err
	}
	a.HandOff(resp)
	return resp, nil
}

func discard(body io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, body, 4<<10)
	body.Close()
}

// isIdempotent reports whether the request may be sent twice: an
// idempotent method (RFC 9110 §9.2.2) or an Idempotency-Key header.
func isIdempotent(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace,
		http.MethodPut, http.MethodDelete:
		return true
	}
	return req.Header.Get(IdempotencyKeyHeader) != ""
}

// isDialError reports whether err means no connection was made, so the
// request never left the client.
func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// retryAfter parses a Retry-After value (RFC 9110 §10.2.3): delay-seconds
// or an HTTP-date, relative to now. A date in the past is a zero delay.
func retryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		if secs > int64(24*time.Hour/time.Second) { // past any sane cap; avoid overflow
			secs = int64(24 * time.Hour / time.Second)
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}
