// Command outbox is the outbox relay benchmark: how many events per second
// the relay of package bus/outbox publishes and marks sent, on SQLite and
// on PostgreSQL, beside a naive relay measured in the same run on the same
// rows — one row at a time: read the oldest pending row, publish it, mark
// it sent — which is what an outbox without batching does.
//
// Each measurement starts from an outbox holding -events pending events
// (written before the clock starts, in transactions of 1,000) and stops
// when the last of them is marked sent. Two publishers: the bus/jetstream
// engine on an embedded NATS server in this process (synchronous publish
// with dedup, as the relay uses it), and a publisher that discards, which
// shows the database's share alone. Rounds alternate the two relays;
// the table shows medians. See README.md.
package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	_ "modernc.org/sqlite"

	"github.com/meridian-platform/meridian/bus"
	busjs "github.com/meridian-platform/meridian/bus/jetstream"
	"github.com/meridian-platform/meridian/bus/outbox"
	"github.com/meridian-platform/meridian/internal/natsembed"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "outbox bench:", err)
		os.Exit(1)
	}
}

const topic = "bench.outbox"

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("outbox", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		events  = fs.Int("events", 20000, "pending events each measurement relays")
		batch   = fs.Int("batch", outbox.DefaultBatchSize, "the relay's BatchSize")
		rounds  = fs.Int("rounds", 3, "rounds per cell; the table shows medians")
		pgURL   = fs.String("postgres", getenv("MERIDIAN_TEST_POSTGRES"), "PostgreSQL URL (default $MERIDIAN_TEST_POSTGRES; empty: SQLite only); the benchmark works in a schema of its own and drops it")
		timeout = fs.Duration("timeout", 15*time.Minute, "the whole run's deadline")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *events < 1 || *rounds < 1 || *batch < 1 {
		return errors.New("-events, -rounds and -batch must be positive")
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	tmp, err := os.MkdirTemp("", "outbox-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	ns, err := natsembed.Start(natsembed.Options{StoreDir: filepath.Join(tmp, "nats"), Port: -1})
	if err != nil {
		return err
	}
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		return err
	}
	defer nc.Close()
	be, err := busjs.New(nc, busjs.Config{})
	if err != nil {
		return err
	}
	defer be.Close(context.Background())
	if _, err := be.EnsureTopic(ctx, bus.TopicConfig{Name: topic, DedupWindow: 2 * time.Minute}); err != nil {
		return err
	}

	dbs := []database{&sqliteDB{dir: tmp}}
	if *pgURL != "" {
		dbs = append(dbs, &postgresDB{url: *pgURL})
	} else {
		fmt.Fprintln(stderr, "PostgreSQL skipped: pass -postgres or set MERIDIAN_TEST_POSTGRES")
	}
	pubs := []struct {
		name string
		pub  outbox.Publisher
	}{
		{"jetstream", outbox.FromBus(be)},
		{"discard", outbox.PublisherFunc(func(context.Context, string, bus.Event) error { return nil })},
	}
	relays := []struct {
		name string
		run  func(ctx context.Context, db database, pub outbox.Publisher, n int) error
	}{
		{fmt.Sprintf("meridian (batch %d)", *batch), func(ctx context.Context, db database, pub outbox.Publisher, n int) error {
			return relayMeridian(ctx, db, pub, n, *batch)
		}},
		{"naive (row by row)", relayNaive},
	}

	fmt.Fprintf(stdout, "outbox relay throughput: %d pending events per measurement, median of %d rounds; %s, GOMAXPROCS %d, NATS embedded in-process\n\n",
		*events, *rounds, runtime.Version(), runtime.GOMAXPROCS(0))
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "database\tpublisher\trelay\tevents/s\tvs naive\t")
	for _, db := range dbs {
		for _, p := range pubs {
			rates := make([][]float64, len(relays))
			for round := range *rounds {
				for i, r := range relays {
					rate, err := measure(ctx, db, p.pub, r.run, *events, fmt.Sprintf("r%d-%d-%s", round, i, rand.Text()[:6]))
					if err != nil {
						return fmt.Errorf("%s, %s, %s: %w", db.name(), p.name, r.name, err)
					}
					rates[i] = append(rates[i], rate)
				}
			}
			naive := median(rates[len(relays)-1])
			for i, r := range relays {
				m := median(rates[i])
				fmt.Fprintf(tw, "%s\t%s\t%s\t%.0f\t%.1f×\t\n", db.name(), p.name, r.name, m, m/naive)
			}
		}
	}
	return tw.Flush()
}

