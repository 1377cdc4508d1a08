package breaker

import (
	"context"
	"errors"
	"net/http"

	"github.com/meridian-platform/meridian/traffic/resilience"
)

// Admitter is what RoundTripper guards a request with: a *Breaker or a
// *Throttle.
type Admitter interface {
	Allow() (done func(ok bool), err error)
}

var (
	_ Admitter = (*Breaker)(nil)
	_ Admitter = (*Throttle)(nil)
)

// Classify reports whether a round trip failed, as the breaker counts it.
type Classify func(req *http.Request, resp *http.Response, err error) (failed bool)

// DefaultClassify counts as failures transport errors (a per-try timeout
// included) and the answers 429, 500, 502, 503 and 504. A request whose own
// context the caller canceled is not the upstream's fault and counts as a
// success; so does a request a layer below refused locally
// (resilience.ErrRejected: a rate limit, a full bulkhead), which never
// reached the upstream, and anything else the upstream answered, 4xx
// included.
func DefaultClassify(req *http.Request, resp *http.Response, err error) bool {
	if err != nil {
		if errors.Is(err, resilience.ErrRejected) {
			return false
		}
		return !errors.Is(err, context.Canceled) || req.Context().Err() == nil
	}
	switch resp.StatusCode {
	case http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// RoundTripper guards each round trip with a (a breaker or a throttle):
// a refused request fails at once with a's error (ErrOpen, ErrThrottled)
// and never reaches next; the outcome of the others, judged by classify
// (nil means DefaultClassify), is reported when next returns. It allocates
// nothing.
//
// The breaker belongs below the retry layer, so that it counts every try
// and a retry meets an open breaker at once.
func RoundTripper(a Admitter, classify Classify) func(next http.RoundTripper) http.RoundTripper {
	if classify == nil {
		classify = DefaultClassify
	}
	return func(next http.RoundTripper) http.RoundTripper {
		return &roundTripper{a: a, classify: classify, next: next}
	}
}

type roundTripper struct {
	a        Admitter
	classify Classify
	next     http.RoundTripper
}

func (rt *roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	done, err := rt.a.Allow()
	if err != nil {
		if req.Body != nil {
			req.Body.Close() // a RoundTripper must close the body, even on error
		}
		return nil, err
	}
	resp, err := rt.next.RoundTrip(req)
	done(!rt.classify(req, resp, err))
	return resp, err
}
