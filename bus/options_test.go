package bus

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/meridian-platform/meridian"
)

func TestDecide(t *testing.T) {
	o := SubscribeOptions{MaxDeliveries: 3, RetryPolicy: RetryPolicy{BackOff: []time.Duration{time.Second, 5 * time.Second}}}.WithDefaults("t")
	boom := errors.New("boom")
	for _, c := range []struct {
		name    string
		attempt int
		err     error
		want    Decision
	}{
		{"success", 1, nil, Decision{Action: ActionAck}},
		{"success after failures", 3, nil, Decision{Action: ActionAck}},
		{"first failure", 1, boom, Decision{Action: ActionRetry, Delay: time.Second}},
		{"second failure", 2, boom, Decision{Action: ActionRetry, Delay: 5 * time.Second}},
		{"last attempt", 3, boom, Decision{Action: ActionDeadLetter}},
		{"beyond the last (a lost Term)", 7, boom, Decision{Action: ActionDeadLetter}},
		{"permanent", 1, Permanent(boom), Decision{Action: ActionDeadLetter}},
		{"permanent wrapped", 1, fmt.Errorf("x: %w", Permanent(boom)), Decision{Action: ActionDeadLetter}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := o.Decide(c.attempt, c.err); got != c.want {
				t.Fatalf("Decide(%d, %v) = %+v, want %+v", c.attempt, c.err, got, c.want)
			}
		})
	}
	forever := SubscribeOptions{MaxDeliveries: -1}.WithDefaults("t")
	if d := forever.Decide(1000, boom); d.Action != ActionRetry {
		t.Fatalf("MaxDeliveries -1 after 1000 attempts: %+v", d)
	}
}

func TestComputedBackoffGrowsAndCaps(t *testing.T) {
	p := RetryPolicy{MinBackOff: 100 * time.Millisecond, MaxBackOff: time.Second}
	for attempt, ceil := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 400 * time.Millisecond, 5: time.Second, 30: time.Second} {
		for range 100 {
			if d := p.Delay(attempt); d <= 0 || d > ceil {
				t.Fatalf("Delay(%d) = %s, outside (0, %s]", attempt, d, ceil)
			}
		}
	}
}

func TestPartitionIsStable(t *testing.T) {
	// Engines must agree on these forever: a change moves keys and breaks
	// their order across an upgrade.
	for key, want := range map[string]int{"": 5, "a": 12, "order-42": 4, "key-999": 4} {
		if got := Partition(key, 16); got != want {
			t.Errorf("Partition(%q, 16) = %d, want %d", key, got, want)
		}
	}
	if Partition("x", 1) != 0 || Partition("x", 0) != 0 {
		t.Fatal("one partition must be 0")
	}
	e := Event{ID: "id", Subject: "subj", Extensions: map[string]string{ExtPartitionKey: "pk"}}
	if OrderingKey(&e) != "pk" {
		t.Fatal("partitionkey first")
	}
	e.Extensions = nil
	if OrderingKey(&e) != "subj" {
		t.Fatal("then subject")
	}
	e.Subject = ""
	if OrderingKey(&e) != "id" {
		t.Fatal("then id")
	}
}

func TestNames(t *testing.T) {
	for _, c := range []struct {
		topic string
		ok    bool
	}{{"orders", true}, {"orders.eu-1.v2_x", true}, {"", false}, {"a..b", false}, {".a", false}, {"a b", false}, {"a*", false}, {"a>", false}} {
		if err := ValidateTopic(c.topic); (err == nil) != c.ok {
			t.Errorf("ValidateTopic(%q) = %v", c.topic, err)
		} else if err != nil && !meridian.IsCode(err, meridian.CodeInvalid) {
			t.Errorf("ValidateTopic(%q) code %v", c.topic, err)
		}
	}
	for _, c := range []struct {
		group string
		ok    bool
	}{{"", true}, {"billing", true}, {"b-1_x", true}, {"1b", false}, {"a.b", false}, {"a b", false}} {
		if err := ValidateGroup(c.group); (err == nil) != c.ok {
			t.Errorf("ValidateGroup(%q) = %v", c.group, err)
		}
	}
	if DeadLetterTopic("orders") != "orders.dlq" {
		t.Fatal(DeadLetterTopic("orders"))
	}
}

func TestDeadLetterRoundTrip(t *testing.T) {
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	dl := DeadLetter{
		Topic: "orders", Group: "billing", Partition: 3, OriginalSequence: 77, Reason: "boom 3", Deliveries: 3, DeadAt: at,
		Attempts: []Attempt{{At: at, Error: "boom 1"}, {Error: NoOutcome}, {At: at, Error: "boom 3"}},
		Event:    Event{ID: "1", Source: "/s", SpecVersion: "1.0", Type: "t", Extensions: map[string]string{"traceparent": "tp"}},
	}
	e := dl.ToEvent()
	if err := e.Normalize(); err != nil {
		t.Fatalf("dead-letter event does not validate: %v", err)
	}
	back, err := ParseDeadLetter(e, 9)
	if err != nil {
		t.Fatal(err)
	}
	dl.Sequence = 9
	if fmt.Sprint(back) != fmt.Sprint(dl) || len(back.Event.Extensions) != 1 || back.Attempts[1].Error != NoOutcome || !back.Attempts[0].At.Equal(at) {
		t.Fatalf("round trip\n%+v\nwant\n%+v", back, dl)
	}
	if dl.Event.Extensions[ExtDLQTopic] != "" {
		t.Fatal("ToEvent changed the original's extensions")
	}
	// Long histories keep their latest attempts within the 4096-byte limit.
	for i := range 200 {
		dl.Attempts = append(dl.Attempts, Attempt{At: at, Error: fmt.Sprintf("error %d %0200d", i, 0)})
	}
	e = dl.ToEvent()
	if err := e.Normalize(); err != nil {
		t.Fatal(err)
	}
	back, err = ParseDeadLetter(e, 1)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(back.Attempts); n == 0 || back.Attempts[n-1].Error[:9] != "error 199" {
		t.Fatalf("kept %d attempts, last %+v", n, back.Attempts[n-1:])
	}
	_, err = ParseDeadLetter(Event{ID: "x"}, 1)
	if !meridian.IsCode(err, meridian.CodeInvalid) {
		t.Fatalf("not a dead letter: %v", err)
	}
}

func TestPrepareDoesNotChangeTheCaller(t *testing.T) {
	orig := map[string]string{"a": "1"}
	e := Event{ID: "1", Source: "/s", Type: "t", Extensions: orig}
	c := e
	ctx := ContextWithTrace(t.Context(), "00-tp", "st")
	if _, err := Prepare(ctx, "orders", &c, []PublishOption{WithKey("k"), WithExtension("b", "2")}); err != nil {
		t.Fatal(err)
	}
	if len(orig) != 1 || c.Extensions["partitionkey"] != "k" || c.Extensions["b"] != "2" || c.Extensions["traceparent"] != "00-tp" || c.Extensions["tracestate"] != "st" {
		t.Fatalf("orig %v, prepared %v", orig, c.Extensions)
	}
	// An event with its own trace keeps it.
	c = Event{ID: "1", Source: "/s", Type: "t", Extensions: map[string]string{"traceparent": "mine"}}
	if _, err := Prepare(ctx, "orders", &c, nil); err != nil || c.Extensions["traceparent"] != "mine" {
		t.Fatalf("%v %v", err, c.Extensions)
	}
}
