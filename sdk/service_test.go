package sdk

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/client"
	"github.com/meridian-platform/meridian/internal/cptest"
	"github.com/meridian-platform/meridian/internal/testwait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The lifecycle tests run against the real control plane (package cptest:
// a replica on an embedded JetStream). An unreachable control plane is a
// stopped replica; its return is a replica restarted on the same address
// and store. What the rest of the system sees of an instance is measured
// the way the rest of the system sees it: through the registry's API and
// its watch.

func testConfig(cp *cptest.CP) Config {
	return Config{
		Name:            "orders",
		Version:         "1.0.0",
		Listen:          "127.0.0.1:0",
		ControlPlane:    cp.URL,
		Token:           cp.Secret,
		TTL:             time.Second,
		DrainDelay:      -1,
		ShutdownTimeout: 5 * time.Second,
	}
}

// running is a Service whose Run runs in the background.
type running struct {
	*Service
	cancel context.CancelFunc
	done   chan error
	http   *http.Client
}

func run(t *testing.T, cfg Config, h http.Handler, opts ...Option) *running {
	t.Helper()
	svc, err := New(cfg, append([]Option{WithoutSignals()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Service: svc, cancel: cancel, done: make(chan error, 1), http: &http.Client{Transport: &http.Transport{}}}
	go func() { r.done <- svc.Run(ctx, h) }()
	t.Cleanup(func() {
		r.stop(t)
		r.http.CloseIdleConnections()
	})
	select {
	case <-svc.Listening():
	case err := <-r.done:
		t.Fatalf("Run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not listen")
	}
	return r
}

// stop cancels Run and returns its result.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok {
			close(r.done)
		}
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after cancel")
		return nil
	}
}

func (r *running) url(path string) string { return "http://" + r.Addr().String() + path }

func (r *running) id() string { return "orders-127.0.0.1-" + itoa(r.Addr().Port) }

func (r *running) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := r.http.Get(r.url(path))
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitReady(t *testing.T, r *running) {
	t.Helper()
	select {
	case <-r.Ready():
	case err := <-r.done:
		t.Fatalf("Run returned before ready: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the service did not become ready")
	}
}

// eventually polls cond until it holds or a generous deadline passes: it
// asserts that something happens, never how fast.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testwait.Until(t, 10*time.Second, what, cond)
}

// recordingCP is the real client of the control plane, keeping a record of
// the registry calls the SDK makes through it and their outcomes, in
// order. Every call goes through to the real control plane; the record
// exists because some of what a test asserts is seen only on the calling
// side: attempts made while the control plane is down, and heartbeats,
// which the control plane keeps no trace of.
type recordingCP struct {
	*client.Client
	mu    sync.Mutex
	calls []call
}

var _ ControlPlane = (*recordingCP)(nil)

type call struct {
	op  string // register, heartbeat or deregister
	err error
}

func recordCalls(t *testing.T, cp *cptest.CP) *recordingCP {
	t.Helper()
	c, err := client.New(cp.URL, cp.Secret)
	if err != nil {
		t.Fatal(err)
	}
	return &recordingCP{Client: c}
}

func (r *recordingCP) record(op string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, call{op, err})
}

func (r *recordingCP) Register(ctx context.Context, in *meridian.Instance) (*meridian.Instance, error) {
	out, err := r.Client.Register(ctx, in)
	r.record("register", err)
	return out, err
}

func (r *recordingCP) Heartbeat(ctx context.Context, service, id string) error {
	err := r.Client.Heartbeat(ctx, service, id)
	r.record("heartbeat", err)
	return err
}

func (r *recordingCP) Deregister(ctx context.Context, service, id string) error {
	err := r.Client.Deregister(ctx, service, id)
	r.record("deregister", err)
	return err
}

func (r *recordingCP) all() []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

// outcome is "ok" for a call that succeeded, else its error's code.
func outcome(err error) string {
	if err == nil {
		return "ok"
	}
	return string(meridian.ErrorCode(err))
}

