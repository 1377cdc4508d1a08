// Package discovery keeps an in-process view of services' serving instances,
// fed by the control plane's registry watch. It is the first stage of the
// data path shared by the gateway, the sidecar and the SDK: the balancers
// read its snapshots on every request, so a lookup takes no lock and makes
// no control-plane call.
//
// # One watch per service, started on first lookup
//
// A Cache watches a service only once something asks for it (Snapshot, Wait),
// with one registry watch per service (GET /v1/registry/watch?service=S).
// That is how Consul's health watches and gRPC's resolvers work, and it
// scales with what a process talks to rather than with the size of the whole
// registry: a service with three dependencies holds three small streams and
// three small sets, never the catalogue of every instance in the cluster,
// and a service token that may only read the registry it needs is enough.
// Services are never dropped once looked up; a process's dependencies are a
// small, stable set.
//
// # Consistency
//
// Each watch starts without an index: the control plane sends the current
// instances, then a sync event carrying the registry index the list
// reflects; only then is the first Snapshot published. Later changes are
// applied one by one, in index order, and each publishes a new Snapshot. When
// the stream breaks (control plane restarted, network cut) the cache keeps
// serving the last Snapshot and reconnects with capped exponential backoff
// and full jitter, resuming after the last index it applied, so every change
// is applied exactly once; changes replayed on resume are published in one
// Snapshot at the next sync. A stream that breaks before the first sync of a
// fresh start is discarded and started again from nothing, because a partial
// list has no index to resume from. If the control plane answers a resume
// with CodeConflict (the index is no longer in its history), the cache
// starts again without an index and replaces the set at the next sync.
package discovery

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/internal/backoff"
)

// Watcher streams a service's registry changes. *client.Client satisfies it.
//
// With after = 0 it delivers the current instances as put events, then an
// EventSync event whose Index is the registry index they reflect, then live
// changes; with after > 0 it delivers every change after that index once, in
// order, then EventSync. It blocks until ctx ends, fn returns an error or the
// stream breaks.
type Watcher interface {
	WatchRegistry(ctx context.Context, service string, after uint64, fn func(meridian.InstanceEvent) error) error
}

// Snapshot is one immutable view of a service. It is shared by every reader:
// neither the slice nor the instances it points to may be modified.
type Snapshot struct {
	Service string
	// Index is the registry index this view reflects; 0 for a Seed not
	// yet confirmed by the control plane.
	Index uint64
	// Instances are the instances discovery serves (health passing or
	// warning), sorted by ID.
	Instances []*meridian.Instance

	changed chan struct{}
}

// Changed is closed when a newer Snapshot of the service replaces this one.
// A reader that rebuilds on change loops on it, and cannot miss an update
// between reading a Snapshot and waiting:
//
//	for {
//		rebuild(snap)
//		select {
//		case <-snap.Changed():
//			snap = cache.Snapshot(service)
//		case <-ctx.Done():
//			return
//		}
//	}
func (s *Snapshot) Changed() <-chan struct{} { return s.changed }

// Fixed returns a Snapshot of a fixed set of instances that never changes:
// for upstreams given by address (a gateway route's static URLs), so that
// they are balanced and guarded like a registered service's instances.
func Fixed(service string, instances []*meridian.Instance) *Snapshot {
	return &Snapshot{Service: service, Instances: instances, changed: make(chan struct{})}
}

// Subset returns a view of s holding the instances keep accepts, under the
// name service (a gateway's canary subset "orders, version v2"). It changes
// when s does: its Changed is s's.
func (s *Snapshot) Subset(service string, keep func(*meridian.Instance) bool) *Snapshot {
	var in []*meridian.Instance
	for _, i := range s.Instances {
		if keep(i) {
			in = append(in, i)
		}
	}
	return &Snapshot{Service: service, Index: s.Index, Instances: in, changed: s.changed}
}

// Option configures a Cache.
type Option func(*Cache)

// WithLogger sets the logger for watch failures and reconnects. Default:
// discard.
func WithLogger(l *slog.Logger) Option { return func(c *Cache) { c.log = l } }

