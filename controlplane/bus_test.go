package controlplane_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/bus"
	"github.com/meridian-platform/meridian/bus/bushttp"
	busjetstream "github.com/meridian-platform/meridian/bus/jetstream"
	"github.com/meridian-platform/meridian/client"
	"github.com/meridian-platform/meridian/internal/problem"
)

// pushTarget is a service that push subscriptions POST to: it records what
// it receives and answers what answer says (200 when nil).
type pushTarget struct {
	*httptest.Server
	mu     sync.Mutex
	got    []received
	answer func(e bus.Event, attempt string) (status int, header http.Header)
}

type received struct {
	path   string
	header http.Header
	event  bus.Event
	at     time.Time
}

func newPushTarget(t *testing.T, answer func(e bus.Event, attempt string) (int, http.Header)) *pushTarget {
	t.Helper()
	p := &pushTarget{answer: answer}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		events, _, err := bushttp.ReadEvents(r.Header, body)
		if err != nil || len(events) != 1 {
			t.Errorf("push target got a request that is not one CloudEvent: %v", err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		p.mu.Lock()
		p.got = append(p.got, received{path: r.URL.Path, header: r.Header.Clone(), event: events[0], at: time.Now()})
		p.mu.Unlock()
		status, h := http.StatusOK, http.Header(nil)
		if p.answer != nil {
			status, h = p.answer(events[0], r.Header.Get("Meridian-Delivery-Attempt"))
		}
		for k, v := range h {
			w.Header()[k] = v
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(p.Close)
	return p
}

func (p *pushTarget) received() []received {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.got)
}

// ids lists the distinct event ids received, sorted.
func (p *pushTarget) ids() []string {
	var ids []string
	for _, r := range p.received() {
		if !slices.Contains(ids, r.event.ID) {
			ids = append(ids, r.event.ID)
		}
	}
	slices.Sort(ids)
	return ids
}

// post sends a raw request to the API with the admin token.
func post(t *testing.T, c *cp, path string, header map[string]string, body string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, c.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.secret)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// ceJSON is the header of a structured-mode publish.
var ceJSON = map[string]string{"Content-Type": bushttp.ContentTypeStructured}

// goConsumer joins group on topic through the bus engine on its own NATS
// connection, as a Go service does, and collects the typed data by event id.
func goConsumer[T any](t *testing.T, natsURL, topic, group string) func() map[string]T {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	b, err := busjetstream.New(nc, busjetstream.Config{})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	got := map[string]T{}
	typed := bus.Topic[T]{Name: topic}
	sub, err := bus.Subscribe(context.Background(), b, typed, group, func(_ context.Context, m bus.Message[T]) error {
		mu.Lock()
		got[m.Event.ID] = m.Data
		mu.Unlock()
		return nil
	}, bus.SubscribeOptions{StartAt: bus.StartAt{First: true}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sub.Close()
		_ = b.Close(context.Background())
		nc.Close()
	})
	return func() map[string]T {
		mu.Lock()
		defer mu.Unlock()
		return maps.Clone(got)
	}
}

type order struct {
	ID    string `json:"id"`
	Total int    `json:"total"`
}

func TestPublishOverHTTPReachesGoConsumerAndPushSubscribers(t *testing.T) {
	c, ns := startOne(t)
	ctx := context.Background()
	consumed := goConsumer[order](t, ns.ClientURL(), "orders", "billing")
	structTarget := newPushTarget(t, nil)
	binTarget := newPushTarget(t, nil)
	for _, s := range []bushttp.Subscription{
		{Name: "audit", Topic: "orders", URL: structTarget.URL + "/events"},
		{Name: "mailer", Topic: "orders", URL: binTarget.URL + "/hook?secret=x", Mode: bushttp.Binary},
	} {
		if _, err := c.Admin.CreateSubscription(ctx, s); err != nil {
			t.Fatal(err)
		}
	}

	// Structured mode.
	resp, body := post(t, c, "/v1/topics/orders/events", ceJSON,
		`{"specversion":"1.0","id":"o-1","source":"/shop","type":"com.example.order.placed","subject":"o-1",
		  "datacontenttype":"application/json","traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		  "data":{"id":"o-1","total":12}}`)
	var r1 bushttp.Receipt
	if resp.StatusCode != http.StatusAccepted || json.Unmarshal(body, &r1) != nil || r1.Sequence == 0 || r1.Duplicate || r1.Topic != "orders" {
		t.Fatalf("structured publish: %d %s", resp.StatusCode, body)
	}
	// Binary mode: attributes in ce- headers, the data as the body.
	resp, body = post(t, c, "/v1/topics/orders/events", map[string]string{
		"ce-specversion": "1.0", "ce-id": "o-2", "ce-source": "/shop", "ce-type": "com.example.order.placed",
		"ce-time": "2026-01-02T03:04:05Z", "ce-partitionkey": "customer-7", "ce-subject": "an%20order",
		"Content-Type": "application/json",
	}, `{"id":"o-2","total":5}`)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("binary publish: %d %s", resp.StatusCode, body)
	}
	// Batched mode.
	resp, body = post(t, c, "/v1/topics/orders/events", map[string]string{"Content-Type": bushttp.ContentTypeBatch},
		`[{"specversion":"1.0","id":"o-3","source":"/shop","type":"com.example.order.placed","data":{"id":"o-3","total":3}},
		  {"specversion":"1.0","id":"o-4","source":"/shop","type":"com.example.order.placed","data":{"id":"o-4","total":4}}]`)
	var batch bushttp.BatchReceipt
	if resp.StatusCode != http.StatusAccepted || json.Unmarshal(body, &batch) != nil || len(batch.Receipts) != 2 {
		t.Fatalf("batch publish: %d %s", resp.StatusCode, body)
	}
	// The same source and id again is a duplicate: the first sequence, nothing stored.
	resp, body = post(t, c, "/v1/topics/orders/events", ceJSON,
		`{"specversion":"1.0","id":"o-1","source":"/shop","type":"com.example.order.placed","data":{"id":"o-1","total":12}}`)
	var dup bushttp.Receipt
	if resp.StatusCode != http.StatusAccepted || json.Unmarshal(body, &dup) != nil || !dup.Duplicate || dup.Sequence != r1.Sequence {
		t.Fatalf("duplicate publish: %d %s, want duplicate of %d", resp.StatusCode, body, r1.Sequence)
	}

	want := map[string]order{"o-1": {"o-1", 12}, "o-2": {"o-2", 5}, "o-3": {"o-3", 3}, "o-4": {"o-4", 4}}
	eventually(t, 15*time.Second, "the Go consumer to get the four orders", func() bool { return len(consumed()) == 4 })
	for id, o := range consumed() {
		if want[id] != o {
			t.Errorf("Go consumer: %s = %+v, want %+v", id, o, want[id])
		}
	}
	for _, target := range []*pushTarget{structTarget, binTarget} {
		eventually(t, 15*time.Second, "the push subscribers to get the four orders", func() bool { return len(target.ids()) == 4 })
	}
	for _, r := range structTarget.received() {
		if r.path != "/events" || !strings.HasPrefix(r.header.Get("Content-Type"), bushttp.ContentTypeStructured) || r.header.Get("Meridian-Subscription") != "audit" {
			t.Errorf("structured push: %s %v", r.path, r.header)
		}
		if r.event.ID == "o-1" && (r.event.Extensions["traceparent"] == "" || r.event.Subject != "o-1" || string(r.event.Data) != `{"id":"o-1","total":12}`) {
			t.Errorf("structured push lost attributes: %+v", r.event)
		}
	}
	for _, r := range binTarget.received() {
		if r.path != "/hook" || r.header.Get("Ce-Id") != r.event.ID || r.header.Get("Content-Type") != r.event.DataContentType {
			t.Errorf("binary push: %s %v", r.path, r.header)
		}
		if r.event.ID == "o-2" && (r.event.Extensions["partitionkey"] != "customer-7" || r.event.Subject != "an order" ||
			!r.event.Time.Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) || string(r.event.Data) != `{"id":"o-2","total":5}`) {
			t.Errorf("binary push lost attributes: %+v", r.event)
		}
	}

	// The topic lists with its count; the stream replays it from a sequence.
	topics, err := c.Admin.Topics(ctx)
	if err != nil || !slices.ContainsFunc(topics, func(ti bus.TopicInfo) bool { return ti.Name == "orders" && ti.Messages == 4 }) {
		t.Fatalf("topics = %+v %v, want orders with 4 events", topics, err)
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var seqs []uint64
	err = c.Admin.StreamEvents(sctx, "orders", client.StreamQuery{FromSeq: 2}, func(te bushttp.TopicEvent) error {
		seqs = append(seqs, te.Sequence)
		if len(seqs) == 3 {
			return errStop
		}
		return nil
	})
	if err != errStop || !slices.Equal(seqs, []uint64{2, 3, 4}) {
		t.Fatalf("stream from 2: %v %v", seqs, err)
	}
}

var errStop = errors.New("stop")

func TestMalformedCloudEventsAnswer400NamingTheAttribute(t *testing.T) {
	c, _ := startOne(t, func(cfg *controlplaneConfig) { cfg.MaxEventBody = 4096 })
	const ok = `"specversion":"1.0","id":"1","source":"/s","type":"t"`
	binary := func(h map[string]string) map[string]string {
		out := map[string]string{"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "t"}
		for k, v := range h {
			if v == "" {
				delete(out, k)
			} else {
				out[k] = v
			}
		}
		return out
	}
	sh := ceJSON
	cases := []struct {
		name   string
		header map[string]string
		body   string
		field  string
		status int
	}{
		{"structured without id", sh, `{"specversion":"1.0","source":"/s","type":"t"}`, "id", 400},
		{"structured without source", sh, `{"specversion":"1.0","id":"1","type":"t"}`, "source", 400},
		{"structured without type", sh, `{"specversion":"1.0","id":"1","source":"/s"}`, "type", 400},
		{"structured id not a string", sh, `{"specversion":"1.0","id":7,"source":"/s","type":"t"}`, "id", 400},
		{"unsupported specversion", sh, `{"specversion":"0.3","id":"1","source":"/s","type":"t"}`, "specversion", 400},
		{"bad time", sh, `{` + ok + `,"time":"yesterday"}`, "time", 400},
		{"JSON data that is not JSON", sh, `{` + ok + `,"datacontenttype":"application/json","data_base64":"bm90IGpzb24="}`, "data", 400},
		{"bad extension name", sh, `{` + ok + `,"Bad-Name":"x"}`, "Bad-Name", 400},
		{"not JSON", sh, `{"id":`, "body", 400},
		{"empty body", sh, ``, "body", 400},
		{"batch with a bad second event", map[string]string{"Content-Type": bushttp.ContentTypeBatch}, `[{` + ok + `},{"specversion":"1.0","id":"2","source":"/s"}]`, "[1].type", 400},
		{"empty batch", map[string]string{"Content-Type": bushttp.ContentTypeBatch}, `[]`, "body", 400},
		{"unsupported event format", map[string]string{"Content-Type": "application/cloudevents+xml"}, `<e/>`, "Content-Type", 400},
		{"neither mode", map[string]string{"Content-Type": "application/json"}, `{}`, "specversion", 400},
		{"binary without id", binary(map[string]string{"ce-id": ""}), `{}`, "id", 400},
		{"binary without type", binary(map[string]string{"ce-type": ""}), `{}`, "type", 400},
		{"binary bad time", binary(map[string]string{"ce-time": "12:00"}), `{}`, "time", 400},
		{"binary JSON data that is not JSON", binary(map[string]string{"Content-Type": "application/json"}), `{not json`, "data", 400},
		{"binary bad extension", binary(map[string]string{"ce-trace_id": "x"}), ``, "trace_id", 400},
		{"too large", sh, `{` + ok + `,"data":"` + strings.Repeat("x", 5000) + `"}`, "body", 413},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := post(t, c, "/v1/topics/malformed/events", tc.header, tc.body)
			var p problem.Details
			if resp.StatusCode != tc.status || resp.Header.Get("Content-Type") != problem.ContentType || json.Unmarshal(body, &p) != nil {
				t.Fatalf("%d %s %s, want %d problem+json", resp.StatusCode, resp.Header.Get("Content-Type"), body, tc.status)
			}
			if p.Field != tc.field || !strings.HasPrefix(p.Detail, tc.field+": ") {
				t.Errorf("field %q, detail %q; want the attribute %q named", p.Field, p.Detail, tc.field)
			}
		})
	}
	// Nothing was published: the topic was not even created.
	if _, err := c.Admin.Topic(context.Background(), "malformed"); !meridian.IsCode(err, meridian.CodeNotFound) {
		t.Fatalf("topic after malformed publishes: %v, want not_found", err)
	}
}

