package outbox_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/bus"
	"github.com/meridian-platform/meridian/bus/outbox"
)

const topic = "orders.placed"

func TestRolledBackEventsAreNeverPublished(t *testing.T) {
	eachDB(t, func(t *testing.T, d *testDB) {
		ctx := context.Background()
		b := startBroker(t)
		if err := d.write(ctx, false, topic, events("rolled-back", 50)...); err != nil {
			t.Fatal(err)
		}
		kept := events("kept", 50)
		if err := d.write(ctx, true, topic, kept...); err != nil {
			t.Fatal(err)
		}
		if err := d.write(ctx, false, topic, events("rolled-back-late", 50)...); err != nil {
			t.Fatal(err)
		}
		relayAll(t, d, b.publisher(false), fastRelay())
		got := b.streamed(t)
		if len(got) != len(kept) {
			t.Fatalf("published %d events, want the %d committed ones", len(got), len(kept))
		}
		for i, e := range got {
			if e.ID != kept[i].ID {
				t.Fatalf("event %d is %s, want %s", i, e.ID, kept[i].ID)
			}
		}
	})
}

// TestOrderIsKept writes events in many transactions and relays them with
// several relays at once and a small batch, so that ownership passes
// between relays, to a stream without dedup: the stream must hold each
// event once, in write order.
func TestOrderIsKept(t *testing.T) {
	eachDB(t, func(t *testing.T, d *testDB) {
		ctx := context.Background()
		b := startBroker(t)
		var want []bus.Event
		for tx := range 100 {
			evs := events(fmt.Sprintf("tx%03d", tx), 1+tx%7)
			if err := d.write(ctx, true, topic, evs...); err != nil {
				t.Fatal(err)
			}
			want = append(want, evs...)
		}
		cfg := fastRelay()
		cfg.BatchSize = 16
		var stops []func()
		for range 3 {
			r, err := d.relay(b.publisher(false), cfg)
			if err != nil {
				t.Fatal(err)
			}
			stops = append(stops, run(t, r))
		}
		// More events while the relays run.
		for tx := range 20 {
			evs := events(fmt.Sprintf("live%03d", tx), 5)
			if err := d.write(ctx, true, topic, evs...); err != nil {
				t.Fatal(err)
			}
			want = append(want, evs...)
		}
		drained(t, d, 20*time.Second)
		for _, stop := range stops {
			stop()
		}
		got := b.streamed(t)
		if len(got) != len(want) {
			t.Fatalf("stream holds %d events, want %d (each once)", len(got), len(want))
		}
		for i := range want {
			if got[i].ID != want[i].ID {
				t.Fatalf("stream position %d holds %s, want %s", i, got[i].ID, want[i].ID)
			}
			if string(got[i].Data) != string(want[i].Data) || got[i].Type != want[i].Type || got[i].Time.IsZero() {
				t.Fatalf("event %s changed on its way: %+v", want[i].ID, got[i])
			}
		}
	})
}

// TestRelayKilledBetweenPublishAndMark kills a relay process right after
// it published part of a batch and before it marked anything sent. A new
// relay publishes the whole batch again; with broker dedup off, the
// duplicates reach the consumer, whose inbox runs the effect once per
// event.
func TestRelayKilledBetweenPublishAndMark(t *testing.T) {
	eachDB(t, func(t *testing.T, d *testDB) {
		ctx := context.Background()
		b := startBroker(t)
		const n, kill = 20, 7
		if err := d.write(ctx, true, topic, events("crash", n)...); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"="+d.name, childLocEnv+"="+d.loc, childSchemaEnv+"="+d.schema,
			childNATSEnv+"="+b.url, childKillEnv+"="+strconv.Itoa(kill))
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || !exit.Sys().(syscall.WaitStatus).Signaled() || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("child relay: %v, want killed by SIGKILL; output:\n%s", err, out)
		}
		if p, err := d.pending(ctx); err != nil || p != n {
			t.Fatalf("after the kill %d events pending (%v), want all %d: none was marked sent", p, err, n)
		}
		if got := len(b.streamed(t)); got != kill {
			t.Fatalf("the killed relay published %d events, want %d", got, kill)
		}

		relayAll(t, d, b.publisher(false), fastRelay())
		if got := len(b.streamed(t)); got != kill+n {
			t.Fatalf("stream holds %d events, want %d: the restarted relay re-publishes the unmarked batch", got, kill+n)
		}

		var c counts
		stop := consumeAll(t, b, d, "billing", 1, &c, nil)
		waitFor(t, 10*time.Second, "every copy to be delivered", func() (bool, error) {
			return c.deliveries.Load() >= kill+n, nil
		})
		stop()
		total, distinct, err := d.effects(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if total != n || distinct != n {
			t.Fatalf("%d effects (%d distinct), want exactly %d", total, distinct, n)
		}
		if c.deliveries.Load() != kill+n || c.dups.Load() != kill {
			t.Fatalf("%d deliveries with %d duplicates suppressed, want %d and %d", c.deliveries.Load(), c.dups.Load(), kill+n, kill)
		}
	})
}

