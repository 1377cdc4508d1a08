package balance

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/traffic/discovery"
)

// ErrNoEndpoints is wrapped by Pick's error when the service has no
// instance to send to (none serving, or no instance list yet). The error
// is a *meridian.Error with CodeUnavailable naming the service, so the edge
// answers 503.
var ErrNoEndpoints = errors.New("balance: no endpoints")

// Policy names a balancing algorithm. The names are those of the
// resiliency spec and of Envoy's lb_policy where one exists.
type Policy string

const (
	// RoundRobin cycles through the endpoints in ID order from a random
	// start.
	RoundRobin Policy = "round_robin"
	// WeightedRoundRobin is nginx's smooth weighted round robin over
	// Instance.Weight.
	WeightedRoundRobin Policy = "weighted_round_robin"
	// LeastRequest picks the less loaded of two random endpoints (power of
	// two choices), load being requests in flight divided by weight.
	LeastRequest Policy = "least_request"
	// PeakEWMA is power of two choices on latency × load, as Finagle and
	// Linkerd do: cost = peak-EWMA latency × (in flight + 1) / weight.
	PeakEWMA Policy = "peak_ewma"
	// RingHash is consistent hashing on a ring with bounded load, keyed by
	// Request.Hash.
	RingHash Policy = "ring_hash"
)

// Defaults of Config's fields.
const (
	DefaultPolicy           = PeakEWMA
	DefaultDecay            = 10 * time.Second
	DefaultBalanceFactor    = 1.25
	DefaultRingPoints       = 160
	DefaultOverprovisioning = 1.4
	DefaultOverload         = 4.0
)

// Limits of Config's fields.
const (
	MinDecay      = 10 * time.Millisecond
	MaxRingPoints = 10000
	// maxRing caps the ring's size whatever the endpoint count: past it,
	// every endpoint gets proportionally fewer points.
	maxRing = 1 << 20
)

// Config configures a Balancer. The zero value works: peak EWMA, no zone
// preference. Invalid values make New and Reconfigure fail with a
// *meridian.Error naming the field.
type Config struct {
	// Policy is the algorithm. Default PeakEWMA, Linkerd's default: it
	// steers away from slow and overloaded instances without configuration
	// and costs no more than round robin to pick with.
	Policy Policy
	// Decay is peak EWMA's time constant τ: a latency sample's weight falls
	// to 1/e after Decay (its half-life is Decay × ln 2, 6.9s at the
	// default), and so does an idle endpoint's estimate. Default 10s
	// (Finagle's and Linkerd's); at least 10ms. Only PeakEWMA measures
	// latency: the other policies read no clock.
	Decay time.Duration
	// BalanceFactor is c of consistent hashing with bounded loads
	// (Mirrokni, Thorup and Zadimoghaddam): under RingHash an endpoint
	// takes a new request only while its requests in flight are below
	// c × (the set's requests in flight, this one included) × its weight
	// share, so none carries more than ⌈c × average⌉ and a hot key spills
	// to the next endpoints on the ring. Default 1.25 (the paper's and
	// HAProxy's hash-balance-factor 125); must be above 1. Counted per
	// Balancer, that is per client process.
	BalanceFactor float64
	// RingPoints is how many points the endpoints of the highest weight get
	// on the ring; others get points in proportion to their weight, at
	// least one. More points spread keys more evenly and cost memory
	// (12 bytes a point). Default 160 (ketama's); at most 10000. The ring
	// holds at most 2^20 points; larger sets get fewer points each.
	RingPoints int
	// Zone turns on zone preference. The zero value leaves it off.
	Zone ZoneConfig
	// Now is the clock for latencies and decay, for tests. Default: the
	// monotonic clock (as time.Now, cheaper). It is fixed by New:
	// Reconfigure ignores it.
	Now func() time.Time
}

// ZoneConfig configures zone preference, Envoy's zone-aware routing with
// the caller's zone as priority 0 and every other zone as priority 1.
type ZoneConfig struct {
	// Local is the caller's zone (compared with Instance.Zone). Empty
	// turns zone preference off.
	Local string
	// Overprovisioning is Envoy's overprovisioning factor: the local zone
	// takes min(1, Overprovisioning × its available fraction) of requests,
	// the rest spills to the other zones. With the default 1.4 the local
	// zone keeps all traffic while at least 1/1.4 ≈ 72% of its endpoints
	// are available (not ejected), and a zone that lost more hands the
	// excess over instead of overloading its survivors. At least 1.
	Overprovisioning float64
	// Overload spills a request to the other zones when the local endpoint
	// chosen for it has more than Overload times as many requests in
	// flight as the endpoint the other zones would give it (taken as at
	// least 1): with the default 4, a local zone whose requests queue while
	// the others idle sheds to them, while light traffic stays local.
	// Negative turns the rule off. Counted per Balancer.
	Overload float64
}

