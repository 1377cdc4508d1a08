package inbox

import (
	"context"
	"hash/fnv"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// pgEngine is the inbox on PostgreSQL through pgx.
type pgEngine struct {
	pool              *pgxpool.Pool
	table, name       string
	lockKey           int64
	insert, deleteOld string
}

var _ engine[pgx.Tx] = (*pgEngine)(nil)

func newPostgres(pool *pgxpool.Pool, opts Options) *pgEngine {
	id := pgx.Identifier{opts.Table}
	if opts.Schema != "" {
		id = pgx.Identifier{opts.Schema, opts.Table}
	}
	h := fnv.New64a()
	h.Write([]byte("meridian/inbox/" + opts.Schema + "." + opts.Table))
	t := id.Sanitize()
	return &pgEngine{
		pool: pool, table: t, name: opts.Table, lockKey: int64(h.Sum64()),
		insert: `INSERT INTO ` + t + ` (consumer, source, id) VALUES ($1, $2, $3)
			ON CONFLICT (consumer, source, id) DO NOTHING`,
		deleteOld: `DELETE FROM ` + t + ` WHERE (consumer, source, id) IN
			(SELECT consumer, source, id FROM ` + t + ` WHERE processed_at < now() - make_interval(secs => $1) LIMIT $2)`,
	}
}

func (p *pgEngine) migrate(ctx context.Context) error {
	tx, err := p.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	for _, q := range []string{
		// Concurrent CREATE … IF NOT EXISTS can still collide in the
		// catalogs; instances starting together take turns.
		`SELECT pg_advisory_xact_lock(` + strconv.FormatInt(p.lockKey, 10) + `)`,
		`CREATE TABLE IF NOT EXISTS ` + p.table + ` (
			consumer     text        NOT NULL,
			source       text        NOT NULL,
			id           text        NOT NULL,
			processed_at timestamptz NOT NULL DEFAULT now(),
			PRIMARY KEY (consumer, source, id)
		)`,
		`CREATE INDEX IF NOT EXISTS "` + p.name + `_processed" ON ` + p.table + ` (processed_at)`,
	} {
		if _, err := tx.Exec(ctx, q); err != nil {
			return err
		}
	}
	return tx.Commit(ctx)
}

func (p *pgEngine) process(ctx context.Context, consumer, source, id string, fn func(context.Context, pgx.Tx) error) (bool, error) {
	tx, err := p.pool.Begin(ctx)
	if err != nil {
		return false, wrapDB("begin", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	// A concurrent delivery of the same event blocks here on the primary
	// key until the first one's transaction ends, then inserts nothing if
	// it committed.
	tag, err := tx.Exec(ctx, p.insert, consumer, source, id)
	if err != nil {
		return false, wrapDB("record", err)
	}
	if tag.RowsAffected() == 0 {
		return true, nil
	}
	if err := fn(ctx, tx); err != nil {
		return false, err
	}
	if err := tx.Commit(ctx); err != nil {
		return false, wrapDB("commit", err)
	}
	return false, nil
}

func (p *pgEngine) sweep(ctx context.Context, retention time.Duration, limit int) (int64, error) {
	tag, err := p.pool.Exec(ctx, p.deleteOld, retention.Seconds(), limit)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}
