package resilience_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/traffic/resilience"
	"github.com/meridian-platform/meridian/traffic/resilience/breaker"
	"github.com/meridian-platform/meridian/traffic/resilience/bulkhead"
	"github.com/meridian-platform/meridian/traffic/resilience/retry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// upstream is a real HTTP server on 127.0.0.1 whose behaviour the test
// switches, and that counts the requests it received. It can be stopped
// and started again on the same address (a full outage).
type upstream struct {
	t        *testing.T
	addr     string
	srv      *httptest.Server
	failing  atomic.Bool  // answer 503 instead of 200
	failNext atomic.Int64 // answer 503 to this many more requests
	after    atomic.Value // Retry-After value for the 503s ("" for none)
	received atomic.Int64 // requests that reached the handler
	mu       sync.Mutex
	arrivals []time.Time
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{t: t}
	u.after.Store("")
	u.start("127.0.0.1:0")
	t.Cleanup(u.stop)
	return u
}

func (u *upstream) start(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		u.t.Fatalf("listen %s: %v", addr, err)
	}
	u.addr = ln.Addr().String()
	u.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.received.Add(1)
		u.mu.Lock()
		u.arrivals = append(u.arrivals, time.Now())
		u.mu.Unlock()
		if u.failing.Load() || u.failNext.Add(-1) >= 0 {
			if v := u.after.Load().(string); v != "" {
				w.Header().Set("Retry-After", v)
			}
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok")
	}))
	u.srv.Listener.Close()
	u.srv.Listener = ln
	u.srv.Start()
}

func (u *upstream) stop() {
	if u.srv != nil {
		u.srv.Close()
		u.srv = nil
	}
}

func (u *upstream) url() string { return "http://" + u.addr + "/" }

// dialCounter counts the round trips that reach the transport, connection
// refused included (the upstream cannot count those).
type dialCounter struct {
	next http.RoundTripper
	n    atomic.Int64
}

func (d *dialCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	d.n.Add(1)
	return d.next.RoundTrip(r)
}

type chain struct {
	client    *http.Client
	breaker   *breaker.Breaker
	budget    *retry.Budget
	transport *dialCounter
	mu        sync.Mutex
	states    []string
}

func (c *chain) transitions() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.states...)
}