// WithBackoff sets the reconnect backoff: the first delay is at most base,
// each later one at most twice the previous ceiling, never above max (full
// jitter: each delay is uniform below its ceiling). Defaults: 100ms and 10s.
func WithBackoff(base, max time.Duration) Option {
	return func(c *Cache) { c.backoffBase, c.backoffMax = base, max }
}

// Cache is an in-process view of services' serving instances. Create it
// with New, run it with Run; lookups are safe from any goroutine, before,
// during and after Run.
type Cache struct {
	w                       Watcher
	log                     *slog.Logger
	backoffBase, backoffMax time.Duration

	services sync.Map      // service name → *entry
	wake     chan struct{} // a service was added; buffered 1
	running  atomic.Bool
	done     chan struct{} // closed when Run returns
}

type entry struct {
	service   string
	publishMu sync.Mutex // serializes publish and Seed
	snap      atomic.Pointer[Snapshot]
	synced    chan struct{}         // closed when the first Snapshot is published
	lastErr   atomic.Pointer[error] // the last watch failure, for Wait's error
}

// New returns a Cache that watches through w. It starts nothing: call Run.
func New(w Watcher, opts ...Option) *Cache {
	c := &Cache{
		w:    w,
		log:  slog.New(slog.DiscardHandler),
		wake: make(chan struct{}, 1),
		done: make(chan struct{}),
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Run watches every service looked up, before or while it runs, until ctx
// ends; then it waits for its watch goroutines to return and returns nil.
// The last Snapshots stay readable after Run returns, but no service is
// watched any more. Run may be called once.
func (c *Cache) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("discovery: Cache.Run called twice")
	}
	defer close(c.done)
	var wg sync.WaitGroup
	defer wg.Wait()
	watching := make(map[string]bool)
	for {
		c.services.Range(func(k, v any) bool {
			if name := k.(string); !watching[name] {
				watching[name] = true
				e := v.(*entry)
				wg.Go(func() { c.watch(ctx, e) })
			}
			return true
		})
		select {
		case <-ctx.Done():
			return nil
		case <-c.wake:
		}
	}
}

// Snapshot returns the service's current view without blocking, locking or
// calling the control plane: nil until the first sync of the service's
// watch (the first call starts that watch). Snapshots are replaced, never
// modified, so the result may be kept and read freely.
func (c *Cache) Snapshot(service string) *Snapshot {
	if v, ok := c.services.Load(service); ok {
		return v.(*entry).snap.Load()
	}
	if meridian.ValidateServiceName("service", service) != nil {
		return nil
	}
	return c.lookup(service).snap.Load()
}

// Seed gives a service a view before its watch has synced: the instances
// a process kept from an earlier run (a gateway restarted while the
// control plane is unreachable). The seeded Snapshot has Index 0, serves
// Snapshot and Wait at once, and is replaced, its Changed closed, by the
// first sync of the watch. Seed does nothing once the service has a view.
func (c *Cache) Seed(service string, instances []*meridian.Instance) error {
	if err := meridian.ValidateServiceName("service", service); err != nil {
		return err
	}
	e := c.lookup(service)
	e.publishMu.Lock()
	defer e.publishMu.Unlock()
	if e.snap.Load() != nil {
		return nil
	}
	in := slices.Clone(instances)
	slices.SortFunc(in, func(a, b *meridian.Instance) int { return cmp.Compare(a.ID, b.ID) })
	e.snap.Store(&Snapshot{Service: service, Instances: in, changed: make(chan struct{})})
	close(e.synced)
	return nil
}

// Wait returns the service's view, waiting for the first sync of its watch
// if there has been none yet. It fails with a *meridian.Error: CodeInvalid
// for a malformed service name, CodeUnavailable (wrapping ctx's error, and
// naming the last watch failure) when ctx ends first or the Cache has
// stopped. A synced service with no serving instance is a Snapshot with no
// Instances, not an error.
func (c *Cache) Wait(ctx context.Context, service string) (*Snapshot, error) {
	if err := meridian.ValidateServiceName("service", service); err != nil {
		return nil, err
	}
	e := c.lookup(service)
	if s := e.snap.Load(); s != nil {
		return s, nil
	}
	select {
	case <-e.synced:
		return e.snap.Load(), nil
	case <-ctx.Done():
		return nil, e.unavailable("", ctx.Err())
	case <-c.done:
		select {
		case <-e.synced:
			return e.snap.Load(), nil
		default:
			return nil, e.unavailable("the discovery cache has stopped; ", nil)
		}
	}
}

