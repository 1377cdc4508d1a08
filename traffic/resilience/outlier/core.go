package outlier

import (
	"cmp"
	"slices"
	"time"

	"github.com/meridian-platform/meridian"
)

// Config is an outlier-detection policy. For every field the zero value
// means the default; for the three detectors a negative threshold turns
// the detector off.
type Config struct {
	// Consecutive5xx ejects an endpoint after this many failures in a row,
	// counting 5xx answers and gateway failures alike (Envoy's
	// consecutive_5xx). Default 5.
	Consecutive5xx int `json:"consecutive_5xx,omitempty"`
	// ConsecutiveGatewayFailure ejects an endpoint after this many gateway
	// failures in a row: no connection, a timeout, or 502, 503, 504
	// (Envoy's consecutive_gateway_failure). Other answers, 500 included,
	// reset the count. Default 3.
	ConsecutiveGatewayFailure int `json:"consecutive_gateway_failure,omitempty"`

	// FailurePercent ejects, at the end of an Interval, an endpoint whose
	// failures (5xx and gateway failures) were at least this percentage of
	// its requests in that interval, if it had at least
	// FailurePercentMinRequests of them. Defaults 85 and 50 (Envoy's).
	FailurePercent            float64 `json:"failure_percent,omitempty"`
	FailurePercentMinRequests int     `json:"failure_percent_min_requests,omitempty"`

	// LatencyFactor ejects, at the end of an Interval, an endpoint that is
	// far slower than its group. The rule: take the endpoints that are not
	// ejected and had at least LatencyMinRequests successful requests in
	// the interval; if there are at least LatencyMinEndpoints of them,
	// compute each one's mean latency of successful requests and the
	// median M of those means; eject every such endpoint whose mean
	// exceeds LatencyFactor × M and exceeds M by at least
	// LatencyMinExcess. The median is robust to the outlier itself, and
	// the absolute floor keeps sub-millisecond noise from ejecting
	// anything. Defaults 3, 20, 3 and 10ms.
	LatencyFactor       float64           `json:"latency_factor,omitempty"`
	LatencyMinRequests  int               `json:"latency_min_requests,omitempty"`
	LatencyMinEndpoints int               `json:"latency_min_endpoints,omitempty"`
	LatencyMinExcess    meridian.Duration `json:"latency_min_excess,omitempty"`

	// Interval is how often the percentage and latency rules run, each
	// over the results of the interval just ended. Default 10s.
	Interval meridian.Duration `json:"interval,omitempty"`
	// BaseEjectionTime × the endpoint's ejection count is how long an
	// ejection lasts, capped at MaxEjectionTime. The count goes up by one
	// per ejection and down by one per interval the endpoint spends in
	// service. Defaults 30s and 300s.
	BaseEjectionTime meridian.Duration `json:"base_ejection_time,omitempty"`
	MaxEjectionTime  meridian.Duration `json:"max_ejection_time,omitempty"`
	// MaxEjectionPercent bounds the ejected share of the endpoints: an
	// ejection happens only if afterwards at most this percentage is
	// ejected, and never ejects the last endpoint in service. Default 50.
	MaxEjectionPercent int `json:"max_ejection_percent,omitempty"`
}

// Validate reports the first field out of range.
func (c Config) Validate() error {
	switch {
	case c.FailurePercent > 100:
		return meridian.FieldError("failure_percent", "must be at most 100")
	case c.FailurePercentMinRequests < 0:
		return meridian.FieldError("failure_percent_min_requests", "must not be negative")
	case c.LatencyFactor > 0 && c.LatencyFactor <= 1:
		return meridian.FieldError("latency_factor", "must be greater than 1")
	case c.LatencyMinRequests < 0:
		return meridian.FieldError("latency_min_requests", "must not be negative")
	case c.LatencyMinEndpoints < 0:
		return meridian.FieldError("latency_min_endpoints", "must not be negative")
	case c.LatencyMinExcess < 0:
		return meridian.FieldError("latency_min_excess", "must not be negative")
	case c.Interval < 0:
		return meridian.FieldError("interval", "must not be negative")
	case c.BaseEjectionTime < 0:
		return meridian.FieldError("base_ejection_time", "must not be negative")
	case c.MaxEjectionTime < 0:
		return meridian.FieldError("max_ejection_time", "must not be negative")
	case c.MaxEjectionPercent < 0 || c.MaxEjectionPercent > 100:
		return meridian.FieldError("max_ejection_percent", "must be in [0, 100]")
	}
	return nil
}

