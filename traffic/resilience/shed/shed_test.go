package shed

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/internal/loadtest"
	"github.com/meridian-platform/meridian/internal/problem"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The estimate and the gate, on a logical clock: 100ms buckets, requests
// of 20ms at 10 per bucket give maxInFlight = ceil(10 × 20ms / 100ms) = 2.
func TestEstimateAndGate(t *testing.T) {
	now := time.Unix(0, 0)
	clock := func() time.Time { return now }
	s, err := New(Config{Window: meridian.Duration(time.Second), Buckets: 10}, Options{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	// No estimate yet: nothing is shed, however many are in flight.
	var starts []time.Time
	for range 50 {
		st, err := s.Allow()
		if err != nil {
			t.Fatalf("shed without an estimate: %v", err)
		}
		starts = append(starts, st)
	}
	for _, st := range starts {
		s.Done(st)
	}
	// Those 50 had no latency at all; let them leave the window.
	now = now.Add(time.Second + 100*time.Millisecond)
	// A steady second: each bucket, 10 requests of 20ms.
	for range 10 {
		for range 10 {
			st, _ := s.Allow()
			now = now.Add(20 * time.Millisecond / 10)
			s.Done(st.Add(-18 * time.Millisecond))
		}
		now = now.Add(80 * time.Millisecond)
	}
	st := s.Stats()
	if st.MaxInFlight != 2 || st.MinRT != 20*time.Millisecond {
		t.Fatalf("stats %+v, want maxInFlight 2, minRT 20ms", st)
	}
	// Two in flight at normal latency: not overloaded, a third passes.
	a, _ := s.Allow()
	b, _ := s.Allow()
	c, err := s.Allow()
	if err != nil {
		t.Fatalf("shed a burst at normal latency: %v", err)
	}
	s.Done(c)
	s.Done(a)
	s.Done(b)
	// Latency climbs: ten requests take 100ms, 5× minRT. Now the third
	// in flight is shed.
	now = now.Add(100 * time.Millisecond)
	for range 10 {
		st, _ := s.Allow()
		s.Done(st.Add(-100 * time.Millisecond))
	}
	a, _ = s.Allow()
	b, _ = s.Allow()
	if s.Stats().RecentRT <= 40*time.Millisecond {
		t.Fatalf("recent RT %v", s.Stats().RecentRT)
	}
	if _, err := s.Allow(); !errors.Is(err, ErrOverloaded) {
		t.Fatalf("not shed at 3× latency over maxInFlight: %v", err)
	}
	// Below maxInFlight nothing is shed even when overloaded.
	s.Done(a)
	if st, err := s.Allow(); err != nil {
		t.Fatalf("shed below maxInFlight: %v", err)
	} else {
		s.Done(st)
	}
	s.Done(b)
}

func TestShedAnswerIsProblemJSONWithRetryAfter(t *testing.T) {
	s, _ := New(Config{RetryAfter: meridian.Duration(2500 * time.Millisecond)}, Options{})
	s.est.at, s.est.maxInFlight, s.est.minRT = 0, 1, time.Millisecond // force: overloaded at 1 in flight
	s.lastDrop = time.Now()
	s.inflight.Store(1)
	rec := httptest.NewRecorder()
	Middleware(s)(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { t.Error("handler ran") })).
		ServeHTTP(rec, httptest.NewRequest("GET", "/x", nil))
	if rec.Code != 503 || rec.Header().Get("Retry-After") != "3" || rec.Header().Get("Content-Type") != problem.ContentType {
		t.Fatalf("answer %d, headers %v", rec.Code, rec.Header())
	}
	var d problem.Details
	if err := json.Unmarshal(rec.Body.Bytes(), &d); err != nil || d.Code != string(meridian.CodeUnavailable) {
		t.Fatalf("body %s: %v", rec.Body, err)
	}
}

// A handler of capacity C (a semaphore of C slots, each request holding
// one for the service time S) is offered 3× its capacity, open loop, for
// a few seconds over real HTTP. With the shedder it keeps serving about
// its capacity at bounded latency and sheds the rest with 503; nothing
// queues without bound.
func TestOverloadKeepsServingCapacity(t *testing.T) {
	if testing.Short() {
		t.Skip("a few seconds of load")
	}
	const (
		C        = 4
		S        = 50 * time.Millisecond
		capacity = float64(C) / 0.050 // 80 requests/s
		rate     = 3 * capacity       // offered
		run      = 3 * time.Second
		warmup   = 500 * time.Millisecond
	)
	var shedCount int
	var shedMu sync.Mutex
	s, err := New(Config{}, Options{OnShed: func() { shedMu.Lock(); shedCount++; shedMu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(Middleware(s)(loadtest.Capacity(C, S)))
	defer srv.Close()
	tr := &http.Transport{MaxIdleConnsPerHost: 1000, MaxConnsPerHost: 0}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}

	results, elapsed := loadtest.OpenLoop(rate, run, loadtest.Get(client, srv.URL))
	sum := loadtest.Summarize(results, elapsed, warmup)
	t.Logf("offered %d in %v: %d served (%.0f/s, capacity %.0f/s), %d shed, p99 after warm-up %v, final %+v",
		sum.Sent, elapsed.Round(time.Millisecond), sum.OK, sum.Throughput, capacity, sum.Shed, sum.P99, s.Stats())
	if sum.Other != 0 {
		t.Fatalf("%d answers neither 200 nor 503", sum.Other)
	}
	// Serves about its capacity: no collapse (generous bounds: a loaded
	// CI machine under -race).
	if sum.Throughput < 0.5*capacity {
		t.Fatalf("served %.0f/s, under half the capacity of %.0f/s", sum.Throughput, capacity)
	}
	// Sheds the excess: a third is served, so about two thirds should be
	// shed; ask for a quarter.
	if sum.Shed < sum.Sent/4 {
		t.Fatalf("shed %d of %d: the excess was queued, not shed", sum.Shed, sum.Sent)
	}
	// Bounded latency: without shedding the queue grows by 160 requests a
	// second, and latency by 2s a second.
	if sum.P99 > 10*S {
		t.Fatalf("p99 latency of served requests %v, over 10× the service time", sum.P99)
	}
	shed := sum.Shed
	shedMu.Lock()
	defer shedMu.Unlock()
	if shedCount != shed {
		t.Fatalf("OnShed counted %d, clients saw %d", shedCount, shed)
	}
}
