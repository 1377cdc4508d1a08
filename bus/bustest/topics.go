package bustest

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/bus"
)

// testOrdered: 1,000 keys, 10 events each, 4 members of an ordered group
// on two clients. Some events fail once (their successors must wait), and
// one member leaves a third of the way through (its partitions go on with
// the others, in order).
func testOrdered(t *testing.T, nb Factory) {
	const keys, perKey, members = 1000, 10, 4
	b1, b2 := nb(t), nb(t)
	topic := topicFor(t)
	ensure(t, b1, bus.TopicConfig{Name: topic, Partitions: 16})

	var mu sync.Mutex
	last := make(map[string]int, keys)
	handled := make(map[string]bool, keys*perKey)
	perMember := make([]int, members)
	var violations []string
	failedOnce := map[string]bool{}
	var total atomic.Int64

	subs := make([]bus.Subscription, members)
	for m := range members {
		b := b1
		if m%2 == 1 {
			b = b2
		}
		subs[m] = subscribe(t, b, topic, "ordered", func(ctx context.Context, d *bus.Delivery) error {
			key := d.Event.Extensions[bus.ExtPartitionKey]
			i, _ := strconv.Atoi(d.Event.Extensions["idx"])
			mu.Lock()
			defer mu.Unlock()
			// In order: the next index, or the last one again (a redelivery).
			if prev, seen := last[key]; !(!seen && i == 0 || seen && (i == prev+1 || i == prev)) {
				violations = append(violations, fmt.Sprintf("%s: %d after %d", key, i, prev))
			}
			// Every 97th key fails its event 3 once.
			if i == 3 && keyNum(key)%97 == 0 && !failedOnce[key] {
				failedOnce[key] = true
				return fmt.Errorf("transient failure of %s/3", key)
			}
			last[key] = i
			id := d.Event.ID
			if !handled[id] {
				handled[id] = true
				perMember[m]++
				total.Add(1)
			}
			return nil
		}, bus.SubscribeOptions{Ordered: true, RetryPolicy: bus.RetryPolicy{BackOff: []time.Duration{20 * time.Millisecond}}})
	}

	ctx := ctxFor(t)
	for i := range perKey {
		for k := range keys {
			key := fmt.Sprintf("key-%d", k)
			e := bus.Event{ID: fmt.Sprintf("%s/%d", key, i), Source: "/bustest", Type: "dev.meridian.test",
				Extensions: map[string]string{"idx": strconv.Itoa(i)}}
			must(t, b1.PublishAsync(ctx, topic, e, nil, bus.WithKey(key)))
		}
	}
	must(t, b1.Flush(ctx))

	waitFor(t, 60*time.Second, "a third of the events", func() bool { return total.Load() >= keys*perKey/3 })
	must(t, subs[0].Close()) // a member leaves mid-stream
	waitFor(t, 60*time.Second, "every event", func() bool { return total.Load() == keys*perKey })

	mu.Lock()
	defer mu.Unlock()
	if len(violations) > 0 {
		t.Fatalf("%d order violations, first: %v", len(violations), violations[:min(5, len(violations))])
	}
	for k := range keys {
		if key := fmt.Sprintf("key-%d", k); last[key] != perKey-1 {
			t.Fatalf("%s ended at %d", key, last[key])
		}
	}
	if busy(perMember) < 3 {
		t.Fatalf("events per member = %v: the work was not spread", perMember)
	}
	t.Logf("events per member: %v; retried once: %d keys", perMember, len(failedOnce))
}

func keyNum(key string) int {
	n, _ := strconv.Atoi(key[len("key-"):])
	return n
}