func (c Config) withDefaults() Config {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	deff := func(v *float64, d float64) {
		if *v == 0 {
			*v = d
		}
	}
	defd := func(v *meridian.Duration, d time.Duration) {
		if *v == 0 {
			*v = meridian.Duration(d)
		}
	}
	def(&c.Consecutive5xx, 5)
	def(&c.ConsecutiveGatewayFailure, 3)
	deff(&c.FailurePercent, 85)
	def(&c.FailurePercentMinRequests, 50)
	deff(&c.LatencyFactor, 3)
	def(&c.LatencyMinRequests, 20)
	def(&c.LatencyMinEndpoints, 3)
	defd(&c.LatencyMinExcess, 10*time.Millisecond)
	defd(&c.Interval, 10*time.Second)
	defd(&c.BaseEjectionTime, 30*time.Second)
	defd(&c.MaxEjectionTime, max(300*time.Second, c.BaseEjectionTime.D()))
	def(&c.MaxEjectionPercent, 50)
	return c
}

// Outcome classifies a result.
type Outcome uint8

const (
	// Success is any answer that is not a failure (4xx included).
	Success Outcome = iota
	// ServerError is a 5xx answer other than 502, 503, 504.
	ServerError
	// GatewayFailure is no connection, a reset, a timeout, or 502, 503, 504.
	GatewayFailure
)

// Result is the outcome of one request to an endpoint.
type Result struct {
	Outcome Outcome
	// Latency is the time to the answer; only successes' latencies count.
	Latency time.Duration
}

// Reason says which rule ejected an endpoint.
type Reason string

const (
	ReasonConsecutive5xx            Reason = "consecutive_5xx"
	ReasonConsecutiveGatewayFailure Reason = "consecutive_gateway_failure"
	ReasonFailurePercent            Reason = "failure_percent"
	ReasonLatency                   Reason = "latency"
	ReasonEjectionOver              Reason = "ejection_over" // a return to service
	ReasonRemoved                   Reason = "removed"       // an ejected endpoint left the group
)

// Change is an endpoint ejected or returned to service.
type Change struct {
	Endpoint string
	Ejected  bool
	Reason   Reason
	// Until is when an ejection ends; Count the endpoint's ejection count.
	Until time.Time
	Count int
}

type endpoint struct {
	id          string
	ejected     bool
	until       time.Time
	count       int // ejection count: multiplier of BaseEjectionTime
	cons5xx     int
	consGateway int
	// counts of the current interval
	requests, failures, successes int
	latencySum                    time.Duration
}

// Core is the outlier detector's state machine over a group of endpoints
// (the instances of one upstream). Results and ticks come in with the
// time; ejections and returns to service come out, appended to out. It
// reads no clock and is not safe for concurrent use.
type Core struct {
	cfg          Config
	eps          map[string]*endpoint
	managed      bool // SetEndpoints was called: the group is given, not learned
	ejected      int
	nextInterval time.Time
}

// NewCore returns a detector with no endpoints; now starts the first
// interval.
func NewCore(cfg Config, now time.Time) (*Core, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return &Core{cfg: cfg, eps: map[string]*endpoint{}, nextInterval: now.Add(cfg.Interval.D())}, nil
}

// SetEndpoints makes ids the group: new ids start in service, ids no
// longer listed are forgotten; an ejected one is reported as returned
// (ReasonRemoved), so that counts of ejected endpoints stay right.
func (c *Core) SetEndpoints(ids []string, out []Change) []Change {
	c.managed = true
	keep := make(map[string]bool, len(ids))
	for _, id := range ids {
		keep[id] = true
		if c.eps[id] == nil {
			c.eps[id] = &endpoint{id: id}
		}
	}
	for id, e := range c.eps {
		if !keep[id] {
			if e.ejected {
				c.ejected--
				out = append(out, Change{Endpoint: id, Reason: ReasonRemoved, Count: e.count})
			}
			delete(c.eps, id)
		}
	}
	return out
}

// Record counts a result of endpoint id at now. Until SetEndpoints is
// first called, an id not yet known joins the group; after, the group is
// what SetEndpoints said, and results of other ids (a late answer from an
// endpoint that left) are dropped. Consecutive-failure ejections happen
// here, at once.
func (c *Core) Record(id string, r Result, now time.Time, out []Change) []Change {
	e := c.eps[id]
	if e == nil {
		if c.managed {
			return out
		}
		e = &endpoint{id: id}
		c.eps[id] = e
	}
	e.requests++
	switch r.Outcome {
	case Success:
		e.successes++
		e.latencySum += r.Latency
		e.cons5xx, e.consGateway = 0, 0
	case ServerError:
		e.failures++
		e.cons5xx++
		e.consGateway = 0
	case GatewayFailure:
		e.failures++
		e.cons5xx++
		e.consGateway++
	}
	if e.ejected {
		return out // results of requests sent before the ejection
	}
	switch {
	case c.cfg.ConsecutiveGatewayFailure > 0 && e.consGateway >= c.cfg.ConsecutiveGatewayFailure:
		out = c.eject(e, now, ReasonConsecutiveGatewayFailure, out)
	case c.cfg.Consecutive5xx > 0 && e.cons5xx >= c.cfg.Consecutive5xx:
		out = c.eject(e, now, ReasonConsecutive5xx, out)
	}
	return out
}

