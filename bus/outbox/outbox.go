package outbox

import (
	"context"
	"database/sql"
	"fmt"
	"regexp"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/bus"
)

// DefaultTable is the outbox table's name when Options.Table is empty.
const DefaultTable = "meridian_outbox"

// Options names the outbox's tables.
type Options struct {
	// Table is the outbox table. Each table is one outbox with its own
	// order; the SQLite lease table is Table+"_relay". Lower-case letters,
	// digits and '_', at most 48 characters. Default DefaultTable.
	Table string `json:"table,omitempty"`
	// Schema is the PostgreSQL schema that holds the table; it must exist.
	// Empty means the connection's search_path. Ignored by SQLite.
	Schema string `json:"schema,omitempty"`
}

var ident = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,47}$`)

// Normalize fills the default and checks the names, which are spliced
// into SQL and so must be plain identifiers.
func (o *Options) Normalize() error {
	if o.Table == "" {
		o.Table = DefaultTable
	}
	if !ident.MatchString(o.Table) {
		return meridian.FieldError("table", "%q is not a plain identifier: use up to 48 lower-case letters, digits and '_', not starting with a digit", o.Table)
	}
	if o.Schema != "" && !ident.MatchString(o.Schema) {
		return meridian.FieldError("schema", "%q is not a plain identifier: use up to 48 lower-case letters, digits and '_', not starting with a digit", o.Schema)
	}
	return nil
}

// Outbox writes events into an outbox table inside the caller's
// transactions. Tx is the transaction type of its database: *sql.Tx for
// SQLite, pgx.Tx for PostgreSQL. An Outbox is safe for concurrent use.
type Outbox[Tx any] struct {
	eng engine[Tx]
}

// engine is one SQL dialect: the insert that runs in the caller's
// transaction, and the store the relay drives.
type engine[Tx any] interface {
	store
	insert(ctx context.Context, tx Tx, recs []record) error
}

// record is one event as the outbox stores it.
type record struct {
	topic, id, source string
	event             []byte // structured-mode JSON
}

// NewSQLite returns the outbox in an SQLite database opened with
// database/sql (the modernc.org/sqlite driver, or any other). It does no
// I/O: call Migrate before the first Write.
//
// SQLite allows one writer at a time, so open the database with a busy
// timeout (modernc: "?_pragma=busy_timeout(10000)") so that the relay's
// and the application's writes wait for each other instead of failing
// with SQLITE_BUSY, and preferably in WAL mode ("&_pragma=journal_mode(wal)")
// so that the relay's reads do not block writers.
func NewSQLite(db *sql.DB, opts Options) (*Outbox[*sql.Tx], error) {
	if db == nil {
		return nil, meridian.FieldError("db", "is required")
	}
	if err := opts.Normalize(); err != nil {
		return nil, err
	}
	return &Outbox[*sql.Tx]{eng: newSQLite(db, opts)}, nil
}

// NewPostgres returns the outbox in a PostgreSQL database reached through
// pool. It does no I/O: call Migrate before the first Write.
func NewPostgres(pool *pgxpool.Pool, opts Options) (*Outbox[pgx.Tx], error) {
	if pool == nil {
		return nil, meridian.FieldError("pool", "is required")
	}
	if err := opts.Normalize(); err != nil {
		return nil, err
	}
	return &Outbox[pgx.Tx]{eng: newPostgres(pool, opts)}, nil
}

// Migrate creates the outbox's tables and indexes if they are missing. It
// is idempotent and safe to run from several processes at once, so every
// service instance may run it at start.
func (o *Outbox[Tx]) Migrate(ctx context.Context) error {
	if err := o.eng.migrate(ctx); err != nil {
		return fmt.Errorf("outbox: migrate: %w", err)
	}
	return nil
}

// Write inserts events, in order, into the outbox within tx, the
// transaction that makes the business change they announce: they are
// published if and only if tx commits.
//
// Each event is prepared as a bus publish prepares it (bus.Prepare): the
// topic is checked, the trace context of ctx is attached when the event
// has none, so that consumers continue the trace of the business change,
// and SpecVersion and Time are filled, so that a re-published copy is
// identical to the first. An invalid topic or event fails the Write with a
// meridian.CodeInvalid error naming the attribute before anything is
// inserted: a bad event aborts the business change instead of stopping the
// relay later.
func (o *Outbox[Tx]) Write(ctx context.Context, tx Tx, topic string, events ...bus.Event) error {
	if len(events) == 0 {
		return bus.ValidateTopic(topic)
	}
	recs := make([]record, len(events))
	for i := range events {
		e := events[i]
		if _, err := bus.Prepare(ctx, topic, &e, nil); err != nil {
			return err
		}
		b, err := e.MarshalJSON()
		if err != nil {
			return fmt.Errorf("outbox: encode event %s: %w", e, err)
		}
		recs[i] = record{topic: topic, id: e.ID, source: e.Source, event: b}
	}
	if err := o.eng.insert(ctx, tx, recs); err != nil {
		return fmt.Errorf("outbox: write: %w", err)
	}
	return nil
}

// Pending counts the events not yet marked sent, for a backlog gauge.
func (o *Outbox[Tx]) Pending(ctx context.Context) (int64, error) {
	n, err := o.eng.pending(ctx)
	if err != nil {
		return 0, fmt.Errorf("outbox: pending: %w", err)
	}
	return n, nil
}