func (e *entry) unavailable(why string, cause error) error {
	msg := fmt.Sprintf("%sno instance list of service %q yet", why, e.service)
	if p := e.lastErr.Load(); p != nil {
		msg += fmt.Sprintf(" (last watch error: %v)", *p)
	}
	return &meridian.Error{Code: meridian.CodeUnavailable, Message: msg, Err: cause}
}

// lookup returns the service's entry, creating it and waking Run if needed.
func (c *Cache) lookup(service string) *entry {
	if v, ok := c.services.Load(service); ok {
		return v.(*entry)
	}
	v, loaded := c.services.LoadOrStore(service, &entry{service: service, synced: make(chan struct{})})
	if !loaded {
		select {
		case c.wake <- struct{}{}:
		default: // Run has a wake-up pending and will see this entry then
		}
	}
	return v.(*entry)
}

// watch keeps one service's watch running until ctx ends. It is the only
// writer of e's snapshots.
func (c *Cache) watch(ctx context.Context, e *entry) {
	bo := backoff.Backoff{Base: c.backoffBase, Max: c.backoffMax}
	var (
		index uint64                            // resume point; 0: start from a full list
		set   = map[string]*meridian.Instance{} // every instance of the service at index, serving or not
	)
	for {
		fresh := index == 0
		work := set
		if fresh {
			// A full list replaces the set only once it is complete.
			work = make(map[string]*meridian.Instance)
		}
		synced := false
		err := c.w.WatchRegistry(ctx, e.service, index, func(ev meridian.InstanceEvent) error {
			switch ev.Type {
			case meridian.EventSync:
				if fresh {
					set, fresh = work, false
				}
				index = max(index, ev.Index)
				synced = true
				bo.Reset()
				e.publish(set, index)
			case meridian.EventPut, meridian.EventDelete:
				if ev.Service != "" && ev.Service != e.service {
					return nil
				}
				if !fresh && ev.Index <= index {
					return nil // already applied before a reconnect
				}
				apply(work, ev)
				if !fresh {
					index = ev.Index
					if synced {
						e.publish(set, index)
					}
				}
			}
			return nil
		})
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("stream ended")
		}
		e.lastErr.Store(&err)
		if meridian.IsCode(err, meridian.CodeConflict) && index != 0 {
			c.log.Warn("discovery: resume index no longer in the control plane's history; reloading the full list",
				"service", e.service, "index", index, "err", err)
			index = 0
		}
		d := bo.Next()
		c.log.Warn("discovery: registry watch broke; serving the last known instances",
			"service", e.service, "index", index, "retry_in", d, "err", err)
		if !backoff.Sleep(ctx, d) {
			return
		}
	}
}

// apply records one put or delete in set.
func apply(set map[string]*meridian.Instance, ev meridian.InstanceEvent) {
	id := ev.ID
	if id == "" && ev.Instance != nil {
		id = ev.Instance.ID
	}
	if ev.Type == meridian.EventDelete || ev.Instance == nil {
		delete(set, id)
		return
	}
	set[id] = ev.Instance
}

// publish swaps in a new Snapshot built from set and wakes the readers of
// the previous one.
func (e *entry) publish(set map[string]*meridian.Instance, index uint64) {
	e.publishMu.Lock()
	defer e.publishMu.Unlock()
	serving := make([]*meridian.Instance, 0, len(set))
	for _, in := range set {
		if in.Health.Status.Serving() {
			serving = append(serving, in)
		}
	}
	slices.SortFunc(serving, func(a, b *meridian.Instance) int { return cmp.Compare(a.ID, b.ID) })
	s := &Snapshot{Service: e.service, Index: index, Instances: serving, changed: make(chan struct{})}
	if old := e.snap.Swap(s); old != nil {
		close(old.changed)
	} else {
		close(e.synced)
	}
}
