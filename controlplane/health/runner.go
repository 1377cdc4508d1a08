package health

import (
	"container/heap"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/meridian-platform/meridian"
)

// ErrRunning is returned by Run when the Runner is already running.
var ErrRunning = errors.New("health: runner is already running")

// DefaultWorkers is RunnerConfig.Workers' default.
const DefaultWorkers = 32

// RunnerConfig configures a Runner. The zero value works.
type RunnerConfig struct {
	// Workers is how many probes run at once. Default DefaultWorkers (32).
	// It bounds goroutines and sockets regardless of the number of
	// instances; size it so that instances / interval × average probe time
	// stays well below it (10,000 instances every 10s at 10ms a probe keep
	// 10 workers busy; each instance that times out holds a worker for the
	// whole Timeout). When workers fall behind, probes run late, oldest
	// due first; none are skipped.
	Workers int
	// Client makes the http checks. Default: a client without keep-alives
	// or proxy, owned by the Runner. A caller-supplied client is used as is
	// and never closed.
	Client *http.Client
	// OnChange is called after a status transition (never for an output
	// change alone), typically to persist the new health. It runs on a
	// worker goroutine with Run's ctx: calls for one instance are
	// serialized and in order, because the instance is not probed again
	// until OnChange returns; calls for different instances may run
	// concurrently. A slow OnChange holds a worker. Nil means none.
	OnChange func(ctx context.Context, service, id string, h meridian.Health)
	// Logger receives rejected check specs (Warn) and transitions (Debug;
	// OnChange's owner is the one to log what it persisted). Default:
	// discard.
	Logger *slog.Logger
	// Now stamps Health.Since. Default time.Now. Scheduling does not use
	// it: probes are timed by the monotonic clock, so a test may freeze Now
	// and a wall-clock jump cannot stall or burst the schedule.
	Now func() time.Time
}

// Runner probes many instances on a fixed pool of workers. Instances wait
// in a min-heap ordered by their next due time; one scheduler goroutine
// hands due instances to the workers over a channel. An idle instance thus
// costs a heap slot and a small record, not a goroutine or a timer.
//
// Guarantees: an instance's first probe runs as soon as a worker is free
// after Upsert; later probes start every Interval, measured from the start
// of the previous one; a probe that overruns its interval is followed
// immediately by the next; two probes of one instance never overlap.
//
// Upsert, Remove, Len and Health are safe for concurrent use and may be
// called before, during and after Run. Which instances to Upsert (for
// example those that Owner assigns to this replica) is the caller's
// decision.
type Runner struct {
	workers   int
	client    *http.Client
	ownClient bool
	onChange  func(ctx context.Context, service, id string, h meridian.Health)
	log       *slog.Logger
	now       func() time.Time
	// probe is Probe bound to the client; tests replace it.
	probe func(ctx context.Context, inst *meridian.Instance) Result
	// wake tells the scheduler that the head of the queue may have changed.
	// Capacity 1: one pending signal is enough, senders never block.
	wake chan struct{}

	mu      sync.Mutex
	entries map[instanceKey]*entry
	queue   dueQueue
	// zombies counts entries removed while their probe was in flight; they
	// stay in entries until the probe ends so that a re-Upsert cannot start
	// a second, overlapping probe of the same instance.
	zombies int
	running bool
}

type instanceKey struct{ service, id string }

// entry is the Runner's record of one instance. Fields are guarded by
// Runner.mu.
type entry struct {
	key instanceKey
	// inst is an immutable snapshot of what a probe needs; Upsert replaces
	// it rather than mutating it, so a worker may read it without the lock.
	inst    *meridian.Instance
	tracker Tracker
	due     time.Time // next probe; monotonic
	index   int       // position in queue; -1 while not queued
	// gen changes whenever the check restarts (new spec or address), so
	// the result of a probe started before cannot reach the new tracker.
	gen     uint64
	busy    bool // a probe is dispatched or running
	removed bool // removed while busy; deleted when the probe ends
}

// job is one probe handed to a worker.
type job struct {
	e    *entry
	gen  uint64
	inst *meridian.Instance
}

