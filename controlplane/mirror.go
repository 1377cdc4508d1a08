package controlplane

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/meridian-platform/meridian/controlplane/store"
	"github.com/meridian-platform/meridian/internal/backoff"
)

// mirror keeps a local copy of a bucket by watching it, so that reads are
// served from memory. It resumes after the last revision it applied when the
// watch breaks, so no change is missed or applied twice.
//
// Reads that must see every write made before they started, on any replica,
// call sync: it asks the store for its latest revision and waits until the
// mirror has applied it (the read-index technique).
type mirror struct {
	b      store.Bucket
	name   string
	apply  func(e store.Entry) // called from the run goroutine only, in revision order
	log    *slog.Logger
	mu     sync.Mutex
	rev    uint64        // last revision applied
	synced bool          // the initial snapshot has been applied
	moved  chan struct{} // closed and replaced whenever rev or synced changes
}

func newMirror(b store.Bucket, name string, log *slog.Logger, apply func(store.Entry)) *mirror {
	return &mirror{b: b, name: name, apply: apply, log: log, moved: make(chan struct{})}
}

// run watches until ctx ends.
func (m *mirror) run(ctx context.Context) error {
	bo := backoff.Backoff{Base: 50 * time.Millisecond, Max: 5 * time.Second}
	for ctx.Err() == nil {
		m.mu.Lock()
		after := m.rev
		m.mu.Unlock()
		ch, err := m.b.Watch(ctx, "", after)
		if err == nil {
			for e := range ch {
				m.step(e)
				bo.Reset()
			}
		}
		if ctx.Err() != nil {
			break
		}
		m.log.Warn("watch broke; resuming", "bucket", m.name, "after", after, "err", err)
		// Full jitter, so replicas do not reconnect in lockstep.
		backoff.Sleep(ctx, bo.Next())
	}
	return nil
}

func (m *mirror) step(e store.Entry) {
	if e.Op != store.OpSynced {
		m.apply(e)
	}
	m.mu.Lock()
	if e.Revision > m.rev {
		m.rev = e.Revision
	}
	if e.Op == store.OpSynced {
		m.synced = true
	}
	close(m.moved)
	m.moved = make(chan struct{})
	m.mu.Unlock()
}

// ready reports whether the initial snapshot has been applied.
func (m *mirror) ready() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.synced
}

// revision is the last revision applied.
func (m *mirror) revision() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rev
}

// waitFor blocks until the mirror has applied rev and its snapshot.
func (m *mirror) waitFor(ctx context.Context, rev uint64) error {
	for {
		m.mu.Lock()
		done, moved := m.synced && m.rev >= rev, m.moved
		m.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-moved:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// errSyncTimeout means the mirror did not catch up in time.
var errSyncTimeout = errors.New("local view did not catch up with the store")

// sync waits until every write made before the call is applied.
func (m *mirror) sync(ctx context.Context) error {
	rev, err := m.b.Revision(ctx)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := m.waitFor(ctx, rev); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return errSyncTimeout
		}
		return err
	}
	return nil
}
