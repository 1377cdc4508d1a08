// Package bustest is the conformance suite every event bus engine passes:
//
//	func TestConformance(t *testing.T) {
//		srv := natstest.Start(t)
//		bustest.Run(t, func(t *testing.T) bus.Backend { … a new client of srv … })
//	}
//
// Each call of the factory returns a new client (its own connection) of
// one broker; subtests keep apart by using topics named after themselves.
// Timings are short (ack waits of a few hundred milliseconds, backoffs of
// tens) so the suite runs in seconds.
package bustest

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/bus"
)

// Factory returns a new client of the broker under test; it closes it when
// t ends.
type Factory func(t *testing.T) bus.Backend

// Run runs the suite.
func Run(t *testing.T, newBackend Factory) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.run(t, newBackend) })
	}
}

var cases = []struct {
	name string
	run  func(*testing.T, Factory)
}{
	{"publish and subscribe", testPublishSubscribe},
	{"async publish and flush", testPublishAsync},
	{"invalid input names the field", testInvalid},
	{"competing consumers in a group", testCompeting},
	{"fan-out across groups", testFanOut},
	{"retry with backoff then success", testRetry},
	{"dead letter with history", testDeadLetter},
	{"permanent error dead-letters at once", testPermanent},
	{"replay from the dead-letter topic", testReplayDLQ},
	{"per-key order with 4 members and 1000 keys", testOrdered},
	{"dedup within the window", testDedup},
	{"replay from a sequence or a time", testStartAt},
	{"retention by count, size and age", testRetention},
	{"topics and groups admin", testAdmin},
	{"in progress extends the ack wait", testInProgress},
	{"ack wait passed redelivers", testAckWaitRedelivery},
	{"drain finishes handlers", testDrain},
	{"typed events", testTyped},
	{"private subscription", testPrivate},
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9_-]+`)

// topicFor names a topic after the test, so subtests never share one.
func topicFor(t *testing.T, suffix ...string) string {
	name := unsafeChars.ReplaceAllString(t.Name(), "-")
	if len(name) > 150 {
		name = name[len(name)-150:]
	}
	for _, s := range suffix {
		name += "." + s
	}
	return name
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func wantCode(t *testing.T, err error, code meridian.Code, field string) {
	t.Helper()
	var me *meridian.Error
	if !errors.As(err, &me) || me.Code != code || (field != "" && me.Field != field) {
		t.Fatalf("err = %v, want a %s error on field %q", err, code, field)
	}
}

// event returns a valid event with id i.
func event(i int) bus.Event {
	return bus.Event{
		ID: fmt.Sprintf("e-%d", i), Source: "/bustest", Type: "dev.meridian.test",
		DataContentType: "application/json", Data: fmt.Appendf(nil, `{"n":%d}`, i),
	}
}

// subscribe subscribes and closes the subscription when t ends.
func subscribe(t *testing.T, b bus.Backend, topic, group string, h bus.Handler, o bus.SubscribeOptions) bus.Subscription {
	t.Helper()
	s, err := b.Subscribe(ctxFor(t), topic, group, h, o)
	must(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

// recorder keeps what handlers saw.
type recorder struct {
	mu   sync.Mutex
	got  []*bus.Delivery
	byID map[string]int
	cond chan struct{}
}

func newRecorder() *recorder {
	return &recorder{byID: map[string]int{}, cond: make(chan struct{}, 1)}
}

func (r *recorder) add(d *bus.Delivery) {
	r.mu.Lock()
	r.got = append(r.got, d)
	r.byID[d.Event.ID]++
	r.mu.Unlock()
	select {
	case r.cond <- struct{}{}:
	default:
	}
}

func (r *recorder) handler(ctx context.Context, d *bus.Delivery) error {
	r.add(d)
	return nil
}

func (r *recorder) distinct() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.byID)
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

func (r *recorder) snapshot() []*bus.Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// waitFor waits until cond holds, failing after d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// quiet checks that cond stays false for d.
func quiet(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			t.Fatalf("unexpected: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func publishN(t *testing.T, b bus.Backend, topic string, from, n int, opts ...bus.PublishOption) []bus.Receipt {
	t.Helper()
	ctx := ctxFor(t)
	rs := make([]bus.Receipt, 0, n)
	for i := from; i < from+n; i++ {
		r, err := b.Publish(ctx, topic, event(i), opts...)
		must(t, err)
		rs = append(rs, r)
	}
	return rs
}

func ensure(t *testing.T, b bus.Backend, cfg bus.TopicConfig) bus.TopicInfo {
	t.Helper()
	info, err := b.EnsureTopic(ctxFor(t), cfg)
	must(t, err)
	return info
}

// busy counts the members that handled something.
func busy(perMember []int) int {
	n := 0
	for _, c := range perMember {
		if c > 0 {
			n++
		}
	}
	return n
}
