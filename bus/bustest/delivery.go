package bustest

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/bus"
)

const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func testPublishSubscribe(t *testing.T, nb Factory) {
	b := nb(t)
	topic := topicFor(t)
	ctx := ctxFor(t)
	ensure(t, b, bus.TopicConfig{Name: topic, Partitions: 4})
	in := bus.Event{
		ID: "a1", Source: "https://example.com/orders", Type: "com.example.order.placed", Subject: "order 42 é",
		Time: time.Date(2026, 11, 26, 10, 0, 0, 123456789, time.UTC), DataContentType: "application/json",
		DataSchema: "https://example.com/schema", Data: []byte(`{"id":42}`),
		Extensions: map[string]string{"traceparent": traceparent, "tracestate": "a=b", "tenant": "acme 100%"},
	}
	got := make(chan *bus.Delivery, 4)
	var traceSeen, republished atomic.Value
	subscribe(t, b, topic, "g", func(ctx context.Context, d *bus.Delivery) error {
		tp, _ := bus.TraceFromContext(ctx)
		traceSeen.Store(tp)
		if dd, ok := bus.DeliveryFrom(ctx); !ok || dd != d {
			return fmt.Errorf("DeliveryFrom does not return the delivery")
		}
		if d.Event.ID == "a1" {
			// A handler that publishes passes its trace on.
			r, err := b.Publish(ctx, topic, bus.Event{ID: "a2", Source: "/x", Type: "t"})
			if err != nil {
				return err
			}
			republished.Store(r)
		}
		got <- d
		return nil
	}, bus.SubscribeOptions{})
	r, err := b.Publish(ctx, topic, in)
	must(t, err)
	if r.Topic != topic || r.Sequence == 0 || r.Duplicate || r.Partition != bus.Partition(in.Subject, 4) {
		t.Fatalf("receipt = %+v", r)
	}
	d := <-got
	want := in
	want.SpecVersion = "1.0"
	if d.Event.ID != want.ID || d.Event.Source != want.Source || d.Event.Type != want.Type || d.Event.Subject != want.Subject ||
		!d.Event.Time.Equal(want.Time) || d.Event.DataContentType != want.DataContentType || d.Event.DataSchema != want.DataSchema ||
		string(d.Event.Data) != string(want.Data) || d.Event.SpecVersion != "1.0" || !maps.Equal(d.Event.Extensions, want.Extensions) {
		t.Fatalf("received %+v\nwant %+v", d.Event, want)
	}
	if d.Topic != topic || d.Group != "g" || d.Attempt != 1 || d.Sequence != r.Sequence || d.Partition != r.Partition || d.Published.IsZero() {
		t.Fatalf("delivery = %+v, receipt %+v", d, r)
	}
	if tp := traceSeen.Load(); tp != traceparent {
		t.Fatalf("handler context trace = %v", tp)
	}
	d2 := <-got
	if d2.Event.Extensions["traceparent"] != traceparent || d2.Event.Extensions["tracestate"] != "a=b" {
		t.Fatalf("event published from a handler has extensions %v, want its trace context", d2.Event.Extensions)
	}
	if r2, _ := republished.Load().(bus.Receipt); d2.Sequence != r2.Sequence {
		t.Fatalf("second delivery seq %d, receipt %+v", d2.Sequence, r2)
	}
	// The caller's event was not changed by Publish.
	if in.SpecVersion != "" {
		t.Fatal("Publish changed the caller's event")
	}
}

func testPublishAsync(t *testing.T, nb Factory) {
	b := nb(t)
	topic := topicFor(t)
	ctx := ctxFor(t)
	const n = 2000
	var mu sync.Mutex
	seqs := map[uint64]bool{}
	var calls atomic.Int64
	for i := range n {
		err := b.PublishAsync(ctx, topic, event(i), func(r bus.Receipt, err error) {
			calls.Add(1)
			if err == nil {
				mu.Lock()
				seqs[r.Sequence] = true
				mu.Unlock()
			}
		})
		must(t, err)
	}
	must(t, b.Flush(ctx))
	if calls.Load() != n || len(seqs) != n {
		t.Fatalf("done called %d times with %d distinct sequences, want %d", calls.Load(), len(seqs), n)
	}
	info, err := b.Topic(ctx, topic)
	must(t, err)
	if info.Messages != n {
		t.Fatalf("topic has %d events, want %d", info.Messages, n)
	}
	// An invalid event is refused at once, done not called.
	err = b.PublishAsync(ctx, topic, bus.Event{ID: "x", Type: "t"}, func(bus.Receipt, error) { t.Error("done called for an invalid event") })
	wantCode(t, err, meridian.CodeInvalid, "source")
	must(t, b.Flush(ctx))
}