// ackLostPublisher stores the event and then reports a failure, as a
// publisher whose acknowledgement was lost does: the relay must publish
// the event again.
type ackLostPublisher struct {
	next  outbox.Publisher
	every int
	n     atomic.Int64
}

func (p *ackLostPublisher) Publish(ctx context.Context, topic string, e bus.Event) error {
	if err := p.next.Publish(ctx, topic, e); err != nil {
		return err
	}
	if p.n.Add(1)%int64(p.every) == 0 {
		return errors.New("ack lost")
	}
	return nil
}

func TestLostPublishAckIsRepublished(t *testing.T) {
	eachDB(t, func(t *testing.T, d *testDB) {
		ctx := context.Background()
		b := startBroker(t)
		const n = 100
		if err := d.write(ctx, true, topic, events("lost-ack", n)...); err != nil {
			t.Fatal(err)
		}
		var errs atomic.Int64
		cfg := fastRelay()
		cfg.Hooks.Error = func(error) { errs.Add(1) }
		pub := &ackLostPublisher{next: b.publisher(false), every: 10}
		relayAll(t, d, pub, cfg)
		got := b.streamed(t)
		lost := int(errs.Load())
		if lost == 0 || len(got) != n+lost {
			t.Fatalf("stream holds %d events after %d lost acks, want %d", len(got), lost, n+lost)
		}
		// The re-sent event follows its first copy at once: order holds.
		seen := map[string]bool{}
		next := 0
		for _, e := range got {
			if seen[e.ID] {
				continue
			}
			seen[e.ID] = true
			if want := fmt.Sprintf("lost-ack-%d", next); e.ID != want {
				t.Fatalf("first copies out of order: %s where %s was due", e.ID, want)
			}
			next++
		}
	})
}

func TestSentRowsAreCleanedUpAfterRetention(t *testing.T) {
	eachDB(t, func(t *testing.T, d *testDB) {
		ctx := context.Background()
		b := startBroker(t)
		if err := d.write(ctx, true, topic, events("old", 30)...); err != nil {
			t.Fatal(err)
		}
		var cleaned atomic.Int64
		cfg := fastRelay()
		cfg.Retention = ms(1)
		cfg.CleanupInterval = ms(20)
		cfg.Hooks.Cleaned = func(n int64) { cleaned.Add(n) }
		r, err := d.relay(b.publisher(false), cfg)
		if err != nil {
			t.Fatal(err)
		}
		stop := run(t, r)
		waitFor(t, 10*time.Second, "sent rows to be deleted", func() (bool, error) {
			n, err := d.query(ctx, `SELECT count(*) FROM {schema}meridian_outbox`)
			return n == 0, err
		})
		stop()
		if cleaned.Load() != 30 {
			t.Fatalf("Cleaned hook counted %d, want 30", cleaned.Load())
		}
		// A relay that is not running cleans nothing: pending rows stay.
		if err := d.write(ctx, true, topic, events("new", 3)...); err != nil {
			t.Fatal(err)
		}
		if n, err := d.pending(ctx); err != nil || n != 3 {
			t.Fatalf("pending = %d (%v), want 3", n, err)
		}
	})
}

// TestNotificationWakesIdleRelay: on PostgreSQL a commit notifies the
// relays, so an idle relay publishes at once although it polls only every
// minute.
func TestNotificationWakesIdleRelay(t *testing.T) {
	d := postgresDB(t)
	if d == nil {
		t.Skipf("PostgreSQL: set %s to run", postgresEnv)
	}
	wakesIdleRelay(t, d, nil)
}

// TestWakeWakesIdleRelay: on SQLite, Wake after a commit does what the
// notification does on PostgreSQL.
func TestWakeWakesIdleRelay(t *testing.T) {
	wakesIdleRelay(t, sqliteDB(t), (*outbox.Relay).Wake)
}

// wakesIdleRelay runs a relay that polls every minute, writes an event and
// calls wake, if any: the event must be published within seconds.
func wakesIdleRelay(t *testing.T, d *testDB, wake func(*outbox.Relay)) {
	ctx := context.Background()
	b := startBroker(t)
	minute := meridian.Duration(time.Minute)
	r, err := d.relay(b.publisher(false), outbox.RelayConfig{PollInterval: minute, MaxPollInterval: minute, LeaseTTL: 60 * minute})
	if err != nil {
		t.Fatal(err)
	}
	run(t, r)
	time.Sleep(300 * time.Millisecond) // the first, empty poll is over; a listener is up
	start := time.Now()
	if err := d.write(ctx, true, topic, events("wake", 1)...); err != nil {
		t.Fatal(err)
	}
	if wake != nil {
		wake(r)
	}
	drained(t, d, 5*time.Second)
	t.Logf("published %v after commit", time.Since(start))
}