// count counts the calls of op with the outcome ("ok" or an error code).
func count(calls []call, op, result string) int {
	n := 0
	for _, c := range calls {
		if c.op == op && outcome(c.err) == result {
			n++
		}
	}
	return n
}

// watchLog is what a registry watcher of one service has seen, in order.
type watchLog struct {
	mu     sync.Mutex
	events []meridian.InstanceEvent // puts and deletes
}

// watchRegistry watches service through c until the test ends and returns
// once the watch has delivered the current list.
func watchRegistry(t *testing.T, c *client.Client, service string) *watchLog {
	t.Helper()
	w := &watchLog{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	synced := make(chan struct{})
	var once sync.Once
	go func() {
		done <- c.WatchRegistry(ctx, service, 0, func(ev meridian.InstanceEvent) error {
			if ev.Type == meridian.EventSync {
				once.Do(func() { close(synced) })
				return nil
			}
			w.mu.Lock()
			w.events = append(w.events, ev)
			w.mu.Unlock()
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("registry watch ended with %v", err)
		}
	})
	select {
	case <-synced:
	case err := <-done:
		done <- err
		t.Fatalf("registry watch: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the registry watch did not sync")
	}
	return w
}

// of returns the event types seen for one instance, in order.
func (w *watchLog) of(id string) []meridian.EventType {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []meridian.EventType
	for _, ev := range w.events {
		if ev.ID == id {
			out = append(out, ev.Type)
		}
	}
	return out
}

func TestRunRegistersTheBoundPort(t *testing.T) {
	cp := cptest.Start(t)
	cfg := testConfig(cp)
	cfg.Zone, cfg.Tags, cfg.Metadata, cfg.Weight = "eu-1a", []string{"primary"}, map[string]string{"team": "checkout"}, 50
	r := run(t, cfg, nil)
	waitReady(t, r)

	port := r.Addr().Port
	in, err := cp.Client.Instance(context.Background(), "orders", r.id())
	if err != nil {
		t.Fatalf("instance %s: %v", r.id(), err)
	}
	if in.Address != "127.0.0.1" || in.Port != port || in.Version != "1.0.0" || in.Zone != "eu-1a" ||
		in.Weight != 50 || in.TTL.D() != time.Second || in.Metadata["team"] != "checkout" || !slices.Equal(in.Tags, []string{"primary"}) {
		t.Errorf("registered %+v", in)
	}
	if in.Check == nil || in.Check.Kind != meridian.CheckHTTP || in.Check.Target != "/readyz" {
		t.Errorf("check = %+v, want an HTTP check of /readyz", in.Check)
	}
	if code, _ := r.get(t, "/healthz"); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
	if code, _ := r.get(t, "/readyz"); code != 200 {
		t.Errorf("/readyz = %d once registered", code)
	}
	if code, _ := r.get(t, "/anything"); code != 404 {
		t.Errorf("nil handler answered %d, want 404", code)
	}
}

func TestRunShutdownOrder(t *testing.T) {
	cp := cptest.Start(t)
	watch := watchRegistry(t, cp.Client, "orders")
	cfg := testConfig(cp)
	cfg.DrainDelay = 2 * time.Second // the window in which /readyz must be seen answering 503
	started, release := make(chan struct{}), make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		close(started)
		<-release
		_, _ = io.WriteString(w, "done")
	})
	r := run(t, cfg, h)
	waitReady(t, r)
	id := r.id()

	inflight := make(chan string, 1)
	go func() {
		resp, err := r.http.Get(r.url("/slow"))
		if err != nil {
			inflight <- "error: " + err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		inflight <- resp.Status + " " + string(b)
	}()
	<-started

	r.cancel()
	// First watchers see the instance go…
	eventually(t, "a watcher sees the instance deregistered", func() bool {
		evs := watch.of(id)
		return len(evs) > 0 && evs[len(evs)-1] == meridian.EventDelete
	})
	// …while the drain delay runs, the server still answers, /readyz with
	// 503.
	eventually(t, "/readyz answers 503", func() bool { code, _ := r.get(t, "/readyz"); return code == 503 })
	if code, _ := r.get(t, "/healthz"); code != 200 {
		t.Errorf("/healthz during drain = %d, want 200", code)
	}
	// After it, new connections are refused, but shutdown waits for the
	// in-flight request, which holds Run until it is released.
	eventually(t, "new connections are refused", func() bool {
		resp, err := r.http.Get(r.url("/healthz"))
		if err == nil {
			resp.Body.Close()
		}
		return err != nil
	})
	select {
	case err := <-r.done:
		t.Fatalf("Run returned with a request in flight: %v", err)
	default:
	}
	close(release)
	if got := <-inflight; got != "200 OK done" {
		t.Errorf("in-flight request got %q, want it to complete", got)
	}
	if err := <-r.done; err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	close(r.done)

	// Nothing registered the instance again after it was deregistered: a
	// marker registered now, after Run returned, reaches the watcher after
	// every change Run made.
	ctx := context.Background()
	if _, err := cp.Client.Register(ctx, &meridian.Instance{Service: "orders", ID: "marker", Address: "127.0.0.1", Port: 1}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the watcher sees the marker", func() bool { return len(watch.of("marker")) > 0 })
	evs := watch.of(id)
	if del := slices.Index(evs, meridian.EventDelete); del < 0 || del != len(evs)-1 {
		t.Errorf("a watcher saw %v of the instance: want its deregistration last, and once", evs)
	}
	if _, err := cp.Client.Instance(ctx, "orders", id); !meridian.IsCode(err, meridian.CodeNotFound) {
		t.Errorf("after Run returned, the instance: %v, want not_found", err)
	}
}

func TestRunCutsOffRequestsAfterShutdownTimeout(t *testing.T) {
	cp := cptest.Start(t)
	cfg := testConfig(cp)
	cfg.ShutdownTimeout = 100 * time.Millisecond
	started, release := make(chan struct{}), make(chan struct{})
	defer close(release)
	r := run(t, cfg, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		close(started)
		<-release
	}))
	waitReady(t, r)
	go func() {
		if resp, err := r.http.Get(r.url("/stuck")); err == nil {
			resp.Body.Close()
		}
	}()
	<-started
	if err := r.stop(t); err == nil || !strings.Contains(err.Error(), "did not finish within 100ms") {
		t.Fatalf("Run = %v, want an error about cut-off requests", err)
	}
}