// publish sends one structured event through the client.
func publish(t *testing.T, c *client.Client, topic, id, typ string) bushttp.Receipt {
	t.Helper()
	r, err := c.Publish(context.Background(), topic, bus.Event{ID: id, Source: "/test", Type: typ, DataContentType: "application/json", Data: []byte(`{"n":1}`)})
	if err != nil {
		t.Fatalf("publish %s: %v", id, err)
	}
	return r
}

func TestPushFailuresDeadLetterWithHistoryAndReplayDelivers(t *testing.T) {
	c, _ := startOne(t)
	ctx := context.Background()
	var mu sync.Mutex
	healthy := false
	target := newPushTarget(t, func(e bus.Event, _ string) (int, http.Header) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case e.Type == "poison":
			return http.StatusUnprocessableEntity, nil
		case !healthy:
			return http.StatusInternalServerError, nil
		}
		return http.StatusOK, nil
	})
	if _, err := c.Admin.CreateSubscription(ctx, bushttp.Subscription{
		Name: "flaky", Topic: "jobs", URL: target.URL, MaxDeliveries: 3, BackOff: []meridian.Duration{meridian.Duration(50 * time.Millisecond)},
	}); err != nil {
		t.Fatal(err)
	}
	publish(t, c.Admin, "jobs", "job-1", "work")
	publish(t, c.Admin, "jobs", "job-2", "poison")

	var letters []bus.DeadLetter
	eventually(t, 20*time.Second, "both events to be dead-lettered", func() bool {
		var err error
		letters, err = c.Admin.DeadLetters(ctx, "jobs", 0, 0)
		return err == nil && len(letters) == 2
	})
	byID := map[string]bus.DeadLetter{}
	for _, dl := range letters {
		byID[dl.Event.ID] = dl
	}
	work, poison := byID["job-1"], byID["job-2"]
	if work.Group != "flaky" || work.Deliveries != 3 || len(work.Attempts) != 3 || !strings.Contains(work.Reason, "500 Internal Server Error") {
		t.Errorf("5xx dead letter: %+v, want 3 deliveries with their history", work)
	}
	for _, a := range work.Attempts {
		if !strings.Contains(a.Error, "500") || a.At.IsZero() {
			t.Errorf("attempt %+v", a)
		}
	}
	if poison.Deliveries != 1 || !strings.Contains(poison.Reason, "422") {
		t.Errorf("4xx dead letter: %+v, want one delivery (dead-lettered at once)", poison)
	}
	if n := len(target.received()); n != 4 {
		t.Errorf("target got %d POSTs, want 3 + 1", n)
	}
	one, err := c.Admin.DeadLetter(ctx, "jobs", work.Sequence)
	if err != nil || one.Event.ID != "job-1" {
		t.Fatalf("dead letter %d: %+v %v", work.Sequence, one, err)
	}

	// The target recovers; the replayed letter is delivered and leaves the DLQ.
	mu.Lock()
	healthy = true
	mu.Unlock()
	replayed, err := c.Admin.ReplayDeadLetters(ctx, "jobs", bushttp.ReplayRequest{Sequence: work.Sequence})
	if err != nil || len(replayed) != 1 || replayed[0].Sequence != work.Sequence {
		t.Fatalf("replay: %+v %v", replayed, err)
	}
	eventually(t, 10*time.Second, "the replayed event to be acknowledged", func() bool {
		got := target.received()
		return len(got) == 5 && got[4].event.ID == "job-1"
	})
	left, err := c.Admin.DeadLetters(ctx, "jobs", 0, 0)
	if err != nil || len(left) != 1 || left[0].Event.ID != "job-2" {
		t.Fatalf("left in the DLQ: %+v %v", left, err)
	}
	// Neither a sequence nor all: the request names the field.
	if _, err := c.Admin.ReplayDeadLetters(ctx, "jobs", bushttp.ReplayRequest{}); !meridian.IsCode(err, meridian.CodeInvalid) {
		t.Errorf("empty replay: %v", err)
	}
}