// NewRunner returns a Runner; nothing runs until Run.
func NewRunner(cfg RunnerConfig) *Runner {
	r := &Runner{
		workers:  cfg.Workers,
		client:   cfg.Client,
		onChange: cfg.OnChange,
		log:      cfg.Logger,
		now:      cfg.Now,
		wake:     make(chan struct{}, 1),
		entries:  make(map[instanceKey]*entry),
	}
	if r.workers <= 0 {
		r.workers = DefaultWorkers
	}
	if r.client == nil {
		r.client = newHTTPClient()
		r.ownClient = true
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.now == nil {
		r.now = time.Now
	}
	r.probe = func(ctx context.Context, inst *meridian.Instance) Result {
		return Probe(ctx, inst, r.client)
	}
	return r
}

// Upsert starts checking inst, or updates the check of an instance already
// known by its service and ID. An instance without a Check, or whose Check
// does not validate, is removed (the latter is logged).
//
// When the check spec and the address are unchanged the instance keeps its
// tracker state and schedule, so re-upserting every instance after a watch
// resync is cheap and resets nothing. Otherwise the check restarts from
// inst.Health (the stored health; when its Status is empty, from the
// current state, or spec.InitialStatus for a new instance) and is probed
// right away. Upsert keeps only what probing needs, not inst itself.
func (r *Runner) Upsert(inst *meridian.Instance) {
	if inst == nil {
		return
	}
	k := instanceKey{inst.Service, inst.ID}
	if inst.Check == nil {
		r.Remove(k.service, k.id)
		return
	}
	spec := *inst.Check
	if err := spec.Normalize(); err != nil {
		r.log.Warn("health check not run: invalid check spec",
			"service", k.service, "id", k.id, "err", err)
		r.Remove(k.service, k.id)
		return
	}
	snap := &meridian.Instance{
		Service:  inst.Service,
		ID:       inst.ID,
		Address:  inst.Address,
		Port:     inst.Port,
		Protocol: inst.Protocol,
		Check:    &spec,
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.entries[k]
	current := inst.Health
	switch {
	case !ok:
		e = &entry{key: k, index: -1}
		r.entries[k] = e
	case e.removed:
		// Re-registered while its last probe is still running: a new
		// registration, but it must wait for that probe to end.
		e.removed = false
		r.zombies--
	case *e.inst.Check == spec && e.inst.HostPort() == snap.HostPort():
		return
	default:
		if current.Status == "" {
			current = e.tracker.Health()
		}
	}
	e.inst = snap
	e.tracker = *NewTracker(spec, current)
	e.gen++
	e.due = time.Now()
	if !e.busy {
		r.enqueue(e)
	}
	// A busy entry is enqueued by its worker when the probe in flight
	// ends; its due time is already now, so the new check runs next.
}

// Remove stops checking an instance. A probe already running finishes, but
// its result is dropped and OnChange is not called for it.
func (r *Runner) Remove(service, id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := instanceKey{service, id}
	e, ok := r.entries[k]
	if !ok || e.removed {
		return
	}
	if e.busy {
		e.removed = true
		r.zombies++
		return
	}
	if e.index >= 0 {
		heap.Remove(&r.queue, e.index)
	}
	delete(r.entries, k)
}

// Len returns the number of instances being checked.
func (r *Runner) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.entries) - r.zombies
}

// Health returns the Runner's current view of an instance's health, which
// includes the last probe's output even when the status did not change.
func (r *Runner) Health(service, id string) (meridian.Health, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.entries[instanceKey{service, id}]
	if !ok || e.removed {
		return meridian.Health{}, false
	}
	return e.tracker.Health(), true
}

// Run probes instances until ctx is done, then waits for its workers to
// stop and returns nil. Probes cut short by the cancellation are not
// counted as failures and are the first to run if Run is called again.
// Run waits for OnChange calls in progress, so OnChange should return
// promptly once ctx is done. Calling Run while it runs returns ErrRunning.
func (r *Runner) Run(ctx context.Context) error {
	r.mu.Lock()
	if r.running {
		r.mu.Unlock()
		return ErrRunning
	}
	r.running = true
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.running = false
		r.mu.Unlock()
	}()

	// Unbuffered, so a job is either taken by a worker or still the
	// scheduler's to put back: none is stranded in a buffer at shutdown.
	jobs := make(chan job)
	var wg sync.WaitGroup
	for range r.workers {
		wg.Go(func() { r.work(ctx, jobs) })
	}
	r.schedule(ctx, jobs)
	wg.Wait()
	if r.ownClient {
		r.client.CloseIdleConnections()
	}
	return nil
}

