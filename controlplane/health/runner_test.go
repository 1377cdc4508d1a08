package health

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-platform/meridian"
)

// deadline bounds every wait for an event. It is generous on purpose: the
// tests assert what happens, never how fast.
const deadline = 20 * time.Second

type change struct {
	service, id string
	h           meridian.Health
}

// recorder collects OnChange calls.
type recorder struct{ ch chan change }

func newRecorder(size int) *recorder { return &recorder{ch: make(chan change, size)} }

func (rec *recorder) onChange(_ context.Context, service, id string, h meridian.Health) {
	rec.ch <- change{service, id, h}
}

// waitStatus consumes changes until one for id has the status and returns
// it with the change for id that came before it (zero if none).
func (rec *recorder) waitStatus(t *testing.T, id string, status meridian.HealthStatus) (got, prev change) {
	t.Helper()
	timeout := time.After(deadline)
	for {
		select {
		case c := <-rec.ch:
			if c.id != id {
				continue
			}
			if c.h.Status == status {
				return c, prev
			}
			prev = c
		case <-timeout:
			t.Fatalf("%s did not become %s within %s", id, status, deadline)
		}
	}
}

// start runs r until the test ends and checks that Run returns nil. The
// returned stop cancels and waits, and may be called early.
func start(t *testing.T, r *Runner) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run = %v, want nil", err)
				}
			case <-time.After(deadline):
				t.Errorf("Run did not return within %s of cancel", deadline)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func httpInstance(t *testing.T, srv *flipServer, id string, spec meridian.CheckSpec) *meridian.Instance {
	t.Helper()
	inst := instanceAt(t, srv.Listener.Addr(), spec)
	inst.ID = id
	return inst
}

// The behaviour a user sees: an instance whose endpoint starts answering
// 503 turns warning, then critical at the failure threshold, and passing
// again once it has recovered for long enough.
func TestRunnerHTTPLifecycle(t *testing.T) {
	srv := newFlipServer(t)
	rec := newRecorder(1000)
	r := NewRunner(RunnerConfig{OnChange: rec.onChange})
	start(t, r)

	r.Upsert(httpInstance(t, srv, "orders-1", meridian.CheckSpec{
		Kind:                   meridian.CheckHTTP,
		Interval:               meridian.Duration(meridian.MinCheckInterval),
		SuccessesBeforePassing: 2,
		FailuresBeforeCritical: 2,
	}))

	got, _ := rec.waitStatus(t, "orders-1", meridian.StatusPassing)
	if got.service != "orders" || got.h.Output != "HTTP 200 OK" || got.h.Since.IsZero() {
		t.Errorf("first passing change = %+v", got)
	}

	srv.code.Store(http.StatusServiceUnavailable)
	got, prev := rec.waitStatus(t, "orders-1", meridian.StatusCritical)
	if prev.h.Status != meridian.StatusWarning {
		t.Errorf("before critical the instance was %q, want warning", prev.h.Status)
	}
	if got.h.Output != "HTTP 503 Service Unavailable" {
		t.Errorf("critical output = %q", got.h.Output)
	}
	if h, ok := r.Health("orders", "orders-1"); !ok || h.Status != meridian.StatusCritical {
		t.Errorf("Health = %+v, %v; want critical", h, ok)
	}

	srv.code.Store(http.StatusOK)
	got, _ = rec.waitStatus(t, "orders-1", meridian.StatusPassing)
	if got.h.Output != "HTTP 200 OK" {
		t.Errorf("recovered output = %q", got.h.Output)
	}
}

// fakeProbe stands in for Probe to observe scheduling without sockets.
type fakeProbe struct {
	mu        sync.Mutex
	inflight  map[string]int
	maxPerID  int // most probes of one instance at once
	total     int // probes of all instances in flight
	maxTotal  int
	count     map[string]int
	sleep     time.Duration
	onProbeID chan string // if set, receives the id of every probe started
}

func newFakeProbe(sleep time.Duration) *fakeProbe {
	return &fakeProbe{inflight: map[string]int{}, count: map[string]int{}, sleep: sleep}
}

func (f *fakeProbe) probe(ctx context.Context, inst *meridian.Instance) Result {
	f.mu.Lock()
	f.inflight[inst.ID]++
	f.count[inst.ID]++
	f.total++
	f.maxPerID = max(f.maxPerID, f.inflight[inst.ID])
	f.maxTotal = max(f.maxTotal, f.total)
	f.mu.Unlock()
	if f.onProbeID != nil {
		f.onProbeID <- inst.ID
	}
	if f.sleep > 0 {
		select {
		case <-time.After(f.sleep):
		case <-ctx.Done():
		}
	}
	f.mu.Lock()
	f.inflight[inst.ID]--
	f.total--
	f.mu.Unlock()
	return Result{OK: true, Output: "ok"}
}

func (f *fakeProbe) probes(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.count[id]
}