// measure fills a fresh outbox with n events, then times relay until all
// of them are marked sent, and returns events per second.
func measure(ctx context.Context, db database, pub outbox.Publisher, relay func(context.Context, database, outbox.Publisher, int) error, n int, prefix string) (float64, error) {
	if err := db.reset(ctx); err != nil {
		return 0, err
	}
	defer db.close()
	for i := 0; i < n; i += 1000 {
		evs := make([]bus.Event, min(1000, n-i))
		for j := range evs {
			evs[j] = bus.Event{ID: fmt.Sprintf("%s-%d", prefix, i+j), Source: "/bench/orders", Type: "com.example.order.placed",
				DataContentType: "application/json", Data: fmt.Appendf(nil, `{"order":%d,"total":"12.50","currency":"EUR"}`, i+j)}
		}
		if err := db.write(ctx, evs); err != nil {
			return 0, err
		}
	}
	start := time.Now()
	if err := relay(ctx, db, pub, n); err != nil {
		return 0, err
	}
	elapsed := time.Since(start)
	if p, err := db.pending(ctx); err != nil || p != 0 {
		return 0, fmt.Errorf("%d events still pending after the relay (%v)", p, err)
	}
	return float64(n) / elapsed.Seconds(), nil
}

// relayMeridian runs outbox.Relay until it has marked n events sent.
func relayMeridian(ctx context.Context, db database, pub outbox.Publisher, n, batch int) error {
	var sent atomic.Int64
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var stepErr atomic.Pointer[error]
	cfg := outbox.RelayConfig{BatchSize: batch, Hooks: outbox.Hooks{
		Published: func(k int, _ time.Duration) {
			if sent.Add(int64(k)) >= int64(n) {
				cancel()
			}
		},
		Error: func(err error) { stepErr.Store(&err); cancel() },
	}}
	r, err := db.relay(pub, cfg)
	if err != nil {
		return err
	}
	if err := r.Run(rctx); err != nil {
		return err
	}
	if p := stepErr.Load(); p != nil {
		return *p
	}
	return ctx.Err()
}

// relayNaive is the baseline: one row at a time, each read, published and
// marked sent on its own, with no batching and no ownership.
func relayNaive(ctx context.Context, db database, pub outbox.Publisher, n int) error {
	for range n {
		seq, topic, raw, err := db.oldestPending(ctx)
		if err != nil {
			return err
		}
		var e bus.Event
		if err := e.UnmarshalJSON(raw); err != nil {
			return err
		}
		if err := pub.Publish(ctx, topic, e); err != nil {
			return err
		}
		if err := db.markSent(ctx, seq); err != nil {
			return err
		}
	}
	return nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// database is one outbox under test, made anew for each measurement.
type database interface {
	name() string
	reset(ctx context.Context) error
	close()
	write(ctx context.Context, evs []bus.Event) error
	relay(pub outbox.Publisher, cfg outbox.RelayConfig) (*outbox.Relay, error)
	pending(ctx context.Context) (int64, error)
	oldestPending(ctx context.Context) (seq int64, topic string, event []byte, err error)
	markSent(ctx context.Context, seq int64) error
}

// sqliteDB is a new database file per measurement, opened as the package
// documentation advises.
type sqliteDB struct {
	dir string
	n   int
	db  *sql.DB
	ob  *outbox.Outbox[*sql.Tx]
}

func (s *sqliteDB) name() string { return "sqlite" }

func (s *sqliteDB) reset(ctx context.Context) error {
	s.n++
	db, err := sql.Open("sqlite", "file:"+filepath.Join(s.dir, fmt.Sprintf("bench-%d.db", s.n))+
		"?_pragma=busy_timeout(10000)&_pragma=journal_mode(wal)&_pragma=synchronous(normal)")
	if err != nil {
		return err
	}
	db.SetMaxOpenConns(1)
	s.db = db
	if s.ob, err = outbox.NewSQLite(db, outbox.Options{}); err != nil {
		return err
	}
	return s.ob.Migrate(ctx)
}

func (s *sqliteDB) close() { s.db.Close() }

func (s *sqliteDB) write(ctx context.Context, evs []bus.Event) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := s.ob.Write(ctx, tx, topic, evs...); err != nil {
		return err
	}
	return tx.Commit()
}

