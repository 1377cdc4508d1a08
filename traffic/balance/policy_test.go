package balance

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-platform/meridian"
)

func TestRoundRobinCyclesInIDOrder(t *testing.T) {
	b := newBalancer(t, Config{Policy: RoundRobin}, insts("d", "a", "c", "b")...)
	next := map[string]string{"a": "b", "b": "c", "c": "d", "d": "a"}
	prev := pickDone(t, b, Request{})
	for range 12 {
		got := pickDone(t, b, Request{})
		if got != next[prev] {
			t.Fatalf("after %s came %s, want %s", prev, got, next[prev])
		}
		prev = got
	}
	// An ejected endpoint is stepped over; the others keep their order.
	endpoint(t, b, "c").SetEjected(true)
	next["b"] = "d"
	for range 12 {
		got := pickDone(t, b, Request{})
		if prev != "c" && got != next[prev] {
			t.Fatalf("with c ejected: after %s came %s, want %s", prev, got, next[prev])
		}
		prev = got
	}
}

// sequence picks n times and spells the IDs' first letters.
func sequence(t *testing.T, b *Balancer, n int) string {
	var s strings.Builder
	for range n {
		s.WriteString(pickDone(t, b, Request{})[:1])
	}
	return s.String()
}

// isCycle reports whether got repeats some rotation of cycle.
func isCycle(got, cycle string) bool {
	for off := range cycle {
		rot := cycle[off:] + cycle[:off]
		if strings.HasPrefix(strings.Repeat(rot, len(got)/len(cycle)+1), got) {
			return true
		}
	}
	return false
}

func TestSmoothWeightedRoundRobinFollowsNginx(t *testing.T) {
	for _, tc := range []struct {
		name    string
		weights []int
		cycle   string
	}{
		// nginx's own example (ngx_http_upstream_round_robin.c, commit
		// 52327e0627f4, 2012): weights 5, 1, 1.
		{"nginx example", []int{5, 1, 1}, "aabacaa"},
		{"scaled by GCD", []int{500, 100, 100}, "aabacaa"},
		{"two to one", []int{2, 1}, "aba"},
		{"equal", []int{7, 7, 7}, "abc"},
		{"unset weights are the default", []int{0, 100, 200}, "cabc"},
		{"4 2 1", []int{4, 2, 1}, "abacaba"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var in []*meridian.Instance
			for i, w := range tc.weights {
				in = append(in, inst(string(rune('a'+i)), "", w))
			}
			b := newBalancer(t, Config{Policy: WeightedRoundRobin}, in...)
			if got := sequence(t, b, 3*len(tc.cycle)); !isCycle(got, tc.cycle) {
				t.Errorf("picks %s, want repetitions of a rotation of %s", got, tc.cycle)
			}
		})
	}
}

// Weights that do not fit one table are scaled; shares stay within 1%.
func TestWeightedRoundRobinSharesFollowLargeWeights(t *testing.T) {
	primes := []int{9973, 9967, 9949, 9941, 9931, 9929, 9923, 9907, 9901, 9887, 10, 1, 5003, 7001, 3001, 2003, 1009, 503, 101, 97}
	var in []*meridian.Instance
	total := 0
	for i, w := range primes {
		in = append(in, inst(fmt.Sprintf("e%02d", i), "", w))
		total += w
	}
	b := newBalancer(t, Config{Policy: WeightedRoundRobin}, in...)
	const n = 1 << 18
	count := map[string]int{}
	for range n {
		count[pickDone(t, b, Request{})]++
	}
	for i, w := range primes {
		want := float64(n) * float64(w) / float64(total)
		got := float64(count[fmt.Sprintf("e%02d", i)])
		if math.Abs(got-want) > 0.01*want+2*float64(n)/float64(maxCycle) {
			t.Errorf("weight %d: %v picks, want %.0f", w, got, want)
		}
	}
}

