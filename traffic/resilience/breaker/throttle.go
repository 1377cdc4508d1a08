package breaker

import (
	"math/rand/v2"
	"sync"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/traffic/resilience"
	"github.com/meridian-platform/meridian/traffic/resilience/internal/window"
)

// ErrThrottled is returned by Throttle.Allow for a request it drops. It is
// a CodeUnavailable error wrapping resilience.ErrRejected.
var ErrThrottled = &meridian.Error{Code: meridian.CodeUnavailable, Message: "throttled: the upstream is rejecting most requests", Err: resilience.ErrRejected}

// ThrottleConfig is the client-side adaptive throttle of the Google SRE
// book ("Handling Overload"). The zero value means the defaults.
type ThrottleConfig struct {
	// K is the multiplier: the client lets through up to K times as many
	// requests as the upstream accepts. Lower is more aggressive. Default 2.
	K float64 `json:"k,omitempty"`
	// Window is the rolling window over which requests and accepts are
	// counted, in 10 buckets. Default 10s (the book uses 2 minutes; a
	// shorter window recovers sooner after an outage).
	Window meridian.Duration `json:"window,omitempty"`
}

// Validate reports the first field out of range.
func (c ThrottleConfig) Validate() error {
	switch {
	case c.K != 0 && c.K < 1:
		return meridian.FieldError("k", "must be at least 1")
	case c.Window < 0:
		return meridian.FieldError("window", "must not be negative")
	}
	return nil
}

// ThrottleOptions are a Throttle's collaborators. The zero value works.
type ThrottleOptions struct {
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Rand returns a uniform number in [0, 1). Default math/rand/v2.Float64.
	Rand func() float64
	// OnReject is called for every request the throttle drops.
	OnReject func()
}

// Throttle drops requests locally with probability
//
//	max(0, (requests − K·accepts) / (requests + 1))
//
// where requests counts every request the application attempted in the
// window (the dropped ones included) and accepts those the upstream
// accepted. While the upstream accepts everything the probability is 0;
// when it rejects most requests, the client sends about K times what it
// accepts, so the upstream still sees enough traffic to notice recovery.
// Safe for concurrent use.
type Throttle struct {
	mu   sync.Mutex
	k    float64
	win  window.Window // A: requests, B: accepts
	now  func() time.Time
	rand func() float64
	opts ThrottleOptions
	done func(accepted bool)
}

// NewThrottle returns a throttle that drops nothing until it has seen
// rejections.
func NewThrottle(cfg ThrottleConfig, opts ThrottleOptions) (*Throttle, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.K == 0 {
		cfg.K = 2
	}
	if cfg.Window == 0 {
		cfg.Window = meridian.Duration(10 * time.Second)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Rand == nil {
		opts.Rand = rand.Float64
	}
	t := &Throttle{k: cfg.K, now: opts.Now, rand: opts.Rand, opts: opts}
	t.win.Init(cfg.Window.D(), 10, opts.Now())
	t.done = t.record
	return t, nil
}

// Allow counts a request and decides whether to send it. When sent, the
// caller reports with done whether the upstream accepted it (answered
// rather than rejecting it for overload or failing). When dropped, err is
// ErrThrottled.
func (t *Throttle) Allow() (done func(accepted bool), err error) {
	t.mu.Lock()
	now := t.now()
	s := t.win.Sum(now)
	p := (float64(s.A) - t.k*float64(s.B)) / float64(s.A+1)
	t.win.Add(now, 1, 0)
	t.mu.Unlock()
	if p > 0 && t.rand() < p {
		if t.opts.OnReject != nil {
			t.opts.OnReject()
		}
		return nil, ErrThrottled
	}
	return t.done, nil
}

func (t *Throttle) record(accepted bool) {
	if !accepted {
		return
	}
	t.mu.Lock()
	t.win.Add(t.now(), 0, 1)
	t.mu.Unlock()
}

// RejectProbability is the probability with which the next request would
// be dropped.
func (t *Throttle) RejectProbability() float64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.win.Sum(t.now())
	return max(0, (float64(s.A)-t.k*float64(s.B))/float64(s.A+1))
}
