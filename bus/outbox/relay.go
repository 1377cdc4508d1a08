package outbox

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/bus"
	"github.com/meridian-platform/meridian/internal/backoff"
)

// Publisher is what the relay publishes through. Publish returns nil only
// once the broker has stored the event; an error means it may or may not
// have, and the relay publishes the event again. A bus engine's Publish
// fits as it is or through PublisherFunc.
//
// The relay publishes each event at least once. Re-sends are harmless when
// the broker deduplicates by event id (JetStream's Nats-Msg-Id within its
// duplicate window) and, beyond that window, when consumers use package
// inbox.
type Publisher interface {
	Publish(ctx context.Context, topic string, e bus.Event) error
}

// PublisherFunc adapts a function, such as a bus engine's Publish that also
// returns a receipt, to Publisher.
type PublisherFunc func(ctx context.Context, topic string, e bus.Event) error

// Publish calls f.
func (f PublisherFunc) Publish(ctx context.Context, topic string, e bus.Event) error {
	return f(ctx, topic, e)
}

var _ Publisher = PublisherFunc(nil)

// BusPublisher is the synchronous publish of a bus engine (bus.Publisher's
// Publish, which every bus.Backend has).
type BusPublisher interface {
	Publish(ctx context.Context, topic string, e bus.Event, opts ...bus.PublishOption) (bus.Receipt, error)
}

// FromBus adapts a bus engine to Publisher. The engine's deduplication by
// source and id within the topic's DedupWindow drops the relay's re-sends.
func FromBus(p BusPublisher) Publisher {
	return PublisherFunc(func(ctx context.Context, topic string, e bus.Event) error {
		_, err := p.Publish(ctx, topic, e)
		return err
	})
}

// store is what the relay needs from a dialect.
type store interface {
	migrate(ctx context.Context) error
	pending(ctx context.Context) (int64, error)
	// owner returns the handle through which one relay takes ownership of
	// the outbox and relays batches; leaseTTL is for dialects that lease.
	owner(leaseTTL time.Duration) owner
	// cleanup deletes up to limit rows sent more than retention ago.
	cleanup(ctx context.Context, retention time.Duration, limit int) (int64, error)
	// listen blocks until ctx ends or the notification channel fails,
	// calling wake after each notification of new rows. errNoNotify means
	// the dialect has none, and the relay only polls.
	listen(ctx context.Context, wake func()) error
}

// owner is one relay's hold on an outbox.
type owner interface {
	// batch is one relay step: it takes (or keeps) ownership of the outbox
	// for the step, returning errNotOwner when another relay has it; reads
	// up to limit pending rows in sequence order; hands them to publish;
	// and marks sent the first n rows that publish reports as published.
	// Marking runs under mark, a context that outlives ctx briefly, so a
	// relay stopped right after a publish still records it. It returns n
	// and publish's error (as it is) or the database's.
	batch(ctx, mark context.Context, limit int, publish func([]row) (int, error)) (int, error)
	// release gives up ownership, so that another relay need not wait for
	// it to lapse.
	release(ctx context.Context) error
}

// row is a pending row as the relay reads it.
type row struct {
	seq   int64
	topic string
	event []byte
}

var (
	errNotOwner = errors.New("another relay owns the outbox")
	errNoNotify = errors.New("no notifications")
)

// Defaults for RelayConfig's zero fields.
const (
	DefaultBatchSize       = 256
	DefaultPollInterval    = 50 * time.Millisecond
	DefaultMaxPollInterval = time.Second
	DefaultRetryBackoff    = 100 * time.Millisecond
	DefaultMaxRetryBackoff = 10 * time.Second
	DefaultPublishTimeout  = 10 * time.Second
	DefaultRetention       = 24 * time.Hour
	DefaultCleanupInterval = time.Minute
	DefaultLeaseTTL        = 10 * time.Second
	// markTimeout bounds marking a batch sent after the relay was told to
	// stop.
	markTimeout = 10 * time.Second
	// cleanupChunk is how many rows one cleanup statement deletes, to keep
	// each transaction short.
	cleanupChunk = 10_000
)

