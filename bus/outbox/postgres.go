package outbox

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// pgEngine is the outbox on PostgreSQL through pgx. One relay at a time
// owns the outbox for one batch, by a transaction-scoped advisory lock
// taken at the start of the batch's transaction: the lock is released by
// the commit that marks the batch sent (or by the rollback when the relay
// dies), so ownership and the marks it guards cannot part ways, and the
// next owner's read sees every mark of the last.
type pgEngine struct {
	pool    *pgxpool.Pool
	table   string // quoted, qualified
	name    string // unquoted table name, for index and trigger names
	fn      string // quoted, qualified trigger function
	lockKey int64
	channel string // notification channel

	insertOne, selectPending, countPending, markSent, deleteSent string
}

var _ engine[pgx.Tx] = (*pgEngine)(nil)

func newPostgres(pool *pgxpool.Pool, opts Options) *pgEngine {
	table, fn := pgx.Identifier{opts.Table}, pgx.Identifier{opts.Table + "_notify"}
	if opts.Schema != "" {
		table, fn = pgx.Identifier{opts.Schema, opts.Table}, pgx.Identifier{opts.Schema, opts.Table + "_notify"}
	}
	h := fnv.New64a()
	h.Write([]byte("meridian/outbox/" + opts.Schema + "." + opts.Table))
	sum := h.Sum64()
	t := table.Sanitize()
	return &pgEngine{
		pool: pool, table: t, name: opts.Table, fn: fn.Sanitize(),
		lockKey:       int64(sum),
		channel:       "meridian_outbox_" + strconv.FormatUint(sum, 16),
		insertOne:     pgInsert(t, 1),
		selectPending: `SELECT seq, topic, event FROM ` + t + ` WHERE sent_at IS NULL ORDER BY seq LIMIT $1`,
		countPending:  `SELECT count(*) FROM ` + t + ` WHERE sent_at IS NULL`,
		markSent:      `UPDATE ` + t + ` SET sent_at = now() WHERE seq = ANY($1)`,
		deleteSent: `DELETE FROM ` + t + ` WHERE seq IN (SELECT seq FROM ` + t +
			` WHERE sent_at < now() - make_interval(secs => $1) ORDER BY sent_at LIMIT $2)`,
	}
}

func pgInsert(table string, n int) string {
	var b strings.Builder
	b.WriteString(`INSERT INTO ` + table + ` (topic, event_id, source, event) VALUES `)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		k := 4 * i
		fmt.Fprintf(&b, "($%d, $%d, $%d, $%d)", k+1, k+2, k+3, k+4)
	}
	return b.String()
}

func (p *pgEngine) migrate(ctx context.Context) error {
	tx, err := p.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	stmts := []string{
		// Concurrent CREATE … IF NOT EXISTS can still collide in the
		// catalogs; instances starting together take turns.
		`SELECT pg_advisory_xact_lock(` + strconv.FormatInt(p.lockKey^1, 10) + `)`,
		`CREATE TABLE IF NOT EXISTS ` + p.table + ` (
			seq        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
			topic      text        NOT NULL,
			event_id   text        NOT NULL,
			source     text        NOT NULL,
			event      json        NOT NULL,
			created_at timestamptz NOT NULL DEFAULT now(),
			sent_at    timestamptz
		)`,
		`CREATE INDEX IF NOT EXISTS "` + p.name + `_pending" ON ` + p.table + ` (seq) WHERE sent_at IS NULL`,
		`CREATE INDEX IF NOT EXISTS "` + p.name + `_sent" ON ` + p.table + ` (sent_at) WHERE sent_at IS NOT NULL`,
		// One notification per inserting statement, delivered at commit
		// (and folded into one per transaction by PostgreSQL), wakes the
		// relays.
		`CREATE OR REPLACE FUNCTION ` + p.fn + `() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			PERFORM pg_notify('` + p.channel + `', '');
			RETURN NULL;
		END $$`,
		// Created only when missing: replacing it would lock the table
		// against writers at every start.
		`DO $$ BEGIN
			IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = '` + p.name + `_notify' AND tgrelid = '` + p.table + `'::regclass) THEN
				CREATE TRIGGER "` + p.name + `_notify" AFTER INSERT ON ` + p.table + `
					FOR EACH STATEMENT EXECUTE FUNCTION ` + p.fn + `();
			END IF;
		END $$`,
	}
	for _, q := range stmts {
		if _, err := tx.Exec(ctx, q); err != nil {
			return err
		}
	}
	return tx.Commit(ctx)
}

