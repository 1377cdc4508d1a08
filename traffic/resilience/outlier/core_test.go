package outlier

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meridian-platform/meridian"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func newCore(t *testing.T, cfg Config, ids ...string) *Core {
	t.Helper()
	c, err := NewCore(cfg, t0)
	if err != nil {
		t.Fatal(err)
	}
	c.SetEndpoints(ids, nil)
	return c
}

func show(cs []Change) string {
	var parts []string
	for _, c := range cs {
		verb := "back"
		if c.Ejected {
			verb = "out"
		}
		s := fmt.Sprintf("%s %s %s #%d", c.Endpoint, verb, c.Reason, c.Count)
		if c.Ejected {
			s += " until " + c.Until.Sub(t0).String()
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

func TestConsecutiveRules(t *testing.T) {
	for name, tc := range map[string]struct {
		results []Outcome
		want    string
	}{
		"five 5xx":                 {[]Outcome{ServerError, ServerError, ServerError, ServerError, ServerError}, "a out consecutive_5xx #1 until 30s"},
		"a success resets":         {[]Outcome{ServerError, ServerError, ServerError, ServerError, Success, ServerError}, ""},
		"three gateway failures":   {[]Outcome{GatewayFailure, GatewayFailure, GatewayFailure}, "a out consecutive_gateway_failure #1 until 30s"},
		"a 500 resets the gateway": {[]Outcome{GatewayFailure, GatewayFailure, ServerError, GatewayFailure, GatewayFailure}, "a out consecutive_5xx #1 until 30s"},
	} {
		t.Run(name, func(t *testing.T) {
			c := newCore(t, Config{}, "a", "b", "c")
			var out []Change
			for _, o := range tc.results {
				out = c.Record("a", Result{Outcome: o}, t0, out)
			}
			if got := show(out); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// Ejection time grows with each ejection and is capped; endpoints come
// back on time; the count decays while an endpoint stays in service.
func TestEjectionTimeGrowsAndEndpointsReturn(t *testing.T) {
	c := newCore(t, Config{ConsecutiveGatewayFailure: 1, BaseEjectionTime: meridian.Duration(10 * time.Second),
		MaxEjectionTime: meridian.Duration(25 * time.Second), Interval: meridian.Duration(time.Hour)}, "a", "b")
	now := t0
	var log []string
	for range 3 {
		out := c.Record("a", Result{Outcome: GatewayFailure}, now, nil)
		log = append(log, show(out))
		now = c.Next()
		log = append(log, show(c.Tick(now, nil)))
	}
	want := []string{
		"a out consecutive_gateway_failure #1 until 10s", "a back ejection_over #1",
		"a out consecutive_gateway_failure #2 until 30s", "a back ejection_over #2",
		"a out consecutive_gateway_failure #3 until 55s", "a back ejection_over #3",
	}
	if !slices.Equal(log, want) {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(log, "\n"), strings.Join(want, "\n"))
	}
	// The first interval [0, 1h) saw ejections, so it does not count; the
	// two whole intervals in service after it take the count from 3 to 1.
	for h := range 3 {
		c.Tick(t0.Add(time.Duration(h+1)*time.Hour), nil)
	}
	out := c.Record("a", Result{Outcome: GatewayFailure}, t0.Add(3*time.Hour), nil)
	if got := show(out); got != "a out consecutive_gateway_failure #2 until 3h0m20s" {
		t.Fatalf("after decay: %q", got)
	}
}

func TestMaxEjectionPercentAndTheLastEndpoint(t *testing.T) {
	cfg := Config{ConsecutiveGatewayFailure: 1}
	c := newCore(t, cfg, "a", "b", "c", "d")
	var out []Change
	for _, id := range []string{"a", "b", "c", "d"} {
		out = c.Record(id, Result{Outcome: GatewayFailure}, t0, out)
	}
	if got := show(out); got != "a out consecutive_gateway_failure #1 until 30s; b out consecutive_gateway_failure #1 until 30s" {
		t.Fatalf("50%% of 4: %q", got)
	}
	cfg.MaxEjectionPercent = 100
	c = newCore(t, cfg, "a", "b")
	out = c.Record("a", Result{Outcome: GatewayFailure}, t0, nil)
	out = c.Record("b", Result{Outcome: GatewayFailure}, t0, out)
	if got := show(out); got != "a out consecutive_gateway_failure #1 until 30s" {
		t.Fatalf("the last endpoint must stay: %q", got)
	}
	c = newCore(t, Config{ConsecutiveGatewayFailure: 1}, "solo")
	if out := c.Record("solo", Result{Outcome: GatewayFailure}, t0, nil); len(out) != 0 {
		t.Fatalf("ejected the only endpoint: %q", show(out))
	}
}

func TestFailurePercent(t *testing.T) {
	c := newCore(t, Config{Consecutive5xx: -1, ConsecutiveGatewayFailure: -1, FailurePercent: 50,
		FailurePercentMinRequests: 10, LatencyFactor: -1, Interval: meridian.Duration(10 * time.Second)}, "a", "b", "c")
	for i := range 20 {
		o := Success
		if i%2 == 0 {
			o = ServerError
		}
		c.Record("a", Result{Outcome: o}, t0, nil)
		if i < 9 { // b fails everything but has too few requests
			c.Record("b", Result{Outcome: GatewayFailure}, t0, nil)
		}
		c.Record("c", Result{Outcome: Success}, t0, nil)
	}
	if out := c.Tick(t0.Add(5*time.Second), nil); len(out) != 0 {
		t.Fatalf("judged before the interval ended: %q", show(out))
	}
	if got := show(c.Tick(t0.Add(10*time.Second), nil)); got != "a out failure_percent #1 until 40s" {
		t.Fatalf("got %q", got)
	}
}

// The latency rule as documented on Config.LatencyFactor.
func TestLatencyRule(t *testing.T) {
	cfg := Config{LatencyFactor: 3, LatencyMinRequests: 5, LatencyMinEndpoints: 3,
		LatencyMinExcess: meridian.Duration(10 * time.Millisecond), Interval: meridian.Duration(10 * time.Second)}
	for name, tc := range map[string]struct {
		means map[string]time.Duration
		n     map[string]int // successes; default 5
		want  string
	}{
		"one slow of four": {means: map[string]time.Duration{"a": 10 * time.Millisecond, "b": 12 * time.Millisecond, "c": 11 * time.Millisecond, "d": 100 * time.Millisecond},
			want: "d out latency #1 until 40s"},
		"under the factor":          {means: map[string]time.Duration{"a": 10 * time.Millisecond, "b": 12 * time.Millisecond, "c": 11 * time.Millisecond, "d": 30 * time.Millisecond}},
		"under the absolute excess": {means: map[string]time.Duration{"a": 100 * time.Microsecond, "b": 120 * time.Microsecond, "c": 110 * time.Microsecond, "d": 2 * time.Millisecond}},
		"too few samples on the slow one": {means: map[string]time.Duration{"a": 10 * time.Millisecond, "b": 12 * time.Millisecond, "c": 11 * time.Millisecond, "d": 100 * time.Millisecond},
			n: map[string]int{"d": 4}},
		"too few endpoints with samples": {means: map[string]time.Duration{"a": 10 * time.Millisecond, "b": 12 * time.Millisecond, "c": 11 * time.Millisecond, "d": 100 * time.Millisecond},
			n: map[string]int{"a": 1, "b": 1}},
		"two slow of four, 50% cap: the slower goes": {means: map[string]time.Duration{"a": 10 * time.Millisecond, "b": 10 * time.Millisecond, "c": 80 * time.Millisecond, "d": 100 * time.Millisecond},
			want: ""}, // median (10+80)/2 = 45ms: neither is 3× slower
		"two slow of five": {means: map[string]time.Duration{"a": 10 * time.Millisecond, "b": 10 * time.Millisecond, "e": 10 * time.Millisecond, "c": 80 * time.Millisecond, "d": 100 * time.Millisecond},
			want: "d out latency #1 until 40s; c out latency #1 until 40s"},
	} {
		t.Run(name, func(t *testing.T) {
			var ids []string
			for id := range tc.means {
				ids = append(ids, id)
			}
			c := newCore(t, cfg, ids...)
			for id, m := range tc.means {
				n := 5
				if v, ok := tc.n[id]; ok {
					n = v
				}
				for range n {
					c.Record(id, Result{Outcome: Success, Latency: m}, t0, nil)
				}
			}
			if got := show(c.Tick(t0.Add(10*time.Second), nil)); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestSetEndpointsForgetsAndReports(t *testing.T) {
	c := newCore(t, Config{ConsecutiveGatewayFailure: 1}, "a", "b", "c")
	c.Record("a", Result{Outcome: GatewayFailure}, t0, nil)
	if got := show(c.SetEndpoints([]string{"b", "c", "d"}, nil)); got != "a back removed #1" {
		t.Fatalf("got %q", got)
	}
	if c.Ejected("a") || c.ejected != 0 || len(c.eps) != 3 {
		t.Fatalf("after SetEndpoints: ejected %d, endpoints %d", c.ejected, len(c.eps))
	}
	c.Record("a", Result{Outcome: GatewayFailure}, t0, nil) // a late answer from the departed
	if len(c.eps) != 3 {
		t.Fatal("a result from an endpoint that left brought it back")
	}
}

// The driver returns ejected endpoints on time by itself, reporting
// through the SetEjected-shaped callback.
func TestDetectorRunReturnsEndpoints(t *testing.T) {
	var mu sync.Mutex
	state := map[string]bool{}
	events := make(chan bool, 4)
	d, err := New(Config{ConsecutiveGatewayFailure: 1, BaseEjectionTime: meridian.Duration(50 * time.Millisecond)},
		Options{Eject: func(id string, ejected bool) {
			mu.Lock()
			state[id] = ejected
			mu.Unlock()
			events <- ejected
		}})
	if err != nil {
		t.Fatal(err)
	}
	d.SetEndpoints([]string{"a", "b"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- d.Run(ctx) }()
	d.Record("a", Result{Outcome: GatewayFailure})
	if !<-events || !d.Ejected("a") {
		t.Fatal("a not ejected")
	}
	select {
	case ej := <-events:
		if ej || d.Ejected("a") {
			t.Fatal("want a back in service")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a was not returned to service")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