func testDedup(t *testing.T, nb Factory) {
	b := nb(t)
	ctx := ctxFor(t)
	topic := topicFor(t)
	ensure(t, b, bus.TopicConfig{Name: topic, DedupWindow: 300 * time.Millisecond})
	r1, err := b.Publish(ctx, topic, event(1))
	must(t, err)
	r2, err := b.Publish(ctx, topic, event(1))
	must(t, err)
	if !r2.Duplicate || r2.Sequence != r1.Sequence || r1.Duplicate {
		t.Fatalf("receipts %+v then %+v, want the second a duplicate of the first", r1, r2)
	}
	other := event(1)
	other.Source = "/elsewhere" // ids are unique per source only
	r3, err := b.Publish(ctx, topic, other)
	must(t, err)
	r4, err := b.Publish(ctx, topic, event(1), bus.WithoutDedup())
	must(t, err)
	r5, err := b.Publish(ctx, topic, event(2), bus.WithDedupID("k"))
	must(t, err)
	r6, err := b.Publish(ctx, topic, event(3), bus.WithDedupID("k"))
	must(t, err)
	if r3.Duplicate || r4.Duplicate || r5.Duplicate || !r6.Duplicate || r6.Sequence != r5.Sequence {
		t.Fatalf("receipts %+v %+v %+v %+v", r3, r4, r5, r6)
	}
	// Async publishes are deduplicated too.
	var dups atomic.Int32
	for range 3 {
		must(t, b.PublishAsync(ctx, topic, event(9), func(r bus.Receipt, err error) {
			if err == nil && r.Duplicate {
				dups.Add(1)
			}
		}))
	}
	must(t, b.Flush(ctx))
	if dups.Load() != 2 {
		t.Fatalf("%d of 3 async copies were duplicates, want 2", dups.Load())
	}
	rec := newRecorder()
	subscribe(t, b, topic, "g", rec.handler, bus.SubscribeOptions{StartAt: bus.StartAt{First: true}})
	waitFor(t, 10*time.Second, "5 events", func() bool { return rec.count() >= 5 })
	quiet(t, 200*time.Millisecond, "a duplicate delivered", func() bool { return rec.count() > 5 })

	// After the window, the same event is stored again.
	time.Sleep(time.Second)
	r7, err := b.Publish(ctx, topic, event(1))
	must(t, err)
	if r7.Duplicate {
		t.Fatalf("receipt %+v after the dedup window passed", r7)
	}

	// A topic without dedup stores every copy.
	off := topicFor(t, "nodedup")
	ensure(t, b, bus.TopicConfig{Name: off, DedupWindow: -1})
	a, err := b.Publish(ctx, off, event(1))
	must(t, err)
	c, err := b.Publish(ctx, off, event(1))
	must(t, err)
	if c.Duplicate || c.Sequence == a.Sequence {
		t.Fatalf("dedup off: receipts %+v %+v", a, c)
	}
	info, err := b.Topic(ctx, off)
	must(t, err)
	if info.DedupWindow >= 0 {
		t.Fatalf("dedup window of %s = %s, want negative (off)", off, info.DedupWindow)
	}
}

func testStartAt(t *testing.T, nb Factory) {
	b := nb(t)
	ctx := ctxFor(t)
	topic := topicFor(t)
	ensure(t, b, bus.TopicConfig{Name: topic})
	rs := publishN(t, b, topic, 0, 5)
	time.Sleep(50 * time.Millisecond)
	mid := time.Now()
	time.Sleep(50 * time.Millisecond)
	rs = append(rs, publishN(t, b, topic, 5, 5)...)

	ids := func(r *recorder) []string {
		var out []string
		for _, d := range r.snapshot() {
			out = append(out, d.Event.ID)
		}
		slices.Sort(out)
		return slices.Compact(out)
	}
	want := func(from, to int) []string {
		var out []string
		for i := from; i < to; i++ {
			out = append(out, fmt.Sprintf("e-%d", i))
		}
		slices.Sort(out)
		return out
	}
	cases := []struct {
		group    string
		at       bus.StartAt
		from, to int
	}{
		{"first", bus.StartAt{First: true}, 0, 10},
		{"fromseq", bus.StartAt{Sequence: rs[3].Sequence}, 3, 10},
		{"fromtime", bus.StartAt{Time: mid}, 5, 10},
	}
	recs := map[string]*recorder{}
	for _, c := range cases {
		rec := newRecorder()
		recs[c.group] = rec
		subscribe(t, b, topic, c.group, rec.handler, bus.SubscribeOptions{StartAt: c.at})
	}
	newOnly := newRecorder()
	subscribe(t, b, topic, "new", newOnly.handler, bus.SubscribeOptions{})
	for _, c := range cases {
		rec, w := recs[c.group], want(c.from, c.to)
		waitFor(t, 10*time.Second, c.group+" to read its events", func() bool { return len(ids(rec)) >= len(w) })
		if got := ids(rec); !slices.Equal(got, w) {
			t.Fatalf("group %s got %v, want %v", c.group, got, w)
		}
	}
	quiet(t, 200*time.Millisecond, "a new-only group read old events", func() bool { return newOnly.count() > 0 })
	publishN(t, b, topic, 10, 1)
	waitFor(t, 10*time.Second, "the new group to read the new event", func() bool { return newOnly.count() == 1 })

	// An existing group resumes where it was, whatever StartAt says.
	waitFor(t, 10*time.Second, "first to read e-10", func() bool { return len(ids(recs["first"])) == 11 })
	resumed := newRecorder()
	subscribe(t, b, topic, "first", resumed.handler, bus.SubscribeOptions{StartAt: bus.StartAt{Sequence: 1}})
	quiet(t, 300*time.Millisecond, "a resumed group re-read old events", func() bool { return resumed.count() > 0 })
	_ = ctx
}

