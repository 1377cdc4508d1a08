package outbox_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	_ "modernc.org/sqlite"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/bus"
	"github.com/meridian-platform/meridian/bus/inbox"
	busjs "github.com/meridian-platform/meridian/bus/jetstream"
	"github.com/meridian-platform/meridian/bus/outbox"
	"github.com/meridian-platform/meridian/internal/natstest"
)

// postgresEnv names the PostgreSQL the tests use; unset, they skip it.
const postgresEnv = "MERIDIAN_TEST_POSTGRES"

// testDB is one database with an outbox, an inbox and the tables of a toy
// business: orders (the business change beside each event) and effects
// (one row per effect a consumer made, without a unique key, so a double
// effect shows). Its methods hide the dialect's transaction type.
type testDB struct {
	name string
	// loc tells a child process how to open the same database: an SQLite
	// file path, or a PostgreSQL URL and schema.
	loc, schema string

	// migrate migrates the outbox and the inbox (again).
	migrate func(ctx context.Context) error
	// write runs one business transaction: an order row per event plus
	// the events in the outbox, committed or rolled back.
	write func(ctx context.Context, commit bool, topic string, events ...bus.Event) error
	// relay returns a relay of the outbox.
	relay func(pub outbox.Publisher, cfg outbox.RelayConfig) (*outbox.Relay, error)
	// pending counts the outbox's unsent events.
	pending func(ctx context.Context) (int64, error)
	// process runs consumer's effect for e through the inbox.
	process func(ctx context.Context, consumer string, e bus.Event) (dup bool, err error)
	// effects counts effect rows and distinct events among them.
	effects func(ctx context.Context) (total, distinct int64, err error)
	// query runs a one-value query.
	query func(ctx context.Context, q string, args ...any) (int64, error)
}

// eachDB runs f as a subtest per database.
func eachDB(t *testing.T, f func(t *testing.T, d *testDB)) {
	t.Run("sqlite", func(t *testing.T) { f(t, sqliteDB(t)) })
	t.Run("postgres", func(t *testing.T) {
		d := postgresDB(t)
		if d == nil {
			t.Skipf("PostgreSQL: set %s (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable) to run", postgresEnv)
		}
		f(t, d)
	})
}

// sqliteDSN opens path as the package documentation advises.
func sqliteDSN(path string) string {
	return "file:" + path + "?_pragma=busy_timeout(20000)&_pragma=journal_mode(wal)&_pragma=synchronous(normal)"
}

func sqliteDB(t testing.TB) *testDB {
	path := filepath.Join(t.TempDir(), "service.db")
	db := openSQLite(t, path)
	d := sqliteHarness(t, db)
	d.loc = path
	return d
}