// Power of two choices never sends to the busier of two endpoints: an
// endpoint with requests piled up gets none while the others are idle, and
// requests held open spread evenly.
func TestLeastRequestAvoidsInFlightSkew(t *testing.T) {
	b := newBalancer(t, Config{Policy: LeastRequest}, numbered(10)...)
	busy := endpoint(t, b, "e03")
	busy.inflight.Add(50)
	for range 2000 {
		if id := pickDone(t, b, Request{}); id == busy.ID() {
			t.Fatal("picked the endpoint with 50 requests in flight while others idle")
		}
	}
	busy.inflight.Add(-50)

	var held []Picked
	for range 1000 {
		held = append(held, pick(t, b, Request{}))
	}
	lo, hi := math.MaxInt, 0
	for _, e := range b.Endpoints() {
		lo, hi = min(lo, e.InFlight()), max(hi, e.InFlight())
	}
	// Random placement would spread ±3σ ≈ ±30 around 100; two choices
	// keep the spread to a few.
	if hi-lo > 6 {
		t.Errorf("1000 requests held on 10 endpoints: in flight from %d to %d", lo, hi)
	}
	for _, p := range held {
		p.Done(nil)
	}
}

// An endpoint of twice the weight is given twice the requests in flight.
func TestLeastRequestHonoursWeight(t *testing.T) {
	b := newBalancer(t, Config{Policy: LeastRequest}, inst("a", "", 200), inst("b", "", 100), inst("c", "", 100))
	for range 800 {
		pick(t, b, Request{}) // held
	}
	a, c := endpoint(t, b, "a").InFlight(), endpoint(t, b, "c").InFlight()
	if r := float64(a) / float64(c); r < 1.8 || r > 2.2 {
		t.Errorf("in flight a=%d c=%d, want a ≈ 2c", a, c)
	}
}

func TestPeakEWMAEstimate(t *testing.T) {
	clock := newClock()
	b := newBalancer(t, Config{Policy: PeakEWMA, Now: clock.Now}, insts("a")...)
	e := endpoint(t, b, "a")
	done := func(rtt time.Duration, err error) {
		p := pick(t, b, Request{})
		clock.Advance(rtt)
		p.Done(err)
	}
	near := func(what string, got, want time.Duration) {
		t.Helper()
		if math.Abs(float64(got-want)) > 0.001*float64(want) {
			t.Errorf("%s: %v, want %v", what, got, want)
		}
	}
	done(100*time.Millisecond, nil)
	near("a slower sample replaces the estimate", e.Latency(), 100*time.Millisecond)
	clock.Advance(10 * time.Second)
	near("idle for τ, the estimate reads 1/e of itself", e.Latency(), time.Duration(100e6*math.Exp(-1)))
	done(10*time.Millisecond, nil)
	// The stored 100ms and the 10ms sample, weighted e^(−Δt/τ) with Δt
	// = 10.01s since the last update.
	near("a faster sample is averaged in", e.Latency(), time.Duration(100e6*math.Exp(-10.01/10)+10e6*(1-math.Exp(-10.01/10))))
	before := e.Latency()
	done(time.Millisecond, fmt.Errorf("connection refused"))
	if got := e.Latency(); got < before {
		t.Errorf("a fast failure lowered the estimate from %v to %v", before, got)
	}
	before = e.Latency()
	p := pick(t, b, Request{})
	clock.Advance(time.Second)
	p.Done(fmt.Errorf("call: %w", context.Canceled))
	near("a canceled request leaves the estimate", e.Latency(), time.Duration(float64(before)*math.Exp(-0.1)))
	if e.InFlight() != 0 {
		t.Errorf("%d in flight", e.InFlight())
	}
}

// simulate runs a discrete-event load: a request every interval from
// start to end (times on clock), each lasting latency(id, t) on the
// endpoint picked; it returns how many requests each endpoint got after
// from.
func simulate(t *testing.T, b *Balancer, clock *fakeClock, start, from, end, interval time.Duration, latency func(id string, at time.Duration) time.Duration) map[string]int {
	type completion struct {
		at time.Duration
		p  Picked
	}
	var pending []completion // sorted by at
	count := map[string]int{}
	for at := start; at < end; at += interval {
		for len(pending) > 0 && pending[0].at <= at {
			clock.Set(pending[0].at)
			pending[0].p.Done(nil)
			pending = pending[1:]
		}
		clock.Set(at)
		p := pick(t, b, Request{})
		id := p.Endpoint().ID()
		if at >= from {
			count[id]++
		}
		c := completion{at + latency(id, at), p}
		i, _ := slices.BinarySearchFunc(pending, c.at, func(c completion, at time.Duration) int { return int(c.at - at) })
		pending = slices.Insert(pending, i, c)
	}
	clock.Set(end + time.Hour)
	for _, c := range pending {
		c.p.Done(nil)
	}
	return count
}

