package discovery

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meridian-platform/meridian"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// scriptWatcher is an in-memory Watcher whose streams the test drives: each
// WatchRegistry call is handed to the test as a stream, which then feeds it
// events and ends it. It tests the cache's logic alone, with exact event
// sequences and resume indexes; the tests against the real control plane
// are in http_test.go.
type scriptWatcher struct{ streams chan *stream }

type stream struct {
	service string
	after   uint64
	events  chan meridian.InstanceEvent
	end     chan error
}

func newScriptWatcher() *scriptWatcher { return &scriptWatcher{streams: make(chan *stream)} }

func (w *scriptWatcher) WatchRegistry(ctx context.Context, service string, after uint64, fn func(meridian.InstanceEvent) error) error {
	s := &stream{service: service, after: after, events: make(chan meridian.InstanceEvent), end: make(chan error)}
	select {
	case w.streams <- s:
	case <-ctx.Done():
		return ctx.Err()
	}
	for {
		select {
		case ev := <-s.events:
			if err := fn(ev); err != nil {
				return err
			}
		case err := <-s.end:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// next returns the next stream the cache opens.
func (w *scriptWatcher) next(t *testing.T) *stream {
	t.Helper()
	select {
	case s := <-w.streams:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("the cache opened no watch")
		return nil
	}
}

func (s *stream) send(t *testing.T, evs ...meridian.InstanceEvent) {
	t.Helper()
	for _, ev := range evs {
		select {
		case s.events <- ev:
		case <-time.After(5 * time.Second):
			t.Fatalf("the cache did not take event %+v", ev)
		}
	}
}

func (s *stream) fail(t *testing.T, err error) {
	t.Helper()
	select {
	case s.end <- err:
	case <-time.After(5 * time.Second):
		t.Fatal("the watch did not end")
	}
}

func put(index uint64, id string, status meridian.HealthStatus) meridian.InstanceEvent {
	return meridian.InstanceEvent{Type: meridian.EventPut, Index: index, Service: "orders", ID: id,
		Instance: &meridian.Instance{Service: "orders", ID: id, Address: "10.0.0.1", Port: 8080,
			Health: meridian.Health{Status: status}, Revision: index}}
}

func del(index uint64, id string) meridian.InstanceEvent {
	return meridian.InstanceEvent{Type: meridian.EventDelete, Index: index, Service: "orders", ID: id, Reason: "deregistered"}
}

func synced(index uint64) meridian.InstanceEvent {
	return meridian.InstanceEvent{Type: meridian.EventSync, Index: index}
}

// start runs a cache over w until the test ends.
func start(t *testing.T, w Watcher, opts ...Option) *Cache {
	t.Helper()
	c := New(w, append([]Option{WithBackoff(time.Millisecond, 5*time.Millisecond)}, opts...)...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return c
}

func waitSnapshot(t *testing.T, c *Cache, service string) *Snapshot {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := c.Wait(ctx, service)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// changed waits for s to be replaced and returns the replacement.
func changed(t *testing.T, c *Cache, s *Snapshot) *Snapshot {
	t.Helper()
	select {
	case <-s.Changed():
		return c.Snapshot(s.Service)
	case <-time.After(5 * time.Second):
		t.Fatalf("snapshot at index %d was not replaced", s.Index)
		return nil
	}
}

func unchanged(t *testing.T, s *Snapshot) {
	t.Helper()
	select {
	case <-s.Changed():
		t.Fatalf("snapshot at index %d was replaced", s.Index)
	case <-time.After(20 * time.Millisecond):
	}
}

func ids(s *Snapshot) []string {
	var out []string
	for _, in := range s.Instances {
		out = append(out, in.ID)
	}
	return out
}

func want(t *testing.T, s *Snapshot, index uint64, wantIDs ...string) {
	t.Helper()
	if got := ids(s); s.Index != index || !slices.Equal(got, wantIDs) {
		t.Fatalf("snapshot = index %d %v, want index %d %v", s.Index, got, index, wantIDs)
	}
}

func TestCacheAppliesEventsInOrder(t *testing.T) {
	w := newScriptWatcher()
	c := start(t, w)
	if s := c.Snapshot("orders"); s != nil {
		t.Fatalf("Snapshot before the first sync = %+v, want nil", s)
	}
	st := w.next(t)
	if st.service != "orders" || st.after != 0 {
		t.Fatalf("watch(%q, after %d), want (orders, 0)", st.service, st.after)
	}
	st.send(t, put(3, "c", meridian.StatusWarning), put(1, "a", meridian.StatusPassing), put(2, "b", meridian.StatusCritical), synced(4))
	s := waitSnapshot(t, c, "orders")
	want(t, s, 4, "a", "c") // critical b is known but not served

	steps := []struct {
		name    string
		ev      meridian.InstanceEvent
		wantIDs []string
	}{
		{"critical instance turns passing", put(5, "b", meridian.StatusPassing), []string{"a", "b", "c"}},
		{"passing instance turns critical", put(6, "a", meridian.StatusCritical), []string{"b", "c"}},
		{"delete removes", del(7, "c"), []string{"b"}},
		{"new instance", put(8, "d", meridian.StatusPassing), []string{"b", "d"}},
		{"critical instance deleted", del(9, "a"), []string{"b", "d"}},
		{"warning still served", put(10, "d", meridian.StatusWarning), []string{"b", "d"}},
	}
	for _, step := range steps {
		st.send(t, step.ev)
		s = changed(t, c, s)
		t.Run(step.name, func(t *testing.T) { want(t, s, step.ev.Index, step.wantIDs...) })
	}
	if got := s.Instances[1].Health.Status; got != meridian.StatusWarning {
		t.Errorf("d's status = %s, want the latest put's warning", got)
	}
}

func TestCacheKeepsLastSetAndResumesAfterLastIndex(t *testing.T) {
	w := newScriptWatcher()
	c := start(t, w)
	c.Snapshot("orders")
	st := w.next(t)
	st.send(t, put(1, "a", meridian.StatusPassing), put(2, "b", meridian.StatusPassing), synced(2))
	s := waitSnapshot(t, c, "orders")
	st.send(t, del(7, "b"))
	s = changed(t, c, s)
	want(t, s, 7, "a")

	st.fail(t, meridian.Errorf(meridian.CodeUnavailable, "connection refused"))
	for i := 0; i < 3; i++ { // control plane still down
		st = w.next(t)
		if st.after != 7 {
			t.Fatalf("reconnect %d resumed after %d, want 7", i, st.after)
		}
		st.fail(t, meridian.Errorf(meridian.CodeUnavailable, "connection refused"))
	}
	unchanged(t, s)
	want(t, c.Snapshot("orders"), 7, "a")

	st = w.next(t)
	// A duplicate of an applied change is ignored; the backlog is applied
	// and published at the sync.
	st.send(t, del(7, "b"), put(8, "c", meridian.StatusPassing), put(9, "a", meridian.StatusCritical), synced(9))
	s = changed(t, c, s)
	for s.Index < 9 {
		s = changed(t, c, s)
	}
	want(t, s, 9, "c")

	st.send(t, put(12, "b", meridian.StatusPassing))
	want(t, changed(t, c, s), 12, "b", "c")
}

func TestCacheDiscardsPartialListAndStartsOver(t *testing.T) {
	w := newScriptWatcher()
	c := start(t, w)
	c.Snapshot("orders")
	st := w.next(t)
	st.send(t, put(1, "a", meridian.StatusPassing))
	st.fail(t, errors.New("unexpected EOF"))

	st = w.next(t)
	if st.after != 0 {
		t.Fatalf("after a break before the first sync the watch resumed after %d, want a full list (0)", st.after)
	}
	st.send(t, put(2, "b", meridian.StatusPassing), synced(3))
	want(t, waitSnapshot(t, c, "orders"), 3, "b")
}

func TestCacheReloadsWhenResumeIndexIsGone(t *testing.T) {
	w := newScriptWatcher()
	c := start(t, w)
	c.Snapshot("orders")
	st := w.next(t)
	st.send(t, put(1, "a", meridian.StatusPassing), synced(5))
	s := waitSnapshot(t, c, "orders")

	st.fail(t, errors.New("unexpected EOF"))
	st = w.next(t)
	if st.after != 5 {
		t.Fatalf("resumed after %d, want 5", st.after)
	}
	st.fail(t, &meridian.Error{Code: meridian.CodeConflict, Message: "index 5 is compacted"})

	st = w.next(t)
	if st.after != 0 {
		t.Fatalf("after a conflict the watch resumed after %d, want a full list (0)", st.after)
	}
	st.send(t, put(20, "b", meridian.StatusPassing))
	unchanged(t, s) // the old set is served until the new list is complete
	st.send(t, synced(21))
	want(t, changed(t, c, s), 21, "b")
}

func TestCacheWatchesEachServiceOnFirstLookup(t *testing.T) {
	w := newScriptWatcher()
	c := New(w, WithBackoff(time.Millisecond, 5*time.Millisecond))
	c.Snapshot("orders") // before Run
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()

	if st := w.next(t); st.service != "orders" {
		t.Fatalf("first watch is of %q, want orders", st.service)
	}
	c.Snapshot("payments") // while running
	c.Snapshot("payments")
	c.Snapshot("Not A Service") // invalid: never watched
	if st := w.next(t); st.service != "payments" {
		t.Fatalf("second watch is of %q, want payments", st.service)
	}
	select {
	case st := <-w.streams:
		t.Fatalf("unexpected watch of %q", st.service)
	case <-time.After(20 * time.Millisecond):
	}
	if err := c.Run(ctx); err == nil {
		t.Error("second Run succeeded")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want nil after cancel", err)
	}
	if _, err := c.Wait(context.Background(), "inventory"); !meridian.IsCode(err, meridian.CodeUnavailable) {
		t.Fatalf("Wait after Run returned = %v, want unavailable", err)
	}
}

func TestWaitErrors(t *testing.T) {
	w := newScriptWatcher()
	c := start(t, w)
	if _, err := c.Wait(context.Background(), "Bad_Name"); !meridian.IsCode(err, meridian.CodeInvalid) {
		t.Fatalf("Wait(bad name) = %v, want invalid", err)
	}

	c.Snapshot("orders")
	w.next(t).fail(t, meridian.Errorf(meridian.CodeUnavailable, "connection refused"))
	st := w.next(t) // reconnected, and the last error recorded

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	_, err := c.Wait(ctx, "orders")
	if !meridian.IsCode(err, meridian.CodeUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait = %v, want unavailable wrapping the deadline", err)
	}
	t.Log(err)
	st.send(t, synced(1))
	if s := waitSnapshot(t, c, "orders"); len(s.Instances) != 0 || s.Index != 1 {
		t.Fatalf("empty service = %+v, want an empty snapshot at index 1", s)
	}
}

// TestConcurrentReaders is for the race detector: lookups run while the
// watch publishes.
func TestConcurrentReaders(t *testing.T) {
	w := newScriptWatcher()
	c := start(t, w)
	c.Snapshot("orders")
	st := w.next(t)
	st.send(t, synced(1))
	waitSnapshot(t, c, "orders")

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				s := c.Snapshot("orders")
				for _, in := range s.Instances {
					_ = in.HostPort()
				}
			}
		})
	}
	for i := uint64(2); i < 200; i++ {
		st.send(t, put(i, "a", meridian.StatusPassing))
	}
	close(stop)
	wg.Wait()
}

// TestSeedServesUntilTheFirstSync: instances kept from an earlier run
// serve at once, and the first sync of the watch replaces them; a seed
// after that changes nothing.
func TestSeedServesUntilTheFirstSync(t *testing.T) {
	w := newScriptWatcher()
	c := start(t, w)
	kept := put(3, "kept-1", meridian.StatusPassing).Instance
	if err := c.Seed("orders", []*meridian.Instance{kept}); err != nil {
		t.Fatal(err)
	}
	s := waitSnapshot(t, c, "orders")
	want(t, s, 0, "kept-1")
	st := w.next(t)
	st.send(t, put(7, "live-1", meridian.StatusPassing), synced(7))
	s = changed(t, c, s)
	want(t, s, 7, "live-1")
	if err := c.Seed("orders", []*meridian.Instance{kept}); err != nil {
		t.Fatal(err)
	}
	want(t, c.Snapshot("orders"), 7, "live-1")
	if err := c.Seed("Bad Name", nil); err == nil {
		t.Fatal("a malformed service name was seeded")
	}
}