func TestHeartbeatNotFoundRegistersAgain(t *testing.T) {
	cp := cptest.Start(t)
	rec := recordCalls(t, cp)
	r := run(t, testConfig(cp), nil, WithControlPlane(rec)) // TTL 1s: a heartbeat every 333ms
	waitReady(t, r)
	id := r.id()
	eventually(t, "a heartbeat", func() bool { return count(rec.all(), "heartbeat", "ok") >= 1 })

	// The registry forgets the instance, as when its lease expired: the
	// next heartbeat answers not_found and the service registers again.
	ctx := context.Background()
	if err := cp.Client.Deregister(ctx, "orders", id); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the instance is registered again", func() bool { return count(rec.all(), "register", "ok") >= 2 })
	if _, err := cp.Client.Instance(ctx, "orders", id); err != nil {
		t.Fatalf("after re-registration: %v", err)
	}
	calls := rec.all()
	second := slices.IndexFunc(calls[1:], func(c call) bool { return c.op == "register" }) + 1
	if prev := calls[second-1]; prev.op != "heartbeat" || !meridian.IsCode(prev.err, meridian.CodeNotFound) {
		t.Fatalf("the call before the second registration was %s (%v), want a heartbeat answered not_found", prev.op, prev.err)
	}
	eventually(t, "heartbeats resume", func() bool { return count(rec.all()[second:], "heartbeat", "ok") >= 1 })
	if code, _ := r.get(t, "/readyz"); code != 200 {
		t.Errorf("/readyz = %d after re-registration", code)
	}
}