func openSQLite(t testing.TB, path string) *sql.DB {
	db, err := sql.Open("sqlite", sqliteDSN(path))
	if err != nil {
		t.Fatal(err)
	}
	// One connection, as the package documentation advises: the relay, the
	// inbox and the writers queue for it in Go instead of sleeping in
	// SQLite's busy handler.
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	for _, q := range []string{
		`CREATE TABLE IF NOT EXISTS orders (id TEXT NOT NULL)`,
		`CREATE TABLE IF NOT EXISTS effects (consumer TEXT NOT NULL, event_id TEXT NOT NULL)`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	return db
}

// newHarness migrates and fills the fields that do not depend on the
// dialect; the caller fills the rest.
func newHarness[Tx any](t testing.TB, name string, ob *outbox.Outbox[Tx], in *inbox.Inbox[Tx], errs ...error) *testDB {
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	d := &testDB{
		name:    name,
		migrate: func(ctx context.Context) error { return errors.Join(ob.Migrate(ctx), in.Migrate(ctx)) },
		relay: func(pub outbox.Publisher, cfg outbox.RelayConfig) (*outbox.Relay, error) {
			return outbox.NewRelay(ob, pub, cfg)
		},
		pending: ob.Pending,
	}
	if err := d.migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return d
}

func sqliteHarness(t testing.TB, db *sql.DB) *testDB {
	ob, err := outbox.NewSQLite(db, outbox.Options{})
	in, err2 := inbox.NewSQLite(db, inbox.Options{})
	d := newHarness(t, "sqlite", ob, in, err, err2)
	d.write = func(ctx context.Context, commit bool, topic string, events ...bus.Event) error {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		for _, e := range events {
			if _, err := tx.ExecContext(ctx, `INSERT INTO orders (id) VALUES (?)`, e.ID); err != nil {
				return err
			}
		}
		if err := ob.Write(ctx, tx, topic, events...); err != nil {
			return err
		}
		if !commit {
			return tx.Rollback()
		}
		return tx.Commit()
	}
	d.process = func(ctx context.Context, consumer string, e bus.Event) (bool, error) {
		return in.Process(ctx, consumer, e.Source, e.ID, func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO effects (consumer, event_id) VALUES (?, ?)`, consumer, e.ID)
			return err
		})
	}
	d.effects = func(ctx context.Context) (total, distinct int64, err error) {
		err = db.QueryRowContext(ctx, `SELECT count(*), count(DISTINCT consumer || '/' || event_id) FROM effects`).Scan(&total, &distinct)
		return
	}
	d.query = func(ctx context.Context, q string, args ...any) (n int64, err error) {
		err = db.QueryRowContext(ctx, strings.ReplaceAll(q, "{schema}", ""), args...).Scan(&n)
		return
	}
	return d
}

// postgresDB returns a harness in a schema of its own, dropped when the
// test ends, or nil when postgresEnv is unset.
func postgresDB(t testing.TB) *testDB {
	url := os.Getenv(postgresEnv)
	if url == "" {
		return nil
	}
	ctx := context.Background()
	schema := "meridian_outbox_test_" + strings.ToLower(rand.Text()[:12])
	admin, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("%s: %v", postgresEnv, err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, `CREATE SCHEMA `+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), url)
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close(context.Background())
		if _, err := c.Exec(context.Background(), `DROP SCHEMA `+schema+` CASCADE`); err != nil {
			t.Error(err)
		}
	})
	pool := openPostgres(t, url, schema)
	d := postgresHarness(t, pool, schema)
	d.loc, d.schema = url, schema
	return d
}

func openPostgres(t testing.TB, url, schema string) *pgxpool.Pool {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	for _, q := range []string{
		`CREATE TABLE IF NOT EXISTS ` + schema + `.orders (id text NOT NULL)`,
		`CREATE TABLE IF NOT EXISTS ` + schema + `.effects (consumer text NOT NULL, event_id text NOT NULL)`,
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	return pool
}

func postgresHarness(t testing.TB, pool *pgxpool.Pool, schema string) *testDB {
	ob, err := outbox.NewPostgres(pool, outbox.Options{Schema: schema})
	in, err2 := inbox.NewPostgres(pool, inbox.Options{Schema: schema})
	d := newHarness(t, "postgres", ob, in, err, err2)
	d.write = func(ctx context.Context, commit bool, topic string, events ...bus.Event) error {
		tx, err := pool.Begin(ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(ctx)
		ids := make([]string, len(events))
		for i, e := range events {
			ids[i] = e.ID
		}
		if _, err := tx.Exec(ctx, `INSERT INTO `+schema+`.orders (id) SELECT unnest($1::text[])`, ids); err != nil {
			return err
		}
		if err := ob.Write(ctx, tx, topic, events...); err != nil {
			return err
		}
		if !commit {
			return tx.Rollback(ctx)
		}
		return tx.Commit(ctx)
	}
	d.process = func(ctx context.Context, consumer string, e bus.Event) (bool, error) {
		return in.Process(ctx, consumer, e.Source, e.ID, func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO `+schema+`.effects (consumer, event_id) VALUES ($1, $2)`, consumer, e.ID)
			return err
		})
	}
	d.effects = func(ctx context.Context) (total, distinct int64, err error) {
		err = pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT (consumer, event_id)) FROM `+schema+`.effects`).Scan(&total, &distinct)
		return
	}
	d.query = func(ctx context.Context, q string, args ...any) (n int64, err error) {
		err = pool.QueryRow(ctx, strings.ReplaceAll(q, "{schema}", schema+"."), args...).Scan(&n)
		return
	}
	return d
}

// events returns n events with ids prefix-0 … prefix-(n-1).
func events(prefix string, n int) []bus.Event {
	out := make([]bus.Event, n)
	for i := range out {
		out[i] = bus.Event{
			ID: fmt.Sprintf("%s-%d", prefix, i), Source: "/test/orders", Type: "com.example.order.placed",
			DataContentType: "application/json", Data: []byte(fmt.Sprintf(`{"n":%d}`, i)),
		}
	}
	return out
}

// broker is a real JetStream, embedded, with the bus/jetstream engine on
// it and the topic the tests publish to.
type broker struct {
	url string
	be  *busjs.Backend
}

func startBroker(t testing.TB) *broker {
	srv := natstest.Start(t)
	be, err := busjs.New(srv.Connect(t), busjs.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := be.EnsureTopic(ctx, bus.TopicConfig{Name: topic, DedupWindow: 2 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	return &broker{url: srv.ClientURL(), be: be}
}

// publisher is the engine as the relay's Publisher. With dedup the engine
// drops a re-sent event (same source and id within the window); without,
// every re-send reaches the topic, for tests of what the inbox does with
// duplicates.
func (b *broker) publisher(dedup bool) outbox.Publisher {
	return enginePublisher(b.be, dedup)
}

func enginePublisher(be bus.Publisher, dedup bool) outbox.Publisher {
	if dedup {
		return outbox.FromBus(be)
	}
	return outbox.PublisherFunc(func(ctx context.Context, topic string, e bus.Event) error {
		_, err := be.Publish(ctx, topic, e, bus.WithoutDedup())
		return err
	})
}

// streamed reads the topic from its start, in order.
func (b *broker) streamed(t testing.TB) []bus.Event {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, err := b.be.Topic(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var out []bus.Event
	all := make(chan struct{})
	sub, err := b.be.Subscribe(ctx, topic, "", func(_ context.Context, d *bus.Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		if out = append(out, d.Event); len(out) == int(info.Messages) {
			close(all)
		}
		return nil
	}, bus.SubscribeOptions{StartAt: bus.StartAt{First: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if info.Messages > 0 {
		select {
		case <-all:
		case <-ctx.Done():
			t.Fatalf("read %d of the topic's %d events", len(out), info.Messages)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	return append([]bus.Event(nil), out...)
}

// counts are a consumer group's running totals.
type counts struct {
	deliveries, dups, lostAcks atomic.Int64
}

// consumeAll subscribes a consumer group whose handler applies each event
// through the inbox, running workers handlers at once, until stop is
// called. A delivery for which loseAck says so fails after its effect (a
// consumer that made its effect and died before acknowledging), which
// brings a redelivery.
func consumeAll(t testing.TB, b *broker, d *testDB, group string, workers int, c *counts, loseAck func(delivery int64) bool) (stop func()) {
	h := func(ctx context.Context, dl *bus.Delivery) error {
		dup, err := d.process(ctx, group, dl.Event)
		if err != nil {
			t.Error(err)
			return err
		}
		n := c.deliveries.Add(1)
		if dup {
			c.dups.Add(1)
		}
		if loseAck != nil && loseAck(n) {
			c.lostAcks.Add(1)
			return errors.New("ack lost")
		}
		return nil
	}
	sub, err := b.be.Subscribe(context.Background(), topic, group, h, bus.SubscribeOptions{
		Concurrency: workers, MaxDeliveries: -1, Batch: 200, MaxInFlight: 5000, AckWait: time.Minute,
		RetryPolicy: bus.RetryPolicy{BackOff: []time.Duration{10 * time.Millisecond}}, StartAt: bus.StartAt{First: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			if err := sub.Close(); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(stop)
	return stop
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// drained waits until the outbox has nothing pending.
func drained(t testing.TB, d *testDB, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, "the outbox to drain", func() (bool, error) {
		n, err := d.pending(context.Background())
		return n == 0, err
	})
}

// run starts r in a goroutine the test owns; the returned stop cancels it
// and waits for Run to return. It is also called at cleanup.
func run(t testing.TB, r *outbox.Relay) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

// relayAll runs a relay through pub until the outbox is drained, and stops
// it.
func relayAll(t testing.TB, d *testDB, pub outbox.Publisher, cfg outbox.RelayConfig) {
	t.Helper()
	r, err := d.relay(pub, cfg)
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, r)
	drained(t, d, 20*time.Second)
	stop()
}

// fastRelay polls often, so that tests do not wait on idle backoff.
func fastRelay() outbox.RelayConfig {
	return outbox.RelayConfig{PollInterval: ms(5), MaxPollInterval: ms(50), RetryBackoff: ms(5), MaxRetryBackoff: ms(100), LeaseTTL: ms(1000)}
}

func ms(n int) meridian.Duration { return meridian.Duration(time.Duration(n) * time.Millisecond) }
