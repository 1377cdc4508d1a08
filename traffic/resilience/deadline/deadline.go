// Package deadline carries a request's deadline from caller to callee, so
// that a callee knows how long its caller still waits and stops working
// for a caller that has given up.
//
// The deadline lives in the context (context.WithTimeout or
// WithDeadline). Across HTTP it travels in one header:
//
//	Meridian-Timeout: 2500000u
//
// whose value (here 2.5s) is the time the caller still waits, written as
// gRPC writes its grpc-timeout header: 1 to 8 ASCII digits and a unit, H (hours),
// M (minutes), S (seconds), m (milliseconds), u (microseconds) or
// n (nanoseconds). Using gRPC's format means the sidecar can copy the value
// between HTTP and gRPC calls unchanged. Propagate writes the header on
// every outgoing try (below the retry layer, so each try carries what is
// left then, and a per-try timeout shortens it); Middleware reads it on
// the server and sets the request context's deadline, capped by the
// server's own maximum. A header that does not parse is ignored.
//
// Clocks need not agree: the value is relative. Network time in flight is
// not subtracted; a callee that wants slack subtracts its own.
//
// gRPC needs none of this: grpc-go writes grpc-timeout from the outgoing
// context's deadline and sets the deadline of the server handler's
// context from it, so a Meridian gRPC client or server gets propagation by
// passing contexts along.
package deadline

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/meridian-platform/meridian"
)

// Header is the HTTP header carrying the caller's remaining time.
const Header = "Meridian-Timeout"

var units = [...]struct {
	c byte
	d time.Duration
}{{'n', time.Nanosecond}, {'u', time.Microsecond}, {'m', time.Millisecond}, {'S', time.Second}, {'M', time.Minute}, {'H', time.Hour}}

const maxDigits = 99_999_999

// Format writes d in the header's format, in the finest unit that fits in
// 8 digits, rounded down (so a callee never believes it has more time
// than the caller gives). A d ≤ 0 is "0n".
func Format(d time.Duration) string {
	if d <= 0 {
		return "0n"
	}
	for _, u := range units {
		if v := d / u.d; v <= maxDigits {
			return strconv.FormatInt(int64(v), 10) + string(u.c)
		}
	}
	return strconv.FormatInt(int64(d/time.Hour), 10) + "H" // unreachable: 8 digits of hours exceed Duration
}

var errSyntax = errors.New("deadline: malformed timeout")

// Parse reads a value in the header's format.
func Parse(s string) (time.Duration, error) {
	if len(s) < 2 || len(s) > 9 {
		return 0, errSyntax
	}
	var unit time.Duration
	for _, u := range units {
		if s[len(s)-1] == u.c {
			unit = u.d
		}
	}
	if unit == 0 {
		return 0, errSyntax
	}
	var v int64
	for _, c := range []byte(s[:len(s)-1]) {
		if c < '0' || c > '9' {
			return 0, errSyntax
		}
		v = v*10 + int64(c-'0')
	}
	if v > int64((1<<63-1)/unit) {
		return 1<<63 - 1, nil
	}
	return time.Duration(v) * unit, nil
}

// Propagate writes the Header on each request whose context has a
// deadline, from the time left. It copies the request and its header
// first (a RoundTripper must not change the caller's request), which
// costs a few allocations, and only when there is a deadline. A request
// already past its deadline is not sent: Propagate fails it with
// context.DeadlineExceeded. Place it next to the transport, below retry.
func Propagate(next http.RoundTripper) http.RoundTripper {
	return propagate{next: next, now: time.Now}
}

type propagate struct {
	next http.RoundTripper
	now  func() time.Time
}

func (p propagate) RoundTrip(req *http.Request) (*http.Response, error) {
	dl, ok := req.Context().Deadline()
	if !ok {
		return p.next.RoundTrip(req)
	}
	left := dl.Sub(p.now())
	if left <= 0 {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, context.DeadlineExceeded
	}
	r := *req
	r.Header = req.Header.Clone()
	if r.Header == nil {
		r.Header = http.Header{}
	}
	r.Header.Set(Header, Format(left))
	return p.next.RoundTrip(&r)
}

// Timeout gives each request a deadline d from now unless its context
// already has a sooner one. Place it outermost, above retry, so that d
// bounds all tries and their backoff. The timer is stopped when the
// response body is closed.
func Timeout(d time.Duration) func(next http.RoundTripper) http.RoundTripper {
	return func(next http.RoundTripper) http.RoundTripper {
		return http.RoundTripper(timeout{d: d, next: next})
	}
}

type timeout struct {
	d    time.Duration
	next http.RoundTripper
}

func (t timeout) RoundTrip(req *http.Request) (*http.Response, error) {
	if dl, ok := req.Context().Deadline(); ok && time.Until(dl) <= t.d {
		return t.next.RoundTrip(req)
	}
	ctx, cancel := context.WithTimeout(req.Context(), t.d)
	resp, err := t.next.RoundTrip(req.WithContext(ctx))
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		cancel() // the deadline covered the handshake; the upgraded connection is the caller's
		return resp, nil
	}
	resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// MiddlewareConfig bounds the deadlines a server accepts.
type MiddlewareConfig struct {
	// Max caps the deadline a caller may ask for, and is the deadline of
	// a request without the header. Zero: no cap, and no deadline for
	// requests without the header.
	Max meridian.Duration `json:"max,omitempty"`
}

// Middleware sets each request's context deadline from its Header (and
// cfg.Max). A header that does not parse is ignored. The handler sees an
// already expired context if the caller's time ran out on the way; it
// should stop at once.
func Middleware(cfg MiddlewareConfig) func(next http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			d, ok := cfg.Max.D(), cfg.Max > 0
			if v := r.Header.Get(Header); v != "" {
				if h, err := Parse(v); err == nil && (!ok || h < d) {
					d, ok = h, true
				}
			}
			if !ok {
				next.ServeHTTP(w, r)
				return
			}
			ctx, cancel := context.WithTimeout(r.Context(), d)
			defer cancel()
			next.ServeHTTP(w, r.WithContext(ctx))
		})
	}
}