// RelayConfig configures a Relay. Zero fields take the defaults named on
// them.
type RelayConfig struct {
	// BatchSize is how many events one step reads, publishes and marks sent
	// in one transaction. Default 256; at most 10,000.
	BatchSize int `json:"batch_size,omitempty"`
	// PollInterval is the first wait after a step that found nothing to
	// publish; each further empty step doubles it up to MaxPollInterval,
	// and any published event (or a PostgreSQL notification) resets it.
	// Default 50ms.
	PollInterval meridian.Duration `json:"poll_interval,omitempty"`
	// MaxPollInterval caps the idle wait: the longest an event waits for
	// the relay when no notification wakes it (SQLite has none; PostgreSQL
	// notifies on commit). Default 1s; at least PollInterval.
	MaxPollInterval meridian.Duration `json:"max_poll_interval,omitempty"`
	// RetryBackoff is the first wait after a failed step (the publisher or
	// the database failed); it grows exponentially with full jitter up to
	// MaxRetryBackoff. Default 100ms.
	RetryBackoff meridian.Duration `json:"retry_backoff,omitempty"`
	// MaxRetryBackoff caps the wait after failures. Default 10s.
	MaxRetryBackoff meridian.Duration `json:"max_retry_backoff,omitempty"`
	// PublishTimeout bounds one Publish call. Default 10s.
	PublishTimeout meridian.Duration `json:"publish_timeout,omitempty"`
	// Retention is how long sent rows are kept before cleanup deletes them.
	// Default 24h.
	Retention meridian.Duration `json:"retention,omitempty"`
	// CleanupInterval is how often the relay deletes rows older than
	// Retention. Default 1m.
	CleanupInterval meridian.Duration `json:"cleanup_interval,omitempty"`
	// LeaseTTL is, on SQLite, how long a relay's ownership of the outbox
	// lasts without renewal; another relay takes over after it lapses (a
	// relay that stops cleanly hands it over at once). It is renewed when
	// half of it is left. Default 10s; at least 4×MaxPollInterval, so an
	// idle owner renews in time. PostgreSQL uses an advisory lock instead
	// and ignores it.
	LeaseTTL meridian.Duration `json:"lease_ttl,omitempty"`

	// Hooks are optional callbacks for metrics and logs.
	Hooks Hooks `json:"-"`
}

// Hooks are called on the relay's goroutine and must not block. Nil fields
// are skipped.
type Hooks struct {
	// Published is called after a step published n events and marked them
	// sent, with the time the step took.
	Published func(n int, took time.Duration)
	// Error is called with each failed step before the relay backs off,
	// and with each failure of the PostgreSQL notification listener.
	Error func(err error)
	// Cleaned is called after a cleanup deleted n sent rows.
	Cleaned func(n int64)
}

// Normalize fills defaults into c and checks it; errors name the field.
func (c *RelayConfig) Normalize() error {
	def := func(d *meridian.Duration, v time.Duration) {
		if *d == 0 {
			*d = meridian.Duration(v)
		}
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	def(&c.PollInterval, DefaultPollInterval)
	def(&c.MaxPollInterval, DefaultMaxPollInterval)
	def(&c.RetryBackoff, DefaultRetryBackoff)
	def(&c.MaxRetryBackoff, DefaultMaxRetryBackoff)
	def(&c.PublishTimeout, DefaultPublishTimeout)
	def(&c.Retention, DefaultRetention)
	def(&c.CleanupInterval, DefaultCleanupInterval)
	def(&c.LeaseTTL, DefaultLeaseTTL)
	if c.BatchSize < 1 || c.BatchSize > 10_000 {
		return meridian.FieldError("batch_size", "%d is out of range [1, 10000]", c.BatchSize)
	}
	for _, f := range []struct {
		name string
		d    meridian.Duration
	}{{"poll_interval", c.PollInterval}, {"max_poll_interval", c.MaxPollInterval}, {"retry_backoff", c.RetryBackoff},
		{"max_retry_backoff", c.MaxRetryBackoff}, {"publish_timeout", c.PublishTimeout}, {"retention", c.Retention},
		{"cleanup_interval", c.CleanupInterval}, {"lease_ttl", c.LeaseTTL}} {
		if f.d < 0 {
			return meridian.FieldError(f.name, "must not be negative")
		}
	}
	if c.MaxPollInterval < c.PollInterval {
		return meridian.FieldError("max_poll_interval", "%v is less than poll_interval %v", c.MaxPollInterval, c.PollInterval)
	}
	if c.MaxRetryBackoff < c.RetryBackoff {
		return meridian.FieldError("max_retry_backoff", "%v is less than retry_backoff %v", c.MaxRetryBackoff, c.RetryBackoff)
	}
	if c.LeaseTTL < 4*c.MaxPollInterval {
		return meridian.FieldError("lease_ttl", "%v is less than 4×max_poll_interval (%v), so an idle owner could lose it", c.LeaseTTL, 4*c.MaxPollInterval)
	}
	return nil
}

// Relay publishes an outbox's events in order and marks them sent. Several
// relays may run on one outbox (one per service instance): one at a time
// owns it, the others stand by. See the package documentation for the
// guarantees.
type Relay struct {
	st      store
	own     owner
	pub     Publisher
	cfg     RelayConfig
	wake    chan struct{}
	running atomic.Bool
}

// NewRelay returns a relay of o's events through pub. It starts nothing:
// call Run.
func NewRelay[Tx any](o *Outbox[Tx], pub Publisher, cfg RelayConfig) (*Relay, error) {
	if o == nil {
		return nil, meridian.FieldError("outbox", "is required")
	}
	if pub == nil {
		return nil, meridian.FieldError("publisher", "is required")
	}
	if err := cfg.Normalize(); err != nil {
		return nil, err
	}
	return &Relay{st: o.eng, own: o.eng.owner(cfg.LeaseTTL.D()), pub: pub, cfg: cfg, wake: make(chan struct{}, 1)}, nil
}

// Wake asks the relay to look for pending events now rather than at its
// next poll: call it after committing a transaction that wrote events, on
// a database without notifications (SQLite). It never blocks.
func (r *Relay) Wake() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run relays until ctx ends, then marks sent what it had published, hands
// ownership over and returns nil once its goroutines have stopped. Failures
// of the publisher or the database are retried with backoff (and reported
// to Hooks.Error), never returned. Run may be called once.
func (r *Relay) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("outbox: Relay.Run called twice")
	}
	var wg sync.WaitGroup
	lctx, stop := context.WithCancel(ctx)
	defer wg.Wait()
	defer stop()
	wg.Go(func() { r.listen(lctx) })
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), markTimeout)
		defer cancel()
		if err := r.own.release(rctx); err != nil {
			r.report(fmt.Errorf("outbox: release ownership: %w", err))
		}
	}()

	retry := backoff.Backoff{Base: r.cfg.RetryBackoff.D(), Max: r.cfg.MaxRetryBackoff.D()}
	idle := r.cfg.PollInterval.D()
	nextCleanup := time.Now()
	for ctx.Err() == nil {
		if now := time.Now(); !now.Before(nextCleanup) {
			r.cleanup(ctx)
			nextCleanup = now.Add(r.cfg.CleanupInterval.D())
		}
		start := time.Now()
		n, err := r.step(ctx)
		if n > 0 && r.cfg.Hooks.Published != nil {
			r.cfg.Hooks.Published(n, time.Since(start))
		}
		var wait time.Duration
		switch {
		case errors.Is(err, errNotOwner):
			// Stand by at the idle pace.
			wait = idle
			idle = min(2*idle, r.cfg.MaxPollInterval.D())
		case err != nil:
			if ctx.Err() != nil {
				return nil
			}
			r.report(err)
			wait = retry.Next()
		case n == r.cfg.BatchSize:
			retry.Reset()
			idle = r.cfg.PollInterval.D()
			continue // more may be waiting
		case n > 0:
			retry.Reset()
			idle = r.cfg.PollInterval.D()
			wait = idle
		default:
			retry.Reset()
			wait = idle
			idle = min(2*idle, r.cfg.MaxPollInterval.D())
		}
		if r.sleep(ctx, wait) {
			idle = r.cfg.PollInterval.D()
		}
	}
	return nil
}

