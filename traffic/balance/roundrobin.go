package balance

import (
	"math/rand/v2"
	"sync/atomic"
)

// maxProbes bounds how many counter steps round robin takes past unusable
// endpoints before it falls back to a scan.
const maxProbes = 8

// roundRobin cycles through eps in ID order. The cycle starts at a random
// position, as Envoy's and gRPC's do, so that many clients built at once do
// not all send their first requests to the same instance.
type roundRobin struct {
	eps []*Endpoint
	g   *group
	_   [64]byte // keep next off the line every Pick reads
	// next is the cycle position; each pick takes one step, and a pick
	// that lands on an unusable endpoint takes another, so the cycle
	// continues over the usable ones in order.
	next atomic.Uint64
	_    [56]byte
}

func newRoundRobin(eps []*Endpoint, g *group) *roundRobin {
	p := &roundRobin{eps: eps, g: g}
	p.next.Store(rand.Uint64N(uint64(len(eps))))
	return p
}

func (p *roundRobin) choose(req Request, _ int64) (*Endpoint, *group, int) {
	n := uint64(len(p.eps))
	for range min(n, maxProbes) {
		if e := p.eps[p.next.Add(1)%n]; rank(e, &req) == 0 {
			return e, p.g, 0
		}
	}
	// Mostly or all unusable: scan from a random start, which also spreads
	// requests when all are ejected (probing advanced the counter by a
	// fixed step, so its position would not).
	e, r := scan(p.eps, &req, rand.IntN(len(p.eps)))
	return e, p.g, r
}

// maxCycle bounds one cycle of smooth weighted round robin (the table of
// picks), and cycleWork bounds cycle length × endpoints, the work of
// computing it. Past them weights are scaled down to fit: the ratios stay
// within a fraction of a percent for sets of a hundred endpoints, and a
// few percent at several thousand.
const (
	maxCycle  = 1 << 16
	cycleWork = 1 << 24
)

// weightedRoundRobin is nginx's smooth weighted round robin
// (ngx_http_upstream_get_peer, 2012): on each pick every endpoint's
// current weight grows by its weight, the endpoint with the highest
// current weight (the first in ID order on a tie) is picked and its
// current weight drops by the total. Weights 5, 1, 1 give a a b a c a a:
// each endpoint's share is exact over a cycle and its picks are spread
// through it rather than bunched.
//
// nginx runs the algorithm under a lock; here the cycle (total weight ÷
// the weights' GCD picks long) is computed once per snapshot and walked
// with an atomic counter, which yields the same sequence lock-free.
type weightedRoundRobin struct {
	eps []*Endpoint
	seq []int32 // one cycle of picks, as indices into eps
	g   *group
	_   [64]byte
	// next is the position in seq; as in roundRobin, unusable entries are
	// stepped over, which keeps the others' shares in proportion.
	next atomic.Uint64
	_    [56]byte
}

func newWeightedRoundRobin(eps []*Endpoint, g *group) *weightedRoundRobin {
	ws := make([]int64, len(eps))
	for i, e := range eps {
		ws[i] = int64(weight(e))
	}
	seq := smoothCycle(ws)
	p := &weightedRoundRobin{eps: eps, seq: seq, g: g}
	p.next.Store(rand.Uint64N(uint64(len(seq))))
	return p
}

// smoothCycle returns one cycle of nginx's smooth weighted round robin over
// ws (all positive), reduced by the weights' GCD and scaled down to the
// bounds above if needed.
func smoothCycle(ws []int64) []int32 {
	n := int64(len(ws))
	limit := min(maxCycle, max(cycleWork/n, n))
	var g, total int64
	for _, w := range ws {
		g = gcd(g, w)
		total += w
	}
	for i := range ws {
		ws[i] /= g
	}
	total /= g
	if total > limit {
		// Scale to about limit picks, keeping every endpoint in the cycle.
		var sum int64
		for i, w := range ws {
			ws[i] = max(1, (w*limit+total/2)/total)
			sum += ws[i]
		}
		g = 0
		for _, w := range ws {
			g = gcd(g, w)
		}
		for i := range ws {
			ws[i] /= g
		}
		total = sum / g
	}
	seq := make([]int32, total)
	cur := make([]int64, n)
	for k := range seq {
		best := 0
		for i, w := range ws {
			cur[i] += w
			if cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= total
		seq[k] = int32(best)
	}
	return seq
}

func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func (p *weightedRoundRobin) choose(req Request, _ int64) (*Endpoint, *group, int) {
	n := uint64(len(p.seq))
	for range min(n, maxProbes) {
		if e := p.eps[p.seq[p.next.Add(1)%n]]; rank(e, &req) == 0 {
			return e, p.g, 0
		}
	}
	// As in roundRobin; weights are not followed in this fallback.
	e, r := scan(p.eps, &req, rand.IntN(len(p.eps)))
	return e, p.g, r
}