// Next is when Tick must run next: the end of the interval or of the
// earliest ejection, whichever comes first.
func (c *Core) Next() time.Time {
	next := c.nextInterval
	for _, e := range c.eps {
		if e.ejected && e.until.Before(next) {
			next = e.until
		}
	}
	return next
}

// Tick returns ejected endpoints whose time is over to service and, when
// an interval has ended, runs the percentage and latency rules over it
// and starts the next one.
func (c *Core) Tick(now time.Time, out []Change) []Change {
	for _, e := range c.sorted() {
		if e.ejected && !now.Before(e.until) {
			e.ejected = false
			c.ejected--
			e.cons5xx, e.consGateway = 0, 0
			out = append(out, Change{Endpoint: e.id, Ejected: false, Reason: ReasonEjectionOver, Count: e.count})
		}
	}
	if now.Before(c.nextInterval) {
		return out
	}
	out = c.analyze(now, out)
	for _, e := range c.eps {
		if !e.ejected && e.count > 0 && !e.until.After(c.nextInterval.Add(-c.cfg.Interval.D())) {
			e.count-- // a whole interval in service
		}
		e.requests, e.failures, e.successes, e.latencySum = 0, 0, 0, 0
	}
	c.nextInterval = now.Add(c.cfg.Interval.D())
	return out
}

func (c *Core) analyze(now time.Time, out []Change) []Change {
	eps := c.sorted()
	if c.cfg.FailurePercent > 0 {
		for _, e := range eps {
			if !e.ejected && e.requests >= c.cfg.FailurePercentMinRequests && e.requests > 0 &&
				100*float64(e.failures) >= c.cfg.FailurePercent*float64(e.requests) {
				out = c.eject(e, now, ReasonFailurePercent, out)
			}
		}
	}
	if c.cfg.LatencyFactor > 0 {
		type mean struct {
			e *endpoint
			d time.Duration
		}
		var ms []mean
		for _, e := range eps {
			if !e.ejected && e.successes >= c.cfg.LatencyMinRequests && e.successes > 0 {
				ms = append(ms, mean{e, e.latencySum / time.Duration(e.successes)})
			}
		}
		if len(ms) >= c.cfg.LatencyMinEndpoints && len(ms) > 0 {
			slices.SortFunc(ms, func(a, b mean) int { return cmp.Compare(a.d, b.d) })
			median := ms[len(ms)/2].d
			if len(ms)%2 == 0 {
				median = (ms[len(ms)/2-1].d + ms[len(ms)/2].d) / 2
			}
			// Slowest first, so that when MaxEjectionPercent stops the
			// ejections the worst endpoint is the one out.
			for i := len(ms) - 1; i >= 0; i-- {
				m := ms[i]
				if float64(m.d) > c.cfg.LatencyFactor*float64(median) && m.d-median >= c.cfg.LatencyMinExcess.D() {
					out = c.eject(m.e, now, ReasonLatency, out)
				}
			}
		}
	}
	return out
}

// eject takes e out of service if MaxEjectionPercent allows it.
func (c *Core) eject(e *endpoint, now time.Time, why Reason, out []Change) []Change {
	total := len(c.eps)
	if c.ejected+1 >= total || (c.ejected+1)*100 > c.cfg.MaxEjectionPercent*total {
		return out
	}
	e.ejected = true
	c.ejected++
	e.count++
	d := min(c.cfg.BaseEjectionTime.D()*time.Duration(e.count), c.cfg.MaxEjectionTime.D())
	e.until = now.Add(d)
	return append(out, Change{Endpoint: e.id, Ejected: true, Reason: why, Until: e.until, Count: e.count})
}

// sorted returns the endpoints in id order, so results do not depend on
// map order.
func (c *Core) sorted() []*endpoint {
	eps := make([]*endpoint, 0, len(c.eps))
	for _, e := range c.eps {
		eps = append(eps, e)
	}
	slices.SortFunc(eps, func(a, b *endpoint) int { return cmp.Compare(a.id, b.id) })
	return eps
}

// Ejected reports whether id is ejected.
func (c *Core) Ejected(id string) bool {
	e := c.eps[id]
	return e != nil && e.ejected
}
