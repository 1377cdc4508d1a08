package outbound_test

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/traffic/balance"
	"github.com/meridian-platform/meridian/traffic/discovery"
	"github.com/meridian-platform/meridian/traffic/outbound"
	"github.com/meridian-platform/meridian/traffic/resilience"
	"github.com/meridian-platform/meridian/traffic/resilience/retry"
)

// These tests look at the balancer stage alone, in front of a transport
// that answers from a script and moves a fake clock, so that what the
// stage reports to the balancer can be seen exactly. The tests through the
// network are in transport_test.go.

type clock struct{ ns atomic.Int64 }

func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func stageBalancer(t *testing.T, clk *clock, ids ...string) *balance.Balancer {
	t.Helper()
	b, err := balance.New("orders", balance.Config{Policy: balance.PeakEWMA, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	var in []*meridian.Instance
	for i, id := range ids {
		in = append(in, &meridian.Instance{Service: "orders", ID: id, Address: "10.0.0.1", Port: 8080 + i})
	}
	b.Update(&discovery.Snapshot{Service: "orders", Instances: in})
	return b
}

// answer is a transport that takes d on the fake clock and answers code
// (0: fails with err).
func answer(clk *clock, d time.Duration, code int, err error, seen *[]string) http.RoundTripper {
	return resilience.RoundTripperFunc(func(r *http.Request) (*http.Response, error) {
		*seen = append(*seen, r.URL.Host+" host="+r.Host)
		clk.Advance(d)
		if code == 0 {
			return nil, err
		}
		return &http.Response{StatusCode: code, Body: http.NoBody, Request: r}, nil
	})
}

// Without a retry layer the stage copies the request: the caller's URL
// stays; the try goes to the instance's host:port with the service's name
// as Host; Done is called (nothing left in flight).
func TestBalanceRewritesTheHost(t *testing.T) {
	clk := &clock{}
	b := stageBalancer(t, clk, "a")
	var seen []string
	rt := outbound.Balance(b, outbound.BalanceOptions{})(answer(clk, time.Millisecond, 200, nil, &seen))
	req, _ := http.NewRequest("GET", "http://orders/v1/x?q=1", nil)
	resp, err := rt.RoundTrip(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("RoundTrip: %v, %v", resp, err)
	}
	if len(seen) != 1 || seen[0] != "10.0.0.1:8080 host=orders" || req.URL.Host != "orders" {
		t.Fatalf("sent %v; the caller's URL is %s", seen, req.URL)
	}
	if n := b.Endpoint("a").InFlight(); n != 0 {
		t.Fatalf("%d requests left in flight", n)
	}
}

// What the balancer learns from a try: a 5xx answer or a transport error
// is a failure, which never lowers the latency estimate however fast it
// came; a try the caller canceled is not counted.
func TestBalanceReportsTheOutcome(t *testing.T) {
	clk := &clock{}
	clk.Advance(time.Hour)
	b := stageBalancer(t, clk, "a")
	e := b.Endpoint("a")
	send := func(d time.Duration, code int, err error) {
		var seen []string
		rt := outbound.Balance(b, outbound.BalanceOptions{})(answer(clk, d, code, err, &seen))
		req, _ := http.NewRequest("GET", "http://orders/", nil)
		if resp, _ := rt.RoundTrip(req); resp != nil {
			resp.Body.Close()
		}
	}
	send(100*time.Millisecond, 200, nil)
	base := e.Latency()
	if base < 90*time.Millisecond {
		t.Fatalf("estimate %v after a 100ms answer", base)
	}
	send(time.Millisecond, 503, nil)
	send(time.Millisecond, 0, errors.New("connection reset"))
	if got := e.Latency(); got < base-time.Millisecond {
		t.Fatalf("fast failures lowered the estimate from %v to %v", base, got)
	}
	send(10*time.Second, 0, context.Canceled)
	if got := e.Latency(); got > base+time.Millisecond {
		t.Fatalf("a canceled try moved the estimate from %v to %v", base, got)
	}
	if e.InFlight() != 0 {
		t.Fatalf("%d in flight", e.InFlight())
	}
}

// Under the retry layer the stage rewrites the try's own URL in place,
// avoids every endpoint the request already failed on, and names the
// endpoint of each try in the Attempt.
func TestBalanceAvoidsWhatFailed(t *testing.T) {
	clk := &clock{}
	b := stageBalancer(t, clk, "a", "b", "c")
	var hosts, endpoints []string
	next := resilience.RoundTripperFunc(func(r *http.Request) (*http.Response, error) {
		a := resilience.AttemptFrom(r.Context())
		hosts = append(hosts, r.URL.Host)
		endpoints = append(endpoints, a.Endpoint)
		return &http.Response{StatusCode: 503, Body: http.NoBody, Request: r}, nil
	})
	retryMW, err := retry.New(retry.Policy{MaxAttempts: 3, BaseDelay: meridian.Duration(time.Microsecond), MaxDelay: meridian.Duration(time.Microsecond)}, nil, retry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rt := resilience.Chain(next, retryMW, outbound.Balance(b, outbound.BalanceOptions{}))
	for range 20 {
		hosts, endpoints = nil, nil
		req, _ := http.NewRequest("GET", "http://orders/", nil)
		resp, err := rt.RoundTrip(req)
		if err != nil || resp.StatusCode != 503 {
			t.Fatalf("RoundTrip: %v, %v", resp, err)
		}
		resp.Body.Close()
		if len(endpoints) != 3 || endpoints[0] == endpoints[1] || endpoints[1] == endpoints[2] || endpoints[0] == endpoints[2] {
			t.Fatalf("three tries went to %v, want three different endpoints", endpoints)
		}
		for i, h := range hosts {
			if want := b.Endpoint(endpoints[i]).Addr(); h != want {
				t.Fatalf("try %d went to %s, the endpoint %s is at %s", i, h, endpoints[i], want)
			}
		}
		if req.URL.Host != "orders" {
			t.Fatalf("the caller's URL changed: %s", req.URL)
		}
	}
}

// The chain through the stage allocates what the retry layer does and
// nothing more.
func TestBalanceAllocatesNothingUnderRetry(t *testing.T) {
	clk := &clock{}
	b := stageBalancer(t, clk, "a", "b")
	resp := &http.Response{StatusCode: 200, Body: http.NoBody}
	next := resilience.RoundTripperFunc(func(r *http.Request) (*http.Response, error) { return resp, nil })
	retryMW, _ := retry.New(retry.Policy{}, nil, retry.Options{})
	withStage := resilience.Chain(next, retryMW, outbound.Balance(b, outbound.BalanceOptions{}))
	without := resilience.Chain(next, retryMW)
	req, _ := http.NewRequest("GET", "http://orders/", nil)
	measure := func(rt http.RoundTripper) float64 {
		return testing.AllocsPerRun(200, func() {
			r, err := rt.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			r.Body.Close()
		})
	}
	if a, b := measure(withStage), measure(without); a != b {
		t.Fatalf("with the stage %v allocs per request, without %v", a, b)
	}
}