// waitProbes waits until every id has been probed at least n times.
func (f *fakeProbe) waitProbes(t *testing.T, n int, ids ...string) {
	t.Helper()
	end := time.Now().Add(deadline)
	for _, id := range ids {
		for f.probes(id) < n {
			if time.Now().After(end) {
				t.Fatalf("%s probed %d times, want at least %d", id, f.probes(id), n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func fakeInstance(id string, interval time.Duration) *meridian.Instance {
	return &meridian.Instance{
		Service: "orders", ID: id, Address: "127.0.0.1", Port: 8080,
		Check: &meridian.CheckSpec{Kind: meridian.CheckTCP, Interval: meridian.Duration(interval)},
	}
}

// Probes that take longer than the interval are followed by the next one
// right away, but two probes of one instance never overlap, and the worker
// pool bounds how many run at once.
func TestRunnerOverrunNeverOverlaps(t *testing.T) {
	fp := newFakeProbe(3 * meridian.MinCheckInterval / 2)
	r := NewRunner(RunnerConfig{Workers: 3})
	r.probe = fp.probe
	ids := []string{"a", "b", "c", "d", "e"}
	for _, id := range ids {
		r.Upsert(fakeInstance(id, meridian.MinCheckInterval))
	}
	start(t, r)
	fp.waitProbes(t, 4, ids...)

	fp.mu.Lock()
	defer fp.mu.Unlock()
	if fp.maxPerID != 1 {
		t.Errorf("up to %d probes of one instance ran at once, want 1", fp.maxPerID)
	}
	if fp.maxTotal > 3 {
		t.Errorf("%d probes ran at once with 3 workers", fp.maxTotal)
	}
}

// Ten thousand instances cost a heap entry each, not a goroutine.
func TestRunnerManyInstances(t *testing.T) {
	const n = 10_000
	var passing atomic.Int64
	all := make(chan struct{})
	r := NewRunner(RunnerConfig{OnChange: func(_ context.Context, _, _ string, h meridian.Health) {
		if h.Status == meridian.StatusPassing && passing.Add(1) == n {
			close(all)
		}
	}})
	r.probe = func(context.Context, *meridian.Instance) Result { return Result{OK: true} }

	before := heapInUse()
	for i := range n {
		r.Upsert(fakeInstance(fmt.Sprintf("orders-%d", i), time.Hour))
	}
	perInstance := (heapInUse() - before) / n
	t.Logf("about %d bytes of heap per instance", perInstance)
	if perInstance > 2048 {
		t.Errorf("%d bytes of heap per instance; the Runner should keep only what a probe needs", perInstance)
	}
	if r.Len() != n {
		t.Fatalf("Len = %d, want %d", r.Len(), n)
	}

	goroutines := runtime.NumGoroutine()
	start(t, r)
	select {
	case <-all:
	case <-time.After(deadline):
		t.Fatalf("%d of %d instances became passing", passing.Load(), n)
	}
	// The workers, plus slack for the runtime; Run's scheduler runs on the
	// goroutine start made.
	if g := runtime.NumGoroutine(); g > goroutines+DefaultWorkers+5 {
		t.Errorf("%d goroutines while checking %d instances (%d before Run)", g, n, goroutines)
	}
}

func heapInUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// Re-upserting an unchanged instance keeps its state; changing its check
// restarts from the stored health and probes right away.
func TestRunnerUpsert(t *testing.T) {
	rec := newRecorder(100)
	frozen := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	r := NewRunner(RunnerConfig{OnChange: rec.onChange, Now: func() time.Time { return frozen }})
	r.probe = func(context.Context, *meridian.Instance) Result { return Result{OK: true, Output: "ok"} }
	start(t, r)

	inst := fakeInstance("orders-1", time.Hour)
	inst.Health = meridian.Health{Status: meridian.StatusCritical}
	r.Upsert(inst)
	if got, _ := rec.waitStatus(t, "orders-1", meridian.StatusPassing); !got.h.Since.Equal(frozen) {
		t.Errorf("Since = %v, want the injected clock's %v", got.h.Since, frozen)
	}

	// A resync hands back a stale stored health; the tracker is kept.
	r.Upsert(inst)
	if h, _ := r.Health("orders", "orders-1"); h.Status != meridian.StatusPassing {
		t.Fatalf("after an unchanged upsert the status is %q, want passing", h.Status)
	}

	// A new spec restarts from the stored health. The interval is an hour,
	// so only the immediate first probe can make it passing again.
	changed := *inst
	changed.Check = &meridian.CheckSpec{Kind: meridian.CheckTCP, Interval: meridian.Duration(time.Hour), FailuresBeforeCritical: 5}
	r.Upsert(&changed)
	rec.waitStatus(t, "orders-1", meridian.StatusPassing)

	// So does a new address.
	moved := changed
	moved.Address = "127.0.0.2"
	r.Upsert(&moved)
	rec.waitStatus(t, "orders-1", meridian.StatusPassing)

	if r.Len() != 1 {
		t.Errorf("Len = %d, want 1", r.Len())
	}
}

func TestRunnerRemove(t *testing.T) {
	fp := newFakeProbe(0)
	r := NewRunner(RunnerConfig{})
	r.probe = fp.probe
	r.Upsert(fakeInstance("gone", meridian.MinCheckInterval))
	r.Upsert(fakeInstance("kept", meridian.MinCheckInterval))
	start(t, r)
	fp.waitProbes(t, 1, "gone", "kept")

	r.Remove("orders", "gone")
	if r.Len() != 1 {
		t.Fatalf("Len = %d after Remove, want 1", r.Len())
	}
	if _, ok := r.Health("orders", "gone"); ok {
		t.Error("Health still reports a removed instance")
	}
	after := fp.probes("gone")
	// While "kept" is probed three more times, "gone" would have been too
	// had it stayed. A probe dispatched just before Remove may still start;
	// no later one may.
	fp.waitProbes(t, fp.probes("kept")+3, "kept")
	if got := fp.probes("gone"); got > after+1 {
		t.Errorf("removed instance probed %d more times", got-after)
	}

	// An instance without a check, or with an invalid one, is not checked.
	noCheck := fakeInstance("kept", 0)
	noCheck.Check = nil
	r.Upsert(noCheck)
	invalid := fakeInstance("bad", time.Millisecond) // below MinCheckInterval
	r.Upsert(invalid)
	if r.Len() != 0 {
		t.Errorf("Len = %d, want 0", r.Len())
	}
	r.Remove("orders", "never-added") // a no-op
}

// An instance removed and re-registered while its probe is in flight is
// probed again, but only after that probe has ended.
func TestRunnerReaddDuringProbe(t *testing.T) {
	started := make(chan struct{}, 10)
	release := make(chan struct{})
	var inflight, maxInflight, probes atomic.Int64
	r := NewRunner(RunnerConfig{})
	r.probe = func(ctx context.Context, _ *meridian.Instance) Result {
		n := inflight.Add(1)
		defer inflight.Add(-1)
		if n > maxInflight.Load() {
			maxInflight.Store(n)
		}
		if probes.Add(1) == 1 {
			started <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
			}
		} else {
			started <- struct{}{}
		}
		return Result{OK: true}
	}
	r.Upsert(fakeInstance("orders-1", time.Hour))
	start(t, r)

	waitSignal(t, started, "first probe")
	r.Remove("orders", "orders-1")
	if r.Len() != 0 {
		t.Errorf("Len = %d after Remove, want 0", r.Len())
	}
	r.Upsert(fakeInstance("orders-1", time.Hour))
	if r.Len() != 1 {
		t.Errorf("Len = %d after re-Upsert, want 1", r.Len())
	}
	close(release)
	waitSignal(t, started, "probe of the re-registered instance")
	if maxInflight.Load() != 1 {
		t.Errorf("%d probes of one instance ran at once", maxInflight.Load())
	}
}

func waitSignal(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(deadline):
		t.Fatalf("no %s within %s", what, deadline)
	}
}

// Stopping the Runner cuts probes short; that must not count against the
// instances.
func TestRunnerStopIsNotAFailure(t *testing.T) {
	started := make(chan struct{}, 1)
	var changes atomic.Int64
	r := NewRunner(RunnerConfig{OnChange: func(context.Context, string, string, meridian.Health) { changes.Add(1) }})
	r.probe = func(ctx context.Context, _ *meridian.Instance) Result {
		started <- struct{}{}
		<-ctx.Done()
		return Result{Output: ctx.Err().Error()}
	}
	inst := fakeInstance("orders-1", time.Hour)
	inst.Check.FailuresBeforeCritical = 1
	inst.Health = meridian.Health{Status: meridian.StatusPassing}
	r.Upsert(inst)

	stop := start(t, r)
	waitSignal(t, started, "probe")
	stop()

	if h, _ := r.Health("orders", "orders-1"); h.Status != meridian.StatusPassing || h.Output != "" {
		t.Errorf("after stop the health is %+v, want passing and untouched", h)
	}
	if changes.Load() != 0 {
		t.Errorf("OnChange called %d times", changes.Load())
	}

	// A later Run picks up where the first left off.
	r.probe = func(context.Context, *meridian.Instance) Result {
		return Result{Output: "HTTP 503 Service Unavailable"}
	}
	rec := newRecorder(10)
	r.onChange = rec.onChange
	start(t, r)
	rec.waitStatus(t, "orders-1", meridian.StatusCritical)
}

func TestRunnerRunTwice(t *testing.T) {
	started := make(chan struct{}, 1)
	r := NewRunner(RunnerConfig{})
	r.probe = func(context.Context, *meridian.Instance) Result {
		started <- struct{}{}
		return Result{OK: true}
	}
	r.Upsert(fakeInstance("orders-1", time.Hour))
	start(t, r)
	waitSignal(t, started, "probe") // so the first Run is running

	if err := r.Run(context.Background()); !errors.Is(err, ErrRunning) {
		t.Fatalf("second Run = %v, want ErrRunning", err)
	}
}
