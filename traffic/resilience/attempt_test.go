package resilience

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestAttemptDeferredRunOnceAtBodyClose(t *testing.T) {
	ctx, a := NewAttempt(context.Background())
	if AttemptFrom(ctx) != a || AttemptFrom(context.Background()) != nil {
		t.Fatal("AttemptFrom does not find the Attempt")
	}
	var order []int
	for i := range 5 { // more than the inline slots
		a.Defer(func() { order = append(order, i) })
	}
	resp := &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader("x"))}
	a.HandOff(resp)
	if len(order) != 0 {
		t.Fatal("ran before Close")
	}
	resp.Body.Close()
	resp.Body.Close()
	if got := len(order); got != 5 || order[0] != 4 || order[4] != 0 {
		t.Fatalf("ran %v, want 4 3 2 1 0 once", order)
	}
}

func TestAttemptReleaseAndUpgrade(t *testing.T) {
	_, a := NewAttempt(context.Background())
	n := 0
	a.Defer(func() { n++ })
	a.Release()
	a.Release()
	if n != 1 {
		t.Fatalf("Release ran %d times", n)
	}
	a.Defer(func() { n++ })
	body := struct{ io.ReadWriteCloser }{}
	resp := &http.Response{StatusCode: http.StatusSwitchingProtocols, Body: body}
	a.HandOff(resp)
	if n != 2 || resp.Body != io.ReadCloser(body) {
		t.Fatal("a 101 body must be left as is and the try released")
	}
}

func TestChainOrder(t *testing.T) {
	var trace []string
	mw := func(name string) Middleware {
		return func(next http.RoundTripper) http.RoundTripper {
			return RoundTripperFunc(func(r *http.Request) (*http.Response, error) {
				trace = append(trace, name)
				return next.RoundTrip(r)
			})
		}
	}
	rt := Chain(RoundTripperFunc(func(*http.Request) (*http.Response, error) {
		trace = append(trace, "transport")
		return nil, nil
	}), mw("a"), nil, mw("b"))
	rt.RoundTrip(nil)
	if strings.Join(trace, ",") != "a,b,transport" {
		t.Fatalf("trace %v", trace)
	}
}
