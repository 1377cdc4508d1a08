package breaker

import (
	"fmt"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/traffic/resilience/internal/window"
)

// State is a breaker state.
type State uint8

const (
	Closed   State = iota // requests pass; outcomes are counted
	Open                  // requests fail fast until the open time ends
	HalfOpen              // a bounded number of probes pass; the rest fail fast
)

func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case Open:
		return "open"
	case HalfOpen:
		return "half-open"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// Mode selects what trips a closed breaker.
type Mode string

const (
	// ModeConsecutive opens after ConsecutiveFailures failures in a row.
	ModeConsecutive Mode = "consecutive"
	// ModeErrorRate opens when, over the last Window, at least MinRequests
	// outcomes were counted and the failed fraction reached FailureRate.
	ModeErrorRate Mode = "error_rate"
)

// Config is a breaker policy. The zero value is valid and means the
// defaults on the fields.
type Config struct {
	// Mode is ModeConsecutive (default) or ModeErrorRate.
	Mode Mode `json:"mode,omitempty"`
	// ConsecutiveFailures trips a ModeConsecutive breaker. Default 5.
	ConsecutiveFailures int `json:"consecutive_failures,omitempty"`
	// FailureRate trips a ModeErrorRate breaker: the failed fraction of
	// the outcomes in Window, in (0, 1]. Default 0.5.
	FailureRate float64 `json:"failure_rate,omitempty"`
	// Window is the rolling window of ModeErrorRate, counted in 10
	// buckets. Default 10s.
	Window meridian.Duration `json:"window,omitempty"`
	// MinRequests is the fewest outcomes in Window for ModeErrorRate to
	// judge the rate at all. Default 20.
	MinRequests int `json:"min_requests,omitempty"`
	// OpenFor is how long the breaker stays open the first time. Default 5s.
	OpenFor meridian.Duration `json:"open_for,omitempty"`
	// OpenForGrowth multiplies the open time each time a half-open breaker
	// fails and opens again, until it closes. Default 2; 1 keeps it fixed.
	OpenForGrowth float64 `json:"open_for_growth,omitempty"`
	// MaxOpenFor caps the grown open time. Default 60s.
	MaxOpenFor meridian.Duration `json:"max_open_for,omitempty"`
	// HalfOpenProbes is how many probes a half-open breaker lets through
	// at once. Default 1.
	HalfOpenProbes int `json:"half_open_probes,omitempty"`
	// CloseAfter is how many successful probes close a half-open breaker;
	// any failed probe opens it again. Default 3.
	CloseAfter int `json:"close_after,omitempty"`
}

