package outbound

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-platform/meridian/internal/backoff"
	"github.com/meridian-platform/meridian/traffic/balance"
	"github.com/meridian-platform/meridian/traffic/discovery"
	"github.com/meridian-platform/meridian/traffic/policy"
	"github.com/meridian-platform/meridian/traffic/ratelimit"
	"github.com/meridian-platform/meridian/traffic/resilience/metrics"
	"github.com/meridian-platform/meridian/traffic/resilience/outlier"
)

// Options configure a Transport. The zero value works.
type Options struct {
	// Base sends the tries, to the instances' host:port. Default: a clone
	// of http.DefaultTransport keeping up to 64 idle connections per
	// instance (net/http's default of 2 makes a busy client open and close
	// connections all the time).
	Base http.RoundTripper
	// Zone is the caller's zone, which balancers with zone preference
	// prefer. Empty: zone preference is off.
	Zone string
	// Metrics receives every layer's events per upstream
	// (meridian_resilience_*). Nil: none.
	Metrics *metrics.Metrics
	// Logger receives policy reloads and discovery trouble. Default:
	// discard.
	Logger *slog.Logger
	// Limiter makes the limiter of a rate-limit policy for an upstream.
	// Default: a ratelimit.Local, which limits this process's calls. A
	// caller that wants the limit to hold across its replicas returns a
	// ratelimit/redis limiter (with a prefix per policy) instead.
	Limiter func(upstream, policyName string, l ratelimit.Limit) (ratelimit.Limiter, error)
}

// Transport is the outbound side of the data path for one process: an
// http.RoundTripper that resolves service names through discovery and
// applies the resiliency policies, one compiled chain per upstream.
//
// A request whose URL host is a service name (a DNS label, no port:
// http://orders/v1/orders/42) goes through the chain of that upstream:
//
//	deadline.Timeout → retry(budget) → breaker → throttle → rate limit →
//	bulkhead → balancer stage (Balance) → outlier recording →
//	deadline.Propagate → Options.Base
//
// with the layers the upstream's policy turns off left out (the retry
// layer stays, with one attempt, since the balancer stage and the outlier
// recorder read its Attempt). Any other URL (host:port, an IP, a dotted
// name) goes straight to Options.Base.
//
// Upstreams are made on first use, under the current spec, and kept for
// the Transport's life. Apply replaces the spec: it builds every upstream's
// new chain first, then swaps them all in at once (one atomic store);
// requests already started finish on the chain they started on. An
// upstream keeps the state of each layer whose policy did not change: its
// breaker, retry budget, throttle, rate limiter, bulkhead and outlier
// detector carry over, and its balancer (endpoints, latency estimates,
// requests in flight) always does, reconfigured in place when its policy
// changed.
//
// Run keeps the balancers following discovery and runs the outlier
// detectors; its caller owns the goroutines it starts and stops them with
// its context. Without Run, a balancer gets its first instance list from
// the request that needs it and no later one.
type Transport struct {
	src  balance.Source
	base http.RoundTripper
	opts Options
	log  *slog.Logger

	gen atomic.Pointer[generation]

	mu      sync.Mutex // serializes Apply and the making of upstreams
	states  map[string]*state
	wake    chan struct{} // an upstream or a detector was added; buffered 1
	running atomic.Bool
}

// generation is one version of the spec and the upstreams built under it.
// It is never modified: a new upstream or a new spec makes a new one.
type generation struct {
	spec *policy.Spec
	ups  map[string]*Upstream
}

// state is what an upstream keeps across generations.
type state struct {
	service  string
	balancer *balance.Balancer
	cur      *Upstream // under Transport.mu

	// setMu serializes the calls that give the current detector the
	// endpoint set. ejectMu guards detector and ids; detectors call eject
	// with their own lock held, so no detector method is called while
	// holding ejectMu.
	setMu    sync.Mutex
	ejectMu  sync.Mutex
	detector *outlier.Detector // whose ejections apply; nil when off
	ids      []string          // the endpoint IDs of the last snapshot
}

var _ http.RoundTripper = (*Transport)(nil)

