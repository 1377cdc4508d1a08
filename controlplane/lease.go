package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/controlplane/store"
)

// Leases.
//
// An instance with a TTL holds a lease: a key in the leases bucket whose
// value is the lease's deadline, the last heartbeat's time plus the TTL. The
// owner of the instance (rendezvous hashing over the replicas) removes it
// once the deadline has passed, so an instance is removed TTL after its last
// heartbeat, within the reaper's interval. The key also carries a store TTL,
// rounded up to whole seconds (JetStream's resolution): it only cleans up.
//
// Heartbeats are most of the registry's traffic. A replica writes a lease
// only when less than half of it is left; otherwise it notes the heartbeat
// and returns. Before a lease with a noted heartbeat runs out, the flusher
// writes it with the deadline that heartbeat earned. So the deadline is
// always the last heartbeat plus the TTL, as long as the replica that took
// the heartbeat lives; if it dies first, the instance may be removed up to
// TTL/2 early. At the SDK's TTL/3 interval this halves the writes, and the
// watch events every replica receives for them.

// reapInterval is how often owned instances are compared with their
// leases, and noted heartbeats flushed; it bounds how late past its
// deadline an instance is removed.
const reapInterval = 250 * time.Millisecond

// flushAhead is how long before a lease's deadline a noted heartbeat is
// written: several reaper ticks, so that one slow tick cannot miss it.
const flushAhead = time.Second

func encodeDeadline(ns int64) []byte { return strconv.AppendInt(nil, ns, 10) }

func decodeDeadline(b []byte) int64 {
	n, _ := strconv.ParseInt(string(b), 10, 64)
	return n
}

func (r *Registry) applyLease(e store.Entry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e.Op == store.OpPut {
		r.leases[e.Key] = decodeDeadline(e.Value)
	} else {
		delete(r.leases, e.Key)
	}
}

// writeLease gives k a lease until from+ttl.
func (r *Registry) writeLease(ctx context.Context, k string, from int64, ttl time.Duration) error {
	deadline := from + int64(ttl)
	keep := time.Duration(deadline - time.Now().UnixNano())
	keep = max(time.Second, (keep+time.Second-1)/time.Second*time.Second)
	_, err := r.cfg.leases.PutTTL(ctx, k, encodeDeadline(deadline), keep)
	return err
}

// Heartbeat renews an instance's lease.
func (r *Registry) Heartbeat(ctx context.Context, service, id string) error {
	k := key(service, id)
	now := time.Now().UnixNano()
	r.mu.RLock()
	var ttl time.Duration
	var known bool
	if s := r.services[service]; s != nil {
		if in := s.instances[id]; in != nil {
			ttl, known = in.TTL.D(), true
		}
	}
	deadline := r.leases[k]
	r.mu.RUnlock()
	if !known {
		// Registered a moment ago on another replica, perhaps: ask the store.
		e, err := r.cfg.reg.Get(ctx, k)
		if errors.Is(err, store.ErrNotFound) {
			return notFound("instance %s of service %s is not registered (its lease expired or it was deregistered): register it again", id, service)
		}
		if err != nil {
			return storeError(err)
		}
		var in meridian.Instance
		if err := json.Unmarshal(e.Value, &in); err != nil {
			return storeError(err)
		}
		ttl = in.TTL.D()
	}
	if ttl == 0 {
		return meridian.Errorf(meridian.CodeInvalid, "instance %s of service %s was registered without a ttl, so it has no lease to renew", id, service)
	}
	if time.Duration(deadline-now) > ttl/2 {
		r.mu.Lock()
		r.beats[k] = now
		r.mu.Unlock()
		return nil
	}
	r.mu.Lock()
	delete(r.beats, k)
	r.mu.Unlock()
	return storeError(r.writeLease(ctx, k, now, ttl))
}

// reap flushes noted heartbeats and removes the owned instances whose
// lease is over, until ctx ends.
func (r *Registry) reap(ctx context.Context) error {
	t := time.NewTicker(reapInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil
		}
		if !r.ready() {
			continue
		}
		r.flush(ctx)
		for _, in := range r.expiredCandidates() {
			k := key(in.Service, in.ID)
			// The local view of leases lags the store's; the store decides.
			e, err := r.cfg.leases.Get(ctx, k)
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				continue // the store is down: decide nothing
			}
			if d := decodeDeadline(e.Value); err == nil && (d == 0 || d > time.Now().UnixNano()) {
				continue // renewed (or a lease without a deadline: its key's TTL ends it)
			}
			if _, err := r.cfg.reg.Delete(ctx, k, in.Revision); err == nil {
				r.log.Info("lease expired; instance removed", "service", in.Service, "id", in.ID, "ttl", in.TTL.String())
			} else if !errors.Is(err, store.ErrConflict) && ctx.Err() == nil {
				r.log.Warn("could not remove expired instance", "service", in.Service, "id", in.ID, "err", err)
			}
		}
	}
}

// flush writes the noted heartbeats of leases about to run out.
func (r *Registry) flush(ctx context.Context) {
	type due struct {
		k    string
		from int64
		ttl  time.Duration
	}
	now := time.Now().UnixNano()
	var todo []due
	r.mu.Lock()
	for k, beat := range r.beats {
		service, id := splitKey(k)
		var in *meridian.Instance
		if s := r.services[service]; s != nil {
			in = s.instances[id]
		}
		deadline, leased := r.leases[k]
		switch {
		case in == nil || in.TTL == 0 || !leased:
			delete(r.beats, k) // deregistered or already gone
		case beat+int64(in.TTL) <= deadline:
			delete(r.beats, k) // a later write covers it
		case time.Duration(deadline-now) < flushAhead:
			todo = append(todo, due{k, beat, in.TTL.D()})
			delete(r.beats, k)
		}
	}
	r.mu.Unlock()
	for _, d := range todo {
		if err := r.writeLease(ctx, d.k, d.from, d.ttl); err != nil && ctx.Err() == nil {
			r.log.Warn("could not renew a lease", "key", d.k, "err", err)
		}
	}
}

func (r *Registry) expiredCandidates() []*meridian.Instance {
	now := time.Now().UnixNano()
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []*meridian.Instance
	for _, s := range r.services {
		for id, in := range s.instances {
			if in.TTL == 0 {
				continue
			}
			k := key(in.Service, id)
			deadline, leased := r.leases[k]
			if (!leased || deadline != 0 && deadline <= now) && r.ownsLocked(k) {
				out = append(out, in)
			}
		}
	}
	return out
}