// pgInsertRows bounds one INSERT's rows: 4 parameters each stays far below
// the protocol's limit of 65,535.
const pgInsertRows = 1000

func (p *pgEngine) insert(ctx context.Context, tx pgx.Tx, recs []record) error {
	for len(recs) > 0 {
		n := min(len(recs), pgInsertRows)
		q := p.insertOne
		if n > 1 {
			q = pgInsert(p.table, n)
		}
		args := make([]any, 0, 4*n)
		for _, r := range recs[:n] {
			args = append(args, r.topic, r.id, r.source, r.event)
		}
		if _, err := tx.Exec(ctx, q, args...); err != nil {
			return err
		}
		recs = recs[n:]
	}
	return nil
}

func (p *pgEngine) pending(ctx context.Context) (n int64, err error) {
	err = p.pool.QueryRow(ctx, p.countPending).Scan(&n)
	return n, err
}

func (p *pgEngine) cleanup(ctx context.Context, retention time.Duration, limit int) (int64, error) {
	tag, err := p.pool.Exec(ctx, p.deleteSent, retention.Seconds(), limit)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

// owner: the advisory lock lives in each batch's transaction, so there is
// no state to keep between batches.
func (p *pgEngine) owner(time.Duration) owner { return p }

func (p *pgEngine) release(context.Context) error { return nil }

func (p *pgEngine) batch(ctx, mark context.Context, limit int, publish func([]row) (int, error)) (int, error) {
	tx, err := p.pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(mark) // a no-op after Commit
	var owned bool
	if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, p.lockKey).Scan(&owned); err != nil {
		return 0, fmt.Errorf("take lock: %w", err)
	}
	if !owned {
		return 0, errNotOwner
	}
	// Read committed: this statement's snapshot is taken after the lock,
	// so it sees the marks the previous owner committed before letting go.
	rows, err := tx.Query(ctx, p.selectPending, limit)
	if err != nil {
		return 0, fmt.Errorf("read pending: %w", err)
	}
	var buf []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.seq, &r.topic, &r.event); err != nil {
			rows.Close()
			return 0, fmt.Errorf("read pending: %w", err)
		}
		buf = append(buf, r)
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("read pending: %w", err)
	}
	if len(buf) == 0 {
		return 0, nil
	}
	n, perr := publish(buf)
	if n == 0 {
		return 0, perr
	}
	// The published seqs, not their range: a row inside the range may
	// have committed after the read (sequence numbers are taken at insert,
	// not at commit), and it has not been published.
	seqs := make([]int64, n)
	for i := range seqs {
		seqs[i] = buf[i].seq
	}
	if _, err := tx.Exec(mark, p.markSent, seqs); err != nil {
		return 0, errors.Join(perr, fmt.Errorf("mark sent: %w", err))
	}
	if err := tx.Commit(mark); err != nil {
		return 0, errors.Join(perr, fmt.Errorf("mark sent: %w", err))
	}
	return n, perr
}

func (p *pgEngine) listen(ctx context.Context, wake func()) error {
	c, err := p.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// A listening connection must not go back to the pool.
	conn := c.Hijack()
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, `LISTEN `+pgx.Identifier{p.channel}.Sanitize()); err != nil {
		return err
	}
	wake() // for rows committed before LISTEN took effect
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return err
		}
		wake()
	}
}