// Request describes what a pick needs to know about a request. It is
// passed by value; the zero value asks for any endpoint.
type Request struct {
	// Hash is the request's affinity key for RingHash, computed with
	// HashString, HashHeader, HashCookie or HashPathValue. Zero means no
	// key: RingHash then picks a random point of the ring. Other policies
	// ignore it.
	Hash uint64
	// Avoid is an endpoint not to return while another exists, typically
	// the one the previous attempt of a retry failed on. Nil avoids none.
	Avoid *Endpoint
	// AvoidIDs names, by instance ID, more endpoints not to return while
	// one outside them and Avoid exists: typically every endpoint earlier
	// tries of the request failed on (resilience.Attempt.Failed, passed as
	// is, so the pick allocates nothing). When all endpoints are avoided,
	// those in AvoidIDs are still preferred to Avoid, so a request that
	// failed everywhere goes back to the endpoint that failed longest ago
	// rather than to the one that just did. Meant for a handful of IDs:
	// each candidate is compared with each of them.
	AvoidIDs []string
}

// Picked is the result of a successful Pick. Call Done exactly once when
// the request ends; the zero Picked's Done does nothing.
type Picked struct {
	e     *Endpoint
	g     *group
	start int64 // untimed unless the policy measures latency
}

// untimed is Picked.start when the policy does not measure latency.
const untimed = math.MinInt64

// Endpoint is the endpoint picked.
func (p Picked) Endpoint() *Endpoint { return p.e }

// Done ends the request: it takes it out of the endpoint's requests in
// flight and, under PeakEWMA, folds its latency (from Pick to Done, by the
// balancer's clock) into the endpoint's estimate. err is the request's
// outcome: a failure never lowers the estimate, and a request the caller
// canceled (errors.Is(err, context.Canceled)) leaves the estimate alone,
// since its latency is the caller's, not the endpoint's. Done must be
// called once per Picked; it takes no lock and allocates nothing.
func (p Picked) Done(err error) {
	e := p.e
	if e == nil {
		return
	}
	e.inflight.Add(-1)
	if p.g != nil {
		p.g.inflight.Add(-1)
	}
	if p.start == untimed || err != nil && errors.Is(err, context.Canceled) {
		return
	}
	now := e.env.nanotime()
	e.observe(now, now-p.start, err != nil)
}

// Source is where Run reads the service's snapshots. *discovery.Cache
// satisfies it.
type Source interface {
	Wait(ctx context.Context, service string) (*discovery.Snapshot, error)
}

var _ Source = (*discovery.Cache)(nil)

// Balancer picks endpoints of one service. Update (or Run) feeds it the
// service's discovery snapshots; each builds an immutable picker that
// replaces the previous one atomically, while the endpoints' live state
// carries over. Pick and Done take no lock and allocate nothing; they are
// safe from any goroutine, concurrently with Update.
type Balancer struct {
	service string
	env     *env
	picker  atomic.Pointer[picker]

	mu   sync.Mutex // serializes Update and Reconfigure
	cfg  Config     // with defaults applied
	snap *discovery.Snapshot
	set  map[string]*Endpoint
	// groups outlive pickers so that requests in flight stay counted
	// across swaps.
	all, local, remote *group
}

// picker is what one snapshot and one config compile to.
type picker struct {
	eps   []*Endpoint // sorted by ID
	c     chooser     // nil when eps is empty
	err   error       // Pick's error when eps is empty
	timed bool        // the policy measures latency: Pick reads the clock
}

// chooser picks an endpoint. choose returns the lowest-ranked endpoint it
// can find (see rank), the group to count the request in (may be nil), and
// the rank. now is the time by env.nanotime, untimed unless the policy is
// PeakEWMA.
type chooser interface {
	choose(req Request, now int64) (*Endpoint, *group, int)
}

// New returns a Balancer for service, with no endpoints until the first
// Update. It starts nothing.
func New(service string, cfg Config) (*Balancer, error) {
	if err := meridian.ValidateServiceName("service", service); err != nil {
		return nil, err
	}
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	b := &Balancer{
		service: service,
		env:     newEnv(cfg.Now, cfg.Decay),
		cfg:     cfg,
		set:     map[string]*Endpoint{},
		all:     new(group),
		local:   new(group),
		remote:  new(group),
	}
	b.picker.Store(&picker{err: &meridian.Error{
		Code:    meridian.CodeUnavailable,
		Message: fmt.Sprintf("no instance list of service %q yet", service),
		Err:     ErrNoEndpoints,
	}})
	return b, nil
}

