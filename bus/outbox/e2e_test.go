package outbox_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// TestHundredThousandEventsEndToEnd sends 100,000 events (10,000 with
// -short) from business transactions through the outbox, a relay and a
// real JetStream (the bus/jetstream engine on an embedded server) to a
// consumer group that applies them through the inbox,
// while things go wrong on the way: the relay is stopped and replaced
// twice, one publish acknowledgement in 2,500 is lost (the relay
// re-publishes; the engine drops the copy by its source and id), and the
// consumer's handler fails one delivery in 1,000 after making its effect,
// as if its ack were lost (the engine redelivers; the inbox suppresses the
// copy). Every event's effect must
// happen exactly once.
func TestHundredThousandEventsEndToEnd(t *testing.T) {
	n := 100_000
	if testing.Short() {
		n = 10_000
	}
	eachDB(t, func(t *testing.T, d *testDB) {
		ctx := context.Background()
		b := startBroker(t)
		start := time.Now()

		// The consumer group: one handler at a time on SQLite, whose one
		// writer would only make more queue; four on PostgreSQL.
		workers := 1
		if d.name == "postgres" {
			workers = 4
		}
		var c counts
		stopConsumers := consumeAll(t, b, d, "billing", workers, &c, func(delivery int64) bool { return delivery%1000 == 0 })

		// Writers: 1,000-event transactions, alongside everything else.
		const perTx = 1000
		writeErr := make(chan error, 1)
		go func() {
			for i := 0; i < n; i += perTx {
				if err := d.write(ctx, true, topic, events(fmt.Sprintf("e2e-%d", i/perTx), min(perTx, n-i))...); err != nil {
					writeErr <- err
					return
				}
			}
			writeErr <- nil
		}()

		// Relays, one after another, each stopped after a third of the
		// events.
		pub := &ackLostPublisher{next: b.publisher(true), every: 2500}
		var published atomic.Int64
		cfg := fastRelay()
		cfg.Hooks.Published = func(k int, _ time.Duration) { published.Add(int64(k)) }
		for r := range 3 {
			relay, err := d.relay(pub, cfg)
			if err != nil {
				t.Fatal(err)
			}
			stop := run(t, relay)
			if r < 2 {
				waitFor(t, 5*time.Minute, fmt.Sprintf("relay %d to publish its share", r+1), func() (bool, error) {
					return published.Load() >= int64(n*(r+1)/3), nil
				})
				stop()
			}
		}
		if err := <-writeErr; err != nil {
			t.Fatal(err)
		}
		drained(t, d, 5*time.Minute)
		relayed := time.Since(start)

		// Every delivery that was not a duplicate made one effect; wait for
		// n of them and for the redeliveries of the acks lost last. (The
		// counters, not the effects table: polling a count over it would
		// compete with the consumer for SQLite.)
		waitFor(t, 5*time.Minute, "every effect and the redeliveries of lost acks", func() (bool, error) {
			return c.deliveries.Load()-c.dups.Load() >= int64(n) && c.dups.Load() >= c.lostAcks.Load(), nil
		})
		stopConsumers()

		total, distinct, err := d.effects(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if total != int64(n) || distinct != int64(n) {
			t.Fatalf("%d effects (%d distinct), want exactly %d", total, distinct, n)
		}
		info, err := b.be.Topic(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		if info.Messages != uint64(n) {
			t.Fatalf("topic holds %d events, want %d: the engine dedups the relay's re-sends", info.Messages, n)
		}
		if c.lostAcks.Load() == 0 || c.dups.Load() < c.lostAcks.Load() {
			t.Fatalf("%d acks lost, %d duplicates suppressed: every lost ack is a redelivery the inbox suppresses", c.lostAcks.Load(), c.dups.Load())
		}
		t.Logf("%d events: relayed in %v, consumed in %v; %d deliveries, %d duplicates suppressed by the inbox, %d publish acks lost",
			n, relayed.Round(time.Millisecond), time.Since(start).Round(time.Millisecond), c.deliveries.Load(), c.dups.Load(), pub.n.Load()/2500)
	})
}
