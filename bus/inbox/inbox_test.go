package inbox_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"
	_ "modernc.org/sqlite"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/bus/inbox"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// postgresEnv names the PostgreSQL the tests use; unset, they skip it.
const postgresEnv = "MERIDIAN_TEST_POSTGRES"

// testDB is an inbox beside a table of effects (no unique key, so a
// double effect shows), with the dialect's transaction type hidden.
type testDB struct {
	// process runs consumer's effect for (source, id): an effect row
	// inserted through the inbox's transaction, then fail returned.
	process func(ctx context.Context, consumer, source, id string, fail error) (bool, error)
	effects func(ctx context.Context) (int64, error)
	records func(ctx context.Context) (int64, error)
	sweep   func(ctx context.Context) (int64, error)
	run     func(ctx context.Context, onErr func(error)) error
}

func eachDB(t *testing.T, opts inbox.Options, f func(t *testing.T, d *testDB)) {
	t.Run("sqlite", func(t *testing.T) { f(t, sqliteDB(t, opts)) })
	t.Run("postgres", func(t *testing.T) {
		url := os.Getenv(postgresEnv)
		if url == "" {
			t.Skipf("PostgreSQL: set %s (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable) to run", postgresEnv)
		}
		f(t, postgresDB(t, url, opts))
	})
}

func sqliteDB(t *testing.T, opts inbox.Options) *testDB {
	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "service.db")+
		"?_pragma=busy_timeout(20000)&_pragma=journal_mode(wal)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Exec(`CREATE TABLE effects (consumer TEXT NOT NULL, id TEXT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	in, err := migrated(inbox.NewSQLite(db, opts))
	if err != nil {
		t.Fatal(err)
	}
	count := counter(db.QueryRowContext)
	return &testDB{
		process: func(ctx context.Context, consumer, source, id string, fail error) (bool, error) {
			return in.Process(ctx, consumer, source, id, func(ctx context.Context, tx *sql.Tx) error {
				if _, err := tx.ExecContext(ctx, `INSERT INTO effects VALUES (?, ?)`, consumer, id); err != nil {
					return err
				}
				return fail
			})
		},
		effects: count(`SELECT count(*) FROM effects`),
		records: count(`SELECT count(*) FROM ` + table(opts)),
		sweep:   in.Sweep,
		run:     in.Run,
	}
}

// migrated migrates the inbox a constructor returned.
func migrated[Tx any](in *inbox.Inbox[Tx], err error) (*inbox.Inbox[Tx], error) {
	if err != nil {
		return nil, err
	}
	return in, in.Migrate(context.Background())
}

// counter makes one-number queries over a database's QueryRow.
func counter[R interface{ Scan(...any) error }](queryRow func(context.Context, string, ...any) R) func(q string) func(context.Context) (int64, error) {
	return func(q string) func(context.Context) (int64, error) {
		return func(ctx context.Context) (n int64, err error) {
			err = queryRow(ctx, q).Scan(&n)
			return n, err
		}
	}
}

func table(opts inbox.Options) string {
	if opts.Table != "" {
		return opts.Table
	}
	return inbox.DefaultTable
}

