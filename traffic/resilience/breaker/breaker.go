package breaker

import (
	"sync"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/traffic/resilience"
)

// ErrOpen is returned by Allow while the breaker is open, or half-open
// with all its probes in flight. It is a CodeUnavailable error, so the HTTP
// edge answers 503 with Retry-After, and it wraps resilience.ErrRejected.
var ErrOpen = &meridian.Error{Code: meridian.CodeUnavailable, Message: "circuit breaker is open", Err: resilience.ErrRejected}

// Options are a Breaker's collaborators. The zero value works.
type Options struct {
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// OnStateChange is called on every transition, in order, with the
	// breaker's lock held: it must be quick and must not call the breaker.
	// Wire it to metrics and a log line.
	OnStateChange func(Transition)
	// OnReject is called, without the lock, for every request Allow
	// refuses.
	OnReject func()
}

// gens is how many generations of done functions are kept. A request
// whose done runs more than gens-1 state changes after it was allowed may
// be counted in the wrong generation; with state changes seconds apart
// that needs a request outliving several open periods.
const gens = 8

// Breaker is a circuit breaker for one upstream, safe for concurrent use:
// Core behind a mutex, with a clock.
type Breaker struct {
	mu    sync.Mutex
	core  *Core
	now   func() time.Time
	opts  Options
	dones [gens]func(success bool)
}

// New returns a closed breaker.
func New(cfg Config, opts Options) (*Breaker, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	core, err := NewCore(cfg, opts.Now())
	if err != nil {
		return nil, err
	}
	b := &Breaker{core: core, now: opts.Now, opts: opts}
	// The done functions are made once, one per generation slot, so that
	// Allow allocates nothing.
	for i := range b.dones {
		b.dones[i] = func(success bool) { b.done(uint64(i), success) }
	}
	return b, nil
}

// Allow asks to send one request. On success the caller must call done
// exactly once with the request's outcome; a request that the caller
// abandoned for its own reasons (its context was canceled) should be
// reported as a success, since the upstream did not fail it. When the
// breaker refuses, err is ErrOpen and done is nil.
func (b *Breaker) Allow() (done func(success bool), err error) {
	b.mu.Lock()
	var now time.Time
	if b.core.needsTime(EventAllow, true) {
		now = b.now()
	}
	out := b.core.Step(Event{Kind: EventAllow, Now: now})
	b.changed(out)
	b.mu.Unlock()
	if !out.Allowed {
		if b.opts.OnReject != nil {
			b.opts.OnReject()
		}
		return nil, ErrOpen
	}
	return b.dones[out.Gen%gens], nil
}

func (b *Breaker) done(slot uint64, success bool) {
	b.mu.Lock()
	gen := b.core.gen
	if gen%gens == slot {
		var now time.Time
		if b.core.needsTime(EventResult, success) {
			now = b.now()
		}
		out := b.core.Step(Event{Kind: EventResult, Now: now, Gen: gen, Success: success})
		b.changed(out)
	}
	b.mu.Unlock()
}

func (b *Breaker) changed(out Output) {
	if out.Changed && b.opts.OnStateChange != nil {
		b.opts.OnStateChange(out.Transition)
	}
}

// State returns the current state, first moving an open breaker whose
// time is up to half-open.
func (b *Breaker) State() State {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.changed(b.core.Step(Event{Kind: EventTick, Now: b.now()}))
	return b.core.State()
}

// RetryAfter is how long until an open breaker lets a probe through, 0
// when it is not open.
func (b *Breaker) RetryAfter() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.core.state != Open {
		return 0
	}
	return max(b.core.openUntil.Sub(b.now()), 0)
}