func TestPushHonoursRetryAfter(t *testing.T) {
	c, _ := startOne(t)
	ctx := context.Background()
	target := newPushTarget(t, func(_ bus.Event, attempt string) (int, http.Header) {
		if attempt == "1" {
			return http.StatusServiceUnavailable, http.Header{"Retry-After": {"2"}}
		}
		return http.StatusOK, nil
	})
	if _, err := c.Admin.CreateSubscription(ctx, bushttp.Subscription{
		Name: "slow", Topic: "mail", URL: target.URL, BackOff: []meridian.Duration{meridian.Duration(10 * time.Millisecond)},
	}); err != nil {
		t.Fatal(err)
	}
	publish(t, c.Admin, "mail", "m-1", "send")
	eventually(t, 15*time.Second, "the retry", func() bool { return len(target.received()) == 2 })
	got := target.received()
	if gap := got[1].at.Sub(got[0].at); gap < 2*time.Second {
		t.Fatalf("retried after %s; the target asked for 2s", gap)
	}
	if a := got[1].header.Get("Meridian-Delivery-Attempt"); a != "2" {
		t.Errorf("second POST is attempt %q, want 2 (waiting out Retry-After is not an attempt)", a)
	}
}

func TestPushOwnerStoppedOtherReplicaDelivers(t *testing.T) {
	for _, how := range []string{"stopped", "killed"} {
		t.Run(how, func(t *testing.T) { testPushTakeover(t, how == "killed") })
	}
}