// postgresDB works in a schema of its own, dropped when the test ends.
func postgresDB(t *testing.T, url string, opts inbox.Options) *testDB {
	ctx := context.Background()
	schema := "meridian_inbox_test_" + strings.ToLower(rand.Text()[:12])
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := pool.Exec(context.Background(), `DROP SCHEMA `+schema+` CASCADE`); err != nil {
			t.Error(err)
		}
		pool.Close()
	})
	if _, err := pool.Exec(ctx, `CREATE SCHEMA `+schema+`; CREATE TABLE `+schema+`.effects (consumer text NOT NULL, id text NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	opts.Schema = schema
	in, err := migrated(inbox.NewPostgres(pool, opts))
	if err != nil {
		t.Fatal(err)
	}
	count := counter(pool.QueryRow)
	return &testDB{
		process: func(ctx context.Context, consumer, source, id string, fail error) (bool, error) {
			return in.Process(ctx, consumer, source, id, func(ctx context.Context, tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, `INSERT INTO `+schema+`.effects VALUES ($1, $2)`, consumer, id); err != nil {
					return err
				}
				return fail
			})
		},
		effects: count(`SELECT count(*) FROM ` + schema + `.effects`),
		records: count(`SELECT count(*) FROM ` + schema + `.` + table(opts)),
		sweep:   in.Sweep,
		run:     in.Run,
	}
}

func mustCount(t *testing.T, what string, f func(context.Context) (int64, error), want int64) {
	t.Helper()
	n, err := f(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n != want {
		t.Fatalf("%d %s, want %d", n, what, want)
	}
}

func TestDuplicateDeliveryRunsTheEffectOnce(t *testing.T) {
	eachDB(t, inbox.Options{}, func(t *testing.T, d *testDB) {
		ctx := context.Background()
		for i, wantDup := range []bool{false, true, true} {
			dup, err := d.process(ctx, "billing", "/orders", "e-1", nil)
			if err != nil || dup != wantDup {
				t.Fatalf("delivery %d: duplicate=%v err=%v, want duplicate=%v", i+1, dup, err, wantDup)
			}
		}
		mustCount(t, "effects", d.effects, 1)
		mustCount(t, "records", d.records, 1)
	})
}

func TestFailedEffectIsNotRecorded(t *testing.T) {
	eachDB(t, inbox.Options{}, func(t *testing.T, d *testDB) {
		ctx := context.Background()
		boom := errors.New("boom")
		dup, err := d.process(ctx, "billing", "/orders", "e-1", boom)
		if !errors.Is(err, boom) || dup {
			t.Fatalf("Process = %v, %v; want fn's error as it is", dup, err)
		}
		mustCount(t, "effects after a failure", d.effects, 0)
		mustCount(t, "records after a failure", d.records, 0)
		if dup, err := d.process(ctx, "billing", "/orders", "e-1", nil); err != nil || dup {
			t.Fatalf("redelivery: duplicate=%v err=%v, want the effect to run", dup, err)
		}
		mustCount(t, "effects after the redelivery", d.effects, 1)
	})
}

// TestConcurrentDeliveriesOfOneEvent delivers each event to many
// goroutines at once: one runs the effect, the others see a duplicate.
func TestConcurrentDeliveriesOfOneEvent(t *testing.T) {
	eachDB(t, inbox.Options{}, func(t *testing.T, d *testDB) {
		const events, copies = 20, 8
		var mu sync.Mutex
		ran := map[string]int{}
		var wg sync.WaitGroup
		for e := range events {
			id := "e-" + string(rune('a'+e))
			for range copies {
				wg.Go(func() {
					dup, err := d.process(context.Background(), "billing", "/orders", id, nil)
					if err != nil {
						t.Error(err)
						return
					}
					if !dup {
						mu.Lock()
						ran[id]++
						mu.Unlock()
					}
				})
			}
		}
		wg.Wait()
		for id, n := range ran {
			if n != 1 {
				t.Errorf("event %s: effect ran %d times", id, n)
			}
		}
		if len(ran) != events {
			t.Errorf("%d events ran their effect, want %d", len(ran), events)
		}
		mustCount(t, "effects", d.effects, events)
	})
}

func TestConsumersAndSourcesAreSeparate(t *testing.T) {
	eachDB(t, inbox.Options{}, func(t *testing.T, d *testDB) {
		ctx := context.Background()
		for _, k := range []struct{ consumer, source string }{{"billing", "/orders"}, {"shipping", "/orders"}, {"billing", "/returns"}} {
			if dup, err := d.process(ctx, k.consumer, k.source, "e-1", nil); err != nil || dup {
				t.Fatalf("%v: duplicate=%v err=%v; the key is (consumer, source, id)", k, dup, err)
			}
		}
		mustCount(t, "effects", d.effects, 3)
	})
}

func TestSweepForgetsRecordsOlderThanRetention(t *testing.T) {
	eachDB(t, inbox.Options{Retention: meridian.Duration(time.Millisecond), SweepInterval: meridian.Duration(10 * time.Millisecond)}, func(t *testing.T, d *testDB) {
		ctx := context.Background()
		for _, id := range []string{"e-1", "e-2", "e-3"} {
			if _, err := d.process(ctx, "billing", "/orders", id, nil); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(5 * time.Millisecond)
		n, err := d.sweep(ctx)
		if err != nil || n != 3 {
			t.Fatalf("Sweep = %d, %v; want 3", n, err)
		}
		mustCount(t, "records", d.records, 0)
		// Past retention a duplicate is not recognized: what Retention warns of.
		if dup, err := d.process(ctx, "billing", "/orders", "e-1", nil); err != nil || dup {
			t.Fatalf("after the sweep: duplicate=%v err=%v", dup, err)
		}

		// Run sweeps on its own and stops with its context.
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- d.run(rctx, func(err error) { t.Error(err) }) }()
		deadline := time.Now().Add(5 * time.Second)
		for {
			n, err := d.records(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("Run did not sweep")
			}
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
	})
}

func TestOptionsAndArgumentsNameTheField(t *testing.T) {
	db, err := sql.Open("sqlite", ":memory:")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, c := range []struct {
		name  string
		opts  inbox.Options
		field string
	}{
		{"table with capitals", inbox.Options{Table: "Inbox"}, "table"},
		{"table with a quote", inbox.Options{Table: `x"y`}, "table"},
		{"schema with a dash", inbox.Options{Schema: "a-b"}, "schema"},
		{"negative retention", inbox.Options{Retention: -1}, "retention"},
		{"negative interval", inbox.Options{SweepInterval: -1}, "sweep_interval"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := inbox.NewSQLite(db, c.opts)
			var me *meridian.Error
			if !errors.As(err, &me) || me.Field != c.field {
				t.Fatalf("NewSQLite = %v, want an error naming %q", err, c.field)
			}
		})
	}
	in, err := inbox.NewSQLite(db, inbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	noop := func(context.Context, *sql.Tx) error { return nil }
	for _, c := range []struct{ consumer, source, id, field string }{
		{"", "/s", "1", "consumer"}, {"c", "", "1", "source"}, {"c", "/s", "", "id"},
	} {
		_, err := in.Process(context.Background(), c.consumer, c.source, c.id, noop)
		var me *meridian.Error
		if !errors.As(err, &me) || me.Field != c.field {
			t.Fatalf("Process(%q, %q, %q) = %v, want an error naming %q", c.consumer, c.source, c.id, err, c.field)
		}
	}
}