// Validate reports the first field out of range, by its JSON name.
func (c Config) Validate() error {
	switch {
	case c.Mode != "" && c.Mode != ModeConsecutive && c.Mode != ModeErrorRate:
		return meridian.FieldError("mode", "must be %q or %q", ModeConsecutive, ModeErrorRate)
	case c.ConsecutiveFailures < 0:
		return meridian.FieldError("consecutive_failures", "must not be negative")
	case c.FailureRate < 0 || c.FailureRate > 1:
		return meridian.FieldError("failure_rate", "must be in (0, 1]")
	case c.Window < 0:
		return meridian.FieldError("window", "must not be negative")
	case c.MinRequests < 0:
		return meridian.FieldError("min_requests", "must not be negative")
	case c.OpenFor < 0:
		return meridian.FieldError("open_for", "must not be negative")
	case c.OpenForGrowth != 0 && c.OpenForGrowth < 1:
		return meridian.FieldError("open_for_growth", "must be at least 1")
	case c.MaxOpenFor < 0:
		return meridian.FieldError("max_open_for", "must not be negative")
	case c.MaxOpenFor > 0 && c.MaxOpenFor < c.OpenFor:
		return meridian.FieldError("max_open_for", "must not be less than open_for")
	case c.HalfOpenProbes < 0:
		return meridian.FieldError("half_open_probes", "must not be negative")
	case c.CloseAfter < 0:
		return meridian.FieldError("close_after", "must not be negative")
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.Mode == "" {
		c.Mode = ModeConsecutive
	}
	if c.ConsecutiveFailures == 0 {
		c.ConsecutiveFailures = 5
	}
	if c.FailureRate == 0 {
		c.FailureRate = 0.5
	}
	if c.Window == 0 {
		c.Window = meridian.Duration(10 * time.Second)
	}
	if c.MinRequests == 0 {
		c.MinRequests = 20
	}
	if c.OpenFor == 0 {
		c.OpenFor = meridian.Duration(5 * time.Second)
	}
	if c.OpenForGrowth == 0 {
		c.OpenForGrowth = 2
	}
	if c.MaxOpenFor == 0 {
		c.MaxOpenFor = max(meridian.Duration(60*time.Second), c.OpenFor)
	}
	if c.HalfOpenProbes == 0 {
		c.HalfOpenProbes = 1
	}
	if c.CloseAfter == 0 {
		c.CloseAfter = 3
	}
	return c
}

// EventKind says what an Event reports.
type EventKind uint8

const (
	// EventAllow asks whether a request may pass.
	EventAllow EventKind = iota
	// EventResult reports the outcome of a request that was allowed.
	EventResult
	// EventTick only advances time: an open breaker whose time is up
	// becomes half-open without waiting for a request.
	EventTick
)

// Event is an input of Core.Step.
type Event struct {
	Kind EventKind
	Now  time.Time
	// Gen is, for EventResult, the Output.Gen the request was allowed
	// under. An outcome from an earlier generation (a request that
	// started before the last state change) is ignored.
	Gen uint64
	// Success is the outcome, for EventResult.
	Success bool
}

// Output is what a Step decided.
type Output struct {
	// Allowed answers EventAllow.
	Allowed bool
	// Gen is the current generation; for an allowed request, report its
	// result with this Gen.
	Gen uint64
	// Transition is set (Changed) when the step changed the state.
	Changed    bool
	Transition Transition
}

// Transition is a state change.
type Transition struct {
	From, To State
	At       time.Time
	// OpenFor is how long the breaker will stay open, when To is Open.
	OpenFor time.Duration
	// Reason is why: "consecutive failures", "failure rate", "probe failed",
	// "open time over", "probes succeeded".
	Reason string
}

// Core is the breaker's state machine: events in, decisions and
// transitions out. It reads no clock and does no I/O; it is not safe for
// concurrent use (Breaker serializes it).
type Core struct {
	cfg   Config
	state State
	gen   uint64

	openUntil time.Time
	reopens   int // openings since the breaker last closed, for growth

	consecutive int           // failures in a row (closed)
	rate        window.Window // A: outcomes, B: failures (closed, ModeErrorRate)

	probes       int // probes in flight (half-open)
	probeSuccess int // successful probes (half-open)
}

// NewCore returns a closed breaker. now anchors the rolling window; it
// must not be after the first event's time.
func NewCore(cfg Config, now time.Time) (*Core, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Core{cfg: cfg.withDefaults()}
	c.rate.Init(c.cfg.Window.D(), 10, now)
	return c, nil
}

// needsTime reports whether an event's outcome can depend on its time.
// It cannot for an allow on a closed breaker, nor for a success on a
// closed ModeConsecutive breaker, which is the whole fast path of a
// healthy upstream; Breaker skips reading the clock for those (reading it
// costs more than the rest of the step).
func (c *Core) needsTime(k EventKind, success bool) bool {
	if c.state != Closed {
		return true
	}
	switch k {
	case EventAllow:
		return false
	case EventResult:
		return c.cfg.Mode == ModeErrorRate || !success
	}
	return true
}

// State returns the current state as of the last event.
func (c *Core) State() State { return c.state }

// Step applies one event.
func (c *Core) Step(ev Event) Output {
	var out Output
	switch ev.Kind {
	case EventAllow:
		out.Allowed = c.allow(ev.Now, &out)
	case EventResult:
		if ev.Gen == c.gen {
			c.result(ev.Now, ev.Success, &out)
		}
	case EventTick:
		if c.state == Open && !ev.Now.Before(c.openUntil) {
			c.to(HalfOpen, ev.Now, "open time over", &out)
		}
	}
	out.Gen = c.gen
	return out
}

func (c *Core) allow(now time.Time, out *Output) bool {
	switch c.state {
	case Closed:
		return true
	case Open:
		if now.Before(c.openUntil) {
			return false
		}
		c.to(HalfOpen, now, "open time over", out)
		fallthrough
	default: // HalfOpen
		if c.probes >= c.cfg.HalfOpenProbes {
			return false
		}
		c.probes++
		return true
	}
}

func (c *Core) result(now time.Time, ok bool, out *Output) {
	switch c.state {
	case Closed:
		if ok {
			c.consecutive = 0
		} else {
			c.consecutive++
		}
		if c.cfg.Mode == ModeConsecutive {
			if c.consecutive >= c.cfg.ConsecutiveFailures {
				c.to(Open, now, "consecutive failures", out)
			}
			return
		}
		var failed int64
		if !ok {
			failed = 1
		}
		c.rate.Add(now, 1, failed)
		if ok {
			return // a success cannot raise the failure rate
		}
		s := c.rate.Sum(now)
		if s.A >= int64(c.cfg.MinRequests) && float64(s.B) >= c.cfg.FailureRate*float64(s.A) {
			c.to(Open, now, "failure rate", out)
		}
	case HalfOpen:
		c.probes--
		if !ok {
			c.to(Open, now, "probe failed", out)
			return
		}
		c.probeSuccess++
		if c.probeSuccess >= c.cfg.CloseAfter {
			c.to(Closed, now, "probes succeeded", out)
		}
	}
	// Open: the outcome of a request let through before the breaker
	// opened in this same generation cannot happen (opening starts a new
	// generation), so there is nothing to do.
}

// openFor is the open time for the next opening: OpenFor grown by
// OpenForGrowth for every reopening since the last close, capped.
func (c *Core) openFor() time.Duration {
	d := float64(c.cfg.OpenFor)
	for i := 0; i < c.reopens && d < float64(c.cfg.MaxOpenFor); i++ {
		d *= c.cfg.OpenForGrowth
	}
	return min(time.Duration(d), c.cfg.MaxOpenFor.D())
}

func (c *Core) to(s State, now time.Time, reason string, out *Output) {
	t := Transition{From: c.state, To: s, At: now, Reason: reason}
	c.state = s
	c.gen++
	c.probes, c.probeSuccess = 0, 0
	switch s {
	case Open:
		t.OpenFor = c.openFor()
		c.openUntil = now.Add(t.OpenFor)
		c.reopens++
	case Closed:
		c.reopens = 0
		c.consecutive = 0
		c.rate.Reset()
	}
	out.Changed = true
	out.Transition = t
}
