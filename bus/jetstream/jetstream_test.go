package jetstream_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	njs "github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/bus"
	"github.com/meridian-platform/meridian/bus/jetstream"
	"github.com/meridian-platform/meridian/internal/natstest"
	"github.com/meridian-platform/meridian/internal/testwait"
)

// idSet is an idempotent consumer's memory: the ids it has handled.
type idSet struct {
	mu    sync.Mutex
	ids   map[string]struct{}
	calls int
}

func newIDSet(n int) *idSet { return &idSet{ids: make(map[string]struct{}, n)} }

func (s *idSet) add(id string) {
	s.mu.Lock()
	s.ids[id] = struct{}{}
	s.calls++
	s.mu.Unlock()
}

func (s *idSet) len() (distinct, calls int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ids), s.calls
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	testwait.Until(t, d, what, cond)
}

// waitProgress waits until count reaches n, giving up after limit in all
// or after stall without any progress.
func waitProgress(limit, stall time.Duration, count func() int, n int) bool {
	deadline := time.Now().Add(limit)
	last, lastAt := count(), time.Now()
	for last < n {
		now := time.Now()
		if now.After(deadline) || now.Sub(lastAt) > stall {
			return false
		}
		time.Sleep(10 * time.Millisecond)
		if c := count(); c != last {
			last, lastAt = c, time.Now()
		}
	}
	return true
}

// diagnoseMissing logs what a member that timed out waiting for every
// event is missing, and where those events are: the group's consumer, the
// history bucket, the dead-letter topic.
func diagnoseMissing(t *testing.T, srv *natstest.Server, topic, group string, seen *idSet, n int) {
	t.Helper()
	var missing []string
	seen.mu.Lock()
	for i := range n {
		if id := fmt.Sprintf("ev-%d", i); !has(seen.ids, id) {
			missing = append(missing, id)
		}
	}
	seen.mu.Unlock()
	t.Logf("%d missing: %v", len(missing), missing[:min(len(missing), 50)])
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Logf("diagnose: %v", err)
		return
	}
	defer nc.Close()
	js, _ := njs.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream := "BUS_" + strings.ReplaceAll(topic, ".", "_")
	if c, err := js.Consumer(ctx, stream, group); err != nil {
		t.Logf("consumer: %v", err)
	} else {
		ci := c.CachedInfo()
		t.Logf("consumer %s: num_pending %d, num_ack_pending %d, num_redelivered %d, num_waiting %d, delivered %+v, ack_floor %+v, ack_wait %s, backoff %v, max_deliver %d",
			ci.Name, ci.NumPending, ci.NumAckPending, ci.NumRedelivered, ci.NumWaiting, ci.Delivered, ci.AckFloor, ci.Config.AckWait, ci.Config.BackOff, ci.Config.MaxDeliver)
	}
	lister := js.ListStreams(ctx)
	for si := range lister.Info() {
		t.Logf("stream %s: %d msgs", si.Config.Name, si.State.Msgs)
	}
	if kv, err := js.KeyValue(ctx, "BUS_HISTORY"); err == nil {
		if keys, err := kv.Keys(ctx); err == nil {
			t.Logf("history keys: %d %v", len(keys), keys[:min(len(keys), 20)])
		}
	}
}

func has(m map[string]struct{}, k string) bool { _, ok := m[k]; return ok }