// New returns a Transport that finds instances through src (a
// *discovery.Cache), under the built-in policies until Apply. It starts
// nothing: call Run.
func New(src balance.Source, opts Options) *Transport {
	if opts.Base == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 64
		opts.Base = tr
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	t := &Transport{
		src:    src,
		base:   opts.Base,
		opts:   opts,
		log:    opts.Logger,
		states: map[string]*state{},
		wake:   make(chan struct{}, 1),
	}
	t.gen.Store(&generation{spec: &policy.Spec{}, ups: map[string]*Upstream{}})
	return t
}

// RoundTrip sends req through its upstream's chain, or straight to the
// base transport when its host is not a service name.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !isServiceName(req.URL.Host) {
		return t.base.RoundTrip(req)
	}
	u, err := t.Upstream(req.URL.Host)
	if err != nil {
		closeBody(req)
		return nil, err
	}
	return u.rt.RoundTrip(req)
}

// CloseIdleConnections closes the base transport's idle connections
// (http.Client.CloseIdleConnections calls it).
func (t *Transport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// Spec returns the spec in force (the built-in policies' empty spec before
// the first Apply). It is shared: read it, never modify it.
func (t *Transport) Spec() *policy.Spec { return t.gen.Load().spec }

// Upstream returns the service's current Upstream, making it under the
// current spec on first use. It takes no lock once made. The error, rare,
// is a layer that could not be made (Options.Limiter failed).
func (t *Transport) Upstream(service string) (*Upstream, error) {
	if u := t.gen.Load().ups[service]; u != nil {
		return u, nil
	}
	return t.add(service)
}

func (t *Transport) add(service string) (*Upstream, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	g := t.gen.Load()
	if u := g.ups[service]; u != nil {
		return u, nil
	}
	r := g.spec.Resolve(service)
	b, err := balance.New(service, r.Balancer.Config(t.opts.Zone))
	if err != nil {
		return nil, err
	}
	st := &state{service: service, balancer: b}
	u, err := t.build(st, r, nil)
	if err != nil {
		return nil, err
	}
	ups := maps.Clone(g.ups)
	ups[service] = u
	t.gen.Store(&generation{spec: g.spec, ups: ups})
	t.states[service] = st
	t.commit(st, u)
	return u, nil
}

// Apply makes spec the one in force. It validates spec and builds the new
// chain of every upstream made so far before anything changes; on error
// the current spec stays and nothing has changed. Then all the new chains
// replace the old ones at once: requests already started finish on the
// old ones. Safe to call from any goroutine (typically a config binding's
// onChange).
func (t *Transport) Apply(spec *policy.Spec) error {
	if spec == nil {
		spec = &policy.Spec{}
	}
	if err := spec.Validate(); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	next := &generation{spec: spec, ups: make(map[string]*Upstream, len(t.states))}
	for svc, st := range t.states {
		u, err := t.build(st, spec.Resolve(svc), st.cur)
		if err != nil {
			return fmt.Errorf("outbound: applying the resiliency spec to %s: %w", svc, err)
		}
		next.ups[svc] = u
	}
	t.gen.Store(next)
	changed := 0
	for svc, st := range t.states {
		if !same(&st.cur.resolved, &next.ups[svc].resolved) {
			changed++
		}
		t.commit(st, next.ups[svc])
	}
	t.log.Info("outbound: resiliency spec applied", "spec", spec.String(), "upstreams", len(t.states), "changed", changed)
	return nil
}

// commit makes u the upstream's current one once it is in force:
// reconfigures the balancer if its policy changed and installs a new
// outlier detector. Called with t.mu held.
func (t *Transport) commit(st *state, u *Upstream) {
	prev := st.cur
	st.cur = u
	if prev != nil && !same(&prev.resolved.Balancer, &u.resolved.Balancer) {
		if err := st.balancer.Reconfigure(u.resolved.Balancer.Config(t.opts.Zone)); err != nil {
			// Validate accepted it; the balancer keeps its policy.
			t.log.Error("outbound: cannot reconfigure the balancer", "upstream", st.service, "err", err)
		}
	}
	if prev == nil || prev.detector != u.detector {
		st.install(u.detector)
		t.signal()
	}
	if prev == nil {
		t.signal()
	}
}

func (t *Transport) signal() {
	select {
	case t.wake <- struct{}{}:
	default: // Run has a wake-up pending
	}
}

// install makes d the detector whose ejections apply to the upstream's
// endpoints. The previous detector's ejections are undone: d starts from
// its own view.
func (st *state) install(d *outlier.Detector) {
	st.setMu.Lock()
	defer st.setMu.Unlock()
	st.ejectMu.Lock()
	old := st.detector
	st.detector = d
	ids := st.ids
	if old != nil {
		for _, e := range st.balancer.Endpoints() {
			e.SetEjected(false)
		}
	}
	st.ejectMu.Unlock()
	if d != nil && ids != nil {
		d.SetEndpoints(ids)
	}
}

// eject is the Eject callback of detector d: it applies only while d is
// the upstream's current detector.
func (st *state) eject(d *outlier.Detector, id string, ejected bool) {
	st.ejectMu.Lock()
	defer st.ejectMu.Unlock()
	if st.detector != d {
		return
	}
	if e := st.balancer.Endpoint(id); e != nil {
		e.SetEjected(ejected)
	}
}

// setEndpoints gives the current detector the endpoint set of a new
// snapshot.
func (st *state) setEndpoints(snap *discovery.Snapshot) {
	ids := make([]string, len(snap.Instances))
	for i, in := range snap.Instances {
		ids[i] = in.ID
	}
	st.setMu.Lock()
	defer st.setMu.Unlock()
	st.ejectMu.Lock()
	st.ids = ids
	d := st.detector
	st.ejectMu.Unlock()
	if d != nil {
		d.SetEndpoints(ids)
	}
}

// Run keeps every upstream's balancer and outlier detector following the
// service's discovery snapshots, and runs the detectors (which return
// ejected endpoints to service on time), until ctx ends; then it waits for
// the goroutines it started and returns nil. Upstreams made while it runs
// are followed from then on. Run may be called once.
func (t *Transport) Run(ctx context.Context) error {
	if !t.running.CompareAndSwap(false, true) {
		return errors.New("outbound: Transport.Run called twice")
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	following := map[*state]bool{}
	running := map[*outlier.Detector]context.CancelFunc{}
	defer func() {
		for _, cancel := range running {
			cancel()
		}
	}()
	for {
		t.mu.Lock()
		states := make([]*state, 0, len(t.states))
		want := map[*outlier.Detector]bool{}
		for _, st := range t.states {
			states = append(states, st)
			if d := st.cur.detector; d != nil {
				want[d] = true
			}
		}
		t.mu.Unlock()
		for _, st := range states {
			if !following[st] {
				following[st] = true
				wg.Go(func() { t.follow(ctx, st) })
			}
		}
		for d := range want {
			if _, ok := running[d]; !ok {
				dctx, cancel := context.WithCancel(ctx)
				running[d] = cancel
				wg.Go(func() { _ = d.Run(dctx) })
			}
		}
		for d, cancel := range running {
			if !want[d] {
				cancel()
				delete(running, d)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.wake:
		}
	}
}

// follow applies the service's snapshots to its balancer and detector
// until ctx ends.
func (t *Transport) follow(ctx context.Context, st *state) {
	bo := backoff.Backoff{Base: 100 * time.Millisecond, Max: 5 * time.Second}
	for {
		snap, err := t.src.Wait(ctx, st.service)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			d := bo.Next()
			t.log.Warn("outbound: no instance list", "upstream", st.service, "retry_in", d, "err", err)
			if !backoff.Sleep(ctx, d) {
				return
			}
			continue
		}
		bo.Reset()
		st.balancer.Update(snap)
		st.setEndpoints(snap)
		select {
		case <-snap.Changed():
		case <-ctx.Done():
			return
		}
	}
}

// isServiceName reports whether host is a service name (a DNS label:
// 1-63 lowercase letters, digits and '-', not starting or ending with
// '-'), without allocating.
func isServiceName(host string) bool {
	if len(host) == 0 || len(host) > 63 || host[0] == '-' || host[len(host)-1] == '-' {
		return false
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