func TestRunKeepsServingWhileControlPlaneIsUnreachable(t *testing.T) {
	cp := cptest.Start(t)
	cp.Stop()
	rec := recordCalls(t, cp)
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { _, _ = io.WriteString(w, "hello") })
	r := run(t, testConfig(cp), h, WithControlPlane(rec))

	eventually(t, "several registration attempts", func() bool {
		return count(rec.all(), "register", string(meridian.CodeUnavailable)) >= 3
	})
	if code, body := r.get(t, "/"); code != 200 || body != "hello" {
		t.Errorf("handler = %d %q while the control plane is down", code, body)
	}
	if code, _ := r.get(t, "/readyz"); code != 503 {
		t.Errorf("/readyz = %d before registration, want 503", code)
	}
	select {
	case <-r.Ready():
		t.Fatal("ready without registration")
	default:
	}

	cp.Restart()
	waitReady(t, r)
	if _, err := cp.Client.Instance(context.Background(), "orders", r.id()); err != nil {
		t.Fatalf("not registered after the control plane came back: %v", err)
	}

	// Down again: heartbeats fail, the service runs on and stays ready.
	cp.Stop()
	n := count(rec.all(), "heartbeat", string(meridian.CodeUnavailable))
	eventually(t, "failed heartbeats", func() bool {
		return count(rec.all(), "heartbeat", string(meridian.CodeUnavailable)) >= n+2
	})
	if code, _ := r.get(t, "/readyz"); code != 200 {
		t.Errorf("/readyz = %d during an outage after registration, want 200", code)
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("Run = %v, want a clean stop despite the failed deregistration", err)
	}
	if calls := rec.all(); calls[len(calls)-1].op != "deregister" || !meridian.IsCode(calls[len(calls)-1].err, meridian.CodeUnavailable) {
		t.Errorf("last call %+v, want the deregistration, failed as unavailable", calls[len(calls)-1])
	}
}

func TestRunStopsOnSIGTERM(t *testing.T) {
	cp := cptest.Start(t)
	svc, err := New(testConfig(cp))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- svc.Run(context.Background(), nil) }()
	select {
	case <-svc.Ready():
	case err := <-done:
		t.Fatal(err)
	case <-time.After(10 * time.Second):
		t.Fatal("not ready")
	}
	// Run has installed its handler before it became ready, so the signal
	// reaches it rather than killing the test.
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run ignored SIGTERM")
	}
	id := "orders-127.0.0.1-" + itoa(svc.Addr().Port)
	if _, err := cp.Client.Instance(context.Background(), "orders", id); !meridian.IsCode(err, meridian.CodeNotFound) {
		t.Errorf("after SIGTERM the instance: %v, want not_found", err)
	}
}

func TestRunFailsAtOnceOnABadListenAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cp := cptest.Start(t)
	rec := recordCalls(t, cp)
	cfg := testConfig(cp)
	cfg.Listen = ln.Addr().String() // taken
	svc, err := New(cfg, WithoutSignals(), WithControlPlane(rec))
	if err != nil {
		t.Fatal(err)
	}
	err = svc.Run(context.Background(), nil)
	if !meridian.IsCode(err, meridian.CodeInvalid) || !strings.Contains(err.Error(), "Listen") {
		t.Fatalf("Run = %v, want an error naming Listen", err)
	}
	if calls := rec.all(); len(calls) != 0 {
		t.Errorf("calls %+v, want none", calls)
	}
	if svcs, _, err := cp.Client.Services(context.Background()); err != nil || len(svcs) != 0 {
		t.Errorf("services %+v (%v), want none", svcs, err)
	}
}

