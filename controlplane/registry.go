package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"
	"unique"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/controlplane/health"
	"github.com/meridian-platform/meridian/controlplane/store"
)

// The registry keeps three buckets:
//
//   - registry: "service/id" → Instance. Every registration and every health
//     transition is a revision here, so its change stream is the registry's
//     watch and its revisions are watch indexes.
//   - leases: "service/id" → the lease's deadline, written by heartbeats
//     (see lease.go). It lives in the store, so a lease outlives any one
//     control-plane replica; heartbeats never touch the registry bucket and
//     so never wake watchers.
//   - members: "replica-id" with a short TTL, refreshed by every live
//     replica. Health checks and lease reaping for an instance are done by
//     the one member that rendezvous hashing picks, so N replicas share the
//     work instead of repeating it, and a dead replica's share moves to the
//     others when its member key expires.
type registryConfig struct {
	reg, leases, members store.Bucket
	self                 string
	memberTTL            time.Duration
	workers              int
	log                  *slog.Logger
	metrics              *prometheus.Registry
}

// Registry is the service registry of one replica.
type Registry struct {
	cfg     registryConfig
	log     *slog.Logger
	mirror  *mirror // of the registry bucket
	leaseM  *mirror
	memberM *mirror
	runner  *health.Runner

	mu       sync.RWMutex
	services map[string]*serviceState
	leases   map[string]int64 // live lease keys → deadline (unix ns; 0 when unknown)
	beats    map[string]int64 // heartbeats not yet written to the store → when received
	members  []string         // sorted live replica ids
}

type serviceState struct {
	instances map[string]*meridian.Instance
	index     uint64 // revision of the last change to the service
}

func newRegistry(cfg registryConfig) *Registry {
	r := &Registry{
		cfg: cfg, log: cfg.log,
		services: map[string]*serviceState{},
		leases:   map[string]int64{},
		beats:    map[string]int64{},
	}
	r.mirror = newMirror(cfg.reg, "registry", cfg.log, r.applyInstance)
	r.leaseM = newMirror(cfg.leases, "leases", cfg.log, r.applyLease)
	r.memberM = newMirror(cfg.members, "members", cfg.log, r.applyMember)
	r.runner = health.NewRunner(health.RunnerConfig{
		Workers: cfg.workers,
		// Probes go straight to the instance (never through HTTP_PROXY), on a
		// fresh connection each time (10,000 idle keep-alives would cost more
		// than the handshakes), and a redirect is an answer, not a pass.
		Client: &http.Client{
			Transport:     &http.Transport{DisableKeepAlives: true, Proxy: nil},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		OnChange: r.setHealth,
		Logger:   cfg.log,
	})
	for _, st := range []meridian.HealthStatus{meridian.StatusPassing, meridian.StatusWarning, meridian.StatusCritical} {
		cfg.metrics.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "meridian_registry_instances", Help: "Registered instances by health status.",
			ConstLabels: prometheus.Labels{"status": string(st)},
		}, func() float64 { return float64(r.count(st)) }))
	}
	cfg.metrics.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "meridian_health_checks_owned", Help: "Active health checks this replica runs.",
	}, func() float64 { return float64(r.runner.Len()) }))
	return r
}

func (r *Registry) count(st meridian.HealthStatus) int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	n := 0
	for _, s := range r.services {
		for _, in := range s.instances {
			if in.Health.Status == st {
				n++
			}
		}
	}
	return n
}

func key(service, id string) string { return service + "/" + id }

func splitKey(k string) (service, id string) {
	service, id, _ = strings.Cut(k, "/")
	return service, id
}

func (r *Registry) ready() bool {
	return r.mirror.ready() && r.leaseM.ready() && r.memberM.ready()
}

// run owns the registry's background work until ctx ends.
func (r *Registry) run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, f := range []func(context.Context) error{r.mirror.run, r.leaseM.run, r.memberM.run, r.runner.Run, r.heartbeatMembership, r.reap} {
		wg.Go(func() { _ = f(ctx) })
	}
	wg.Wait()
	// Leave the membership now rather than when the key expires, so the
	// other replicas take over this one's checks at once.
	dctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, _ = r.cfg.members.Delete(dctx, r.cfg.self, 0)
	return nil
}

