package balance

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"go.uber.org/goleak"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/traffic/discovery"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeClock is an injected clock that moves only when told to.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) Now() time.Time             { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration)    { c.ns.Add(int64(d)) }
func (c *fakeClock) Set(t time.Duration)        { c.ns.Store(int64(t)) }
func (c *fakeClock) Elapsed() (t time.Duration) { return time.Duration(c.ns.Load()) }

func newClock() *fakeClock {
	c := new(fakeClock)
	c.Set(time.Hour) // anything but zero
	return c
}

const service = "orders"

// inst is an instance of the test service; zero weight means the default.
func inst(id, zone string, weight int) *meridian.Instance {
	return &meridian.Instance{
		Service: service, ID: id, Address: "10.0.0." + id, Port: 8080, Zone: zone, Weight: weight,
		Health: meridian.Health{Status: meridian.StatusPassing},
	}
}

func insts(ids ...string) []*meridian.Instance {
	out := make([]*meridian.Instance, len(ids))
	for i, id := range ids {
		out[i] = inst(id, "", 0)
	}
	return out
}

// numbered is n instances e00, e01, … in zone "".
func numbered(n int) []*meridian.Instance {
	out := make([]*meridian.Instance, n)
	for i := range out {
		out[i] = inst(fmt.Sprintf("e%02d", i), "", 0)
	}
	return out
}

func snapshot(in ...*meridian.Instance) *discovery.Snapshot {
	in = slices.Clone(in)
	slices.SortFunc(in, func(a, b *meridian.Instance) int { return strings.Compare(a.ID, b.ID) })
	return &discovery.Snapshot{Service: service, Instances: in}
}

func newBalancer(t testing.TB, cfg Config, in ...*meridian.Instance) *Balancer {
	t.Helper()
	b, err := New(service, cfg)
	if err != nil {
		t.Fatal(err)
	}
	b.Update(snapshot(in...))
	return b
}