func testInvalid(t *testing.T, nb Factory) {
	b := nb(t)
	ctx := ctxFor(t)
	topic := topicFor(t)
	h := func(context.Context, *bus.Delivery) error { return nil }
	_, err := b.Publish(ctx, "bad topic", event(1))
	wantCode(t, err, meridian.CodeInvalid, "topic")
	_, err = b.Publish(ctx, topic, bus.Event{Source: "/s", Type: "t"})
	wantCode(t, err, meridian.CodeInvalid, "id")
	_, err = b.Publish(ctx, topic, bus.Event{ID: "1", Source: "/s", Type: "t", Extensions: map[string]string{"Bad-Name": "x"}})
	wantCode(t, err, meridian.CodeInvalid, "Bad-Name")
	_, err = b.Subscribe(ctx, topic, "9lives", h, bus.SubscribeOptions{})
	wantCode(t, err, meridian.CodeInvalid, "group")
	_, err = b.Subscribe(ctx, topic, "g", h, bus.SubscribeOptions{StartAt: bus.StartAt{First: true, Sequence: 3}})
	wantCode(t, err, meridian.CodeInvalid, "start_at")
	_, err = b.EnsureTopic(ctx, bus.TopicConfig{Name: topic, Partitions: 5000})
	wantCode(t, err, meridian.CodeInvalid, "partitions")
	_, err = b.EnsureTopic(ctx, bus.TopicConfig{Name: topic, MaxAge: time.Minute, DedupWindow: time.Hour})
	wantCode(t, err, meridian.CodeInvalid, "dedup_window")
}

func testCompeting(t *testing.T, nb Factory) {
	b1, b2 := nb(t), nb(t)
	topic := topicFor(t)
	ensure(t, b1, bus.TopicConfig{Name: topic})
	rec := newRecorder()
	var mu sync.Mutex
	perMember := make([]int, 3)
	for m, b := range []bus.Backend{b1, b1, b2} {
		subscribe(t, b, topic, "workers", func(ctx context.Context, d *bus.Delivery) error {
			mu.Lock()
			perMember[m]++
			mu.Unlock()
			time.Sleep(time.Millisecond)
			return rec.handler(ctx, d)
		}, bus.SubscribeOptions{Batch: 5})
	}
	const n = 300
	publishN(t, b2, topic, 0, n)
	waitFor(t, 30*time.Second, "every event handled", func() bool { return rec.distinct() == n })
	quiet(t, 200*time.Millisecond, "an event handled twice", func() bool { return rec.count() > n })
	mu.Lock()
	defer mu.Unlock()
	if busy(perMember) < 2 {
		t.Fatalf("work per member = %v: the group did not share the events", perMember)
	}
}

func testFanOut(t *testing.T, nb Factory) {
	b := nb(t)
	topic := topicFor(t)
	ensure(t, b, bus.TopicConfig{Name: topic})
	ra, rb := newRecorder(), newRecorder()
	subscribe(t, b, topic, "a", ra.handler, bus.SubscribeOptions{})
	subscribe(t, b, topic, "b", rb.handler, bus.SubscribeOptions{Concurrency: 4})
	const n = 100
	publishN(t, b, topic, 0, n)
	waitFor(t, 20*time.Second, "both groups to get every event", func() bool { return ra.distinct() == n && rb.distinct() == n })
}