// schedule hands due instances to the workers until ctx is done.
func (r *Runner) schedule(ctx context.Context, jobs chan<- job) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		j, wait, ok := r.next()
		if ok {
			select {
			case jobs <- j:
			case <-ctx.Done():
				r.mu.Lock()
				r.release(j.e, true)
				r.mu.Unlock()
				return
			}
			continue
		}
		var tick <-chan time.Time
		if wait >= 0 {
			// Since Go 1.23 Reset also discards a value the timer sent
			// that nobody received, so no drain is needed.
			timer.Reset(wait)
			tick = timer.C
		}
		select {
		case <-tick:
		case <-r.wake:
		case <-ctx.Done():
			return
		}
	}
}

// next pops the earliest instance if it is due and marks it busy. When
// nothing is due it returns how long until something is, or -1 for an
// empty queue.
func (r *Runner) next() (j job, wait time.Duration, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.queue) == 0 {
		return job{}, -1, false
	}
	e := r.queue[0]
	now := time.Now()
	if d := e.due.Sub(now); d > 0 {
		return job{}, d, false
	}
	heap.Pop(&r.queue)
	e.busy = true
	// Fixed rate from the start of this probe: if the probe (or the wait
	// for a worker) overruns the interval, the next due time is already
	// past when it ends and the next probe runs right away.
	e.due = now.Add(e.inst.Check.Interval.D())
	return job{e: e, gen: e.gen, inst: e.inst}, 0, true
}

func (r *Runner) work(ctx context.Context, jobs <-chan job) {
	for {
		select {
		case j := <-jobs:
			r.runJob(ctx, j)
		case <-ctx.Done():
			return
		}
	}
}

func (r *Runner) runJob(ctx context.Context, j job) {
	res := r.probe(ctx, j.inst)

	r.mu.Lock()
	e := j.e
	// A cancelled Run makes probes fail; that says nothing about the
	// instance. A changed or removed instance has moved on from this probe.
	if ctx.Err() != nil || e.removed || e.gen != j.gen {
		r.release(e, ctx.Err() != nil)
		r.mu.Unlock()
		return
	}
	h, changed := e.tracker.Step(res, r.now())
	r.mu.Unlock()

	if changed {
		r.log.Debug("health status changed", "service", e.key.service, "id", e.key.id,
			"status", h.Status, "output", h.Output)
		if r.onChange != nil {
			// Still busy here, so the next probe of this instance (and
			// thus its next OnChange) waits for this call: transitions
			// reach the caller in order.
			r.onChange(ctx, e.key.service, e.key.id, h)
		}
	}

	r.mu.Lock()
	r.release(e, false)
	r.mu.Unlock()
}

// release ends a busy period: the entry goes back on the queue, or away
// if it was removed meanwhile. undone says the probe was cut short by the
// end of Run, so it is due again at once: the next Run makes it up first
// rather than leaving the instance unchecked for a whole interval.
// r.mu must be held.
func (r *Runner) release(e *entry, undone bool) {
	e.busy = false
	if e.removed {
		delete(r.entries, e.key)
		r.zombies--
		return
	}
	if undone {
		e.due = time.Now()
	}
	r.enqueue(e)
}

// enqueue puts an idle entry on the queue, or moves it if it is queued,
// and wakes the scheduler. r.mu must be held.
func (r *Runner) enqueue(e *entry) {
	if e.index >= 0 {
		heap.Fix(&r.queue, e.index)
	} else {
		heap.Push(&r.queue, e)
	}
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// dueQueue is a min-heap of entries by due time (container/heap).
type dueQueue []*entry

func (q dueQueue) Len() int           { return len(q) }
func (q dueQueue) Less(i, j int) bool { return q[i].due.Before(q[j].due) }
func (q dueQueue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].index = i
	q[j].index = j
}

func (q *dueQueue) Push(x any) {
	e := x.(*entry)
	e.index = len(*q)
	*q = append(*q, e)
}

func (q *dueQueue) Pop() any {
	old := *q
	n := len(old)
	e := old[n-1]
	old[n-1] = nil // let a removed entry be collected
	e.index = -1
	*q = old[:n-1]
	return e
}