// sleep waits for d, a wake-up or the end of ctx; it reports a wake-up.
func (r *Relay) sleep(ctx context.Context, d time.Duration) (woken bool) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	case <-r.wake:
		return true
	}
	return false
}

// step runs one batch. Publishing uses ctx; marking what was published
// survives ctx's end for up to markTimeout, so a relay told to stop does
// not leave behind events it published as pending.
func (r *Relay) step(ctx context.Context) (int, error) {
	mark, cancel := context.WithTimeout(context.WithoutCancel(ctx), markTimeout)
	defer cancel()
	return r.own.batch(ctx, mark, r.cfg.BatchSize, func(rows []row) (int, error) {
		for i, rw := range rows {
			var e bus.Event
			if err := e.UnmarshalJSON(rw.event); err != nil {
				return i, fmt.Errorf("outbox: row %d: decode event: %w", rw.seq, err)
			}
			pctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout.D())
			err := r.pub.Publish(pctx, rw.topic, e)
			cancel()
			if err != nil {
				return i, fmt.Errorf("outbox: publish row %d (%s) to %q: %w", rw.seq, e, rw.topic, err)
			}
		}
		return len(rows), nil
	})
}

func (r *Relay) cleanup(ctx context.Context) {
	var total int64
	for ctx.Err() == nil {
		n, err := r.st.cleanup(ctx, r.cfg.Retention.D(), cleanupChunk)
		total += n
		if err != nil {
			if ctx.Err() == nil {
				r.report(fmt.Errorf("outbox: cleanup: %w", err))
			}
			break
		}
		if n < cleanupChunk {
			break
		}
	}
	if total > 0 && r.cfg.Hooks.Cleaned != nil {
		r.cfg.Hooks.Cleaned(total)
	}
}

// listen keeps the dialect's notification listener running until ctx
// ends, restarting it with backoff when it fails; each notification wakes
// the relay.
func (r *Relay) listen(ctx context.Context) {
	b := backoff.Backoff{Base: r.cfg.RetryBackoff.D(), Max: r.cfg.MaxRetryBackoff.D()}
	for ctx.Err() == nil {
		err := r.st.listen(ctx, func() { b.Reset(); r.Wake() })
		if errors.Is(err, errNoNotify) || ctx.Err() != nil {
			return
		}
		r.report(fmt.Errorf("outbox: notification listener: %w", err))
		backoff.Sleep(ctx, b.Next())
	}
}

func (r *Relay) report(err error) {
	if r.cfg.Hooks.Error != nil {
		r.cfg.Hooks.Error(err)
	}
}