func share(count map[string]int, id string) float64 {
	total := 0
	for _, n := range count {
		total += n
	}
	return float64(count[id]) / float64(total)
}

// The test, without sockets: one of five endpoints becomes ten
// times slower; within a few seconds peak EWMA sends it under 10% of the
// requests (round robin would send 20%), at light load, where counting
// requests in flight alone cannot tell it apart. When it recovers it earns
// its share back.
func TestPeakEWMASteersAwayFromASlowEndpointAndBack(t *testing.T) {
	const (
		fast = 10 * time.Millisecond
		slow = 100 * time.Millisecond
	)
	recovered := 70 * time.Second
	latency := func(id string, at time.Duration) time.Duration {
		if id == "e00" && at >= 5*time.Second && at < recovered {
			return slow
		}
		return fast
	}
	for _, tc := range []struct {
		policy   Policy
		maxSlow  float64 // share of the slow endpoint from 8s to 70s
		minAfter float64 // its share from 130s to 180s, recovered
	}{
		{PeakEWMA, 0.10, 0.10},
		{RoundRobin, 1, 0}, // reference figures, logged
		{LeastRequest, 1, 0},
	} {
		t.Run(string(tc.policy), func(t *testing.T) {
			clock := newClock()
			base := clock.Elapsed()
			b := newBalancer(t, Config{Policy: tc.policy, Now: clock.Now}, numbered(5)...)
			at := func(d time.Duration) time.Duration { return base + d }
			lat := func(id string, t time.Duration) time.Duration { return latency(id, t-base) }
			during := simulate(t, b, clock, at(0), at(8*time.Second), at(recovered), 20*time.Millisecond, lat)
			after := simulate(t, b, clock, at(recovered), at(130*time.Second), at(180*time.Second), 20*time.Millisecond, lat)
			s1, s2 := share(during, "e00"), share(after, "e00")
			t.Logf("%s: slow endpoint's share %.1f%% while slow, %.1f%% after recovering", tc.policy, 100*s1, 100*s2)
			if s1 >= tc.maxSlow {
				t.Errorf("the 10× slower endpoint got %.1f%% of requests, want under %.0f%%", 100*s1, 100*tc.maxSlow)
			}
			if s2 < tc.minAfter {
				t.Errorf("recovered, it got %.1f%% of requests, want at least %.0f%%", 100*s2, 100*tc.minAfter)
			}
		})
	}
}

// ringMap maps keys 1..n to endpoint IDs.
func ringMap(t *testing.T, b *Balancer, n int) map[uint64]string {
	m := make(map[uint64]string, n)
	for k := range uint64(n) {
		m[k+1] = pickDone(t, b, Request{Hash: HashString(fmt.Sprint("key-", k))})
	}
	return m
}

func TestRingHashIsConsistent(t *testing.T) {
	const keys = 20000
	b := newBalancer(t, Config{Policy: RingHash}, numbered(10)...)
	before := ringMap(t, b, keys)
	if again := ringMap(t, b, keys); !mapsEqual(before, again) {
		t.Fatal("the same key went to different endpoints")
	}
	// Another client with the same set agrees (gateways and sidecars
	// must).
	if other := ringMap(t, newBalancer(t, Config{Policy: RingHash}, numbered(10)...), keys); !mapsEqual(before, other) {
		t.Fatal("two balancers over the same set disagree")
	}
	perEndpoint := map[string]int{}
	for _, id := range before {
		perEndpoint[id]++
	}
	for id, n := range perEndpoint {
		if n < keys/10/2 || n > keys/10*2 {
			t.Errorf("%s owns %d of %d keys", id, n, keys)
		}
	}

	// Removing e04 moves its keys only: about 1/10.
	in := numbered(10)
	b.Update(snapshot(slices.Delete(in, 4, 5)...))
	after := ringMap(t, b, keys)
	moved := 0
	for k, id := range before {
		if after[k] != id {
			moved++
			if id != "e04" {
				t.Fatalf("key %d moved from %s, which stayed, to %s", k, id, after[k])
			}
		}
	}
	if f := float64(moved) / keys; f < 0.05 || f > 0.15 {
		t.Errorf("removing 1 of 10 endpoints moved %.1f%% of keys, want about 10%%", 100*f)
	}

	// Adding one moves keys only to it: about 1/11.
	b.Update(snapshot(numbered(11)...))
	grown := ringMap(t, b, keys)
	moved = 0
	for k, id := range before {
		if grown[k] != id {
			moved++
			if grown[k] != "e10" {
				t.Fatalf("key %d moved from %s to %s, not to the new endpoint", k, id, grown[k])
			}
		}
	}
	if f := float64(moved) / keys; f < 0.045 || f > 0.14 {
		t.Errorf("adding an 11th endpoint moved %.1f%% of keys, want about 9%%", 100*f)
	}
}

