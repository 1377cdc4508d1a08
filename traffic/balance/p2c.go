package balance

import (
	"math/rand/v2"

	"github.com/meridian-platform/meridian"
)

// p2c is power of two choices (Mitzenmacher): draw two distinct endpoints
// at random and take the cheaper. Comparing two random endpoints instead
// of searching for the cheapest costs O(1), needs no shared ordering, and
// avoids the herd behaviour of "always the least loaded", where every
// client sends its next requests to the same instance; the maximum load
// stays within O(log log n) of the average.
//
// Cost is (requests in flight + 1) / weight for LeastRequest, times the
// endpoint's peak-EWMA latency estimate for PeakEWMA (Finagle's and
// Linkerd's cost). The + 1 makes latency count on idle endpoints too.
type p2c struct {
	eps  []*Endpoint
	invW []float64 // DefaultWeight / weight, 1 for the default weight
	g    *group
	ewma bool
}

func newP2C(eps []*Endpoint, g *group, ewma bool) *p2c {
	p := &p2c{eps: eps, invW: make([]float64, len(eps)), g: g, ewma: ewma}
	for i, e := range eps {
		p.invW[i] = float64(meridian.DefaultWeight) / float64(weight(e))
	}
	return p
}

func (p *p2c) cost(i int, now int64) float64 {
	e := p.eps[i]
	c := float64(e.inflight.Load()+1) * p.invW[i]
	if p.ewma {
		c *= e.estimate(now)
	}
	return c
}

func (p *p2c) choose(req Request, now int64) (*Endpoint, *group, int) {
	n := uint64(len(p.eps))
	if n == 1 {
		e := p.eps[0]
		return e, p.g, rank(e, &req)
	}
	for range 2 {
		// Two distinct indices from one random word (Lemire's
		// multiply-shift reduction on each half).
		r := rand.Uint64()
		i := int((r & 0xffffffff) * n >> 32)
		j := int((r >> 32) * (n - 1) >> 32)
		if j >= i {
			j++
		}
		a, b := p.eps[i], p.eps[j]
		ra, rb := rank(a, &req), rank(b, &req)
		switch {
		case ra == 0 && rb == 0:
			if p.cost(j, now) < p.cost(i, now) {
				return b, p.g, 0
			}
			return a, p.g, 0
		case ra == 0:
			return a, p.g, 0
		case rb == 0:
			return b, p.g, 0
		}
	}
	e, rk := scan(p.eps, &req, rand.IntN(int(n)))
	return e, p.g, rk
}
