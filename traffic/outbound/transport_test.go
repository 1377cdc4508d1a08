package outbound_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/traffic/balance"
	"github.com/meridian-platform/meridian/traffic/resilience"
	"github.com/meridian-platform/meridian/traffic/resilience/breaker"
)

// A request for http://<service>/ reaches an instance of the service, the
// Host header keeping the service name; a retry of a failed try goes to
// the other instance; plain URLs bypass the data path.
func TestRoutesByNameAndRetriesElsewhere(t *testing.T) {
	h := start(t, "")
	a := h.instance("orders", "a")
	h.instance("orders", "b")
	h.waitServed("orders", "a", "b")

	// Each instance answers; the Host header is the service's name.
	seen := map[string]bool{}
	for range 50 {
		req, _ := http.NewRequest("GET", "http://orders/x?y=1", nil)
		resp, err := h.client.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET: %v, %v", resp, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		seen[string(body)] = true
		if req.URL.Host != "orders" {
			t.Fatalf("the caller's URL was changed to %s", req.URL)
		}
	}
	if !seen["a"] || !seen["b"] {
		t.Fatalf("answered by %v, want both instances", seen)
	}

	// a fails everything: every request still succeeds, on b, and a gets
	// each request at most once (its retry goes to b).
	a.failing.Store(true)
	before := a.received.Load()
	for i := range 20 {
		if code, err := h.get("orders"); err != nil || code != 200 {
			t.Fatalf("request %d with a failing: %d, %v", i, code, err)
		}
	}
	if n := a.received.Load() - before; n > 20 {
		t.Fatalf("a received %d tries for 20 requests: a retry went back to it", n)
	}
}

// Only a URL whose host is a service name goes through the data path.
func TestOtherURLsGoStraightToTheBase(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { n.Add(1) }))
	defer srv.Close()
	h := start(t, "")
	if code, err := h.getURL(srv.URL); err != nil || code != 200 || n.Load() != 1 {
		t.Fatalf("GET %s: %d, %v", srv.URL, code, err)
	}
}

// A service with no serving instance answers 503 (CodeUnavailable
// wrapping balance.ErrNoEndpoints), without waiting past the first list.
func TestNoInstancesIsUnavailable(t *testing.T) {
	h := start(t, `default: {retry: none}`)
	_, err := h.get("nobody")
	if !errors.Is(err, balance.ErrNoEndpoints) || !meridian.IsCode(err, meridian.CodeUnavailable) {
		t.Fatalf("GET http://nobody/: %v", err)
	}
}

// A 10× slower instance gets under 10% of the traffic under peak EWMA,
// soon after it turns slow; round robin, for contrast, gives it its third.
func TestSlowInstanceIsAvoided(t *testing.T) {
	if testing.Short() {
		t.Skip("seconds of load")
	}
	const fast, slow = 5 * time.Millisecond, 50 * time.Millisecond
	h := start(t, `policies: {balancers: {rr: {policy: round_robin}}}
targets: {rr: {balancer: rr}}`)
	for _, svc := range []string{"ewma", "rr"} {
		for _, id := range []string{"a", "b", "c"} {
			in := h.instance(svc, id)
			in.delay.Store(int64(fast))
			if id == "c" {
				in.delay.Store(int64(slow))
			}
		}
		h.waitServed(svc, "a", "b", "c")
	}
	share := func(svc string) float64 {
		counts := map[string]int{}
		var mu sync.Mutex
		load := func(d time.Duration, count bool) {
			var wg sync.WaitGroup
			stop := time.Now().Add(d)
			for range 8 {
				wg.Go(func() {
					for time.Now().Before(stop) {
						resp, err := h.client.Get("http://" + svc + "/")
						if err != nil {
							t.Error(err)
							return
						}
						id := resp.Header.Get("X-Instance")
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if count {
							mu.Lock()
							counts[id]++
							mu.Unlock()
						}
					}
				})
			}
			wg.Wait()
		}
		load(time.Second, false) // warm-up: the balancer learns the latencies
		load(2*time.Second, true)
		total := counts["a"] + counts["b"] + counts["c"]
		t.Logf("%s: %v", svc, counts)
		return float64(counts["c"]) / float64(total)
	}
	if s := share("ewma"); s >= 0.10 {
		t.Errorf("peak EWMA gave the 10× slower instance %.1f%% of requests, want under 10%%", 100*s)
	}
	if s := share("rr"); s < 0.25 {
		t.Errorf("round robin gave the slow instance %.1f%%; the load does not tell the policies apart", 100*s)
	}
}

