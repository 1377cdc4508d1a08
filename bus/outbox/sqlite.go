package outbox

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// sqliteEngine is the outbox on SQLite through database/sql. Times are
// Unix nanoseconds. SQLite has one writer at a time, so sequence numbers
// are handed out in commit order and the relay's order is commit order.
type sqliteEngine struct {
	db    *sql.DB
	table string // quoted
	lease string // quoted lease table

	insertOne, selectPending, countPending, acquireLease, releaseLease, deleteSent string
}

var _ engine[*sql.Tx] = (*sqliteEngine)(nil)

func newSQLite(db *sql.DB, opts Options) *sqliteEngine {
	t, l := `"`+opts.Table+`"`, `"`+opts.Table+`_relay"`
	return &sqliteEngine{
		db: db, table: t, lease: l,
		insertOne:     sqliteInsert(t, 1),
		selectPending: `SELECT seq, topic, event FROM ` + t + ` WHERE sent_at IS NULL ORDER BY seq LIMIT ?`,
		countPending:  `SELECT count(*) FROM ` + t + ` WHERE sent_at IS NULL`,
		// The lease is taken when free, lapsed or already ours; the WHERE
		// of DO UPDATE leaves the row alone (no change) otherwise.
		acquireLease: `INSERT INTO ` + l + ` (id, owner, expires_at) VALUES (1, ?, ?)
			ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
			WHERE ` + l + `.owner = excluded.owner OR ` + l + `.expires_at < ?`,
		releaseLease: `DELETE FROM ` + l + ` WHERE owner = ?`,
		deleteSent: `DELETE FROM ` + t + ` WHERE seq IN (SELECT seq FROM ` + t +
			` WHERE sent_at < ? ORDER BY sent_at LIMIT ?)`,
	}
}

func sqliteInsert(table string, n int) string {
	var b strings.Builder
	b.WriteString(`INSERT INTO ` + table + ` (topic, event_id, source, event, created_at) VALUES `)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`(?, ?, ?, ?, ?)`)
	}
	return b.String()
}

func (s *sqliteEngine) migrate(ctx context.Context) error {
	t, name := s.table, strings.Trim(s.table, `"`)
	return sqliteTx(ctx, s.db, []string{
		// AUTOINCREMENT: a sequence number is never reused, even after
		// cleanup deleted the newest rows, so seq orders all events ever
		// written to the outbox.
		`CREATE TABLE IF NOT EXISTS ` + t + ` (
			seq        INTEGER PRIMARY KEY AUTOINCREMENT,
			topic      TEXT    NOT NULL,
			event_id   TEXT    NOT NULL,
			source     TEXT    NOT NULL,
			event      TEXT    NOT NULL,
			created_at INTEGER NOT NULL,
			sent_at    INTEGER
		)`,
		`CREATE INDEX IF NOT EXISTS "` + name + `_pending" ON ` + t + ` (seq) WHERE sent_at IS NULL`,
		`CREATE INDEX IF NOT EXISTS "` + name + `_sent" ON ` + t + ` (sent_at) WHERE sent_at IS NOT NULL`,
		`CREATE TABLE IF NOT EXISTS ` + s.lease + ` (
			id         INTEGER PRIMARY KEY CHECK (id = 1),
			owner      TEXT    NOT NULL,
			expires_at INTEGER NOT NULL
		)`,
	})
}

// sqliteTx runs statements in one transaction.
func sqliteTx(ctx context.Context, db *sql.DB, stmts []string) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, q := range stmts {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// sqliteInsertRows bounds one INSERT's rows: 5 parameters each stays far
// below SQLite's limit of 32,766.
const sqliteInsertRows = 500

func (s *sqliteEngine) insert(ctx context.Context, tx *sql.Tx, recs []record) error {
	now := time.Now().UnixNano()
	for len(recs) > 0 {
		n := min(len(recs), sqliteInsertRows)
		q := s.insertOne
		if n > 1 {
			q = sqliteInsert(s.table, n)
		}
		args := make([]any, 0, 5*n)
		for _, r := range recs[:n] {
			args = append(args, r.topic, r.id, r.source, string(r.event), now)
		}
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			return err
		}
		recs = recs[n:]
	}
	return nil
}

