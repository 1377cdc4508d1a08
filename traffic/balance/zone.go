package balance

import (
	"math/rand/v2"
	"sync/atomic"
)

// zoneChooser prefers the caller's zone, Envoy's zone-aware routing reduced
// to two priorities: the local zone first, every other zone as the
// fallback, each balanced by the configured policy.
//
// A request goes to the other zones when
//   - the local zone has no endpoint, or none available (all ejected);
//   - by chance 1 − min(1, Overprovisioning × available fraction): a zone
//     that lost some endpoints keeps what its survivors can carry at their
//     usual load and spills the rest, as Envoy's priority spillover does;
//   - the local choice is overloaded: it has more than Overload times the
//     requests in flight of the other zones' choice (taken as at least 1);
//   - the local choice is unusable (the endpoint to avoid, or ejected)
//     while the other zones have a usable one.
//
// The local zone's available fraction is cached and recomputed only after
// an endpoint's ejected flag changes, and overload compares the two chosen
// endpoints' own counters, so a pick writes no counter shared by all
// requests (RingHash aside, whose bounded load counts each side's total). The other zones' choice is made only when needed: when the
// local one is unusable or has more than Overload requests in flight.
type zoneChooser struct {
	env            *env
	local, remote  chooser // nil when the zone side is empty
	localEps       []*Endpoint
	nLocal         int
	over, overload float64

	_ [64]byte
	// avail caches the local zone's available endpoints in one word: the
	// generation (env.ejectGen mod 2^32−1, plus 1 so that zero means none
	// cached) in the high 32 bits, the count in the low 32.
	avail atomic.Uint64
	_     [56]byte
}

// availableLocal is how many local endpoints are not ejected.
func (z *zoneChooser) availableLocal() int {
	gen := z.env.ejectGen.Load()%(1<<32-1) + 1
	if w := z.avail.Load(); w>>32 == gen {
		return int(uint32(w))
	}
	n := 0
	for _, e := range z.localEps {
		if !e.ejected.Load() {
			n++
		}
	}
	z.avail.Store(gen<<32 | uint64(n))
	return n
}

func (z *zoneChooser) choose(req Request, now int64) (*Endpoint, *group, int) {
	if z.local == nil {
		return z.remote.choose(req, now)
	}
	if z.remote == nil {
		return z.local.choose(req, now)
	}
	aL := z.availableLocal()
	if share := z.over * float64(aL) / float64(z.nLocal); aL == 0 || share < 1 && rand.Float64() >= share {
		e, g, r := z.remote.choose(req, now)
		if r > 0 {
			if e2, g2, r2 := z.local.choose(req, now); r2 < r {
				return e2, g2, r2
			}
		}
		return e, g, r
	}
	e, g, r := z.local.choose(req, now)
	if r == 0 && (z.overload <= 0 || float64(e.inflight.Load()) <= z.overload) {
		return e, g, r
	}
	e2, g2, r2 := z.remote.choose(req, now)
	switch {
	case r2 < r:
		return e2, g2, r2
	case r == 0 && r2 == 0 && float64(e.inflight.Load()) > z.overload*float64(max(e2.inflight.Load(), 1)):
		return e2, g2, r2
	}
	return e, g, r
}
