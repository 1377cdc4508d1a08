package breaker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/traffic/resilience"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeClock is a settable clock for concurrent tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestBreakerOpensFailsFastAndRecovers(t *testing.T) {
	clk := &fakeClock{t: time.Unix(0, 0)}
	var trans []string
	b, err := New(Config{ConsecutiveFailures: 2, OpenFor: meridian.Duration(time.Second), CloseAfter: 1},
		Options{Now: clk.Now, OnStateChange: func(t Transition) { trans = append(trans, t.From.String()+">"+t.To.String()) }})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		done, err := b.Allow()
		if err != nil {
			t.Fatal(err)
		}
		done(false)
	}
	if _, err := b.Allow(); !errors.Is(err, ErrOpen) || !errors.Is(err, resilience.ErrRejected) || !meridian.IsCode(err, meridian.CodeUnavailable) {
		t.Fatalf("Allow on an open breaker: %v", err)
	}
	if got := b.RetryAfter(); got != time.Second {
		t.Fatalf("RetryAfter = %v", got)
	}
	clk.Add(time.Second)
	if s := b.State(); s != HalfOpen {
		t.Fatalf("state after the open time: %v", s)
	}
	done, err := b.Allow()
	if err != nil {
		t.Fatal(err)
	}
	done(true)
	if s := b.State(); s != Closed {
		t.Fatalf("state after a good probe: %v", s)
	}
	want := []string{"closed>open", "open>half-open", "half-open>closed"}
	if len(trans) != len(want) {
		t.Fatalf("transitions %v, want %v", trans, want)
	}
	for i := range want {
		if trans[i] != want[i] {
			t.Fatalf("transitions %v, want %v", trans, want)
		}
	}
}

// Many goroutines through a half-open breaker: never more probes in flight
// than allowed, and stale dones from before the opening do not count.
func TestBreakerHalfOpenBoundsProbesConcurrently(t *testing.T) {
	clk := &fakeClock{t: time.Unix(0, 0)}
	b, err := New(Config{ConsecutiveFailures: 1, OpenFor: meridian.Duration(time.Second), HalfOpenProbes: 3, CloseAfter: 1000},
		Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	stale, _ := b.Allow()
	done, _ := b.Allow()
	done(false) // opens
	clk.Add(time.Second)

	var mu sync.Mutex
	inflight, peak := 0, 0
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for range 50 {
				done, err := b.Allow()
				if err != nil {
					continue
				}
				mu.Lock()
				inflight++
				peak = max(peak, inflight)
				mu.Unlock()
				mu.Lock()
				inflight--
				mu.Unlock()
				done(true)
			}
		})
	}
	stale(false) // from generation 0: ignored, must not reopen
	wg.Wait()
	if peak > 3 {
		t.Fatalf("%d probes in flight at once, want ≤ 3", peak)
	}
	if s := b.State(); s != HalfOpen {
		t.Fatalf("state %v, want half-open (a stale failure must not reopen)", s)
	}
}

func TestConfigValidateNamesTheField(t *testing.T) {
	for name, tc := range map[string]struct {
		cfg   Config
		field string
	}{
		"mode":     {Config{Mode: "sometimes"}, "mode"},
		"rate":     {Config{FailureRate: 1.5}, "failure_rate"},
		"growth":   {Config{OpenForGrowth: 0.5}, "open_for_growth"},
		"max open": {Config{OpenFor: meridian.Duration(time.Minute), MaxOpenFor: meridian.Duration(time.Second)}, "max_open_for"},
	} {
		t.Run(name, func(t *testing.T) {
			var me *meridian.Error
			if err := tc.cfg.Validate(); !errors.As(err, &me) || me.Field != tc.field || me.Code != meridian.CodeInvalid {
				t.Fatalf("Validate = %v, want an invalid error on %s", err, tc.field)
			}
		})
	}
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("zero Config: %v", err)
	}
}

func TestThrottleFollowsTheAcceptRatio(t *testing.T) {
	clk := &fakeClock{t: time.Unix(0, 0)}
	r := 0.0
	th, err := NewThrottle(ThrottleConfig{K: 2}, ThrottleOptions{Now: clk.Now, Rand: func() float64 { return r }})
	if err != nil {
		t.Fatal(err)
	}
	// Healthy: everything accepted, nothing dropped even at r = 0.
	for range 100 {
		done, err := th.Allow()
		if err != nil {
			t.Fatalf("healthy upstream throttled: %v", err)
		}
		done(true)
	}
	if p := th.RejectProbability(); p != 0 {
		t.Fatalf("probability %v with all accepted", p)
	}
	// The upstream now rejects everything: after 100 more requests,
	// requests = 200, accepts = 100, p = (200 - 200)/201 = 0.
	for range 100 {
		done, err := th.Allow()
		if err != nil {
			t.Fatalf("throttled too early: %v", err)
		}
		done(false)
	}
	clk.Add(11 * time.Second) // the window forgets the accepts
	for range 10 {
		done, err := th.Allow()
		if err == nil {
			done(false)
		}
	}
	// 10 requests, 0 accepts: p = 10/11.
	if p := th.RejectProbability(); p < 0.9 || p > 0.91 {
		t.Fatalf("probability %v, want 10/11", p)
	}
	r = 0.95 // above p: let through
	if done, err := th.Allow(); err != nil {
		t.Fatalf("r above p throttled: %v", err)
	} else {
		done(true)
	}
	r = 0.5
	if _, err := th.Allow(); !errors.Is(err, ErrThrottled) {
		t.Fatalf("r below p: %v", err)
	}
}

// What the breaker counts as a failure: transport errors and overload or
// gateway answers; not the caller's own cancel, nor a request a layer
// below refused locally (it never reached the upstream).
func TestDefaultClassify(t *testing.T) {
	req, _ := http.NewRequest("GET", "http://up/", nil)
	canceledCtx, cancel := context.WithCancel(context.Background())
	cancel()
	canceled := req.WithContext(canceledCtx)
	for _, c := range []struct {
		name   string
		req    *http.Request
		status int
		err    error
		failed bool
	}{
		{"200", req, 200, nil, false},
		{"404", req, 404, nil, false},
		{"429", req, 429, nil, true},
		{"500", req, 500, nil, true},
		{"503", req, 503, nil, true},
		{"transport error", req, 0, errors.New("connection refused"), true},
		{"per-try timeout", req, 0, context.DeadlineExceeded, true},
		{"caller canceled", canceled, 0, context.Canceled, false},
		{"refused below", req, 0, fmt.Errorf("bulkhead full: %w", resilience.ErrRejected), false},
	} {
		var resp *http.Response
		if c.err == nil {
			resp = &http.Response{StatusCode: c.status}
		}
		if got := DefaultClassify(c.req, resp, c.err); got != c.failed {
			t.Errorf("%s: failed = %v, want %v", c.name, got, c.failed)
		}
	}
}