// A full outage: the breaker opens within its threshold, then fails fast
// (nothing reaches the network), and once the instance is back recovers
// through half-open.
func TestFullOutageOpensTheBreakerAndRecovers(t *testing.T) {
	h := start(t, `policies:
  retries: {quick: {max_attempts: 2, base_delay: 1ms, max_delay: 2ms}}
  circuit_breakers: {b: {consecutive_failures: 4, open_for: 200ms, open_for_growth: 1, close_after: 2}}
default: {retry: quick, circuit_breaker: b, outlier_detector: none}`)
	in := h.instance("orders", "a")
	h.waitServed("orders", "a")
	if code, err := h.get("orders"); err != nil || code != 200 {
		t.Fatalf("healthy: %d, %v", code, err)
	}
	br := h.upstream("orders").Breaker()
	in.kill()
	var opened bool
	for i := 0; i < 10 && !opened; i++ {
		_, err := h.get("orders")
		if err == nil {
			t.Fatal("a request succeeded during the outage")
		}
		opened = isOpen(err)
	}
	if !opened || br.State() != breaker.Open {
		t.Fatalf("the breaker did not open within 10 requests (state %v)", br.State())
	}
	for range 20 {
		if _, err := h.get("orders"); !isOpen(err) || !meridian.IsCode(err, meridian.CodeUnavailable) {
			t.Fatalf("open breaker answered %v", err)
		}
	}
	in.restart()
	eventually(t, "the breaker to close through half-open", func() bool {
		code, err := h.get("orders")
		return err == nil && code == 200 && br.State() == breaker.Closed
	})
}

// An instance answering 503 with Retry-After to everything: the tries
// that reach it stay within the retry budget (counted at the instance),
// the client waits what Retry-After asks, and the breaker, judging by
// error rate, opens and later recovers through half-open.
func TestRetriesStayWithinTheBudget(t *testing.T) {
	h := start(t, `policies:
  retries: {five: {max_attempts: 5, base_delay: 1ms, max_delay: 1ms, budget: {ratio: 0.2, min_per_second: -1}}}
  circuit_breakers: {off: {consecutive_failures: 10000}}
default: {retry: five, circuit_breaker: off, outlier_detector: none}`)
	in := h.instance("orders", "a")
	h.waitServed("orders", "a")
	// Requests first, so the budget has a base: 100 successes.
	for range 100 {
		if code, err := h.get("orders"); err != nil || code != 200 {
			t.Fatalf("healthy: %d, %v", code, err)
		}
	}
	in.failing.Store(true)
	in.after.Store("0")
	before := in.received.Load()
	for range 100 {
		if code, err := h.get("orders"); err != nil || code != 503 {
			t.Fatalf("failing: %d, %v", code, err)
		}
	}
	// 200 requests in the window allow 0.2 × 200 = 40 retries, whatever
	// the 5 attempts would ask (400).
	tries := in.received.Load() - before
	stats := h.upstream("orders").Budget().Stats()
	t.Logf("100 failing requests: %d tries at the instance; budget %+v", tries, stats)
	if tries > 100+40 || stats.Allowed > 40 {
		t.Fatalf("%d tries reached the instance for 100 requests (%d retries allowed): over the 20%% budget", tries, stats.Allowed)
	}
	if stats.Denied == 0 {
		t.Fatal("the budget denied nothing")
	}

	// Retry-After is honoured: a retry waits what it asks.
	h.apply(`policies:
  retries: {two: {max_attempts: 2, base_delay: 1ms, max_delay: 1ms}}
default: {retry: two, outlier_detector: none}`)
	in.after.Store("1")
	begin := time.Now()
	if code, err := h.get("orders"); err != nil || code != 503 {
		t.Fatalf("with Retry-After: %d, %v", code, err)
	}
	if took := time.Since(begin); took < time.Second {
		t.Fatalf("the retry came after %v; Retry-After asked for 1s", took)
	}
}