// testPushTakeover stops (or kills) the replica delivering a subscription
// and checks that the other one takes over: at once when the owner leaves
// the membership, after MemberTTL when it cannot.
func testPushTakeover(t *testing.T, kill bool) {
	ns := natsServer(t, t.TempDir())
	a := startCP(t, ns.ClientURL(), "", func(c *controlplaneConfig) { c.ReplicaID = "replica-a" })
	b := startCP(t, ns.ClientURL(), a.secret, func(c *controlplaneConfig) { c.ReplicaID = "replica-b" })
	ctx := context.Background()
	target := newPushTarget(t, nil)
	if _, err := a.Admin.CreateSubscription(ctx, bushttp.Subscription{Name: "ship", Topic: "shipments", URL: target.URL}); err != nil {
		t.Fatal(err)
	}
	// Both replicas agree on the owner once each sees the other.
	var owner string
	eventually(t, 10*time.Second, "the replicas to agree on the owner", func() bool {
		sa, err1 := a.Admin.Subscription(ctx, "ship")
		sb, err2 := b.Admin.Subscription(ctx, "ship")
		if err1 != nil || err2 != nil {
			return false
		}
		owner = sa.Owner
		return sa.Owner == sb.Owner
	})
	publish(t, a.Admin, "shipments", "s-1", "shipped")
	eventually(t, 10*time.Second, "the owner to deliver", func() bool { return slices.Equal(target.ids(), []string{"s-1"}) })

	stopped, survivor := a, b
	if owner == "replica-b" {
		stopped, survivor = b, a
	}
	if kill {
		stopped.kill()
	} else {
		stopped.stop()
	}
	publish(t, survivor.Admin, "shipments", "s-2", "shipped")
	eventually(t, 15*time.Second, "the other replica to take over", func() bool { return slices.Equal(target.ids(), []string{"s-1", "s-2"}) })
	si, err := survivor.Admin.Subscription(ctx, "ship")
	if err != nil || si.Owner != survivor.ReplicaID() || si.Group == nil || si.Group.Name != "ship" {
		t.Fatalf("after the takeover: %+v %v, want %s delivering", si, err, survivor.ReplicaID())
	}
}