func testRetry(t *testing.T, nb Factory) {
	b := nb(t)
	topic := topicFor(t)
	ensure(t, b, bus.TopicConfig{Name: topic})
	var mu sync.Mutex
	var attempts []int
	var times []time.Time
	done := make(chan struct{})
	backoff := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond}
	subscribe(t, b, topic, "g", func(ctx context.Context, d *bus.Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		attempts = append(attempts, d.Attempt)
		times = append(times, time.Now())
		if d.Attempt < 3 {
			return fmt.Errorf("transient %d", d.Attempt)
		}
		close(done)
		return nil
	}, bus.SubscribeOptions{RetryPolicy: bus.RetryPolicy{BackOff: backoff}})
	publishN(t, b, topic, 0, 1)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("no success after retries")
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(attempts) != "[1 2 3]" {
		t.Fatalf("attempts = %v, want [1 2 3]", attempts)
	}
	for i, want := range backoff {
		if gap := times[i+1].Sub(times[i]); gap < want-10*time.Millisecond {
			t.Fatalf("redelivery %d came after %s, before its backoff %s", i+1, gap, want)
		}
	}
	dls, err := b.DeadLetters(ctxFor(t), topic, 0, 10)
	must(t, err)
	if len(dls) != 0 {
		t.Fatalf("dead letters = %v after a success", dls)
	}
}

// poisoned publishes one event that always fails in group g (after
// MaxDeliveries 3) and waits for its dead letter.
func poisoned(t *testing.T, b bus.Backend, topic string, healthy *recorder) (bus.Receipt, bus.DeadLetter, *atomic.Bool) {
	t.Helper()
	ensure(t, b, bus.TopicConfig{Name: topic})
	var fixed atomic.Bool
	var calls atomic.Int32
	subscribe(t, b, topic, "g", func(ctx context.Context, d *bus.Delivery) error {
		if fixed.Load() {
			return healthy.handler(ctx, d)
		}
		return fmt.Errorf("boom %d", calls.Add(1))
	}, bus.SubscribeOptions{MaxDeliveries: 3, RetryPolicy: bus.RetryPolicy{BackOff: []time.Duration{20 * time.Millisecond}}})
	e := event(1)
	e.Extensions = map[string]string{"traceparent": traceparent}
	r, err := b.Publish(ctxFor(t), topic, e)
	must(t, err)
	var dls []bus.DeadLetter
	waitFor(t, 20*time.Second, "a dead letter", func() bool {
		dls, err = b.DeadLetters(ctxFor(t), topic, 0, 10)
		must(t, err)
		return len(dls) > 0
	})
	if n := calls.Load(); n != 3 {
		t.Fatalf("handler ran %d times, want MaxDeliveries 3", n)
	}
	return r, dls[0], &fixed
}

func testDeadLetter(t *testing.T, nb Factory) {
	b := nb(t)
	topic := topicFor(t)
	r, dl, _ := poisoned(t, b, topic, newRecorder())
	if dl.Topic != topic || dl.Group != "g" || dl.OriginalSequence != r.Sequence || dl.Partition != r.Partition || dl.Deliveries != 3 ||
		dl.Reason != "boom 3" || dl.Sequence == 0 || dl.DeadAt.IsZero() {
		t.Fatalf("dead letter = %+v", dl)
	}
	if len(dl.Attempts) != 3 {
		t.Fatalf("attempts = %+v, want 3", dl.Attempts)
	}
	for i, a := range dl.Attempts {
		if a.Error != fmt.Sprintf("boom %d", i+1) || a.At.IsZero() {
			t.Fatalf("attempt %d = %+v", i+1, a)
		}
	}
	if dl.Event.ID != "e-1" || dl.Event.Extensions["traceparent"] != traceparent || dl.Event.Extensions[bus.ExtDLQReason] != "" {
		t.Fatalf("dead letter's event = %+v", dl.Event)
	}
	got, err := b.DeadLetter(ctxFor(t), topic, dl.Sequence)
	must(t, err)
	if got.Reason != dl.Reason || got.Event.ID != dl.Event.ID {
		t.Fatalf("DeadLetter(%d) = %+v", dl.Sequence, got)
	}
	// The dead-letter topic is a topic like any other.
	info, err := b.Topic(ctxFor(t), bus.DeadLetterTopic(topic))
	must(t, err)
	if info.Messages != 1 {
		t.Fatalf("%s holds %d events", info.Name, info.Messages)
	}
	_, err = b.DeadLetter(ctxFor(t), topic, dl.Sequence+100)
	wantCode(t, err, meridian.CodeNotFound, "")
	// The event is settled: no more attempts.
	time.Sleep(200 * time.Millisecond)
	groups, err := b.Groups(ctxFor(t), topic)
	must(t, err)
	if len(groups) != 1 || groups[0].InFlight != 0 || groups[0].Pending != 0 {
		t.Fatalf("groups = %+v, want g with nothing in flight", groups)
	}
}

