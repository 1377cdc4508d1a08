// Package bulkhead limits the requests in flight to one upstream, so that a
// slow upstream holds at most its share of the client's goroutines,
// connections and memory instead of all of them.
//
// Up to MaxConcurrent requests run at once; up to MaxQueue more wait, first
// come first served, for at most QueueTimeout (and never past their
// context). A request that finds the queue full fails at once with ErrFull;
// one that waits too long fails with ErrQueueTimeout. Both are
// meridian.CodeUnavailable errors, which the HTTP edge (internal/problem)
// answers with 503 and Retry-After, and both wrap resilience.ErrRejected,
// so the retry layer does not retry them.
package bulkhead

import (
	"container/list"
	"context"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/traffic/resilience"
)

var (
	// ErrFull is returned when every slot is taken and the queue is full.
	ErrFull = &meridian.Error{Code: meridian.CodeUnavailable, Message: "bulkhead full", Err: resilience.ErrRejected}
	// ErrQueueTimeout is returned when a queued request waited QueueTimeout.
	ErrQueueTimeout = &meridian.Error{Code: meridian.CodeUnavailable, Message: "bulkhead queue timeout", Err: resilience.ErrRejected}
)

// Config is a bulkhead policy. The zero value means 100 concurrent
// requests and no queue.
type Config struct {
	// MaxConcurrent is the most requests in flight at once. Default 100.
	MaxConcurrent int `json:"max_concurrent,omitempty"`
	// MaxQueue is the most requests waiting for a slot. 0: none wait, a
	// request beyond MaxConcurrent fails at once.
	MaxQueue int `json:"max_queue,omitempty"`
	// QueueTimeout is the longest a request waits in the queue. Default
	// 100ms.
	QueueTimeout meridian.Duration `json:"queue_timeout,omitempty"`
}

// Validate reports the first field out of range.
func (c Config) Validate() error {
	switch {
	case c.MaxConcurrent < 0:
		return meridian.FieldError("max_concurrent", "must not be negative")
	case c.MaxQueue < 0:
		return meridian.FieldError("max_queue", "must not be negative")
	case c.QueueTimeout < 0:
		return meridian.FieldError("queue_timeout", "must not be negative")
	}
	return nil
}

// Options are a Bulkhead's collaborators. The zero value works.
type Options struct {
	// OnReject is called with ErrFull or ErrQueueTimeout for every request
	// refused.
	OnReject func(err error)
}

// Bulkhead is a concurrency limit with a bounded FIFO queue. Safe for
// concurrent use.
type Bulkhead struct {
	mu       sync.Mutex
	inflight int
	queue    list.List // of *waiter, oldest first
	cfg      Config
	opts     Options
	release  func()
}

type waiter struct {
	ready   chan struct{} // closed when granted a slot
	granted bool          // under mu
}

// New returns an empty bulkhead.
func New(cfg Config, opts Options) (*Bulkhead, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxConcurrent == 0 {
		cfg.MaxConcurrent = 100
	}
	if cfg.QueueTimeout == 0 {
		cfg.QueueTimeout = meridian.Duration(100 * time.Millisecond)
	}
	b := &Bulkhead{cfg: cfg, opts: opts}
	b.release = b.releaseSlot
	return b, nil
}

// Acquire takes a slot, waiting in the queue if need be. On success the
// caller must call release exactly once when the request is over. It
// fails with ErrFull, ErrQueueTimeout or ctx's error. The path without
// waiting allocates nothing.
func (b *Bulkhead) Acquire(ctx context.Context) (release func(), err error) {
	b.mu.Lock()
	if b.inflight < b.cfg.MaxConcurrent {
		b.inflight++
		b.mu.Unlock()
		return b.release, nil
	}
	if b.queue.Len() >= b.cfg.MaxQueue {
		b.mu.Unlock()
		return nil, b.reject(ErrFull)
	}
	w := &waiter{ready: make(chan struct{})}
	e := b.queue.PushBack(w)
	b.mu.Unlock()

	t := time.NewTimer(b.cfg.QueueTimeout.D())
	defer t.Stop()
	select {
	case <-w.ready:
		return b.release, nil
	case <-t.C:
		err = ErrQueueTimeout
	case <-ctx.Done():
		err = ctx.Err()
	}
	b.mu.Lock()
	if w.granted { // granted while giving up: the slot is ours
		b.mu.Unlock()
		return b.release, nil
	}
	b.queue.Remove(e)
	b.mu.Unlock()
	if err == ErrQueueTimeout {
		return nil, b.reject(err)
	}
	return nil, err
}

func (b *Bulkhead) reject(err error) error {
	if b.opts.OnReject != nil {
		b.opts.OnReject(err)
	}
	return err
}

// releaseSlot hands the slot to the oldest waiter, or frees it.
func (b *Bulkhead) releaseSlot() {
	b.mu.Lock()
	if e := b.queue.Front(); e != nil {
		w := b.queue.Remove(e).(*waiter)
		w.granted = true
		close(w.ready)
	} else {
		b.inflight--
	}
	b.mu.Unlock()
}

// InFlight and Queued report the current use.
func (b *Bulkhead) InFlight() int { b.mu.Lock(); defer b.mu.Unlock(); return b.inflight }
func (b *Bulkhead) Queued() int   { b.mu.Lock(); defer b.mu.Unlock(); return b.queue.Len() }

// RoundTripper holds a slot of b for each round trip: from before next is
// called until the response body is closed (or next fails). Under a retry
// layer the release rides on the resilience.Attempt and costs no
// allocation; without one, the body is wrapped.
func RoundTripper(b *Bulkhead) func(next http.RoundTripper) http.RoundTripper {
	return func(next http.RoundTripper) http.RoundTripper {
		return &roundTripper{b: b, next: next}
	}
}

type roundTripper struct {
	b    *Bulkhead
	next http.RoundTripper
}

func (rt *roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	release, err := rt.b.Acquire(req.Context())
	if err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	resp, err := rt.next.RoundTrip(req)
	if err != nil {
		release()
		return nil, err
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		release() // the body is the upgraded connection; leave it as is
	} else if a := resilience.AttemptFrom(req.Context()); a != nil {
		a.Defer(release)
	} else {
		resp.Body = &releaseBody{ReadCloser: resp.Body, release: release}
	}
	return resp, nil
}

type releaseBody struct {
	io.ReadCloser
	once    sync.Once
	release func()
}

func (b *releaseBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.release)
	return err
}
