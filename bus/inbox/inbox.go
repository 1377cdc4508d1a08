package inbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meridian-platform/meridian"
)

// Defaults for Options' zero fields.
const (
	DefaultTable         = "meridian_inbox"
	DefaultRetention     = 7 * 24 * time.Hour
	DefaultSweepInterval = time.Hour
	// sweepChunk is how many records one sweep statement deletes, to keep
	// each transaction short.
	sweepChunk = 10_000
)

// Options configures an Inbox. Zero fields take the defaults named on them.
type Options struct {
	// Table is the inbox table, shared by every consumer of the service.
	// Lower-case letters, digits and '_', at most 48 characters. Default
	// DefaultTable.
	Table string `json:"table,omitempty"`
	// Schema is the PostgreSQL schema that holds the table; it must exist.
	// Empty means the connection's search_path. Ignored by SQLite.
	Schema string `json:"schema,omitempty"`
	// Retention is how long an event's record is kept: a duplicate that
	// arrives later than this after the first delivery runs the effect
	// again. Make it longer than the broker can redeliver or re-send (its
	// retention, and the outbox relay's longest outage). Default 168h (7
	// days).
	Retention meridian.Duration `json:"retention,omitempty"`
	// SweepInterval is how often Run deletes records older than
	// Retention. Default 1h.
	SweepInterval meridian.Duration `json:"sweep_interval,omitempty"`
}

var ident = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,47}$`)

// Normalize fills defaults into o and checks it; errors name the field.
// The names are spliced into SQL and so must be plain identifiers.
func (o *Options) Normalize() error {
	if o.Table == "" {
		o.Table = DefaultTable
	}
	if o.Retention == 0 {
		o.Retention = meridian.Duration(DefaultRetention)
	}
	if o.SweepInterval == 0 {
		o.SweepInterval = meridian.Duration(DefaultSweepInterval)
	}
	if !ident.MatchString(o.Table) {
		return meridian.FieldError("table", "%q is not a plain identifier: use up to 48 lower-case letters, digits and '_', not starting with a digit", o.Table)
	}
	if o.Schema != "" && !ident.MatchString(o.Schema) {
		return meridian.FieldError("schema", "%q is not a plain identifier: use up to 48 lower-case letters, digits and '_', not starting with a digit", o.Schema)
	}
	if o.Retention < 0 {
		return meridian.FieldError("retention", "must not be negative")
	}
	if o.SweepInterval < 0 {
		return meridian.FieldError("sweep_interval", "must not be negative")
	}
	return nil
}

// Inbox records which events each consumer has processed, in the same
// transaction as the effect of processing them. Tx is the transaction
// type of its database: *sql.Tx for SQLite, pgx.Tx for PostgreSQL. An Inbox
// is safe for concurrent use.
type Inbox[Tx any] struct {
	eng     engine[Tx]
	opts    Options
	running atomic.Bool
}

// engine is one SQL dialect.
type engine[Tx any] interface {
	migrate(ctx context.Context) error
	// process begins a transaction, records the key in it, and runs fn
	// and commits when the key was new; it reports a duplicate, having
	// rolled back, when the key was recorded already.
	process(ctx context.Context, consumer, source, id string, fn func(context.Context, Tx) error) (dup bool, err error)
	sweep(ctx context.Context, retention time.Duration, limit int) (int64, error)
}

// NewSQLite returns the inbox in an SQLite database opened with
// database/sql. It does no I/O: call Migrate before the first Process.
//
// Concurrent Process calls on SQLite take turns at its one write lock:
// open the database with a busy timeout (modernc:
// "?_pragma=busy_timeout(10000)"), or they fail with SQLITE_BUSY.
func NewSQLite(db *sql.DB, opts Options) (*Inbox[*sql.Tx], error) {
	if db == nil {
		return nil, meridian.FieldError("db", "is required")
	}
	if err := opts.Normalize(); err != nil {
		return nil, err
	}
	return &Inbox[*sql.Tx]{eng: newSQLite(db, opts), opts: opts}, nil
}

// NewPostgres returns the inbox in a PostgreSQL database reached through
// pool. It does no I/O: call Migrate before the first Process.
func NewPostgres(pool *pgxpool.Pool, opts Options) (*Inbox[pgx.Tx], error) {
	if pool == nil {
		return nil, meridian.FieldError("pool", "is required")
	}
	if err := opts.Normalize(); err != nil {
		return nil, err
	}
	return &Inbox[pgx.Tx]{eng: newPostgres(pool, opts), opts: opts}, nil
}

// Migrate creates the inbox table and its index if they are missing. It is
// idempotent and safe to run from several processes at once.
func (in *Inbox[Tx]) Migrate(ctx context.Context) error {
	if err := in.eng.migrate(ctx); err != nil {
		return fmt.Errorf("inbox: migrate: %w", err)
	}
	return nil
}

// Process runs fn, the effect of consumer handling the event (source, id),
// at most once per event: it records the event and runs fn in one
// transaction, and commits both when fn returns nil. The effect must be
// made through tx for the guarantee to hold.
//
// When the event was processed before, fn does not run, and Process
// returns duplicate = true and a nil error: acknowledge the delivery. When
// fn fails, Process rolls back and returns fn's error as it is; nothing is
// recorded, so a redelivery runs fn again. Other errors come from the
// database (wrapped); the outcome is then unknown to the caller, but not to
// the inbox: a redelivery either finds the record or runs fn.
//
// Two deliveries of one event at once are serialized by the table's
// primary key: the second waits for the first transaction and then counts
// as a duplicate if it committed. fn runs at the database's default
// isolation (read committed on PostgreSQL, serializable on SQLite).
func (in *Inbox[Tx]) Process(ctx context.Context, consumer, source, id string, fn func(ctx context.Context, tx Tx) error) (duplicate bool, err error) {
	for _, f := range []struct{ name, v string }{{"consumer", consumer}, {"source", source}, {"id", id}} {
		if f.v == "" {
			return false, meridian.FieldError(f.name, "is required")
		}
	}
	if fn == nil {
		return false, meridian.FieldError("fn", "is required")
	}
	return in.eng.process(ctx, consumer, source, id, fn)
}

// Sweep deletes the records of events processed more than Retention ago
// and returns how many it deleted.
func (in *Inbox[Tx]) Sweep(ctx context.Context) (int64, error) {
	var total int64
	for {
		n, err := in.eng.sweep(ctx, in.opts.Retention.D(), sweepChunk)
		total += n
		if err != nil {
			return total, fmt.Errorf("inbox: sweep: %w", err)
		}
		if n < sweepChunk {
			return total, nil
		}
	}
}

// Run sweeps at once and then every SweepInterval until ctx ends, and
// returns nil then. A failed sweep is retried at the next interval; onErr,
// if not nil, is told of it. Run may be called once.
func (in *Inbox[Tx]) Run(ctx context.Context, onErr func(error)) error {
	if !in.running.CompareAndSwap(false, true) {
		return errors.New("inbox: Run called twice")
	}
	t := time.NewTicker(in.opts.SweepInterval.D())
	defer t.Stop()
	for {
		if _, err := in.Sweep(ctx); err != nil && ctx.Err() == nil && onErr != nil {
			onErr(err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// wrapDB marks database errors as the inbox's, leaving fn's alone.
func wrapDB(what string, err error) error { return fmt.Errorf("inbox: %s: %w", what, err) }
