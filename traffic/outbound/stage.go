package outbound

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/traffic/balance"
	"github.com/meridian-platform/meridian/traffic/ratelimit"
	"github.com/meridian-platform/meridian/traffic/resilience"
)

// BalanceOptions configure the balancer stage. The zero value works.
type BalanceOptions struct {
	// Source is waited on, within the request's context, when the
	// balancer has no instance list yet (the first request to a service,
	// before Transport.Run's follower has caught up), and the list it
	// returns is applied. Nil: such a request fails at once with
	// balance.ErrNoEndpoints.
	Source balance.Source
	// Hash computes the request's affinity key for ring hash
	// (balance.Request.Hash). Nil: 0, no key.
	Hash func(*http.Request) uint64
}

// Balance is the balancer stage of the client chain: it sends each try of
// a request for http://<service>/… to an instance of the service picked by
// b, rewriting the URL's host to the instance's host:port (the Host header
// keeps the service name, as a mesh keeps the authority). It sits between
// the per-upstream layers (retry, breaker, bulkhead) and the per-endpoint
// ones (outlier recording, deadline propagation):
//
//   - it avoids the endpoints earlier tries of the request failed on
//     (resilience.Attempt.Failed, the last of them above all), so a retry
//     goes to another instance whenever one exists;
//   - it records the endpoint it picked in Attempt.Endpoint, which the
//     outlier recorder and the next try read;
//   - it reports the try's outcome to the balancer (Picked.Done) when the
//     response headers arrive: a transport error or a 5xx answer is a
//     failure, which never lowers the endpoint's latency estimate, and a
//     try the caller canceled (context.Canceled) is not counted at all.
//
// Under a retry layer the try's own URL (Attempt.TryURL) is rewritten in
// place and the stage allocates nothing; without one it copies the request
// and its URL. A request that finds no endpoint fails with the balancer's
// error, a *meridian.Error with CodeUnavailable wrapping
// balance.ErrNoEndpoints.
func Balance(b *balance.Balancer, opts BalanceOptions) resilience.Middleware {
	return func(next http.RoundTripper) http.RoundTripper {
		return &stage{b: b, src: opts.Source, hash: opts.Hash, next: next}
	}
}

type stage struct {
	b    *balance.Balancer
	src  balance.Source
	hash func(*http.Request) uint64
	next http.RoundTripper
}

// errServerError is what Picked.Done is told of a 5xx answer.
var errServerError = errors.New("outbound: the endpoint answered 5xx")

func (s *stage) RoundTrip(req *http.Request) (*http.Response, error) {
	a := resilience.AttemptFrom(req.Context())
	var br balance.Request
	if s.hash != nil {
		br.Hash = s.hash(req)
	}
	if a != nil && len(a.Failed) > 0 {
		br.AvoidIDs = a.Failed
		br.Avoid = s.b.Endpoint(a.Failed[len(a.Failed)-1])
	}
	p, err := s.b.Pick(br)
	if err != nil && s.src != nil && errors.Is(err, balance.ErrNoEndpoints) {
		p, err = s.await(req.Context(), br)
	}
	if err != nil {
		closeBody(req)
		return nil, err
	}
	e := p.Endpoint()
	out := req
	if a != nil {
		a.Endpoint = e.ID()
	}
	if a != nil && a.OwnsURL(req.URL) {
		req.URL.Host = e.Addr()
	} else {
		r := *req
		u := *req.URL
		u.Host = e.Addr()
		r.URL = &u
		out = &r
	}
	resp, err := s.next.RoundTrip(out)
	switch {
	case err != nil:
		p.Done(err)
	case resp.StatusCode >= 500:
		p.Done(errServerError)
	default:
		p.Done(nil)
	}
	return resp, err
}

// await waits for the service's first instance list, applies it and
// picks again.
func (s *stage) await(ctx context.Context, br balance.Request) (balance.Picked, error) {
	snap, err := s.src.Wait(ctx, s.b.Service())
	if err != nil {
		return balance.Picked{}, err
	}
	s.b.Update(snap)
	return s.b.Pick(br)
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close() // a RoundTripper closes the body, even on error
	}
}

// RateLimit is the client-side rate limit stage: each try takes one unit
// of l under key (the upstream's name), and a try over the limit fails at
// once, never reaching the upstream, with a *meridian.Error of
// CodeRateLimited carrying the limiter's RetryAfter and wrapping
// resilience.ErrRejected (so it is not retried). A limiter that cannot
// decide (a remote store down under FailClosed) fails the try with its
// error, which also wraps ErrRejected. It allocates nothing for a try it
// lets through (with ratelimit.Local).
func RateLimit(l ratelimit.Limiter, key string) resilience.Middleware {
	return func(next http.RoundTripper) http.RoundTripper {
		return &limitStage{l: l, key: key, next: next}
	}
}

type limitStage struct {
	l    ratelimit.Limiter
	key  string
	next http.RoundTripper
}

func (s *limitStage) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := allow(req.Context(), s.l, s.key); err != nil {
		closeBody(req)
		return nil, err
	}
	return s.next.RoundTrip(req)
}

// allow takes one unit of l under key, or says why not: a
// CodeRateLimited error, or the limiter's own; both wrap
// resilience.ErrRejected.
func allow(ctx context.Context, l ratelimit.Limiter, key string) error {
	d, err := l.Allow(ctx, key, 1)
	switch {
	case err != nil:
		return fmt.Errorf("%w (%w)", err, resilience.ErrRejected)
	case !d.Allowed:
		return &meridian.Error{
			Code:       meridian.CodeRateLimited,
			Message:    fmt.Sprintf("client-side rate limit of calls to %s (%s) reached", key, d.Limit),
			RetryAfter: d.RetryAfter,
			Err:        resilience.ErrRejected,
		}
	}
	return nil
}