func mapsEqual(a, b map[uint64]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// Bounded load: with requests held open, no endpoint ever carries more
// than ⌈c × average⌉, whether one hot key or many keys arrive.
func TestRingHashBoundsLoad(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  func(i int) uint64
	}{
		{"one hot key", func(int) uint64 { return HashString("hot") }},
		{"many keys", func(i int) uint64 { return HashString(fmt.Sprint("key-", i%37)) }},
		{"no key", func(int) uint64 { return 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 10
			b := newBalancer(t, Config{Policy: RingHash}, numbered(n)...)
			var held []Picked
			for i := range 500 {
				held = append(held, pick(t, b, Request{Hash: tc.key(i)}))
				limit := int(math.Ceil(DefaultBalanceFactor * float64(len(held)) / n))
				for _, e := range b.Endpoints() {
					if e.InFlight() > limit {
						t.Fatalf("after %d picks %s carries %d, above ⌈1.25 × %d/%d⌉ = %d", len(held), e.ID(), e.InFlight(), len(held), n, limit)
					}
				}
			}
			for _, p := range held {
				p.Done(nil)
			}
		})
	}
	// Without load the hot key stays on one endpoint.
	b := newBalancer(t, Config{Policy: RingHash}, numbered(10)...)
	seen := map[string]bool{}
	for range 100 {
		seen[pickDone(t, b, Request{Hash: HashString("hot")})] = true
	}
	if len(seen) != 1 {
		t.Errorf("an unloaded hot key went to %d endpoints", len(seen))
	}
}

// Keys are shared in proportion to weight.
func TestRingHashHonoursWeight(t *testing.T) {
	b := newBalancer(t, Config{Policy: RingHash}, inst("a", "", 300), inst("b", "", 100), inst("c", "", 100), inst("d", "", 100))
	m := ringMap(t, b, 20000)
	n := 0
	for _, id := range m {
		if id == "a" {
			n++
		}
	}
	if f := float64(n) / 20000; f < 0.4 || f > 0.6 {
		t.Errorf("weight 300 of 600 owns %.1f%% of keys, want about 50%%", 100*f)
	}
}

func zoneCount(t *testing.T, b *Balancer, n int) (local, remote int) {
	for range n {
		id := pickDone(t, b, Request{})
		if endpoint(t, b, id).Instance().Zone == "a" {
			local++
		} else {
			remote++
		}
	}
	return local, remote
}

func zoneSet(local, remote int) []*meridian.Instance {
	var in []*meridian.Instance
	for i := range local {
		in = append(in, inst(fmt.Sprintf("a%d", i), "a", 0))
	}
	for i := range remote {
		in = append(in, inst(fmt.Sprintf("r%d", i), fmt.Sprintf("z%d", i%2), 0))
	}
	return in
}