func TestWriteRejectsInvalidEventsAndWritesNothing(t *testing.T) {
	eachDB(t, func(t *testing.T, d *testDB) {
		ctx := context.Background()
		good := events("good", 1)[0]
		for _, c := range []struct {
			name, topic string
			e           bus.Event
			field       string
		}{
			{"missing id", topic, bus.Event{Source: "/s", Type: "t"}, "id"},
			{"missing type", topic, bus.Event{ID: "1", Source: "/s"}, "type"},
			{"bad json data", topic, bus.Event{ID: "1", Source: "/s", Type: "t", Data: []byte("{")}, "data"},
			{"bad topic", "orders placed", good, "topic"},
		} {
			t.Run(c.name, func(t *testing.T) {
				err := d.write(ctx, true, c.topic, good, c.e)
				var me *meridian.Error
				if !errors.As(err, &me) || me.Code != meridian.CodeInvalid || me.Field != c.field {
					t.Fatalf("Write = %v, want an invalid error naming %q", err, c.field)
				}
			})
		}
		if n, err := d.pending(ctx); err != nil || n != 0 {
			t.Fatalf("pending = %d (%v), want 0: a failed Write fails the business transaction", n, err)
		}
	})
}

func TestRelayConfigNamesTheField(t *testing.T) {
	for _, c := range []struct {
		name  string
		cfg   outbox.RelayConfig
		field string
	}{
		{"batch too large", outbox.RelayConfig{BatchSize: 10_001}, "batch_size"},
		{"negative batch", outbox.RelayConfig{BatchSize: -1}, "batch_size"},
		{"negative poll", outbox.RelayConfig{PollInterval: -1}, "poll_interval"},
		{"max poll below poll", outbox.RelayConfig{PollInterval: ms(100), MaxPollInterval: ms(50)}, "max_poll_interval"},
		{"max backoff below backoff", outbox.RelayConfig{RetryBackoff: ms(100), MaxRetryBackoff: ms(50)}, "max_retry_backoff"},
		{"negative retention", outbox.RelayConfig{Retention: -1}, "retention"},
		{"lease too short", outbox.RelayConfig{MaxPollInterval: meridian.Duration(time.Second), LeaseTTL: meridian.Duration(time.Second)}, "lease_ttl"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := c.cfg.Normalize()
			var me *meridian.Error
			if !errors.As(err, &me) || me.Field != c.field {
				t.Fatalf("Normalize = %v, want an error naming %q", err, c.field)
			}
		})
	}
	var cfg outbox.RelayConfig
	if err := cfg.Normalize(); err != nil || cfg.BatchSize != outbox.DefaultBatchSize || cfg.PollInterval.D() != outbox.DefaultPollInterval {
		t.Fatalf("zero config: %v, %+v", err, cfg)
	}
	if _, err := outbox.NewSQLite(nil, outbox.Options{}); err == nil {
		t.Fatal("NewSQLite(nil) succeeded")
	}
	db, err := sql.Open("sqlite", ":memory:")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, table := range []string{"Outbox", "out-box", "1outbox", `x"; DROP TABLE y; --`} {
		var me *meridian.Error
		if _, err := outbox.NewSQLite(db, outbox.Options{Table: table}); !errors.As(err, &me) || me.Field != "table" {
			t.Fatalf("table %q: %v, want an error naming the table", table, err)
		}
	}
}

// TestMigrateIsIdempotentAndConcurrent runs Migrate from several
// goroutines at once, as instances starting together do.
func TestMigrateIsIdempotentAndConcurrent(t *testing.T) {
	eachDB(t, func(t *testing.T, d *testDB) {
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for range 8 {
			wg.Go(func() {
				// The harness migrated already; migrating again must be
				// harmless, also concurrently.
				errs <- d.migrate(context.Background())
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	})
}

// TestRunStopsWhilePublisherBlocks: a publisher that never returns does
// not keep Run from returning when ctx ends.
func TestRunStopsWhilePublisherBlocks(t *testing.T) {
	eachDB(t, func(t *testing.T, d *testDB) {
		ctx := context.Background()
		if err := d.write(ctx, true, topic, events("stuck", 3)...); err != nil {
			t.Fatal(err)
		}
		entered := make(chan struct{}, 1)
		pub := outbox.PublisherFunc(func(ctx context.Context, _ string, _ bus.Event) error {
			select {
			case entered <- struct{}{}:
			default:
			}
			<-ctx.Done()
			return ctx.Err()
		})
		r, err := d.relay(pub, fastRelay())
		if err != nil {
			t.Fatal(err)
		}
		stop := run(t, r)
		<-entered
		stopped := make(chan struct{})
		go func() { stop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not return after cancel")
		}
		if n, err := d.pending(ctx); err != nil || n != 3 {
			t.Fatalf("pending = %d (%v), want 3", n, err)
		}
	})
}