// applyInstance applies one registry change to the local view.
func (r *Registry) applyInstance(e store.Entry) {
	service, id := splitKey(e.Key)
	var inst *meridian.Instance
	if e.Op == store.OpPut {
		inst = new(meridian.Instance)
		if err := json.Unmarshal(e.Value, inst); err != nil {
			r.log.Error("undecodable registry entry", "key", e.Key, "err", err)
			return
		}
		inst.Revision = e.Revision
		intern(inst)
	}
	r.mu.Lock()
	s := r.services[service]
	if s == nil {
		s = &serviceState{instances: map[string]*meridian.Instance{}}
		r.services[service] = s
	}
	if inst != nil {
		s.instances[id] = inst
	} else {
		delete(s.instances, id)
	}
	s.index = max(s.index, e.Revision)
	owned := inst != nil && inst.Check != nil && r.ownsLocked(e.Key)
	r.mu.Unlock()
	if owned {
		r.runner.Upsert(inst)
	} else {
		r.runner.Remove(service, id)
	}
}

// intern makes the strings that many instances share (service, address,
// version, zone, protocol, status and the common health outputs) one copy
// each: the registry view is most of a replica's memory per instance.
func intern(in *meridian.Instance) {
	in.Service = unique.Make(in.Service).Value()
	in.Address = unique.Make(in.Address).Value()
	in.Version = unique.Make(in.Version).Value()
	in.Zone = unique.Make(in.Zone).Value()
	in.Protocol = unique.Make(in.Protocol).Value()
	in.Health.Status = unique.Make(in.Health.Status).Value()
	in.Health.Output = unique.Make(in.Health.Output).Value()
	for i, t := range in.Tags {
		in.Tags[i] = unique.Make(t).Value()
	}
}

func (r *Registry) applyMember(e store.Entry) {
	r.mu.Lock()
	i, found := slices.BinarySearch(r.members, e.Key)
	switch {
	case e.Op == store.OpPut && !found:
		r.members = slices.Insert(r.members, i, e.Key)
	case e.Op == store.OpDelete && found:
		r.members = slices.Delete(r.members, i, i+1)
	default:
		r.mu.Unlock()
		return
	}
	// Membership changed: take up the checks that are now ours, drop the rest.
	var mine, theirs []*meridian.Instance
	for _, s := range r.services {
		for _, in := range s.instances {
			if in.Check == nil {
				continue
			}
			if r.ownsLocked(key(in.Service, in.ID)) {
				mine = append(mine, in)
			} else {
				theirs = append(theirs, in)
			}
		}
	}
	r.mu.Unlock()
	for _, in := range mine {
		r.runner.Upsert(in)
	}
	for _, in := range theirs {
		r.runner.Remove(in.Service, in.ID)
	}
}

// ownsLocked reports whether this replica checks and reaps the instance.
// Until it has seen any member (itself included) it owns everything, so a
// lone replica never waits on its own membership to start checking.
func (r *Registry) ownsLocked(k string) bool {
	if len(r.members) == 0 {
		return true
	}
	return health.Owner(k, r.members) == r.cfg.self
}

// heartbeatMembership keeps this replica's member key alive.
func (r *Registry) heartbeatMembership(ctx context.Context) error {
	t := time.NewTicker(r.cfg.memberTTL / 3)
	defer t.Stop()
	for {
		if _, err := r.cfg.members.PutTTL(ctx, r.cfg.self, nil, r.cfg.memberTTL); err != nil && ctx.Err() == nil {
			r.log.Warn("membership refresh failed", "err", err)
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil
		}
	}
}

// setHealth records a health transition found by a probe.
func (r *Registry) setHealth(ctx context.Context, service, id string, h meridian.Health) {
	k := key(service, id)
	for range 5 {
		e, err := r.cfg.reg.Get(ctx, k)
		if err != nil {
			return // gone, or the store is down: the next transition retries
		}
		var in meridian.Instance
		if json.Unmarshal(e.Value, &in) != nil || in.Check == nil {
			return
		}
		if in.Health.Status == h.Status && in.Health.Output == h.Output {
			return
		}
		in.Health = h
		in.Revision = 0
		val, _ := json.Marshal(&in)
		if _, err := r.cfg.reg.Update(ctx, k, val, e.Revision); !errors.Is(err, store.ErrConflict) {
			if err == nil {
				r.log.Info("health changed", "service", service, "id", id, "status", h.Status, "output", h.Output)
			}
			return
		}
	}
}

