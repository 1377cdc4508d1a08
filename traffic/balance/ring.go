package balance

import (
	"cmp"
	"math/bits"
	"math/rand/v2"
	"slices"

	"github.com/cespare/xxhash/v2"
)

// ring is consistent hashing on a ring (Karger et al.) with bounded loads
// (Mirrokni, Thorup, Zadimoghaddam, "Consistent Hashing with Bounded
// Loads", 2018; as Envoy's hash_balance_factor and HAProxy's
// hash-balance-factor).
//
// Each endpoint owns points on a 64-bit ring, derived from its instance ID
// alone (xxhash of the ID, then a splitmix64 sequence), so every client
// with the same set builds the same ring, and removing an endpoint moves
// only the keys that were on its points: about 1/N of them. A key maps to
// the first point at or after its hash. Bounded load: walking on from
// there, the first endpoint whose requests in flight are below
// c × (requests in flight + 1) × its weight share takes the request, so a
// hot key overflows to its ring neighbours instead of overloading one
// instance, and ordinary keys keep their endpoint while loads are even.
//
// Maglev (Eisenbud et al.) was the alternative. Its table gives O(1)
// lookups, but bounded load needs a next candidate, which a ring walk
// gives naturally, and the ring moves fewer keys on a change. Lookup is
// made O(1) on average here too with a bucket index over the sorted
// points.
type ring struct {
	eps    []*Endpoint
	share  []float64 // weight ÷ total weight, per endpoint
	hashes []uint64  // the points, sorted
	owner  []int32   // owner[i] is the index in eps of the point hashes[i]
	// index[b] is the first point whose top bits are ≥ b; a key's point is
	// found between index[b] and index[b+1].
	index []uint32
	shift uint
	g     *group
	c     float64
}

func newRing(eps []*Endpoint, g *group, points int, c float64) *ring {
	ws := make([]int, len(eps))
	maxW, totalW := 0, 0
	for i, e := range eps {
		ws[i] = weight(e)
		maxW = max(maxW, ws[i])
		totalW += ws[i]
	}
	pts := make([]int, len(eps))
	total := 0
	for i, w := range ws {
		pts[i] = max(1, (points*w+maxW/2)/maxW)
		total += pts[i]
	}
	if total > maxRing {
		t := 0
		for i := range pts {
			pts[i] = max(1, pts[i]*maxRing/total)
			t += pts[i]
		}
		total = t
	}
	type point struct {
		h uint64
		i int32
	}
	all := make([]point, 0, total)
	for i, e := range eps {
		h := xxhash.Sum64String(e.id)
		for k := range pts[i] {
			all = append(all, point{mix64(h + uint64(k)*0x9e3779b97f4a7c15), int32(i)})
		}
	}
	// Ties (vanishingly rare) break by ID order, the same in every client.
	slices.SortFunc(all, func(a, b point) int {
		return cmp.Or(cmp.Compare(a.h, b.h), cmp.Compare(a.i, b.i))
	})
	r := &ring{
		eps:    eps,
		share:  make([]float64, len(eps)),
		hashes: make([]uint64, len(all)),
		owner:  make([]int32, len(all)),
		g:      g,
		c:      c,
	}
	for i, w := range ws {
		r.share[i] = float64(w) / float64(totalW)
	}
	for k, p := range all {
		r.hashes[k], r.owner[k] = p.h, p.i
	}
	nb := bits.Len(uint(len(all)))
	r.shift = uint(64 - nb)
	r.index = make([]uint32, 1<<nb+1)
	pos := 0
	for b := range 1 << nb {
		for pos < len(all) && r.hashes[pos]>>r.shift < uint64(b) {
			pos++
		}
		r.index[b] = uint32(pos)
	}
	r.index[1<<nb] = uint32(len(all))
	return r
}

// mix64 is splitmix64's finalizer: a bijection that spreads any input,
// including a caller's poorly distributed keys, over 64 bits.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// lookup is the position of the first point at or after h, wrapping.
func (r *ring) lookup(h uint64) int {
	b := h >> r.shift
	i, end := r.index[b], r.index[b+1]
	for i < end && r.hashes[i] < h {
		i++
	}
	if int(i) == len(r.hashes) {
		return 0
	}
	return int(i)
}

func (r *ring) choose(req Request, _ int64) (*Endpoint, *group, int) {
	var h uint64
	if req.Hash != 0 {
		h = mix64(req.Hash)
	} else {
		h = rand.Uint64()
	}
	start := r.lookup(h)
	// An endpoint may take the request while its load is below
	// c × m × share, m counting this request: then no endpoint ends above
	// ⌈c × m × share⌉.
	capacity := r.c * float64(r.g.inflight.Load()+1)
	var (
		full     *Endpoint // the first available endpoint, at capacity
		best     *Endpoint // the lowest-ranked unavailable one
		bestRank = rankNone
		n        = len(r.hashes)
	)
	for k := range n {
		pos := start + k
		if pos >= n {
			pos -= n
		}
		i := r.owner[pos]
		e := r.eps[i]
		switch rk := rank(e, &req); {
		case rk == 0:
			if float64(e.inflight.Load()) < capacity*r.share[i] {
				return e, r.g, 0
			}
			if full == nil {
				full = e
			}
		case rk < bestRank:
			best, bestRank = e, rk
		}
	}
	// Every available endpoint is at capacity: possible only when ejected
	// or avoided endpoints hold the spare share, or when concurrent picks
	// raced. Load bounds yield to availability.
	if full != nil {
		return full, r.g, 0
	}
	return best, r.g, bestRank
}
