package resilience

import "net/http"

// Middleware decorates a RoundTripper. Every layer of this package and its
// subpackages has this shape.
type Middleware = func(next http.RoundTripper) http.RoundTripper

// Chain wraps next in the middlewares, the first being outermost: Chain(t,
// a, b) is a(b(t)). Build the chain once per upstream when its policy is
// loaded, never per request.
func Chain(next http.RoundTripper, mws ...Middleware) http.RoundTripper {
	for i := len(mws) - 1; i >= 0; i-- {
		if mws[i] != nil {
			next = mws[i](next)
		}
	}
	return next
}

// RoundTripperFunc adapts a function to http.RoundTripper.
type RoundTripperFunc func(*http.Request) (*http.Response, error)

func (f RoundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