// newChain assembles the documented order: retry(budget) → breaker →
// bulkhead → transport.
func newChain(t *testing.T, bc breaker.Config, p retry.Policy, budget retry.BudgetConfig) *chain {
	t.Helper()
	c := &chain{}
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	t.Cleanup(tr.CloseIdleConnections)
	c.transport = &dialCounter{next: tr}
	var err error
	c.breaker, err = breaker.New(bc, breaker.Options{OnStateChange: func(tr breaker.Transition) {
		c.mu.Lock()
		c.states = append(c.states, tr.To.String())
		c.mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	c.budget, err = retry.NewBudget(budget, retry.BudgetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rt, err := retry.New(p, c.budget, retry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	bh, err := bulkhead.New(bulkhead.Config{MaxConcurrent: 32, MaxQueue: 64, QueueTimeout: meridian.Duration(time.Second)}, bulkhead.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c.client = &http.Client{Transport: resilience.Chain(c.transport,
		rt,
		breaker.RoundTripper(c.breaker, nil),
		bulkhead.RoundTripper(bh),
	)}
	return c
}

func (c *chain) get(t *testing.T, url string) (int, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// A full outage: connections refused. The breaker opens after its
// consecutive failures, then fails fast without touching the network;
// when the upstream is back it recovers through half-open.
func TestFullOutage(t *testing.T) {
	u := newUpstream(t)
	c := newChain(t,
		breaker.Config{ConsecutiveFailures: 5, OpenFor: meridian.Duration(200 * time.Millisecond), CloseAfter: 2},
		retry.Policy{MaxAttempts: 3, BaseDelay: meridian.Duration(time.Millisecond), MaxDelay: meridian.Duration(5 * time.Millisecond)},
		retry.BudgetConfig{})
	for range 10 {
		if code, err := c.get(t, u.url()); err != nil || code != 200 {
			t.Fatalf("healthy upstream: %d, %v", code, err)
		}
	}

	addr := u.addr
	u.stop()
	before := c.transport.n.Load()
	opened := false
	for i := 0; i < 10 && !opened; i++ {
		_, err := c.get(t, u.url())
		if err == nil {
			t.Fatal("a request succeeded during the outage")
		}
		opened = errors.Is(err, breaker.ErrOpen)
	}
	if !opened {
		t.Fatal("the breaker did not open within 10 requests of a full outage")
	}
	// Open within its threshold: 5 failed tries (retries included) and
	// none after.
	if tries := c.transport.n.Load() - before; tries != 5 {
		t.Fatalf("%d tries reached the transport before the breaker opened, want 5", tries)
	}

	// Open: fail fast, nothing reaches the transport.
	before = c.transport.n.Load()
	for range 50 {
		_, err := c.get(t, u.url())
		if !errors.Is(err, breaker.ErrOpen) || !meridian.IsCode(err, meridian.CodeUnavailable) {
			t.Fatalf("open breaker answered %v", err)
		}
	}
	if n := c.transport.n.Load() - before; n != 0 {
		t.Fatalf("%d requests reached the transport through an open breaker", n)
	}

	// Back up on the same address; after the open time, probes close it.
	u.start(addr)
	time.Sleep(250 * time.Millisecond)
	for i := range 5 {
		if code, err := c.get(t, u.url()); err != nil || code != 200 {
			t.Fatalf("request %d after recovery: %d, %v", i, code, err)
		}
	}
	if s := c.breaker.State(); s != breaker.Closed {
		t.Fatalf("breaker %v after recovery", s)
	}
	want := []string{"open", "half-open", "closed"}
	if got := c.transitions(); !equal(got, want) {
		t.Fatalf("transitions %v, want %v", got, want)
	}
}

// A flapping upstream, judged by error rate: each failing spell opens the
// breaker within MinRequests failed tries, it fails fast while open, and
// each healthy spell closes it again through half-open.
func TestFlappingUpstream(t *testing.T) {
	u := newUpstream(t)
	c := newChain(t,
		breaker.Config{Mode: breaker.ModeErrorRate, FailureRate: 0.5, MinRequests: 10,
			Window: meridian.Duration(10 * time.Second), OpenFor: meridian.Duration(100 * time.Millisecond), OpenForGrowth: 1, CloseAfter: 3},
		retry.Policy{MaxAttempts: 1},
		retry.BudgetConfig{})
	for cycle := range 3 {
		u.failing.Store(true)
		before := u.received.Load()
		opened := false
		for i := 0; i < 20 && !opened; i++ {
			code, err := c.get(t, u.url())
			opened = errors.Is(err, breaker.ErrOpen)
			if !opened && code != 503 {
				t.Fatalf("cycle %d: %d, %v", cycle, code, err)
			}
		}
		if !opened {
			t.Fatalf("cycle %d: the breaker did not open", cycle)
		}
		// Opens as soon as the window holds MinRequests outcomes at a
		// 50% failure rate: the first cycle after exactly 10 failures,
		// later ones sooner, since the successes after the last close
		// count in the window too.
		if n := u.received.Load() - before; n > 10 || n < 5 {
			t.Fatalf("cycle %d: %d failing requests reached the upstream before it opened, want 5 to 10", cycle, n)
		}
		before = u.received.Load()
		for range 20 {
			if _, err := c.get(t, u.url()); !errors.Is(err, breaker.ErrOpen) {
				t.Fatalf("cycle %d: open breaker let a request through: %v", cycle, err)
			}
		}
		if n := u.received.Load() - before; n != 0 {
			t.Fatalf("cycle %d: %d requests reached the upstream while open", cycle, n)
		}
		u.failing.Store(false)
		time.Sleep(120 * time.Millisecond)
		for i := range 5 {
			if code, err := c.get(t, u.url()); err != nil || code != 200 {
				t.Fatalf("cycle %d: request %d after the spell: %d, %v", cycle, i, code, err)
			}
		}
		if s := c.breaker.State(); s != breaker.Closed {
			t.Fatalf("cycle %d: breaker %v", cycle, s)
		}
	}
	want := []string{"open", "half-open", "closed", "open", "half-open", "closed", "open", "half-open", "closed"}
	if got := c.transitions(); !equal(got, want) {
		t.Fatalf("transitions %v, want %v", got, want)
	}
}

// An upstream answering 503 with Retry-After to everything: the retries
// that reach it stay within the budget (counted at the upstream), and the
// budget says no to the rest.
func TestRetriesStayWithinBudget(t *testing.T) {
	u := newUpstream(t)
	u.failing.Store(true)
	u.after.Store("0")
	c := newChain(t,
		breaker.Config{ConsecutiveFailures: 1 << 30}, // keep it closed: this test is about the budget
		retry.Policy{MaxAttempts: 5, BaseDelay: meridian.Duration(time.Millisecond), MaxDelay: meridian.Duration(2 * time.Millisecond)},
		retry.BudgetConfig{Ratio: 0.2, MinPerSecond: -1})
	const workers, each = 8, 25
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				if code, err := c.get(t, u.url()); err != nil || code != 503 {
					t.Errorf("got %d, %v; want the upstream's 503", code, err)
					return
				}
			}
		})
	}
	wg.Wait()
	const requests = workers * each
	got := u.received.Load()
	st := c.budget.Stats()
	t.Logf("%d requests, %d reached the upstream; budget %+v", requests, got, st)
	// Without a budget: 5 tries each, 1000. With it: at most 20% more.
	if got > requests+requests/5 {
		t.Fatalf("%d tries reached the upstream for %d requests: more than the 20%% budget", got, requests)
	}
	if got != requests+st.Allowed {
		t.Fatalf("upstream saw %d, want requests + allowed retries = %d", got, requests+st.Allowed)
	}
	if st.Allowed == 0 || st.Denied == 0 {
		t.Fatalf("budget %+v: want both allowed and denied retries", st)
	}
}

// Retry-After is honoured: the retry arrives no sooner than asked, even
// though the backoff alone would have retried within milliseconds.
func TestRetryAfterIsHonoured(t *testing.T) {
	u := newUpstream(t)
	u.failNext.Store(1)
	u.after.Store("1")
	c := newChain(t, breaker.Config{},
		retry.Policy{MaxAttempts: 2, BaseDelay: meridian.Duration(time.Millisecond), MaxDelay: meridian.Duration(time.Millisecond)},
		retry.BudgetConfig{})
	code, err := c.get(t, u.url())
	if err != nil || code != 200 {
		t.Fatalf("got %d, %v", code, err)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.arrivals) != 2 {
		t.Fatalf("%d tries, want 2", len(u.arrivals))
	}
	if gap := u.arrivals[1].Sub(u.arrivals[0]); gap < time.Second {
		t.Fatalf("retried after %v; the upstream asked for Retry-After: 1", gap)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