func testPermanent(t *testing.T, nb Factory) {
	b := nb(t)
	topic := topicFor(t)
	ensure(t, b, bus.TopicConfig{Name: topic})
	var calls atomic.Int32
	subscribe(t, b, topic, "g", func(ctx context.Context, d *bus.Delivery) error {
		calls.Add(1)
		return bus.Permanent(fmt.Errorf("cannot ever work"))
	}, bus.SubscribeOptions{})
	publishN(t, b, topic, 0, 1)
	var dls []bus.DeadLetter
	waitFor(t, 10*time.Second, "a dead letter", func() bool {
		var err error
		dls, err = b.DeadLetters(ctxFor(t), topic, 0, 10)
		must(t, err)
		return len(dls) == 1
	})
	if calls.Load() != 1 || dls[0].Deliveries != 1 || dls[0].Reason != "cannot ever work" {
		t.Fatalf("calls %d, dead letter %+v", calls.Load(), dls[0])
	}
}

func testReplayDLQ(t *testing.T, nb Factory) {
	b := nb(t)
	topic := topicFor(t)
	other := newRecorder()
	subscribe(t, b, topic, "other", other.handler, bus.SubscribeOptions{})
	healthy := newRecorder()
	_, dl, fixed := poisoned(t, b, topic, healthy)
	waitFor(t, 5*time.Second, "group other to handle the event", func() bool { return other.count() == 1 })
	fixed.Store(true)
	ctx := ctxFor(t)
	r, err := b.ReplayDeadLetter(ctx, topic, dl.Sequence, bus.ReplayOptions{})
	must(t, err)
	if r.Topic != topic || r.Sequence == 0 {
		t.Fatalf("replay receipt = %+v", r)
	}
	waitFor(t, 10*time.Second, "the replayed event", func() bool { return healthy.count() == 1 })
	d := healthy.snapshot()[0]
	if d.Event.ID != "e-1" || d.Event.Extensions["traceparent"] != traceparent || d.Event.Extensions[bus.ExtDLQReason] != "" || d.Sequence != r.Sequence || d.Partition != dl.Partition {
		t.Fatalf("replayed delivery = %+v, event %+v", d, d.Event)
	}
	// Only the group that failed it gets it again.
	quiet(t, 300*time.Millisecond, "group other got the replay", func() bool { return other.count() > 1 })
	// It left the dead-letter topic.
	dls, err := b.DeadLetters(ctx, topic, 0, 10)
	must(t, err)
	if len(dls) != 0 {
		t.Fatalf("dead letters after replay: %+v", dls)
	}
	_, err = b.ReplayDeadLetter(ctx, topic, dl.Sequence, bus.ReplayOptions{})
	wantCode(t, err, meridian.CodeNotFound, "")

	// AllGroups replays to every group; Keep leaves the letter.
	fixed.Store(false)
	e := event(2)
	_, err = b.Publish(ctx, topic, e)
	must(t, err)
	var dl2 bus.DeadLetter
	waitFor(t, 20*time.Second, "a second dead letter", func() bool {
		dls, err = b.DeadLetters(ctx, topic, dl.Sequence, 10)
		must(t, err)
		if len(dls) == 1 {
			dl2 = dls[0]
		}
		return len(dls) == 1
	})
	waitFor(t, 5*time.Second, "group other to handle event 2", func() bool { return other.count() == 2 })
	fixed.Store(true)
	_, err = b.ReplayDeadLetter(ctx, topic, dl2.Sequence, bus.ReplayOptions{AllGroups: true, Keep: true})
	must(t, err)
	waitFor(t, 10*time.Second, "both groups to get the replay", func() bool { return healthy.count() == 2 && other.count() == 3 })
	if _, err := b.DeadLetter(ctx, topic, dl2.Sequence); err != nil {
		t.Fatalf("kept dead letter: %v", err)
	}
	must(t, b.DeleteDeadLetter(ctx, topic, dl2.Sequence))
	wantCode(t, b.DeleteDeadLetter(ctx, topic, dl2.Sequence), meridian.CodeNotFound, "")
}

