package balance

import (
	"math"
	"slices"
	"sync/atomic"
	"time"

	"github.com/meridian-platform/meridian"
)

// Endpoint is one instance of the service as the balancer sees it: the
// instance record plus live state (requests in flight, the peak-EWMA
// latency estimate, the ejected flag) that outlives snapshot swaps. While an
// instance stays in the service's snapshots it keeps one *Endpoint, so
// pointers may be compared and kept as map keys; Balancer.Endpoint finds
// it by instance ID. An instance that leaves the set and comes back later
// gets a fresh Endpoint.
//
// All methods are safe for concurrent use.
type Endpoint struct {
	// Read by every pick that considers the endpoint, written rarely.
	id      string
	env     *env
	rec     atomic.Pointer[record]
	ejected atomic.Bool
	_       [64 - 40]byte // the counters below start a cache line

	// Written by every pick and Done of the endpoint.
	inflight atomic.Int64
	// ewma packs the peak-EWMA estimate and the time of its last update in
	// one word so that an update is a single compare-and-swap: the high 32
	// bits are the estimate in nanoseconds as a float32, the low 32 bits
	// the update time in ticks of 2^20 ns (about 1.05 ms) since the
	// balancer's epoch. Ticks wrap after about 52 days; the only effect is
	// that an estimate left untouched for exactly a multiple of that long
	// decays as if less time had passed, until the next sample.
	ewma atomic.Uint64
	_    [64 - 16]byte // and end it, so no other endpoint shares it
}

// ID is the instance ID, fixed for the Endpoint's life.
func (e *Endpoint) ID() string { return e.id }

// record is an instance record and what is derived from it once.
type record struct {
	inst *meridian.Instance
	addr string // inst.HostPort()
}

// Instance is the endpoint's latest instance record (a newer snapshot may
// carry a changed weight, zone, tags or health). It must not be modified.
func (e *Endpoint) Instance() *meridian.Instance { return e.rec.Load().inst }

// Addr is the latest instance record's dialable address, host:port
// (Instance().HostPort()), computed once per record, so a caller that
// sends a request per pick does not build a string per request.
func (e *Endpoint) Addr() string { return e.rec.Load().addr }

// setInstance makes in the endpoint's record, unless it already is.
func (e *Endpoint) setInstance(in *meridian.Instance) {
	if r := e.rec.Load(); r != nil && r.inst == in {
		return
	}
	e.rec.Store(&record{inst: in, addr: in.HostPort()})
}

// InFlight is the number of requests picked for the endpoint whose Done
// has not been called yet.
func (e *Endpoint) InFlight() int { return int(e.inflight.Load()) }

// Latency is the peak-EWMA latency estimate decayed to now: the latency of
// recent responses, dominated by the slowest, fading toward zero while the
// endpoint gets no responses (see the package documentation). Only the
// PeakEWMA policy measures latency; under the others the estimate stays at
// its initial value and decays.
func (e *Endpoint) Latency() time.Duration {
	return time.Duration(e.estimate(e.env.nanotime()))
}

// SetEjected marks the endpoint ejected (true) or returns it to service
// (false). Balancers skip ejected endpoints while any other endpoint is
// available and fail open when none is; see the package documentation. It
// is meant for the outlier detector, which also bounds how many endpoints it
// ejects.
func (e *Endpoint) SetEjected(ejected bool) {
	if e.ejected.Swap(ejected) != ejected {
		e.env.ejectGen.Add(1)
	}
}

// Ejected reports whether the endpoint is ejected.
func (e *Endpoint) Ejected() bool { return e.ejected.Load() }

func (e *Endpoint) String() string { return e.id }

const tickShift = 20 // ewma time ticks are 2^20 ns

func packEWMA(ns float64, now int64) uint64 {
	return uint64(math.Float32bits(float32(ns)))<<32 | uint64(uint32(now>>tickShift))
}

func unpackEWMA(w uint64) (ns float64, tick uint32) {
	return float64(math.Float32frombits(uint32(w >> 32))), uint32(w)
}

// estimate is the latency estimate in nanoseconds decayed to now, as
// Finagle's and Linkerd's peak EWMA read it: v·e^(−Δt/τ).
func (e *Endpoint) estimate(now int64) float64 {
	v, tick := unpackEWMA(e.ewma.Load())
	dt := uint32(now>>tickShift) - tick
	if dt == 0 || v == 0 {
		return v
	}
	return v * e.env.decay.Load().factor(dt)
}

// observe folds one response's latency into the estimate. A sample above
// the stored estimate replaces it (peak sensitivity: one slow answer is
// believed at once); a lower one is averaged in with weight 1−e^(−Δt/τ),
// Δt being the time since the last update. A failed request never lowers
// the estimate: a fast error says nothing about how fast the endpoint
// serves, and would otherwise draw traffic to a failing instance.
func (e *Endpoint) observe(now, rtt int64, failed bool) {
	sample := float64(max(rtt, 0))
	tick := uint32(now >> tickShift)
	for {
		old := e.ewma.Load()
		v, last := unpackEWMA(old)
		var next float64
		switch {
		case sample >= v || failed:
			next = max(v, sample)
		case tick == last:
			// No tick since the last update: the sample's weight is nil.
			// Common under load; skipping saves the write.
			return
		default:
			w := e.env.decay.Load().factor(tick - last)
			next = v*w + sample*(1-w)
		}
		if e.ewma.CompareAndSwap(old, packEWMA(next, now)) {
			return
		}
	}
}