func TestRegistrationAddress(t *testing.T) {
	cp := cptest.Start(t)
	tests := []struct {
		name      string
		cfg       func(*Config)
		wantAddr  string
		wantPort  func(bound int) int
		wantID    string
		wantCheck *meridian.CheckSpec
	}{
		{
			name:     "listener IP and port",
			cfg:      func(*Config) {},
			wantAddr: "127.0.0.1", wantPort: func(p int) int { return p },
			wantCheck: &meridian.CheckSpec{Kind: meridian.CheckHTTP, Target: "/readyz"},
		},
		{
			name:     "advertised host keeps the bound port",
			cfg:      func(c *Config) { c.AdvertiseAddr = "orders.internal" },
			wantAddr: "orders.internal", wantPort: func(p int) int { return p },
			wantCheck: &meridian.CheckSpec{Kind: meridian.CheckHTTP, Target: "/readyz"},
		},
		{
			name:     "advertised host and port, fixed id, no check",
			cfg:      func(c *Config) { c.AdvertiseAddr, c.ID, c.NoCheck = "10.1.2.3:9000", "orders-a", true },
			wantAddr: "10.1.2.3", wantPort: func(int) int { return 9000 }, wantID: "orders-a",
		},
		{
			name:     "all interfaces: the address that reaches the control plane",
			cfg:      func(c *Config) { c.Listen = ":0"; c.Check = &meridian.CheckSpec{Kind: meridian.CheckTCP} },
			wantAddr: "127.0.0.1", wantPort: func(p int) int { return p },
			wantCheck: &meridian.CheckSpec{Kind: meridian.CheckTCP},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(cp)
			tt.cfg(&cfg)
			svc, err := New(cfg, WithoutSignals())
			if err != nil {
				t.Fatal(err)
			}
			in, err := svc.registration(&net.TCPAddr{IP: net.ParseIP(strings.TrimSuffix(cfg.Listen, ":0")), Port: 4321})
			if err != nil {
				t.Fatal(err)
			}
			wantID := tt.wantID
			if wantID == "" {
				wantID = "orders-" + tt.wantAddr + "-" + itoa(tt.wantPort(4321))
			}
			if in.Address != tt.wantAddr || in.Port != tt.wantPort(4321) || in.ID != wantID {
				t.Errorf("registration %s %s:%d, want %s %s:%d", in.ID, in.Address, in.Port, wantID, tt.wantAddr, tt.wantPort(4321))
			}
			if (in.Check == nil) != (tt.wantCheck == nil) || in.Check != nil && (in.Check.Kind != tt.wantCheck.Kind || in.Check.Target != tt.wantCheck.Target) {
				t.Errorf("check %+v, want %+v", in.Check, tt.wantCheck)
			}
		})
	}
}

func TestDiscoverySharesTheServiceClient(t *testing.T) {
	cp := cptest.Start(t)
	var pass atomic.Bool
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/check" && pass.Load() {
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	cfg := testConfig(cp)
	// The control plane's check of the instance fails until the test lets
	// it pass.
	cfg.Check = &meridian.CheckSpec{Kind: meridian.CheckHTTP, Target: "/check", Interval: meridian.Duration(100 * time.Millisecond)}
	r := run(t, cfg, h)
	waitReady(t, r)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	snap, err := r.Discovery().Wait(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	// The check has not passed (its initial status is critical), so
	// discovery does not serve the instance.
	if len(snap.Instances) != 0 {
		t.Fatalf("instances %v before the check passed", snap.Instances)
	}
	pass.Store(true)
	for len(snap.Instances) == 0 {
		select {
		case <-snap.Changed():
			snap = r.Discovery().Snapshot("orders")
		case <-ctx.Done():
			t.Fatal("discovery never served the instance after its check passed")
		}
	}
	if len(snap.Instances) != 1 || snap.Instances[0].ID != r.id() || snap.Instances[0].Health.Status != meridian.StatusPassing {
		t.Fatalf("snapshot %+v, want the service itself, passing", snap)
	}
	if r.ControlPlane() == nil {
		t.Fatal("no control plane client")
	}
}

func TestRunTwice(t *testing.T) {
	cp := cptest.Start(t)
	r := run(t, testConfig(cp), nil)
	if err := r.Run(context.Background(), nil); err == nil || errors.Is(err, context.Canceled) {
		t.Fatalf("second Run = %v, want an error", err)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