func TestZonePreference(t *testing.T) {
	cfg := Config{Policy: RoundRobin, Zone: ZoneConfig{Local: "a"}}
	t.Run("local first", func(t *testing.T) {
		b := newBalancer(t, cfg, zoneSet(2, 6)...)
		if l, r := zoneCount(t, b, 1000); r != 0 {
			t.Errorf("%d local, %d to other zones", l, r)
		}
	})
	t.Run("no local endpoint", func(t *testing.T) {
		b := newBalancer(t, cfg, zoneSet(0, 3)...)
		if l, r := zoneCount(t, b, 100); l != 0 || r != 100 {
			t.Errorf("%d local, %d other", l, r)
		}
	})
	t.Run("local all ejected", func(t *testing.T) {
		b := newBalancer(t, cfg, zoneSet(2, 3)...)
		endpoint(t, b, "a0").SetEjected(true)
		endpoint(t, b, "a1").SetEjected(true)
		if l, r := zoneCount(t, b, 100); l != 0 {
			t.Errorf("%d local, %d other", l, r)
		}
		endpoint(t, b, "a1").SetEjected(false)
		if l, r := zoneCount(t, b, 2000); l == 0 || r == 0 {
			t.Errorf("half the local zone back: %d local, %d other", l, r)
		}
	})
	t.Run("local degraded spills by the overprovisioning factor", func(t *testing.T) {
		b := newBalancer(t, cfg, zoneSet(4, 4)...)
		endpoint(t, b, "a0").SetEjected(true) // 3 of 4: 1.4 × 0.75 ≥ 1
		if _, r := zoneCount(t, b, 1000); r != 0 {
			t.Errorf("3 of 4 local available: %d requests spilled", r)
		}
		endpoint(t, b, "a1").SetEjected(true) // 2 of 4: 1.4 × 0.5 = 0.7 stay local
		l, _ := zoneCount(t, b, 20000)
		if f := float64(l) / 20000; math.Abs(f-0.7) > 0.02 {
			t.Errorf("2 of 4 local available: %.1f%% local, want 70%%", 100*f)
		}
	})
	t.Run("local overloaded spills", func(t *testing.T) {
		inFlight := func(b *Balancer) (local, remoteMax, remote int) {
			for _, e := range b.Endpoints() {
				if e.Instance().Zone == "a" {
					local += e.InFlight()
				} else {
					remoteMax = max(remoteMax, e.InFlight())
					remote += e.InFlight()
				}
			}
			return local, remoteMax, remote
		}
		b := newBalancer(t, cfg, zoneSet(1, 3)...)
		var held []Picked
		for range 200 {
			held = append(held, pick(t, b, Request{}))
			l, rmax, _ := inFlight(b)
			if lim := DefaultOverload*float64(max(rmax, 1)) + 1; float64(l) > lim {
				t.Fatalf("%d requests held: the local endpoint carries %d, other zones' at most %d each", len(held), l, rmax)
			}
		}
		if l, _, r := inFlight(b); r == 0 || l < 100 {
			t.Errorf("200 requests held: %d local, %d in other zones; want most local, some spilled", l, r)
		}
		for _, p := range held {
			p.Done(nil)
		}
		off := newBalancer(t, Config{Policy: RoundRobin, Zone: ZoneConfig{Local: "a", Overload: -1}}, zoneSet(1, 3)...)
		for range 200 {
			pick(t, off, Request{})
		}
		if l, _, _ := inFlight(off); l != 200 {
			t.Errorf("overload rule off: %d of 200 local", l)
		}
	})
	t.Run("retry avoids the lone local endpoint", func(t *testing.T) {
		b := newBalancer(t, cfg, zoneSet(1, 3)...)
		a := endpoint(t, b, "a0")
		for range 100 {
			if id := pickDone(t, b, Request{Avoid: a}); id == "a0" {
				t.Fatal("returned the avoided local endpoint")
			}
		}
	})
	t.Run("hashing stays in the local zone", func(t *testing.T) {
		b := newBalancer(t, Config{Policy: RingHash, Zone: ZoneConfig{Local: "a"}}, zoneSet(3, 6)...)
		for k := range uint64(1000) {
			if id := pickDone(t, b, Request{Hash: k + 1}); !strings.HasPrefix(id, "a") {
				t.Fatalf("key %d went to %s", k, id)
			}
		}
	})
}

func TestDecayTableMatchesExp(t *testing.T) {
	tau := 10 * time.Second
	table := newDecayTable(tau)
	for _, dt := range []uint32{0, 1, 2, 255, 256, 257, 1000, 9537, 65535, 65536, 1 << 20, 1<<32 - 1} {
		want := math.Exp(-float64(uint64(dt)<<tickShift) / float64(tau))
		if got := table.factor(dt); math.Abs(got-want) > 1e-12*max(want, 1e-300) && math.Abs(got-want) > 1e-300 {
			t.Errorf("factor(%d) = %g, want %g", dt, got, want)
		}
	}
}