// defaultInitialLatency seeds the estimate of endpoints when no other
// endpoint of the set has one; its value hardly matters, because such
// endpoints start equal and a first answer slower than the estimate
// replaces it at once.
const defaultInitialLatency = float64(time.Millisecond)

// initialEstimate is the estimate given to endpoints joining a set: the
// median of the current estimates of the endpoints that stay, so a newcomer
// competes as a typical member rather than as the best (it would draw a
// burst before its first answer) or the worst (it would wait a whole decay
// time for traffic).
func initialEstimate(stay []*Endpoint, now int64) float64 {
	if len(stay) == 0 {
		return defaultInitialLatency
	}
	vs := make([]float64, len(stay))
	for i, e := range stay {
		vs[i] = e.estimate(now)
	}
	slices.Sort(vs)
	if m := vs[len(vs)/2]; m > 0 {
		return m
	}
	return defaultInitialLatency
}

// env is what a Balancer's endpoints share: the clock, the decay constant
// and the ejection generation.
type env struct {
	now   func() time.Time // nil: the monotonic clock, read by time.Since
	epoch time.Time
	// decay is the table of decay factors for τ; Reconfigure may replace
	// it while picks run.
	decay atomic.Pointer[decayTable]
	// ejectGen changes whenever an endpoint's ejected flag does, so zone
	// preference can cache how many endpoints are available per zone.
	ejectGen atomic.Uint64
}

func newEnv(now func() time.Time, decay time.Duration) *env {
	v := &env{now: now, epoch: time.Now()}
	if now != nil {
		v.epoch = now()
	}
	v.setDecay(decay)
	return v
}

func (v *env) setDecay(tau time.Duration) { v.decay.Store(newDecayTable(tau)) }

// decayTable gives e^(−Δt/τ) for Δt in ticks without calling math.Exp
// (which costs as much as the rest of a pick): the factor for Δt is the
// product of the factors of its four bytes, looked up in four tables.
type decayTable [4][256]float64

func newDecayTable(tau time.Duration) *decayTable {
	t := new(decayTable)
	for k := range t {
		for b := range t[k] {
			ticks := float64(uint64(b) << (8 * k))
			t[k][b] = math.Exp(-ticks * (1 << tickShift) / float64(tau))
		}
	}
	return t
}

// factor is e^(−dt/τ), dt in ticks.
func (t *decayTable) factor(dt uint32) float64 {
	w := t[0][dt&0xff]
	if dt > 0xff {
		w *= t[1][dt>>8&0xff] * t[2][dt>>16&0xff] * t[3][dt>>24]
	}
	return w
}

// nanotime is the time since the epoch in nanoseconds, by the injected
// clock or else the monotonic clock. time.Since reads only the monotonic
// clock, half the cost of time.Now, which reads the wall clock too; under
// PeakEWMA it is read twice per request, the bulk of a pick's cost.
func (v *env) nanotime() int64 {
	if v.now == nil {
		return int64(time.Since(v.epoch))
	}
	return int64(v.now().Sub(v.epoch))
}

// rank orders candidates for a pick: 0 available, 1 ejected, 2 named in
// req.AvoidIDs, 3 req.Avoid. Balancers return the lowest rank they find,
// so an ejected endpoint is used only when no available one exists (fail
// open), one that failed this request earlier only when every other has
// too, and req.Avoid only when it is the only endpoint.
func rank(e *Endpoint, req *Request) int {
	switch {
	case e == req.Avoid:
		return 3
	case len(req.AvoidIDs) > 0 && slices.Contains(req.AvoidIDs, e.id):
		return 2
	case e.ejected.Load():
		return 1
	}
	return 0
}

// rankNone is above every rank: the start of a search for the lowest.
const rankNone = 4

// scan returns the lowest-ranked endpoint, looking from start onward and
// wrapping; it is the fallback when a balancer's own choice is unusable.
func scan(eps []*Endpoint, req *Request, start int) (*Endpoint, int) {
	var best *Endpoint
	bestRank := rankNone
	n := len(eps)
	for k := range n {
		i := start + k
		if i >= n {
			i -= n
		}
		e := eps[i]
		r := rank(e, req)
		if r == 0 {
			return e, 0
		}
		if r < bestRank {
			best, bestRank = e, r
		}
	}
	return best, bestRank
}

// group counts the requests in flight to a subset of endpoints: the whole
// set for ring hash's bounded load, the local or the other zones for zone
// preference. Groups outlive snapshot swaps, and a Picked remembers the
// group it counted in.
type group struct {
	_        [64]byte
	inflight atomic.Int64
	_        [56]byte
}