// normalize applies defaults and validates.
func (c *Config) normalize() error {
	switch c.Policy {
	case "":
		c.Policy = DefaultPolicy
	case RoundRobin, WeightedRoundRobin, LeastRequest, PeakEWMA, RingHash:
	default:
		return meridian.FieldError("policy", "unknown policy %q: want round_robin, weighted_round_robin, least_request, peak_ewma or ring_hash", c.Policy)
	}
	switch {
	case c.Decay == 0:
		c.Decay = DefaultDecay
	case c.Decay < MinDecay:
		return meridian.FieldError("decay", "%v is below the minimum %v", c.Decay, MinDecay)
	}
	switch {
	case c.BalanceFactor == 0:
		c.BalanceFactor = DefaultBalanceFactor
	case !(c.BalanceFactor > 1) || math.IsInf(c.BalanceFactor, 0):
		return meridian.FieldError("balance_factor", "%v must be a number above 1", c.BalanceFactor)
	}
	switch {
	case c.RingPoints == 0:
		c.RingPoints = DefaultRingPoints
	case c.RingPoints < 0 || c.RingPoints > MaxRingPoints:
		return meridian.FieldError("ring_points", "%d is out of range 1-%d", c.RingPoints, MaxRingPoints)
	}
	switch {
	case c.Zone.Overprovisioning == 0:
		c.Zone.Overprovisioning = DefaultOverprovisioning
	case !(c.Zone.Overprovisioning >= 1) || math.IsInf(c.Zone.Overprovisioning, 0):
		return meridian.FieldError("zone.overprovisioning", "%v must be a number of at least 1", c.Zone.Overprovisioning)
	}
	switch {
	case c.Zone.Overload == 0:
		c.Zone.Overload = DefaultOverload
	case math.IsNaN(c.Zone.Overload) || math.IsInf(c.Zone.Overload, 0):
		return meridian.FieldError("zone.overload", "%v is not a number", c.Zone.Overload)
	}
	return nil
}

// Service is the service the Balancer balances.
func (b *Balancer) Service() string { return b.service }

// Pick chooses an endpoint for one request. Ejected endpoints are skipped
// while another is available; when all are ejected Pick fails open and
// returns one of them (the outlier detector bounds the ejected share, so
// this means the detector's view is stale, not that the service is down).
// req.Avoid is never returned while any other endpoint exists, nor an
// endpoint named in req.AvoidIDs while one not named exists. The only
// error is ErrNoEndpoints (wrapped, naming the service) when the service
// has no endpoint at all.
func (b *Balancer) Pick(req Request) (Picked, error) {
	p := b.picker.Load()
	if p.c == nil {
		return Picked{}, p.err
	}
	now := int64(untimed)
	if p.timed {
		now = b.env.nanotime()
	}
	e, g, _ := p.c.choose(req, now)
	e.inflight.Add(1)
	if g != nil {
		g.inflight.Add(1)
	}
	return Picked{e: e, g: g, start: now}, nil
}

// Endpoints are the current endpoints, sorted by ID. The slice is shared
// and must not be modified; updates replace it rather than change it.
func (b *Balancer) Endpoints() []*Endpoint { return b.picker.Load().eps }

// Endpoint is the current endpoint of the instance id, nil if there is
// none. It takes no lock and allocates nothing, so it suits callers that
// know instances by ID, such as an outlier detector reporting ejections
// (b.Endpoint(id).SetEjected(true), nil-checked) or a retry layer turning
// the ID of the instance that just failed into Request.Avoid.
func (b *Balancer) Endpoint(id string) *Endpoint {
	eps := b.picker.Load().eps
	if i, ok := slices.BinarySearchFunc(eps, id, func(e *Endpoint, id string) int { return strings.Compare(e.id, id) }); ok {
		return eps[i]
	}
	return nil
}

