package retry

import (
	"sync"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/traffic/resilience/internal/window"
)

// BudgetConfig bounds the retries sent to one upstream, as Finagle's and
// Linkerd's retry budgets do (and with their defaults). Over the last
// Window, a retry is allowed while
//
//	retries + 1 ≤ Ratio × requests + MinPerSecond × Window/1s
//
// where requests counts original requests (first tries) and retries the
// retries already allowed. Ratio caps the extra load retries add (20% by
// default) however badly the upstream fails, so a failing upstream cannot
// set off a retry storm; the MinPerSecond floor lets a client with little
// traffic still retry (10/s by default, i.e. 100 retries in a 10s window).
// The zero value means the defaults.
type BudgetConfig struct {
	// Ratio is the retries allowed per original request. Default 0.2;
	// in [0, 1].
	Ratio float64 `json:"ratio,omitempty"`
	// MinPerSecond is the floor of retries per second allowed whatever
	// the traffic. Default 10; a negative value means no floor.
	MinPerSecond float64 `json:"min_per_second,omitempty"`
	// Window is the sliding window, counted in 10 buckets. Default 10s.
	Window meridian.Duration `json:"window,omitempty"`
}

// Validate reports the first field out of range.
func (c BudgetConfig) Validate() error {
	switch {
	case c.Ratio < 0 || c.Ratio > 1:
		return meridian.FieldError("ratio", "must be in [0, 1]")
	case c.Window < 0:
		return meridian.FieldError("window", "must not be negative")
	}
	return nil
}

// BudgetOptions are a Budget's collaborators. The zero value works.
type BudgetOptions struct {
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// OnRetry is called for every retry the budget is asked for, with its
	// answer: wire it to a counter of retries allowed and denied.
	OnRetry func(allowed bool)
}

// Budget is the retry budget of one upstream, shared by every request to
// it. Safe for concurrent use.
type Budget struct {
	mu     sync.Mutex
	win    window.Window // A: requests, B: retries
	ratio  float64
	floor  float64
	now    func() time.Time
	onTry  func(bool)
	counts struct{ requests, allowed, denied int64 }
}

// NewBudget returns an empty budget: until requests are counted only the
// floor allows retries.
func NewBudget(cfg BudgetConfig, opts BudgetOptions) (*Budget, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Ratio == 0 {
		cfg.Ratio = 0.2
	}
	if cfg.MinPerSecond == 0 {
		cfg.MinPerSecond = 10
	}
	if cfg.Window == 0 {
		cfg.Window = meridian.Duration(10 * time.Second)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	b := &Budget{ratio: cfg.Ratio, now: opts.Now, onTry: opts.OnRetry}
	b.floor = max(cfg.MinPerSecond, 0) * cfg.Window.D().Seconds()
	b.win.Init(cfg.Window.D(), 10, opts.Now())
	return b, nil
}

// Request counts an original request.
func (b *Budget) Request() {
	b.mu.Lock()
	b.win.Add(b.now(), 1, 0)
	b.counts.requests++
	b.mu.Unlock()
}

// TryRetry asks for one retry and counts it when allowed.
func (b *Budget) TryRetry() bool {
	b.mu.Lock()
	now := b.now()
	s := b.win.Sum(now)
	ok := float64(s.B+1) <= b.ratio*float64(s.A)+b.floor
	if ok {
		b.win.Add(now, 0, 1)
		b.counts.allowed++
	} else {
		b.counts.denied++
	}
	b.mu.Unlock()
	if b.onTry != nil {
		b.onTry(ok)
	}
	return ok
}

// BudgetStats are a Budget's totals since it was made.
type BudgetStats struct {
	Requests int64 // original requests counted
	Allowed  int64 // retries allowed
	Denied   int64 // retries denied
}

// Stats returns the totals since the budget was made.
func (b *Budget) Stats() BudgetStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return BudgetStats{Requests: b.counts.requests, Allowed: b.counts.allowed, Denied: b.counts.denied}
}
