package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-platform/meridian/bus"
	"github.com/meridian-platform/meridian/bus/bushttp"
	busjetstream "github.com/meridian-platform/meridian/bus/jetstream"
	"github.com/meridian-platform/meridian/internal/testwait"
)

// eventSink is a push target: it records the ids of the events POSTed to
// it and answers 500 while failing is set.
type eventSink struct {
	*httptest.Server
	failing atomic.Bool
	mu      sync.Mutex
	ids     []string
}

func newEventSink(t *testing.T) *eventSink {
	s := &eventSink{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		events, _, err := bushttp.ReadEvents(r.Header, body)
		if err != nil {
			t.Errorf("push target: %v", err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.ids = append(s.ids, events[0].ID)
		s.mu.Unlock()
		if s.failing.Load() {
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *eventSink) got() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.ids)
}

// TestEventsFromShellCurlAndCLIEndToEnd runs `meridian server` with its
// embedded NATS reachable, and checks what the bus's users do: an event
// published by curl (structured and binary) and by `meridian events
// publish` reaches a Go consumer on the NATS server and a push subscriber;
// `events tail`, `topics ls` and `dlq ls|show|replay` work on them.
func TestEventsFromShellCurlAndCLIEndToEnd(t *testing.T) {
	dir := t.TempDir()
	addr, natsAddr := freeAddr(t), freeAddr(t)
	getenv := func(k string) string {
		return map[string]string{"MERIDIAN_DATA_DIR": dir, "MERIDIAN_ADDR": addr, "HOME": dir}[k]
	}
	startServer(t, addr, getenv, "--nats-listen", natsAddr)
	waitUp(t, "http://"+addr+"/readyz")
	cli := func(args ...string) (string, error) {
		var out, errb bytes.Buffer
		err := run(context.Background(), args, getenv, strings.NewReader(""), &out, &errb)
		return out.String(), err
	}
	mustCLI := func(args ...string) string {
		t.Helper()
		out, err := cli(args...)
		if err != nil {
			t.Fatalf("meridian %s: %v", strings.Join(args, " "), err)
		}
		return out
	}

	// A Go service consumes orders through the bus engine on the server's NATS.
	nc, err := nats.Connect("nats://" + natsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	eb, err := busjetstream.New(nc, busjetstream.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer eb.Close(context.Background())
	var mu sync.Mutex
	consumed := map[string]string{}
	sub, err := eb.Subscribe(context.Background(), "orders", "billing", func(_ context.Context, d *bus.Delivery) error {
		mu.Lock()
		consumed[d.Event.ID] = string(d.Event.Data)
		mu.Unlock()
		return nil
	}, bus.SubscribeOptions{StartAt: bus.StartAt{First: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	sink := newEventSink(t)
	mustCLI("subscriptions", "create", "audit", "--topic", "orders", "--url", sink.URL+"/events")

	want := []string{"o-3"}
	if curl, err := exec.LookPath("curl"); err == nil {
		token, _ := os.ReadFile(filepath.Join(dir, "admin.token"))
		base := []string{"-sS", "--fail-with-body", "-X", "POST", "-H", "Authorization: Bearer " + strings.TrimSpace(string(token)), "http://" + addr + "/v1/topics/orders/events"}
		for _, args := range [][]string{
			{"-H", "Content-Type: application/cloudevents+json", "--data", `{"specversion":"1.0","id":"o-1","source":"/shop","type":"com.example.order.placed","data":{"id":"o-1"}}`},
			{"-H", "ce-specversion: 1.0", "-H", "ce-id: o-2", "-H", "ce-source: /shop", "-H", "ce-type: com.example.order.placed", "-H", "Content-Type: application/json", "--data", `{"id":"o-2"}`},
		} {
			out, err := exec.Command(curl, append(base, args...)...).CombinedOutput()
			if err != nil || !strings.Contains(string(out), `"sequence"`) {
				t.Fatalf("curl: %v %s", err, out)
			}
		}
		want = []string{"o-1", "o-2", "o-3"}
	} else {
		t.Log("no curl on PATH: publishing with the CLI only")
	}
	if out := mustCLI("events", "publish", "orders", `{"id":"o-3"}`, "--type", "com.example.order.placed", "--id", "o-3", "--source", "/shop"); !strings.HasPrefix(out, "published o-3 to orders: sequence ") {
		t.Fatalf("events publish: %q", out)
	}
	if out := mustCLI("events", "publish", "orders", `{"id":"o-3"}`, "--type", "com.example.order.placed", "--id", "o-3", "--source", "/shop"); !strings.HasPrefix(out, "duplicate of orders sequence ") {
		t.Fatalf("events publish again: %q", out)
	}
	eventually(t, "the Go consumer and the push subscriber to get every order", func() bool {
		mu.Lock()
		n := len(consumed)
		mu.Unlock()
		got := sink.got()
		slices.Sort(got)
		return n == len(want) && slices.Equal(got, want)
	})
	mu.Lock()
	if consumed["o-3"] != `{"id":"o-3"}` {
		t.Errorf("Go consumer got %q", consumed["o-3"])
	}
	mu.Unlock()

	// events tail replays the topic from a sequence, one JSON event a line.
	out := mustCLI("events", "tail", "orders", "--from-seq", "1", "--max", u(uint64(len(want))), "-o", "json")
	var tailed []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var te bushttp.TopicEvent
		if err := json.Unmarshal([]byte(line), &te); err != nil {
			t.Fatalf("tail line %q: %v", line, err)
		}
		tailed = append(tailed, te.Event.ID)
	}
	if !slices.Equal(tailed, want) {
		t.Fatalf("tail = %v, want %v", tailed, want)
	}
	if out := mustCLI("events", "tail", "orders", "--from-seq", "1", "--max", "1"); !strings.Contains(out, "com.example.order.placed /shop "+want[0]) {
		t.Fatalf("tail text: %q", out)
	}
	if out := mustCLI("topics", "ls"); !strings.Contains(out, "orders") {
		t.Fatalf("topics ls:\n%s", out)
	}

	// A failing subscriber's event lands in the DLQ; replay delivers it.
	jobs := newEventSink(t)
	jobs.failing.Store(true)
	mustCLI("subscriptions", "create", "worker", "--topic", "jobs", "--url", jobs.URL, "--max-deliveries", "2", "--backoff", "50ms")
	mustCLI("events", "publish", "jobs", `{"n":1}`, "--type", "job.run", "--id", "j-1")
	var dlq bushttp.DeadLetterList
	eventually(t, "the job to be dead-lettered", func() bool {
		return json.Unmarshal([]byte(mustCLI("dlq", "ls", "jobs", "-o", "json")), &dlq) == nil && len(dlq.DeadLetters) == 1
	})
	seq := u(dlq.DeadLetters[0].Sequence)
	if out := mustCLI("dlq", "show", "jobs", seq); !strings.Contains(out, "500 Internal Server Error") || !strings.Contains(out, "attempt 2") {
		t.Fatalf("dlq show:\n%s", out)
	}
	if out := mustCLI("dlq", "ls", "jobs"); !strings.Contains(out, "worker") || !strings.Contains(out, "j-1") {
		t.Fatalf("dlq ls:\n%s", out)
	}
	jobs.failing.Store(false)
	if out := mustCLI("dlq", "replay", "jobs", seq); !strings.HasPrefix(out, "replayed dead letter "+seq+" as event ") {
		t.Fatalf("dlq replay: %q", out)
	}
	eventually(t, "the replayed job to be delivered", func() bool { return len(jobs.got()) == 3 })
	if out := mustCLI("dlq", "ls", "jobs", "-o", "json"); !strings.Contains(out, `"dead_letters": []`) {
		t.Fatalf("dlq after replay: %s", out)
	}

	// Mistakes get one line that says what to do.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"events", "publish", "orders", "{}", "--type", "t", "--source", ""}, "--source: is required"},
		{[]string{"events", "publish", "orders", "{not json", "--type", "t"}, "DATA: is not valid JSON"},
		{[]string{"events", "tail", "nosuch", "--max", "1"}, `topic "nosuch" does not exist`},
		{[]string{"dlq", "show", "jobs", "999"}, `topic "jobs" has no dead letter 999`},
		{[]string{"dlq", "replay", "jobs"}, "give the SEQ of a dead letter"},
		{[]string{"subscriptions", "create", "audit", "--topic", "orders", "--url", sink.URL}, `a subscription named "audit" exists`},
		{[]string{"subscriptions", "create", "x", "--topic", "orders", "--url", "ftp://x"}, "--url: "},
	} {
		if _, err := cli(tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("meridian %s: %v, want one line with %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
	mustCLI("subscriptions", "rm", "worker")
	if out := mustCLI("subscriptions", "ls"); strings.Contains(out, "worker") || !strings.Contains(out, "audit") {
		t.Fatalf("subscriptions ls:\n%s", out)
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testwait.Until(t, 20*time.Second, what, cond)
}