func TestBusRolesAndServiceSubscriptions(t *testing.T) {
	c, _ := startOne(t)
	ctx := context.Background()
	tokens := map[string]*client.Client{}
	for name, spec := range map[string][2]string{"dash": {"viewer", ""}, "ops": {"operator", ""}, "orders": {"service", "orders"}, "payments": {"service", "payments"}} {
		secret, _, err := c.Admin.CreateToken(ctx, name, meridian.Role(spec[0]), spec[1])
		if err != nil {
			t.Fatal(err)
		}
		tokens[name] = c.client(t, secret)
	}
	ev := bus.Event{ID: "1", Source: "/orders", Type: "placed"}

	if _, err := tokens["dash"].Publish(ctx, "orders", ev); !meridian.IsCode(err, meridian.CodeForbidden) {
		t.Errorf("viewer publish: %v, want forbidden", err)
	}
	if _, err := tokens["dash"].Topics(ctx); err != nil {
		t.Errorf("viewer lists topics: %v", err)
	}
	if _, err := tokens["payments"].Publish(ctx, "orders", ev); err != nil {
		t.Errorf("a service publishes to any topic: %v", err)
	}
	if _, err := tokens["orders"].ReplayDeadLetters(ctx, "orders", bushttp.ReplayRequest{All: true}); !meridian.IsCode(err, meridian.CodeForbidden) {
		t.Errorf("service replay: %v, want forbidden", err)
	}

	// A service subscribes itself only, by name: meridian://orders/…
	// reaches its registered instances.
	target := newPushTarget(t, nil)
	host, port := hostPort(t, target.URL)
	if _, err := c.Admin.Register(ctx, &meridian.Instance{Service: "orders", ID: "o1", Address: host, Port: port}); err != nil {
		t.Fatal(err)
	}
	for _, url := range []string{target.URL, "meridian://payments/events"} {
		if _, err := tokens["orders"].CreateSubscription(ctx, bushttp.Subscription{Name: "x", Topic: "payments", URL: url}); !meridian.IsCode(err, meridian.CodeForbidden) {
			t.Errorf("service subscribes %s: %v, want forbidden", url, err)
		}
	}
	si, err := tokens["orders"].CreateSubscription(ctx, bushttp.Subscription{Name: "orders-payments", Topic: "payments", URL: "meridian://orders/events"})
	if err != nil || si.Service != "orders" {
		t.Fatalf("service subscribes itself: %+v %v", si, err)
	}
	if _, err := tokens["orders"].CreateSubscription(ctx, bushttp.Subscription{Name: "orders-payments", Topic: "payments", URL: "meridian://orders/events"}); !meridian.IsCode(err, meridian.CodeConflict) {
		t.Errorf("the same name again: %v, want conflict", err)
	}
	publish(t, tokens["payments"], "payments", "p-1", "paid")
	eventually(t, 10*time.Second, "delivery to the registered instance", func() bool {
		got := target.received()
		return len(got) == 1 && got[0].path == "/events"
	})
	if err := tokens["payments"].DeleteSubscription(ctx, "orders-payments"); !meridian.IsCode(err, meridian.CodeForbidden) {
		t.Errorf("another service deletes it: %v, want forbidden", err)
	}
	if err := tokens["dash"].DeleteSubscription(ctx, "orders-payments"); !meridian.IsCode(err, meridian.CodeForbidden) {
		t.Errorf("viewer deletes it: %v, want forbidden", err)
	}
	if err := tokens["ops"].DeleteSubscription(ctx, "orders-payments"); err != nil {
		t.Fatalf("operator deletes it: %v", err)
	}
	if list, err := c.Admin.Subscriptions(ctx, ""); err != nil || len(list) != 0 {
		t.Fatalf("after delete: %+v %v", list, err)
	}
	detail, err := c.Admin.Topic(ctx, "payments")
	if err != nil || slices.ContainsFunc(detail.Groups, func(g bus.GroupInfo) bool { return g.Name == "orders-payments" }) {
		t.Fatalf("the deleted subscription's group: %+v %v", detail, err)
	}

	// A bad subscription names its field.
	for _, tc := range []struct {
		s     bushttp.Subscription
		field string
	}{
		{bushttp.Subscription{Name: "1bad", Topic: "t", URL: target.URL}, "name"},
		{bushttp.Subscription{Name: "ok", Topic: "a..b", URL: target.URL}, "topic"},
		{bushttp.Subscription{Name: "ok", Topic: "t", URL: "ftp://x"}, "url"},
		{bushttp.Subscription{Name: "ok", Topic: "t", URL: target.URL, Mode: "json"}, "mode"},
		{bushttp.Subscription{Name: "ok", Topic: "t", URL: target.URL, Timeout: meridian.Duration(time.Hour)}, "timeout"},
		{bushttp.Subscription{Name: "ok", Topic: "t", URL: target.URL, MinBackOff: meridian.Duration(time.Hour)}, "min_backoff"},
	} {
		_, err := c.Admin.CreateSubscription(ctx, tc.s)
		var me *meridian.Error
		if !meridian.IsCode(err, meridian.CodeInvalid) || !errors.As(err, &me) || me.Field != tc.field {
			t.Errorf("%+v: %v, want invalid %s", tc.s, err, tc.field)
		}
	}
}

func TestBusEndpointsWithoutABus(t *testing.T) {
	c, _ := startOne(t, func(cfg *controlplaneConfig) { cfg.Bus = nil })
	_, err := c.Admin.Topics(context.Background())
	if !meridian.IsCode(err, meridian.CodeNotFound) || !strings.Contains(err.Error(), "event bus is not enabled") {
		t.Fatalf("topics without a bus: %v", err)
	}
}