func pick(t testing.TB, b *Balancer, req Request) Picked {
	t.Helper()
	p, err := b.Pick(req)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// pickDone picks and ends the request at once, returning the ID.
func pickDone(t testing.TB, b *Balancer, req Request) string {
	t.Helper()
	p := pick(t, b, req)
	p.Done(nil)
	return p.Endpoint().ID()
}

func endpoint(t testing.TB, b *Balancer, id string) *Endpoint {
	t.Helper()
	e := b.Endpoint(id)
	if e == nil {
		t.Fatalf("no endpoint %s", id)
	}
	return e
}

// allPolicies are the configurations every generic behaviour is checked
// under: each policy alone and one with zone preference.
var allPolicies = []struct {
	name string
	cfg  Config
}{
	{"round_robin", Config{Policy: RoundRobin}},
	{"weighted_round_robin", Config{Policy: WeightedRoundRobin}},
	{"least_request", Config{Policy: LeastRequest}},
	{"peak_ewma", Config{Policy: PeakEWMA}},
	{"ring_hash", Config{Policy: RingHash}},
	{"zone_peak_ewma", Config{Zone: ZoneConfig{Local: "a"}}},
	{"zone_ring_hash", Config{Policy: RingHash, Zone: ZoneConfig{Local: "a"}}},
}

// zoned spreads instances over zones a and b, so that the zone policies
// have both sides.
func zoned(in []*meridian.Instance) []*meridian.Instance {
	for i, x := range in {
		x.Zone = string(rune('a' + i%2))
	}
	return in
}

func TestNoEndpointsIsUnavailableAndNamesTheService(t *testing.T) {
	b, err := New(service, Config{})
	if err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		_, err := b.Pick(Request{})
		if !errors.Is(err, ErrNoEndpoints) || !meridian.IsCode(err, meridian.CodeUnavailable) || !strings.Contains(err.Error(), `"orders"`) {
			t.Errorf("%s: Pick error = %v, want ErrNoEndpoints, CodeUnavailable, naming the service", when, err)
		}
	}
	check("before any snapshot")
	b.Update(snapshot(insts("a")...))
	if id := pickDone(t, b, Request{}); id != "a" {
		t.Fatalf("picked %s", id)
	}
	b.Update(snapshot())
	check("after an empty snapshot")
	if n := testing.AllocsPerRun(100, func() { _, _ = b.Pick(Request{}) }); n != 0 {
		t.Errorf("failing Pick allocates %v times", n)
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	for _, tc := range []struct {
		cfg   Config
		field string
	}{
		{Config{Policy: "random"}, "policy"},
		{Config{Decay: time.Millisecond}, "decay"},
		{Config{Decay: -time.Second}, "decay"},
		{Config{BalanceFactor: 1}, "balance_factor"},
		{Config{BalanceFactor: 0.5}, "balance_factor"},
		{Config{RingPoints: -1}, "ring_points"},
		{Config{RingPoints: MaxRingPoints + 1}, "ring_points"},
		{Config{Zone: ZoneConfig{Overprovisioning: 0.9}}, "zone.overprovisioning"},
	} {
		_, err := New(service, tc.cfg)
		var me *meridian.Error
		if !errors.As(err, &me) || me.Code != meridian.CodeInvalid || me.Field != tc.field {
			t.Errorf("New(%+v) = %v, want an invalid %s", tc.cfg, err, tc.field)
		}
	}
	if _, err := New("Not A Service", Config{}); !meridian.IsCode(err, meridian.CodeInvalid) {
		t.Errorf("New with a bad service name = %v", err)
	}
	b := newBalancer(t, Config{Policy: RoundRobin}, insts("a", "b")...)
	if err := b.Reconfigure(Config{Policy: "nope"}); err == nil {
		t.Error("Reconfigure accepted an unknown policy")
	}
	if b.cfg.Policy != RoundRobin {
		t.Errorf("a failed Reconfigure changed the policy to %s", b.cfg.Policy)
	}
}

func TestEndpointLooksUpByID(t *testing.T) {
	b, err := New(service, Config{})
	if err != nil {
		t.Fatal(err)
	}
	b.Update(&discovery.Snapshot{Service: service, Instances: insts("c", "a", "b")}) // unsorted
	for _, e := range b.Endpoints() {
		if got := b.Endpoint(e.ID()); got != e {
			t.Errorf("Endpoint(%q) = %v", e.ID(), got)
		}
	}
	if ids := []string{b.Endpoints()[0].ID(), b.Endpoints()[1].ID(), b.Endpoints()[2].ID()}; !slices.IsSorted(ids) {
		t.Errorf("Endpoints not sorted by ID: %v", ids)
	}
	if e := b.Endpoint("z"); e != nil {
		t.Errorf("Endpoint(z) = %v, want nil", e)
	}
	if n := testing.AllocsPerRun(100, func() { b.Endpoint("b") }); n != 0 {
		t.Errorf("Endpoint allocates %v times", n)
	}
}

func TestUpdateWithAnotherServicePanics(t *testing.T) {
	b := newBalancer(t, Config{}, insts("a")...)
	defer func() {
		if recover() == nil {
			t.Error("no panic")
		}
	}()
	b.Update(&discovery.Snapshot{Service: "payments"})
}

// The avoided endpoint (the one a retry just failed on) is never returned
// while another exists, whatever the policy and even when the others are
// ejected; alone, it is returned.
func TestAvoidNeverReturnsTheAvoidedEndpointWhileAnotherExists(t *testing.T) {
	for _, pc := range allPolicies {
		t.Run(pc.name, func(t *testing.T) {
			b := newBalancer(t, pc.cfg, zoned(numbered(5))...)
			for _, avoid := range b.Endpoints() {
				for i := range 200 {
					if got := pickDone(t, b, Request{Avoid: avoid, Hash: uint64(i)}); got == avoid.ID() {
						t.Fatalf("returned the avoided %s", got)
					}
				}
			}
			// Every other endpoint ejected: still not the avoided one.
			avoid := b.Endpoints()[0]
			for _, e := range b.Endpoints()[1:] {
				e.SetEjected(true)
			}
			for i := range 200 {
				if got := pickDone(t, b, Request{Avoid: avoid, Hash: uint64(i)}); got == avoid.ID() {
					t.Fatalf("returned the avoided %s over ejected endpoints", got)
				}
			}
			one := newBalancer(t, pc.cfg, zoned(numbered(1))...)
			e := one.Endpoints()[0]
			if got := pickDone(t, one, Request{Avoid: e}); got != e.ID() {
				t.Fatalf("a lone avoided endpoint: got %s", got)
			}
		})
	}
}

// AvoidIDs (the endpoints earlier tries of a request failed on) are not
// returned while another endpoint exists, ejected or not; when all have
// failed, Avoid (the one that failed last) still comes after them.
func TestAvoidIDsAreReturnedOnlyWhenEveryOtherFailed(t *testing.T) {
	for _, pc := range allPolicies {
		t.Run(pc.name, func(t *testing.T) {
			b := newBalancer(t, pc.cfg, zoned(numbered(5))...)
			eps := b.Endpoints()
			failed := []string{eps[0].ID(), eps[2].ID(), eps[3].ID()}
			for i := range 300 {
				got := pickDone(t, b, Request{AvoidIDs: failed, Avoid: eps[4], Hash: uint64(i)})
				if got != eps[1].ID() {
					t.Fatalf("pick %d: got %s, want the only endpoint that has not failed, %s", i, got, eps[1].ID())
				}
			}
			eps[1].SetEjected(true)
			defer eps[1].SetEjected(false)
			for i := range 300 {
				if got := pickDone(t, b, Request{AvoidIDs: failed, Avoid: eps[4], Hash: uint64(i)}); got != eps[1].ID() {
					t.Fatalf("pick %d: got %s, want the ejected %s over the failed ones", i, got, eps[1].ID())
				}
			}
			all := []string{eps[0].ID(), eps[1].ID(), eps[2].ID(), eps[3].ID()}
			for i := range 300 {
				if got := pickDone(t, b, Request{AvoidIDs: all, Avoid: eps[4], Hash: uint64(i)}); got == eps[4].ID() {
					t.Fatalf("pick %d: returned Avoid while endpoints that failed earlier exist", i)
				}
			}
		})
	}
}

// Addr is the instance's host:port, following a changed record.
func TestEndpointAddrFollowsTheInstance(t *testing.T) {
	b := newBalancer(t, Config{}, inst("1", "", 0))
	e := endpoint(t, b, "1")
	if got := e.Addr(); got != "10.0.0.1:8080" {
		t.Fatalf("Addr = %q", got)
	}
	moved := inst("1", "", 0)
	moved.Port = 9090
	b.Update(snapshot(moved))
	if got := e.Addr(); got != "10.0.0.1:9090" || e.Instance() != moved {
		t.Fatalf("after a move: Addr = %q, Instance = %+v", got, e.Instance())
	}
	if n := testing.AllocsPerRun(100, func() { _ = e.Addr() }); n != 0 {
		t.Fatalf("Addr allocates %v times", n)
	}
}

// Ejected endpoints get no requests while others are available; when all
// are ejected every policy fails open and still spreads requests.
func TestEjectedEndpointsAreSkippedAndAllEjectedFailsOpen(t *testing.T) {
	for _, pc := range allPolicies {
		t.Run(pc.name, func(t *testing.T) {
			b := newBalancer(t, pc.cfg, zoned(numbered(6))...)
			eps := b.Endpoints()
			eps[1].SetEjected(true)
			eps[2].SetEjected(true)
			eps[5].SetEjected(true)
			for i := range 1000 {
				id := pickDone(t, b, Request{Hash: uint64(i + 1)})
				if e := endpoint(t, b, id); e.Ejected() {
					t.Fatalf("pick %d: ejected %s", i, id)
				}
			}
			for _, e := range eps {
				e.SetEjected(true)
			}
			seen := map[string]int{}
			for i := range 1000 {
				seen[pickDone(t, b, Request{Hash: uint64(i + 1)})]++
			}
			if len(seen) < 2 {
				t.Errorf("all ejected: picks went to %v, want them spread", seen)
			}
			for _, e := range eps {
				e.SetEjected(false)
			}
			if id := pickDone(t, b, Request{Hash: 1}); id == "" {
				t.Fatal("no pick after reinstating")
			}
		})
	}
}

// Endpoints that stay in the next snapshot keep their state (requests in
// flight, latency, ejection) and their pointer, and see the new instance
// record; an instance that left and came back starts fresh.
func TestStateSurvivesSnapshotSwaps(t *testing.T) {
	clock := newClock()
	b := newBalancer(t, Config{Policy: PeakEWMA, Now: clock.Now}, insts("a", "b")...)
	a := endpoint(t, b, "a")
	var held, onA []Picked
	for range 10 {
		p := pick(t, b, Request{})
		if p.Endpoint() == a {
			onA = append(onA, p)
		} else {
			held = append(held, p)
		}
	}
	if len(onA) < 2 {
		t.Fatalf("peak EWMA put %d of 10 on a", len(onA))
	}
	clock.Advance(40 * time.Millisecond)
	onA[0].Done(nil)
	onA = onA[1:]
	lat := a.Latency()
	if lat < 40*time.Millisecond {
		t.Fatalf("latency %v after a 40ms answer", lat)
	}
	a.SetEjected(true)

	heavier := inst("a", "z", 300)
	b.Update(snapshot(heavier, inst("b", "", 0), inst("c", "", 0)))
	if got := endpoint(t, b, "a"); got != a {
		t.Fatal("endpoint a was replaced by the swap")
	}
	if a.InFlight() != len(onA) || a.Latency() != lat || !a.Ejected() || a.Instance() != heavier {
		t.Errorf("after swap: in flight %d (want %d), latency %v (want %v), ejected %v, instance %p (want %p)",
			a.InFlight(), len(onA), a.Latency(), lat, a.Ejected(), a.Instance(), heavier)
	}
	// Requests picked before the swap end after it.
	for _, p := range append(held, onA...) {
		p.Done(nil)
	}
	for _, e := range b.Endpoints() {
		if e.InFlight() != 0 {
			t.Errorf("%s: %d in flight after Done across the swap", e.ID(), e.InFlight())
		}
	}

	b.Update(snapshot(inst("b", "", 0), inst("c", "", 0)))
	b.Update(snapshot(inst("a", "", 0), inst("b", "", 0), inst("c", "", 0)))
	if again := endpoint(t, b, "a"); again == a || again.Ejected() {
		t.Errorf("a came back with its old state (same pointer %v, ejected %v)", again == a, again.Ejected())
	}
}

// A new endpoint's estimate starts at the median of the others'.
func TestNewEndpointStartsAtTheMedianLatency(t *testing.T) {
	clock := newClock()
	b := newBalancer(t, Config{Policy: RoundRobin, Now: clock.Now}, insts("a", "b", "c")...)
	for _, x := range []struct {
		id  string
		rtt time.Duration
	}{{"a", 10 * time.Millisecond}, {"b", 20 * time.Millisecond}, {"c", 90 * time.Millisecond}} {
		e := endpoint(t, b, x.id)
		e.observe(b.env.nanotime(), int64(x.rtt), false)
	}
	b.Update(snapshot(insts("a", "b", "c", "d")...))
	if got := endpoint(t, b, "d").Latency(); got != 20*time.Millisecond {
		t.Errorf("new endpoint starts at %v, want the median 20ms", got)
	}
}

func TestPickAndDoneAllocateNothing(t *testing.T) {
	for _, pc := range allPolicies {
		t.Run(pc.name, func(t *testing.T) {
			b := newBalancer(t, pc.cfg, zoned(numbered(10))...)
			avoid := b.Endpoints()[3]
			failed := []string{b.Endpoints()[5].ID(), b.Endpoints()[6].ID()}
			b.Endpoints()[4].SetEjected(true)
			var h uint64
			n := testing.AllocsPerRun(1000, func() {
				h++
				p, err := b.Pick(Request{Hash: h, Avoid: avoid, AvoidIDs: failed})
				if err != nil {
					panic(err)
				}
				p.Done(nil)
			})
			if n != 0 {
				t.Errorf("Pick+Done allocate %v times", n)
			}
		})
	}
}

// fakeWatcher feeds a discovery.Cache from a channel.
type fakeWatcher struct{ events chan meridian.InstanceEvent }

func (w *fakeWatcher) WatchRegistry(ctx context.Context, _ string, _ uint64, fn func(meridian.InstanceEvent) error) error {
	for {
		select {
		case ev := <-w.events:
			if err := fn(ev); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Run follows the discovery cache's snapshots and returns when ctx ends.
func TestRunFollowsTheDiscoveryCache(t *testing.T) {
	w := &fakeWatcher{events: make(chan meridian.InstanceEvent)}
	cache := discovery.New(w)
	b, err := New(service, Config{Policy: RoundRobin})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { _ = cache.Run(ctx) })
	runErr := make(chan error, 1)
	wg.Go(func() { runErr <- b.Run(ctx, cache) })
	defer func() { cancel(); wg.Wait() }()

	send := func(evs ...meridian.InstanceEvent) {
		for _, ev := range evs {
			select {
			case w.events <- ev:
			case <-time.After(5 * time.Second):
				t.Fatal("the cache does not watch")
			}
		}
	}
	put := func(index uint64, id string) meridian.InstanceEvent {
		return meridian.InstanceEvent{Type: meridian.EventPut, Index: index, Service: service, ID: id, Instance: inst(id, "", 0)}
	}
	waitFor := func(want ...string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			var got []string
			for _, e := range b.Endpoints() {
				got = append(got, e.ID())
			}
			if slices.Equal(got, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("endpoints %v, want %v", got, want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	send(put(1, "a"), put(2, "b"), meridian.InstanceEvent{Type: meridian.EventSync, Index: 2})
	waitFor("a", "b")
	a := endpoint(t, b, "a")
	send(put(3, "c"), meridian.InstanceEvent{Type: meridian.EventDelete, Index: 4, Service: service, ID: "b"})
	waitFor("a", "c")
	if endpoint(t, b, "a") != a {
		t.Error("a lost its state across the cache's updates")
	}
	cancel()
	select {
	case err := <-runErr:
		if err != nil {
			t.Errorf("Run = %v after cancel, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// Picks, Dones, swaps, ejections and reconfiguration all at once, for the
// race detector; and the in-flight counts balance at the end.
func TestConcurrentUse(t *testing.T) {
	b := newBalancer(t, Config{Policy: RingHash, Zone: ZoneConfig{Local: "a"}}, zoned(numbered(8))...)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			var last *Endpoint
			for i := 0; ctx.Err() == nil; i++ {
				p, err := b.Pick(Request{Hash: uint64(i*4 + g + 1), Avoid: last})
				if err != nil {
					continue
				}
				last = p.Endpoint()
				_ = last.Instance().HostPort()
				p.Done(nil)
			}
		})
	}
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			b.Update(snapshot(zoned(numbered(4 + i%5))...))
			eps := b.Endpoints()
			eps[i%len(eps)].SetEjected(i%3 == 0)
		}
	})
	wg.Go(func() {
		policies := []Policy{RoundRobin, WeightedRoundRobin, LeastRequest, PeakEWMA, RingHash}
		for i := 0; ctx.Err() == nil; i++ {
			if err := b.Reconfigure(Config{Policy: policies[i%len(policies)], Zone: ZoneConfig{Local: "a"}}); err != nil {
				panic(err)
			}
			time.Sleep(time.Millisecond)
		}
	})
	wg.Wait()
	for _, e := range b.Endpoints() {
		if e.InFlight() != 0 {
			t.Errorf("%s: %d in flight after every Done", e.ID(), e.InFlight())
		}
	}
	for name, g := range map[string]*group{"all": b.all, "local": b.local, "remote": b.remote} {
		if n := g.inflight.Load(); n != 0 {
			t.Errorf("group %s: %d in flight after every Done", name, n)
		}
	}
}

// mutexRoundRobin is the peer of the benchmarks: round robin the way it is
// usually written, a slice and an index under a mutex. Done keeps the
// in-flight counts that Balancer keeps, the naive way, under the same
// mutex.
type mutexRoundRobin struct {
	mu       sync.Mutex
	eps      []*Endpoint
	inflight []int
	next     int
}

// Next only picks.
func (m *mutexRoundRobin) Next() *Endpoint {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.eps[m.next]
	m.next = (m.next + 1) % len(m.eps)
	return e
}

// Pick picks and counts the request in flight until Done.
func (m *mutexRoundRobin) Pick() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	i := m.next
	m.next = (i + 1) % len(m.eps)
	m.inflight[i]++
	return i
}

func (m *mutexRoundRobin) Done(i int) {
	m.mu.Lock()
	m.inflight[i]--
	m.mu.Unlock()
}

// BenchmarkPick measures one Pick and its Done per operation, for every
// policy, over 10 and 100 endpoints, serially and from parallel
// goroutines, beside two mutex-guarded round robin peers: one that only
// picks, one that also counts requests in flight as Balancer does (Pick
// and Done). Ring hash keys are random request hashes. clock_baseline is
// two reads of the monotonic clock, what PeakEWMA pays per request to
// measure latency.
func BenchmarkPick(b *testing.B) {
	keys := make([]uint64, 1<<12)
	for i := range keys {
		keys[i] = HashString(fmt.Sprint("user-", i))
	}
	cases := append([]struct {
		name string
		cfg  Config
	}{
		{"mutex_round_robin_peer", Config{}},
		{"mutex_round_robin_inflight_peer", Config{}},
		{"clock_baseline", Config{}},
	}, allPolicies...)
	for _, n := range []int{10, 100} {
		for _, pc := range cases {
			bal := newBalancer(b, pc.cfg, zoned(numbered(n))...)
			peer := &mutexRoundRobin{eps: bal.Endpoints(), inflight: make([]int, n)}
			op := func(i int) {
				p, err := bal.Pick(Request{Hash: keys[i&(len(keys)-1)]})
				if err != nil {
					b.Fatal(err)
				}
				p.Done(nil)
			}
			switch pc.name {
			case "mutex_round_robin_peer":
				op = func(int) { _ = peer.Next() }
			case "mutex_round_robin_inflight_peer":
				op = func(int) { peer.Done(peer.Pick()) }
			case "clock_baseline":
				epoch := time.Now()
				op = func(int) {
					if time.Since(epoch) < 0 || time.Since(epoch) < 0 {
						b.Fatal("clock")
					}
				}
			}
			b.Run(fmt.Sprintf("%s/n=%d/serial", pc.name, n), func(b *testing.B) {
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					op(i)
					i++
				}
			})
			b.Run(fmt.Sprintf("%s/n=%d/parallel", pc.name, n), func(b *testing.B) {
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					i := rand.Int()
					for pb.Next() {
						op(i)
						i++
					}
				})
			})
		}
	}
}

// An Endpoint is two cache lines: what picks read, and the counters every
// pick writes, so that writes to one endpoint do not slow reads of it or
// of its neighbours.
func TestEndpointLayout(t *testing.T) {
	var e Endpoint
	if off, size := unsafe.Offsetof(e.inflight), unsafe.Sizeof(e); off != 64 || size != 128 {
		t.Errorf("inflight at offset %d, size %d; want 64 and 128", off, size)
	}
}
