// Package outlier is passive health checking: it watches the results of
// real requests to each endpoint of an upstream and ejects (takes out of
// load balancing for a while) the endpoints that fail or lag far behind
// the others, as Envoy's outlier detection does.
//
// Three detectors, each documented on its Config fields:
//
//   - consecutive failures: 5xx answers or gateway failures in a row
//     (Envoy's consecutive_5xx and consecutive_gateway_failure), acted on
//     at once;
//   - failure percentage over an interval, with a minimum of requests
//     (Envoy's failure_percentage; Istio users ask for it);
//   - latency far above the group's: mean latency over the interval above
//     LatencyFactor × the group median and at least LatencyMinExcess above
//     it, among endpoints with enough samples (Envoy has had latency-based
//     detection open as a request since 2016).
//
// An ejection lasts BaseEjectionTime × the endpoint's ejection count,
// capped at MaxEjectionTime; no ejection takes the ejected share above
// MaxEjectionPercent or ejects the last endpoint in service.
//
// Core decides, with the time passed in. Detector runs it for concurrent
// callers and reports each change through Options.Eject, the shape of the
// balancer Endpoint's SetEjected:
//
//	d, _ := outlier.New(cfg, outlier.Options{Eject: func(id string, ejected bool) {
//		endpoints[id].SetEjected(ejected)
//	}})
//	go d.Run(ctx) // returns ejected endpoints to service on time
package outlier

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/meridian-platform/meridian/traffic/resilience"
)

// Options are a Detector's collaborators. The zero value works but
// reports nothing.
type Options struct {
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Eject is told of every ejection (true) and return to service (false).
	Eject func(endpointID string, ejected bool)
	// OnChange is told the same with the reason, for metrics and logs.
	OnChange func(Change)
}

// Detector is Core for concurrent use, plus the timer loop (Run) that
// returns endpoints to service and closes intervals. Callbacks run in
// order with the detector's lock held: they must be quick and must not
// call the Detector.
type Detector struct {
	mu   sync.Mutex
	core *Core
	now  func() time.Time
	opts Options
	buf  []Change
	wake chan struct{} // Run re-reads Next after an ejection
}

// New returns a detector with no endpoints.
func New(cfg Config, opts Options) (*Detector, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	core, err := NewCore(cfg, opts.Now())
	if err != nil {
		return nil, err
	}
	return &Detector{core: core, now: opts.Now, opts: opts, wake: make(chan struct{}, 1)}, nil
}

// SetEndpoints makes ids the group (the instances discovery serves now).
func (d *Detector) SetEndpoints(ids []string) {
	d.mu.Lock()
	d.buf = d.core.SetEndpoints(ids, d.buf[:0])
	d.emit()
	d.mu.Unlock()
}

// Record counts one result of endpoint id. It allocates nothing unless
// the endpoint is new.
func (d *Detector) Record(id string, r Result) {
	d.mu.Lock()
	d.buf = d.core.Record(id, r, d.now(), d.buf[:0])
	changed := len(d.buf) > 0
	d.emit()
	d.mu.Unlock()
	if changed {
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
}

// Tick runs the time-driven rules now; Run calls it on time.
func (d *Detector) Tick() {
	d.mu.Lock()
	d.buf = d.core.Tick(d.now(), d.buf[:0])
	d.emit()
	d.mu.Unlock()
}

func (d *Detector) emit() {
	for _, c := range d.buf {
		if d.opts.Eject != nil {
			d.opts.Eject(c.Endpoint, c.Ejected)
		}
		if d.opts.OnChange != nil {
			d.opts.OnChange(c)
		}
	}
	clear(d.buf) // drop the id strings
}

// Ejected reports whether id is ejected.
func (d *Detector) Ejected(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.core.Ejected(id)
}

// Run calls Tick when the core asks to be ticked, until ctx ends.
func (d *Detector) Run(ctx context.Context) error {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		d.mu.Lock()
		next := d.core.Next()
		d.mu.Unlock()
		t.Reset(max(next.Sub(d.now()), 0))
		select {
		case <-ctx.Done():
			return nil
		case <-d.wake:
			continue
		case <-t.C:
			d.Tick()
		}
	}
}

// Classify maps a round trip to an outcome; ok false means "do not
// count it".
type Classify func(req *http.Request, resp *http.Response, err error) (o Outcome, ok bool)

// DefaultClassify: a transport error is a gateway failure (a timeout
// included: the endpoint did not answer in the time it was given), unless
// the caller canceled the request or a resilience layer refused it
// locally, which are not counted; 502, 503 and 504 are gateway failures,
// other 5xx server errors, the rest successes.
func DefaultClassify(req *http.Request, resp *http.Response, err error) (Outcome, bool) {
	if err != nil {
		if errors.Is(err, context.Canceled) && req.Context().Err() != nil || errors.Is(err, resilience.ErrRejected) {
			return 0, false
		}
		return GatewayFailure, true
	}
	switch s := resp.StatusCode; {
	case s == http.StatusBadGateway || s == http.StatusServiceUnavailable || s == http.StatusGatewayTimeout:
		return GatewayFailure, true
	case s >= 500:
		return ServerError, true
	}
	return Success, true
}

// RoundTripper records the result of every round trip through next
// against the endpoint it went to: endpointOf(req) (nil means the
// resilience.Attempt's Endpoint, set by the balancer stage, or else the
// request's host). Place it right above the transport, below the balancer
// stage. classify nil means DefaultClassify.
func RoundTripper(d *Detector, endpointOf func(*http.Request) string, classify Classify) func(next http.RoundTripper) http.RoundTripper {
	if endpointOf == nil {
		endpointOf = DefaultEndpoint
	}
	if classify == nil {
		classify = DefaultClassify
	}
	return func(next http.RoundTripper) http.RoundTripper {
		return &roundTripper{d: d, endpointOf: endpointOf, classify: classify, next: next}
	}
}

// DefaultEndpoint is the Attempt's Endpoint, or the request's URL host.
func DefaultEndpoint(req *http.Request) string {
	if a := resilience.AttemptFrom(req.Context()); a != nil && a.Endpoint != "" {
		return a.Endpoint
	}
	return req.URL.Host
}

type roundTripper struct {
	d          *Detector
	endpointOf func(*http.Request) string
	classify   Classify
	next       http.RoundTripper
}

func (rt *roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	start := rt.d.now()
	resp, err := rt.next.RoundTrip(req)
	if o, ok := rt.classify(req, resp, err); ok {
		rt.d.Record(rt.endpointOf(req), Result{Outcome: o, Latency: rt.d.now().Sub(start)})
	}
	return resp, err
}