func testRetention(t *testing.T, nb Factory) {
	b := nb(t)
	ctx := ctxFor(t)
	byCount := topicFor(t, "count")
	ensure(t, b, bus.TopicConfig{Name: byCount, MaxMsgs: 5})
	rs := publishN(t, b, byCount, 0, 10)
	info, err := b.Topic(ctx, byCount)
	must(t, err)
	if info.Messages != 5 || info.FirstSequence != rs[5].Sequence || info.MaxMsgs != 5 {
		t.Fatalf("by count: %+v", info)
	}
	rec := newRecorder()
	subscribe(t, b, byCount, "g", rec.handler, bus.SubscribeOptions{StartAt: bus.StartAt{First: true}})
	waitFor(t, 10*time.Second, "the retained events", func() bool { return rec.count() == 5 })
	if first := rec.snapshot()[0].Event.ID; first != "e-5" {
		t.Fatalf("first retained event %s, want e-5", first)
	}
	// Limits can change on a live topic.
	info = ensure(t, b, bus.TopicConfig{Name: byCount, MaxMsgs: 3})
	if info.MaxMsgs != 3 || info.Messages > 3 {
		t.Fatalf("after lowering max_msgs: %+v", info)
	}

	bySize := topicFor(t, "size")
	ensure(t, b, bus.TopicConfig{Name: bySize, MaxBytes: 4096})
	publishN(t, b, bySize, 0, 100)
	info, err = b.Topic(ctx, bySize)
	must(t, err)
	if info.Bytes > 4096 || info.Messages == 0 || info.Messages >= 100 || info.MaxBytes != 4096 {
		t.Fatalf("by size: %+v", info)
	}

	byAge := topicFor(t, "age")
	ensure(t, b, bus.TopicConfig{Name: byAge, MaxAge: 500 * time.Millisecond, DedupWindow: 100 * time.Millisecond})
	publishN(t, b, byAge, 0, 3)
	waitFor(t, 10*time.Second, "events to age out", func() bool {
		info, err = b.Topic(ctx, byAge)
		must(t, err)
		return info.Messages == 0
	})
	if info.MaxAge != 500*time.Millisecond {
		t.Fatalf("by age: %+v", info)
	}
}