// Update replaces the service's endpoints with snap's instances. Endpoints
// of instances that remain (same ID) keep their state and take the new
// instance record; new instances get fresh endpoints whose latency
// estimate starts at the median of the others'. A nil snap, or the snapshot
// already applied, changes nothing. snap must be of the Balancer's service:
// anything else is a wiring bug, and Update panics rather than route one
// service's requests to another.
func (b *Balancer) Update(snap *discovery.Snapshot) {
	if snap == nil {
		return
	}
	if snap.Service != b.service {
		panic(fmt.Sprintf("balance: Update with a snapshot of service %q on the balancer of %q", snap.Service, b.service))
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if snap == b.snap {
		return
	}
	b.snap = snap
	now := b.env.nanotime()
	var stay []*Endpoint
	for _, in := range snap.Instances {
		if e := b.set[in.ID]; e != nil {
			stay = append(stay, e)
		}
	}
	initial := initialEstimate(stay, now)
	set := make(map[string]*Endpoint, len(snap.Instances))
	eps := make([]*Endpoint, 0, len(snap.Instances))
	for _, in := range snap.Instances {
		if _, dup := set[in.ID]; dup {
			continue
		}
		e := b.set[in.ID]
		if e == nil {
			e = &Endpoint{id: in.ID, env: b.env}
			e.ewma.Store(packEWMA(initial, now))
		}
		e.setInstance(in)
		set[in.ID] = e
		eps = append(eps, e)
	}
	// Discovery sorts its snapshots; a hand-made one (a gateway's static
	// upstreams) may not be, and the policies' order must not depend on it.
	slices.SortFunc(eps, func(x, y *Endpoint) int { return strings.Compare(x.id, y.id) })
	b.set = set
	b.picker.Store(b.build(eps))
}

// Reconfigure switches to cfg (cfg.Now aside), rebuilding the picker over
// the current endpoints, whose state carries over; requests in flight are
// unaffected. On error the current config stays.
func (b *Balancer) Reconfigure(cfg Config) error {
	cfg.Now = b.env.now
	if err := cfg.normalize(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cfg = cfg
	b.env.setDecay(cfg.Decay)
	if b.snap != nil {
		b.picker.Store(b.build(b.picker.Load().eps))
	}
	return nil
}

// Run keeps the Balancer up to date with the service's snapshots from src
// until ctx ends, then returns nil. It returns an error only when src
// fails for another reason (for a *discovery.Cache: the cache stopped
// before the service's first list, or the service name is invalid). The
// caller owns the goroutine it runs on and stops it through ctx.
func (b *Balancer) Run(ctx context.Context, src Source) error {
	for {
		snap, err := src.Wait(ctx, b.service)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		b.Update(snap)
		select {
		case <-snap.Changed():
		case <-ctx.Done():
			return nil
		}
	}
}

// build compiles eps (sorted by ID) into a picker under b.cfg. Called with
// b.mu held.
func (b *Balancer) build(eps []*Endpoint) *picker {
	if len(eps) == 0 {
		return &picker{eps: eps, err: &meridian.Error{
			Code:    meridian.CodeUnavailable,
			Message: fmt.Sprintf("no serving instance of service %q", b.service),
			Err:     ErrNoEndpoints,
		}}
	}
	cfg := &b.cfg
	if cfg.Zone.Local == "" {
		var g *group
		if cfg.Policy == RingHash {
			g = b.all // bounded load needs the set's requests in flight
		}
		return &picker{eps: eps, c: newChooser(cfg, eps, g), timed: cfg.Policy == PeakEWMA}
	}
	var local, remote []*Endpoint
	for _, e := range eps {
		if e.Instance().Zone == cfg.Zone.Local {
			local = append(local, e)
		} else {
			remote = append(remote, e)
		}
	}
	z := &zoneChooser{
		env:      b.env,
		nLocal:   len(local),
		over:     cfg.Zone.Overprovisioning,
		overload: cfg.Zone.Overload,
		localEps: local,
	}
	var lg, rg *group
	if cfg.Policy == RingHash {
		lg, rg = b.local, b.remote // each side's ring bounds its own load
	}
	if len(local) > 0 {
		z.local = newChooser(cfg, local, lg)
	}
	if len(remote) > 0 {
		z.remote = newChooser(cfg, remote, rg)
	}
	return &picker{eps: eps, c: z, timed: cfg.Policy == PeakEWMA}
}

// newChooser builds the policy's chooser over eps (not empty), counting
// requests in g (which may be nil).
func newChooser(cfg *Config, eps []*Endpoint, g *group) chooser {
	switch cfg.Policy {
	case RoundRobin:
		return newRoundRobin(eps, g)
	case WeightedRoundRobin:
		return newWeightedRoundRobin(eps, g)
	case LeastRequest:
		return newP2C(eps, g, false)
	case RingHash:
		return newRing(eps, g, cfg.RingPoints, cfg.BalanceFactor)
	default:
		return newP2C(eps, g, true)
	}
}

// weight is the instance's weight, DefaultWeight when unset.
func weight(e *Endpoint) int {
	if w := e.Instance().Weight; w > 0 {
		return w
	}
	return meridian.DefaultWeight
}
