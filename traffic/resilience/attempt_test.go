package resilience

import (
	"context"
	"io"
	"net/http"
	"net/url"
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

// Each try gets its own URL: the first from inside the Attempt, at no
// allocation, later ones fresh; the caller's is never the try's.
func TestTryURLBelongsToTheTry(t *testing.T) {
	orig, _ := url.Parse("http://orders/v1/orders/42?x=1")
	_, a := NewAttempt(context.Background())
	if a.OwnsURL(orig) || a.OwnsURL(nil) {
		t.Fatal("owns a URL before the first try")
	}
	var first *url.URL
	if n := testing.AllocsPerRun(10, func() { a.url = nil; first = a.TryURL(orig) }); n != 0 {
		t.Fatalf("the first try's URL allocates %v times", n)
	}
	if first == orig || *first != *orig || !a.OwnsURL(first) || a.OwnsURL(orig) {
		t.Fatalf("first try's URL %v (same pointer: %v)", first, first == orig)
	}
	first.Host = "10.0.0.1:8080"
	second := a.TryURL(orig)
	if second == first || second.Host != "orders" || !a.OwnsURL(second) || a.OwnsURL(first) {
		t.Fatalf("second try's URL %v; owns first: %v", second, a.OwnsURL(first))
	}
	if first.Host != "10.0.0.1:8080" || orig.Host != "orders" {
		t.Fatal("a later try changed an earlier try's URL or the caller's")
	}
}