func testAdmin(t *testing.T, nb Factory) {
	b := nb(t)
	ctx := ctxFor(t)
	topic := topicFor(t)
	cfg := bus.TopicConfig{Name: topic, Partitions: 3, MaxAge: time.Hour, MaxMsgs: 100, DedupWindow: time.Minute}
	info := ensure(t, b, cfg)
	if info.TopicConfig.Name != topic || info.Partitions != 3 || info.MaxAge != time.Hour || info.MaxMsgs != 100 || info.DedupWindow != time.Minute || info.Created.IsZero() {
		t.Fatalf("EnsureTopic = %+v", info)
	}
	ensure(t, b, cfg) // idempotent
	_, err := b.EnsureTopic(ctx, bus.TopicConfig{Name: topic, Partitions: 4})
	wantCode(t, err, meridian.CodeConflict, "partitions")
	all, err := b.Topics(ctx)
	must(t, err)
	if !slices.ContainsFunc(all, func(i bus.TopicInfo) bool { return i.Name == topic }) {
		t.Fatalf("Topics() lacks %s", topic)
	}
	_, err = b.Topic(ctx, topicFor(t, "missing"))
	wantCode(t, err, meridian.CodeNotFound, "")
	dls, err := b.DeadLetters(ctx, topic, 0, 0)
	if err != nil || len(dls) != 0 {
		t.Fatalf("DeadLetters of a topic with none = %v, %v", dls, err)
	}
	_, err = b.DeadLetters(ctx, topicFor(t, "missing"), 0, 0)
	wantCode(t, err, meridian.CodeNotFound, "")

	h := func(context.Context, *bus.Delivery) error { return nil }
	subscribe(t, b, topic, "g1", h, bus.SubscribeOptions{Ordered: true})
	s2 := subscribe(t, b, topic, "g2", h, bus.SubscribeOptions{})
	_, err = b.Subscribe(ctx, topic, "g2", h, bus.SubscribeOptions{Ordered: true})
	wantCode(t, err, meridian.CodeConflict, "group")
	_, err = b.Subscribe(ctx, topic, "g1", h, bus.SubscribeOptions{})
	wantCode(t, err, meridian.CodeConflict, "group")
	groups, err := b.Groups(ctx, topic)
	must(t, err)
	if len(groups) != 2 || groups[0].Name != "g1" || !groups[0].Ordered || groups[1].Name != "g2" || groups[1].Ordered {
		t.Fatalf("Groups = %+v", groups)
	}
	must(t, b.DeleteGroup(ctx, topic, "g1"))
	wantCode(t, b.DeleteGroup(ctx, topic, "g1"), meridian.CodeNotFound, "group")
	groups, err = b.Groups(ctx, topic)
	must(t, err)
	if len(groups) != 1 || groups[0].Name != "g2" {
		t.Fatalf("Groups after delete = %+v", groups)
	}
	must(t, b.DeleteTopic(ctx, topic))
	_, err = b.Topic(ctx, topic)
	wantCode(t, err, meridian.CodeNotFound, "")
	wantCode(t, b.DeleteTopic(ctx, topic), meridian.CodeNotFound, "")
	select {
	case <-s2.Done():
		if s2.Err() == nil {
			t.Fatal("member of a deleted topic stopped without an error")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("member of a deleted topic still running")
	}
	// Publishing recreates the topic (auto-create) with the defaults.
	r, err := b.Publish(ctx, topic, event(1))
	must(t, err)
	info, err = b.Topic(ctx, topic)
	must(t, err)
	if info.Messages != 1 || info.Partitions != bus.DefaultPartitions || r.Sequence != info.LastSequence {
		t.Fatalf("auto-created topic %+v, receipt %+v", info, r)
	}
}

type order struct {
	ID     string `json:"id"`
	Amount int    `json:"amount"`
}

func testTyped(t *testing.T, nb Factory) {
	b := nb(t)
	ctx := ctxFor(t)
	orders := bus.NewTopic[order](topicFor(t), "com.example.order.placed", "/orders")
	got := make(chan bus.Message[order], 2)
	sub, err := bus.Subscribe(ctx, b, orders, "billing", func(ctx context.Context, m bus.Message[order]) error {
		got <- m
		return nil
	}, bus.SubscribeOptions{})
	must(t, err)
	t.Cleanup(func() { sub.Close() })
	r, err := bus.Publish(ctx, b, orders, order{ID: "o-1", Amount: 42}, bus.WithKey("o-1"), bus.WithSubject("orders/o-1"))
	must(t, err)
	m := <-got
	if m.Data != (order{ID: "o-1", Amount: 42}) || m.Event.Type != "com.example.order.placed" || m.Event.Source != "/orders" ||
		m.Event.Subject != "orders/o-1" || m.Event.DataContentType != "application/json" || m.Attempt != 1 || m.Sequence != r.Sequence ||
		m.Event.Extensions[bus.ExtPartitionKey] != "o-1" || len(m.Event.ID) != 36 {
		t.Fatalf("typed message %+v, event %+v", m, m.Event)
	}
	// Data that does not decode is dead-lettered at once.
	_, err = b.Publish(ctx, orders.Name, bus.Event{ID: "bad", Source: "/orders", Type: "com.example.order.placed", DataContentType: "text/plain", Data: []byte("nope")})
	must(t, err)
	waitFor(t, 10*time.Second, "the undecodable event's dead letter", func() bool {
		dls, err := b.DeadLetters(ctx, orders.Name, 0, 10)
		must(t, err)
		return len(dls) == 1 && dls[0].Deliveries == 1 && dls[0].Event.ID == "bad"
	})
	// Async typed publishes.
	must(t, bus.PublishAsync(ctx, b, orders, order{ID: "o-2"}, nil))
	must(t, b.Flush(ctx))
	if m := <-got; m.Data.ID != "o-2" {
		t.Fatalf("async typed message %+v", m.Data)
	}
}

func testPrivate(t *testing.T, nb Factory) {
	b := nb(t)
	ctx := ctxFor(t)
	topic := topicFor(t)
	ensure(t, b, bus.TopicConfig{Name: topic})
	publishN(t, b, topic, 0, 3)
	rec := newRecorder()
	s := subscribe(t, b, topic, "", rec.handler, bus.SubscribeOptions{StartAt: bus.StartAt{First: true}})
	if s.Group() != "" || s.Topic() != topic {
		t.Fatalf("subscription %s/%s", s.Topic(), s.Group())
	}
	waitFor(t, 10*time.Second, "the private subscription to read the topic", func() bool { return rec.count() == 3 })
	if d := rec.snapshot()[0]; d.Group != "" {
		t.Fatalf("private delivery has group %q", d.Group)
	}
	groups, err := b.Groups(ctx, topic)
	must(t, err)
	if len(groups) != 0 {
		t.Fatalf("a private subscription is listed as a group: %+v", groups)
	}
	must(t, s.Close())
}