func (s *sqliteDB) relay(pub outbox.Publisher, cfg outbox.RelayConfig) (*outbox.Relay, error) {
	return outbox.NewRelay(s.ob, pub, cfg)
}

func (s *sqliteDB) pending(ctx context.Context) (int64, error) { return s.ob.Pending(ctx) }

func (s *sqliteDB) oldestPending(ctx context.Context) (seq int64, topic string, event []byte, err error) {
	err = s.db.QueryRowContext(ctx, `SELECT seq, topic, event FROM `+outbox.DefaultTable+
		` WHERE sent_at IS NULL ORDER BY seq LIMIT 1`).Scan(&seq, &topic, &event)
	return
}

func (s *sqliteDB) markSent(ctx context.Context, seq int64) error {
	_, err := s.db.ExecContext(ctx, `UPDATE `+outbox.DefaultTable+` SET sent_at = ? WHERE seq = ?`, time.Now().UnixNano(), seq)
	return err
}

// postgresDB is a new schema per measurement, dropped after it.
type postgresDB struct {
	url    string
	schema string
	pool   *pgxpool.Pool
	ob     *outbox.Outbox[pgx.Tx]
}

func (p *postgresDB) name() string { return "postgres" }

func (p *postgresDB) reset(ctx context.Context) error {
	pool, err := pgxpool.New(ctx, p.url)
	if err != nil {
		return err
	}
	p.pool = pool
	p.schema = "meridian_outbox_bench_" + strings.ToLower(rand.Text()[:10])
	if _, err := pool.Exec(ctx, `CREATE SCHEMA `+p.schema); err != nil {
		return err
	}
	if p.ob, err = outbox.NewPostgres(pool, outbox.Options{Schema: p.schema}); err != nil {
		return err
	}
	return p.ob.Migrate(ctx)
}

func (p *postgresDB) close() {
	p.pool.Exec(context.Background(), `DROP SCHEMA `+p.schema+` CASCADE`)
	p.pool.Close()
}

func (p *postgresDB) write(ctx context.Context, evs []bus.Event) error {
	tx, err := p.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	if err := p.ob.Write(ctx, tx, topic, evs...); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

func (p *postgresDB) relay(pub outbox.Publisher, cfg outbox.RelayConfig) (*outbox.Relay, error) {
	return outbox.NewRelay(p.ob, pub, cfg)
}

func (p *postgresDB) pending(ctx context.Context) (int64, error) { return p.ob.Pending(ctx) }

func (p *postgresDB) oldestPending(ctx context.Context) (seq int64, topic string, event []byte, err error) {
	err = p.pool.QueryRow(ctx, `SELECT seq, topic, event FROM `+p.schema+`.`+outbox.DefaultTable+
		` WHERE sent_at IS NULL ORDER BY seq LIMIT 1`).Scan(&seq, &topic, &event)
	return
}

func (p *postgresDB) markSent(ctx context.Context, seq int64) error {
	_, err := p.pool.Exec(ctx, `UPDATE `+p.schema+`.`+outbox.DefaultTable+` SET sent_at = now() WHERE seq = $1`, seq)
	return err
}