// Register stores an instance. Re-registering an instance with the same
// check and TTL keeps its health, so a service that re-registers after a
// control-plane restart is not sent back through its start-up thresholds.
func (r *Registry) Register(ctx context.Context, in meridian.Instance) (*meridian.Instance, error) {
	if err := in.Normalize(); err != nil {
		return nil, err
	}
	in.Revision = 0
	k := key(in.Service, in.ID)
	if ttl := in.TTL.D(); ttl > 0 {
		// The lease first: an instance is never visible without one.
		if err := r.writeLease(ctx, k, time.Now().UnixNano(), ttl); err != nil {
			return nil, storeError(err)
		}
	}
	for range 5 {
		now := time.Now().UTC()
		in.RegisteredAt = now
		in.Health = initialHealth(in.Check, now)
		old, err := r.cfg.reg.Get(ctx, k)
		var rev uint64
		switch {
		case errors.Is(err, store.ErrNotFound):
			val, _ := json.Marshal(&in)
			rev, err = r.cfg.reg.Create(ctx, k, val)
		case err != nil:
			return nil, storeError(err)
		default:
			var prev meridian.Instance
			if json.Unmarshal(old.Value, &prev) == nil && reflect.DeepEqual(prev.Check, in.Check) && prev.TTL == in.TTL {
				in.Health, in.RegisteredAt = prev.Health, prev.RegisteredAt
			}
			val, _ := json.Marshal(&in)
			rev, err = r.cfg.reg.Update(ctx, k, val, old.Revision)
		}
		if errors.Is(err, store.ErrConflict) {
			continue // a health transition or another registration raced us
		}
		if err != nil {
			return nil, storeError(err)
		}
		in.Revision = rev
		return &in, nil
	}
	return nil, meridian.Errorf(meridian.CodeUnavailable, "instance %s is being changed concurrently; retry", k)
}

func initialHealth(c *meridian.CheckSpec, now time.Time) meridian.Health {
	if c == nil {
		return meridian.Health{Status: meridian.StatusPassing, Output: "registered; no active check (lease only)", Since: now}
	}
	return meridian.Health{Status: c.InitialStatus, Output: "awaiting the first " + string(c.Kind) + " check", Since: now}
}

// Deregister removes an instance and its lease.
func (r *Registry) Deregister(ctx context.Context, service, id string) (uint64, error) {
	k := key(service, id)
	if _, err := r.cfg.reg.Get(ctx, k); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return 0, notFound("instance %s of service %s is not registered", id, service)
		}
		return 0, storeError(err)
	}
	rev, err := r.cfg.reg.Delete(ctx, k, 0)
	if err != nil {
		return 0, storeError(err)
	}
	_, _ = r.cfg.leases.Delete(ctx, k, 0)
	// Until this replica's view has the deletion, a heartbeat here would
	// still be answered; wait, so that the caller's next request is not.
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_ = r.mirror.waitFor(wctx, rev)
	return rev, nil
}

// Instances lists a service's instances sorted by id, and the service's index.
func (r *Registry) Instances(service string, healthyOnly bool) ([]meridian.Instance, uint64) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	s := r.services[service]
	if s == nil {
		return []meridian.Instance{}, r.mirror.revision()
	}
	out := make([]meridian.Instance, 0, len(s.instances))
	for _, in := range s.instances {
		if !healthyOnly || in.Health.Status.Serving() {
			out = append(out, *in)
		}
	}
	sortBy(out, func(in meridian.Instance) string { return in.ID })
	return out, s.index
}

// Instance returns one instance.
func (r *Registry) Instance(service, id string) (*meridian.Instance, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if s := r.services[service]; s != nil {
		if in := s.instances[id]; in != nil {
			c := *in
			return &c, nil
		}
	}
	return nil, notFound("instance %s of service %s is not registered", id, service)
}

// waitService blocks until the service changes after index, or ctx ends.
func (r *Registry) waitService(ctx context.Context, service string, index uint64) {
	for {
		r.mirror.mu.Lock()
		moved := r.mirror.moved
		r.mirror.mu.Unlock()
		r.mu.RLock()
		var cur uint64
		if s := r.services[service]; s != nil {
			cur = s.index
		}
		r.mu.RUnlock()
		if cur > index {
			return
		}
		select {
		case <-moved:
		case <-ctx.Done():
			return
		}
	}
}

// Services summarises the catalogue: services with at least one instance.
func (r *Registry) Services() ([]meridian.ServiceSummary, uint64) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := []meridian.ServiceSummary{}
	for name, s := range r.services {
		if len(s.instances) == 0 {
			continue
		}
		sum := meridian.ServiceSummary{Name: name, Instances: len(s.instances), ByStatus: map[string]int{}}
		for _, in := range s.instances {
			sum.ByStatus[string(in.Health.Status)]++
			if in.Version != "" && !slices.Contains(sum.Versions, in.Version) {
				sum.Versions = append(sum.Versions, in.Version)
			}
		}
		slices.Sort(sum.Versions)
		out = append(out, sum)
	}
	sortBy(out, func(s meridian.ServiceSummary) string { return s.Name })
	return out, r.mirror.revision()
}