func (s *sqliteEngine) pending(ctx context.Context) (n int64, err error) {
	err = s.db.QueryRowContext(ctx, s.countPending).Scan(&n)
	return n, err
}

func (s *sqliteEngine) cleanup(ctx context.Context, retention time.Duration, limit int) (int64, error) {
	res, err := s.db.ExecContext(ctx, s.deleteSent, time.Now().Add(-retention).UnixNano(), limit)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (s *sqliteEngine) listen(context.Context, func()) error { return errNoNotify }

func (s *sqliteEngine) owner(ttl time.Duration) owner {
	return &sqliteOwner{s: s, id: rand.Text(), ttl: ttl}
}

// sqliteOwner holds the outbox through a lease row: SQLite has no advisory
// locks, and holding its write lock while publishing would stall every
// writer of the database. The lease only keeps standby relays from
// re-publishing: a relay that loses it mid-batch (paused longer than
// half the TTL) at worst publishes that batch twice, in order.
type sqliteOwner struct {
	s   *sqliteEngine
	id  string
	ttl time.Duration

	// Only the relay's own goroutine uses the fields below.
	until time.Time // the lease's expiry as last written; zero when not held
	buf   []row
	mark  strings.Builder
}

func (o *sqliteOwner) acquire(ctx context.Context) error {
	now := time.Now()
	if now.Before(o.until.Add(-o.ttl / 2)) {
		return nil // ours, with more than half left
	}
	until := now.Add(o.ttl)
	res, err := o.s.db.ExecContext(ctx, o.s.acquireLease, o.id, until.UnixNano(), now.UnixNano())
	if err != nil {
		return fmt.Errorf("take lease: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		o.until = time.Time{}
		return errNotOwner
	}
	o.until = until
	return nil
}

func (o *sqliteOwner) batch(ctx, mark context.Context, limit int, publish func([]row) (int, error)) (int, error) {
	if err := o.acquire(ctx); err != nil {
		return 0, err
	}
	rows, err := o.s.db.QueryContext(ctx, o.s.selectPending, limit)
	if err != nil {
		return 0, fmt.Errorf("read pending: %w", err)
	}
	o.buf = o.buf[:0]
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.seq, &r.topic, &r.event); err != nil {
			rows.Close()
			return 0, fmt.Errorf("read pending: %w", err)
		}
		o.buf = append(o.buf, r)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return 0, fmt.Errorf("read pending: %w", err)
	}
	if len(o.buf) == 0 {
		return 0, nil
	}
	n, perr := publish(o.buf)
	if n == 0 {
		return 0, perr
	}
	// The seqs are listed rather than given as a range so that exactly the
	// published rows are marked. SQLite commits in seq order, so a range
	// would do too, but a list states the contract.
	o.mark.Reset()
	o.mark.WriteString(`UPDATE ` + o.s.table + ` SET sent_at = ? WHERE seq IN (`)
	for i, r := range o.buf[:n] {
		if i > 0 {
			o.mark.WriteByte(',')
		}
		o.mark.WriteString(strconv.FormatInt(r.seq, 10))
	}
	o.mark.WriteByte(')')
	if _, err := o.s.db.ExecContext(mark, o.mark.String(), time.Now().UnixNano()); err != nil {
		return 0, errors.Join(perr, fmt.Errorf("mark sent: %w", err))
	}
	return n, perr
}

func (o *sqliteOwner) release(ctx context.Context) error {
	if o.until.IsZero() {
		return nil
	}
	o.until = time.Time{}
	_, err := o.s.db.ExecContext(ctx, o.s.releaseLease, o.id)
	return err
}