func publishAll(t *testing.T, b *jetstream.Backend, topic string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range n {
		e := bus.Event{ID: fmt.Sprintf("ev-%d", i), Source: "/test", Type: "dev.meridian.test", Data: fmt.Appendf(nil, `{"i":%d}`, i)}
		if err := b.PublishAsync(ctx, topic, e, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

// A member whose connection drops with a batch in hand loses nothing: the
// events it had fetched and not acknowledged go to the other member once
// their ack wait passes.
func TestConnectionDroppedMidBatchLosesNothing(t *testing.T) {
	srv := natstest.Start(t)
	pub, _ := open(t, srv)
	victim, victimConn := open(t, srv)
	survivor, _ := open(t, srv)
	const topic, n = "orders.killed", 3000
	if _, err := pub.EnsureTopic(context.Background(), bus.TopicConfig{Name: topic}); err != nil {
		t.Fatal(err)
	}
	publishAll(t, pub, topic, n) // first, so the victim's batches are full
	seen := newIDSet(n)
	opts := bus.SubscribeOptions{AckWait: time.Second, Batch: 200, StartAt: bus.StartAt{First: true}}
	var victimHandled atomic.Int32
	vs, err := victim.Subscribe(context.Background(), topic, "workers", func(ctx context.Context, d *bus.Delivery) error {
		if victimConn.IsClosed() {
			// Events already fetched still reach the handler, but their
			// acks cannot: they count as handled only by the survivor.
			return errors.New("connection gone")
		}
		seen.add(d.Event.ID)
		time.Sleep(200 * time.Microsecond) // slower than delivery, so fetched events queue up
		if victimHandled.Add(1) == 300 {
			victimConn.Close() // the connection drops with most of a batch unacknowledged
		}
		return nil
	}, opts)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-vs.Done():
		if err := vs.Err(); err == nil || !strings.Contains(err.Error(), "closed") {
			t.Fatalf("victim stopped with %v, want a connection error", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("victim did not stop when its connection dropped")
	}
	var redelivered atomic.Int32
	ss, err := survivor.Subscribe(context.Background(), topic, "workers", func(ctx context.Context, d *bus.Delivery) error {
		if d.Attempt > 1 {
			redelivered.Add(1)
		}
		seen.add(d.Event.ID)
		return nil
	}, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	// The victim's events come back one AckWait after their delivery; the
	// rest is the survivor's pace, which a loaded CI machine (every package
	// testing at once under -race) slows down many times over: a fixed 30s
	// was not enough there. Wait while events keep arriving, with a cap
	// well beyond nats.go's own recovery of a lost pull (two missed
	// heartbeats, 30s); when it runs out, say what is missing and where.
	start := time.Now()
	if !waitProgress(2*time.Minute, 45*time.Second, func() int { d, _ := seen.len(); return d }, n) {
		diagnoseMissing(t, srv, topic, "workers", seen, n)
		t.Fatalf("timed out after %s waiting for every event handled", time.Since(start).Round(time.Millisecond))
	}
	d, calls := seen.len()
	t.Logf("%d events, %d handler calls in %s; the victim handled %d, the survivor got %d it had fetched", d, calls, time.Since(start).Round(time.Millisecond), victimHandled.Load(), redelivered.Load())
	if redelivered.Load() == 0 {
		t.Fatal("the victim had no batch in hand: nothing was redelivered")
	}
}

// A member process killed with SIGKILL mid-batch loses nothing either.
func TestProcessKilledMidBatchLosesNothing(t *testing.T) {
	if url := os.Getenv("BUS_TEST_CHILD_URL"); url != "" {
		childConsumer(url)
		return
	}
	srv := natstest.Start(t)
	pub, _ := open(t, srv)
	const topic, n = "orders.sigkill", 3000
	if _, err := pub.EnsureTopic(context.Background(), bus.TopicConfig{Name: topic}); err != nil {
		t.Fatal(err)
	}
	publishAll(t, pub, topic, n)

	cmd := exec.Command(os.Args[0], "-test.run=^TestProcessKilledMidBatchLosesNothing$")
	cmd.Env = append(os.Environ(), "BUS_TEST_CHILD_URL="+srv.ClientURL())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	seen := newIDSet(n)
	sc := bufio.NewScanner(out)
	childHandled := 0
	for sc.Scan() {
		if id, ok := strings.CutPrefix(sc.Text(), "handled "); ok {
			seen.add(id)
			if childHandled++; childHandled == 500 {
				cmd.Process.Kill() // mid-batch: it has fetched more than it has handled
			}
		}
	}
	cmd.Wait()
	if childHandled < 500 || childHandled >= n {
		t.Fatalf("child handled %d events before it died", childHandled)
	}

	survivor, _ := open(t, srv)
	var redelivered atomic.Int32
	ss, err := survivor.Subscribe(context.Background(), topic, "workers", func(ctx context.Context, d *bus.Delivery) error {
		if d.Attempt > 1 {
			redelivered.Add(1)
		}
		seen.add(d.Event.ID)
		return nil
	}, bus.SubscribeOptions{AckWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	waitUntil(t, 30*time.Second, "every event handled", func() bool { d, _ := seen.len(); return d == n })
	d, calls := seen.len()
	t.Logf("%d events, %d handler calls; the child handled %d before SIGKILL, the survivor got %d it had fetched", d, calls, childHandled, redelivered.Load())
	if redelivered.Load() == 0 {
		t.Fatal("the child had no batch in hand: nothing was redelivered")
	}
}

// childConsumer is the member the test above kills: it reports each event
// before acknowledging it, slowly enough to be killed with a batch in hand.
func childConsumer(url string) {
	nc, err := nats.Connect(url)
	if err != nil {
		os.Exit(2)
	}
	b, err := jetstream.New(nc, jetstream.Config{})
	if err != nil {
		os.Exit(2)
	}
	w := bufio.NewWriter(os.Stdout)
	var mu sync.Mutex
	_, err = b.Subscribe(context.Background(), "orders.sigkill", "workers", func(ctx context.Context, d *bus.Delivery) error {
		mu.Lock()
		fmt.Fprintf(w, "handled %s\n", d.Event.ID)
		w.Flush()
		mu.Unlock()
		time.Sleep(200 * time.Microsecond)
		return nil
	}, bus.SubscribeOptions{AckWait: time.Second, Batch: 200, StartAt: bus.StartAt{First: true}})
	if err != nil {
		os.Exit(2)
	}
	select {} // until killed
}

// A poison event's history spans members: one fails it, one dies holding
// it, one fails it again and dead-letters it with all three attempts.
func TestPoisonHistoryAcrossMembers(t *testing.T) {
	srv := natstest.Start(t)
	a, _ := open(t, srv)
	dying, dyingConn := open(t, srv)
	c, _ := open(t, srv)
	const topic = "payments"
	ctx := context.Background()
	if _, err := a.EnsureTopic(ctx, bus.TopicConfig{Name: topic}); err != nil {
		t.Fatal(err)
	}
	opts := bus.SubscribeOptions{MaxDeliveries: 3, AckWait: 500 * time.Millisecond, RetryPolicy: bus.RetryPolicy{BackOff: []time.Duration{50 * time.Millisecond}}}
	// One member at a time, so the script knows who takes each attempt.
	var attempts atomic.Int32
	member := func(b *jetstream.Backend, h func(*bus.Delivery) error) bus.Subscription {
		s, err := b.Subscribe(ctx, topic, "billing", func(ctx context.Context, d *bus.Delivery) error {
			attempts.Add(1)
			return h(d)
		}, opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	declined := func(d *bus.Delivery) error { return fmt.Errorf("card declined (attempt %d)", d.Attempt) }
	sa := member(a, declined)
	if _, err := a.Publish(ctx, topic, bus.Event{ID: "p-1", Source: "/pay", Type: "payment.requested"}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the first attempt", func() bool { return attempts.Load() == 1 })
	sa.Close() // waits for the attempt's outcome to be recorded
	member(dying, func(d *bus.Delivery) error {
		dyingConn.Close() // dies with the event in hand: no outcome
		return nil
	})
	waitUntil(t, 10*time.Second, "the second attempt", func() bool { return attempts.Load() == 2 })
	sc := member(c, declined)
	var dls []bus.DeadLetter
	waitUntil(t, 20*time.Second, "the dead letter", func() bool {
		var err error
		dls, err = c.DeadLetters(ctx, topic, 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		return len(dls) == 1
	})
	dl := dls[0]
	if dl.Deliveries != 3 || len(dl.Attempts) != 3 || dl.Attempts[0].Error != "card declined (attempt 1)" ||
		dl.Attempts[1].Error != bus.NoOutcome || dl.Attempts[2].Error != "card declined (attempt 3)" || dl.Reason != "card declined (attempt 3)" {
		t.Fatalf("dead letter %+v", dl)
	}
	// Replay it to the group, now that the card works (c steps aside).
	sc.Close()
	got := make(chan *bus.Delivery, 1)
	d, _ := open(t, srv)
	s, err := d.Subscribe(ctx, topic, "billing", func(ctx context.Context, dd *bus.Delivery) error { got <- dd; return nil }, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := d.ReplayDeadLetter(ctx, topic, dl.Sequence, bus.ReplayOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case dd := <-got:
		if dd.Event.ID != "p-1" {
			t.Fatalf("replayed %s", dd.Event.ID)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("replayed event not delivered")
	}
}

// 100,000 events end to end through two members: every one handled, none
// twice after the idempotent consumer (a set).
func TestHundredThousandEvents(t *testing.T) {
	if testing.Short() {
		t.Skip("100k events")
	}
	srv := natstest.Start(t)
	pub, _ := open(t, srv)
	const topic, n = "load", 100_000
	ctx := context.Background()
	if _, err := pub.EnsureTopic(ctx, bus.TopicConfig{Name: topic}); err != nil {
		t.Fatal(err)
	}
	seen := newIDSet(n)
	for range 2 {
		b, _ := open(t, srv)
		s, err := b.Subscribe(ctx, topic, "sink", func(ctx context.Context, d *bus.Delivery) error {
			seen.add(d.Event.ID)
			return nil
		}, bus.SubscribeOptions{Batch: 500, MaxInFlight: 5000})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
	}
	start := time.Now()
	publishAll(t, pub, topic, n)
	published := time.Since(start)
	waitUntil(t, 60*time.Second, "every event", func() bool { d, _ := seen.len(); return d == n })
	d, calls := seen.len()
	t.Logf("%d events: published in %s, all handled in %s; %d handler calls", d, published.Round(time.Millisecond), time.Since(start).Round(time.Millisecond), calls)
	info, err := pub.Topic(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if info.Messages != n {
		t.Fatalf("topic holds %d events, want %d", info.Messages, n)
	}
}

// With NoAutoCreate, topics must be made first; dead-letter topics are
// still made when needed, or a poison event could never leave its group.
func TestNoAutoCreate(t *testing.T) {
	srv := natstest.Start(t)
	nc := srv.Connect(t)
	b, err := jetstream.New(nc, jetstream.Config{NoAutoCreate: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	ctx := context.Background()
	e := bus.Event{ID: "1", Source: "/s", Type: "t"}
	if _, err := b.Publish(ctx, "strict", e); !meridian.IsCode(err, meridian.CodeNotFound) {
		t.Fatalf("publish to a missing topic: %v", err)
	}
	h := func(context.Context, *bus.Delivery) error { return bus.Permanent(errors.New("poison")) }
	if _, err := b.Subscribe(ctx, "strict", "g", h, bus.SubscribeOptions{}); !meridian.IsCode(err, meridian.CodeNotFound) {
		t.Fatalf("subscribe to a missing topic: %v", err)
	}
	if _, err := b.EnsureTopic(ctx, bus.TopicConfig{Name: "strict"}); err != nil {
		t.Fatal(err)
	}
	s, err := b.Subscribe(ctx, "strict", "g", h, bus.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := b.Publish(ctx, "strict", e); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the dead letter", func() bool {
		dls, err := b.DeadLetters(ctx, "strict", 0, 10)
		return err == nil && len(dls) == 1
	})
}