func testInProgress(t *testing.T, nb Factory) {
	b := nb(t)
	topic := topicFor(t)
	ensure(t, b, bus.TopicConfig{Name: topic})
	var calls atomic.Int32
	done := make(chan struct{})
	subscribe(t, b, topic, "g", func(ctx context.Context, d *bus.Delivery) error {
		if calls.Add(1) > 1 {
			return nil
		}
		for range 10 {
			time.Sleep(100 * time.Millisecond)
			if err := bus.InProgress(ctx); err != nil {
				return err
			}
		}
		close(done)
		return nil
	}, bus.SubscribeOptions{AckWait: 300 * time.Millisecond, Concurrency: 2})
	publishN(t, b, topic, 0, 1)
	<-done
	quiet(t, 500*time.Millisecond, "a redelivery while the handler kept the event alive", func() bool { return calls.Load() > 1 })
}

func testAckWaitRedelivery(t *testing.T, nb Factory) {
	b := nb(t)
	topic := topicFor(t)
	ensure(t, b, bus.TopicConfig{Name: topic})
	rec := newRecorder()
	release := make(chan struct{})
	subscribe(t, b, topic, "g", func(ctx context.Context, d *bus.Delivery) error {
		rec.add(d)
		if d.Attempt == 1 {
			select { // outlive the ack wait, as a hung or lost member would
			case <-release:
			case <-ctx.Done():
			}
		}
		return nil
	}, bus.SubscribeOptions{AckWait: 200 * time.Millisecond, Concurrency: 2})
	publishN(t, b, topic, 0, 1)
	waitFor(t, 10*time.Second, "a redelivery after the ack wait", func() bool { return rec.count() == 2 })
	close(release)
	if a := rec.snapshot()[1].Attempt; a != 2 {
		t.Fatalf("redelivery attempt = %d, want 2", a)
	}
}

func testDrain(t *testing.T, nb Factory) {
	b := nb(t)
	topic := topicFor(t)
	ensure(t, b, bus.TopicConfig{Name: topic})
	started := make(chan struct{})
	var finished atomic.Bool
	s, err := b.Subscribe(ctxFor(t), topic, "g", func(ctx context.Context, d *bus.Delivery) error {
		close(started)
		time.Sleep(200 * time.Millisecond)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		finished.Store(true)
		return nil
	}, bus.SubscribeOptions{})
	must(t, err)
	publishN(t, b, topic, 0, 1)
	<-started
	must(t, s.Drain(ctxFor(t)))
	if !finished.Load() {
		t.Fatal("Drain returned before the handler finished")
	}
	select {
	case <-s.Done():
	default:
		t.Fatal("Done not closed after Drain")
	}
	if s.Err() != nil {
		t.Fatalf("Err = %v after Drain", s.Err())
	}
	// The event was acknowledged: a new member of the group gets nothing.
	rec := newRecorder()
	subscribe(t, b, topic, "g", rec.handler, bus.SubscribeOptions{})
	quiet(t, 300*time.Millisecond, "the drained event came back", func() bool { return rec.count() > 0 })

	// A subscription whose context ends stops.
	ctx, cancel := context.WithCancel(context.Background())
	s2, err := b.Subscribe(ctx, topic, "g2", rec.handler, bus.SubscribeOptions{})
	must(t, err)
	cancel()
	select {
	case <-s2.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("subscription did not stop with its context")
	}
}