// A flapping instance: each failing spell opens an error-rate breaker, it
// fails fast while open, and each healthy spell closes it through
// half-open.
func TestFlappingInstance(t *testing.T) {
	h := start(t, `policies:
  circuit_breakers: {rate: {mode: error_rate, failure_rate: 0.5, min_requests: 10, open_for: 100ms, open_for_growth: 1, close_after: 3}}
default: {retry: none, circuit_breaker: rate, outlier_detector: none}`)
	in := h.instance("orders", "a")
	h.waitServed("orders", "a")
	br := h.upstream("orders").Breaker()
	for cycle := range 3 {
		in.failing.Store(true)
		before := in.received.Load()
		opened := false
		for i := 0; i < 30 && !opened; i++ {
			_, err := h.get("orders")
			opened = isOpen(err)
		}
		if !opened {
			t.Fatalf("cycle %d: the breaker did not open", cycle)
		}
		if n := in.received.Load() - before; n > 10 {
			t.Fatalf("cycle %d: %d failing requests before it opened, want at most its 10", cycle, n)
		}
		before = in.received.Load()
		for range 20 {
			if _, err := h.get("orders"); !isOpen(err) {
				t.Fatalf("cycle %d: let a request through while open: %v", cycle, err)
			}
		}
		if n := in.received.Load() - before; n != 0 {
			t.Fatalf("cycle %d: %d requests reached the instance while open", cycle, n)
		}
		in.failing.Store(false)
		eventually(t, "the breaker to close", func() bool {
			_, _ = h.get("orders")
			return br.State() == breaker.Closed
		})
	}
}

// The outlier detector's ejections reach the balancer: an instance
// answering 503 is ejected after its consecutive gateway failures and gets
// no more first tries; a reload that replaces the detector returns it to
// service.
func TestOutlierEjectionReachesTheBalancer(t *testing.T) {
	h := start(t, `policies:
  outlier_detectors: {quick: {consecutive_gateway_failure: 2, base_ejection_time: 1m}}
default: {outlier_detector: quick}`)
	a := h.instance("orders", "a")
	h.instance("orders", "b")
	h.instance("orders", "c")
	h.waitServed("orders", "a", "b", "c")
	a.failing.Store(true)
	b := h.upstream("orders").Balancer()
	eventually(t, "a to be ejected", func() bool {
		if code, err := h.get("orders"); err != nil || code != 200 {
			t.Fatalf("GET: %d, %v", code, err)
		}
		return b.Endpoint("a").Ejected()
	})
	before := a.received.Load()
	for range 30 {
		if code, err := h.get("orders"); err != nil || code != 200 {
			t.Fatalf("GET: %d, %v", code, err)
		}
	}
	if n := a.received.Load() - before; n != 0 {
		t.Fatalf("the ejected instance received %d requests", n)
	}
	h.apply(`policies:
  outlier_detectors: {slow: {consecutive_gateway_failure: 50}}
default: {outlier_detector: slow}`)
	if b.Endpoint("a").Ejected() {
		t.Fatal("a new detector starts from its own view: a should be back in service")
	}
}

// A client-side rate limit refuses the calls over it locally, with
// CodeRateLimited and a Retry-After, never reaching the upstream and never
// retried.
func TestRateLimitFailsFastLocally(t *testing.T) {
	h := start(t, `policies:
  rate_limits: {few: {rate: 5, period: 1h}}
targets: {orders: {rate_limit: few}}`)
	in := h.instance("orders", "a")
	h.waitServed("orders", "a")
	ok, limited := 0, 0
	for range 20 {
		code, err := h.get("orders")
		switch {
		case err == nil && code == 200:
			ok++
		case meridian.IsCode(err, meridian.CodeRateLimited) && errors.Is(err, resilience.ErrRejected):
			var me *meridian.Error
			if !errors.As(err, &me) || me.RetryAfter <= 0 {
				t.Fatalf("no Retry-After in %v", err)
			}
			limited++
		default:
			t.Fatalf("GET: %d, %v", code, err)
		}
	}
	if ok != 5 || limited != 15 || in.received.Load() != 5 {
		t.Fatalf("%d allowed, %d limited, %d received; want 5, 15, 5", ok, limited, in.received.Load())
	}
}
