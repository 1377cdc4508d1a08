package inbox

import (
	"context"
	"database/sql"
	"time"
)

// sqliteEngine is the inbox on SQLite through database/sql; processed_at
// is in Unix nanoseconds.
type sqliteEngine struct {
	db                *sql.DB
	table, name       string
	insert, deleteOld string
}

var _ engine[*sql.Tx] = (*sqliteEngine)(nil)

func newSQLite(db *sql.DB, opts Options) *sqliteEngine {
	t := `"` + opts.Table + `"`
	return &sqliteEngine{
		db: db, table: t, name: opts.Table,
		insert: `INSERT INTO ` + t + ` (consumer, source, id, processed_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (consumer, source, id) DO NOTHING`,
		deleteOld: `DELETE FROM ` + t + ` WHERE (consumer, source, id) IN
			(SELECT consumer, source, id FROM ` + t + ` WHERE processed_at < ? LIMIT ?)`,
	}
}

func (s *sqliteEngine) migrate(ctx context.Context) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, q := range []string{
		`CREATE TABLE IF NOT EXISTS ` + s.table + ` (
			consumer     TEXT    NOT NULL,
			source       TEXT    NOT NULL,
			id           TEXT    NOT NULL,
			processed_at INTEGER NOT NULL,
			PRIMARY KEY (consumer, source, id)
		) WITHOUT ROWID`,
		`CREATE INDEX IF NOT EXISTS "` + s.name + `_processed" ON ` + s.table + ` (processed_at)`,
	} {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return err
		}
	}
	return tx.Commit()
}

func (s *sqliteEngine) process(ctx context.Context, consumer, source, id string, fn func(context.Context, *sql.Tx) error) (bool, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return false, wrapDB("begin", err)
	}
	defer tx.Rollback()
	// The insert comes first so that the transaction holds the write lock
	// from its first statement: a deferred transaction that read first
	// and wrote later could fail to upgrade its lock.
	res, err := tx.ExecContext(ctx, s.insert, consumer, source, id, time.Now().UnixNano())
	if err != nil {
		return false, wrapDB("record", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return false, wrapDB("record", err)
	} else if n == 0 {
		return true, nil
	}
	if err := fn(ctx, tx); err != nil {
		return false, err
	}
	if err := tx.Commit(); err != nil {
		return false, wrapDB("commit", err)
	}
	return false, nil
}

func (s *sqliteEngine) sweep(ctx context.Context, retention time.Duration, limit int) (int64, error) {
	res, err := s.db.ExecContext(ctx, s.deleteOld, time.Now().Add(-retention).UnixNano(), limit)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}
