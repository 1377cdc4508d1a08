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
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/internal/fakecp"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The lifecycle tests run the real client against fakecp, the in-memory
// stand-in for the control plane's HTTP API, which can be made unreachable
// at will and records every call and watch index; it stands in until the
// end-to-end tests against the real control plane (e2e_test.go) cover
// these paths too.

func testConfig(cp *fakecp.Server) Config {
	return Config{
		Name:            "orders",
		Version:         "1.0.0",
		Listen:          "127.0.0.1:0",
		ControlPlane:    cp.URL,
		Token:           cp.Token,
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
	case <-time.After(5 * time.Second):
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
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
		return nil
	}
}

func (r *running) url(path string) string { return "http://" + r.Addr().String() + path }

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
	case <-time.After(5 * time.Second):
		t.Fatal("the service did not become ready")
	}
}

// eventually polls cond for up to 5 seconds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func count(calls []string, call string) int {
	n := 0
	for _, c := range calls {
		if c == call {
			n++
		}
	}
	return n
}

func TestRunRegistersTheBoundPort(t *testing.T) {
	cp := fakecp.Start(t)
	cfg := testConfig(cp)
	cfg.Zone, cfg.Tags, cfg.Metadata, cfg.Weight = "eu-1a", []string{"primary"}, map[string]string{"team": "checkout"}, 50
	r := run(t, cfg, nil)
	waitReady(t, r)

	port := r.Addr().Port
	id := "orders-127.0.0.1-" + itoa(port)
	in := cp.Instance("orders", id)
	if in == nil {
		t.Fatalf("instance %s not registered; calls %v", id, cp.Calls())
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
	cp := fakecp.Start(t)
	cfg := testConfig(cp)
	cfg.DrainDelay = time.Second // the window in which /readyz must be seen answering 503
	started, release := make(chan struct{}), make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		close(started)
		<-release
		_, _ = io.WriteString(w, "done")
	})
	r := run(t, cfg, h)
	waitReady(t, r)
	id := "orders-127.0.0.1-" + itoa(r.Addr().Port)

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
	// First the instance is deregistered…
	eventually(t, "the instance is deregistered", func() bool { return cp.Instance("orders", id) == nil })
	// …and while the drain delay runs the server still answers, /readyz
	// with 503.
	eventually(t, "/readyz answers 503", func() bool { code, _ := r.get(t, "/readyz"); return code == 503 })
	if code, _ := r.get(t, "/healthz"); code != 200 {
		t.Errorf("/healthz during drain = %d, want 200", code)
	}
	// Shutdown waits for the in-flight request.
	select {
	case err := <-r.done:
		t.Fatalf("Run returned with a request in flight: %v", err)
	case <-time.After(cfg.DrainDelay + 300*time.Millisecond):
	}
	if _, err := r.http.Get(r.url("/readyz")); err == nil {
		t.Error("a new request was accepted after the drain delay")
	}
	close(release)
	if got := <-inflight; got != "200 OK done" {
		t.Errorf("in-flight request got %q, want it to complete", got)
	}
	if err := <-r.done; err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	close(r.done)

	calls := cp.Calls()
	del := slices.Index(calls, "DELETE /v1/services/orders/instances/"+id)
	if del < 0 || slices.ContainsFunc(calls[del+1:], func(c string) bool { return strings.HasPrefix(c, "PUT ") }) {
		t.Errorf("calls %v: want a deregistration with no registration or heartbeat after it", calls)
	}
}

func TestRunCutsOffRequestsAfterShutdownTimeout(t *testing.T) {
	cp := fakecp.Start(t)
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
	cp := fakecp.Start(t)
	r := run(t, testConfig(cp), nil) // TTL 1s: a heartbeat every 333ms
	waitReady(t, r)
	id := "orders-127.0.0.1-" + itoa(r.Addr().Port)
	reg := "PUT /v1/services/orders/instances/" + id
	beat := reg + "/heartbeat"
	eventually(t, "a heartbeat", func() bool { return count(cp.Calls(), beat) >= 1 })

	cp.Expire("orders", id)
	eventually(t, "the instance is registered again", func() bool { return cp.Instance("orders", id) != nil })

	calls := cp.Calls()
	second := slices.Index(calls[1:], reg) + 1
	if second < 1 || calls[second-1] != beat {
		t.Fatalf("calls %v: want the second registration right after a heartbeat", calls)
	}
	eventually(t, "heartbeats resume", func() bool { return count(cp.Calls()[second:], beat) >= 1 })
	if code, _ := r.get(t, "/readyz"); code != 200 {
		t.Errorf("/readyz = %d after re-registration", code)
	}
}

func TestRunKeepsServingWhileControlPlaneIsUnreachable(t *testing.T) {
	cp := fakecp.Start(t)
	cp.SetDown(true)
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { _, _ = io.WriteString(w, "hello") })
	r := run(t, testConfig(cp), h)
	id := "orders-127.0.0.1-" + itoa(r.Addr().Port)
	reg := "PUT /v1/services/orders/instances/" + id

	eventually(t, "several registration attempts", func() bool { return count(cp.Calls(), reg) >= 3 })
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

	cp.SetDown(false)
	waitReady(t, r)
	if cp.Instance("orders", id) == nil {
		t.Fatal("not registered after the control plane came back")
	}

	// Down again: heartbeats fail, the service runs on and stays ready.
	cp.SetDown(true)
	n := count(cp.Calls(), reg+"/heartbeat")
	eventually(t, "failed heartbeats", func() bool { return count(cp.Calls(), reg+"/heartbeat") >= n+2 })
	if code, _ := r.get(t, "/readyz"); code != 200 {
		t.Errorf("/readyz = %d during an outage after registration, want 200", code)
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("Run = %v, want a clean stop despite the failed deregistration", err)
	}
}

func TestRunStopsOnSIGTERM(t *testing.T) {
	cp := fakecp.Start(t)
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
	case <-time.After(5 * time.Second):
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
	case <-time.After(10 * time.Second):
		t.Fatal("Run ignored SIGTERM")
	}
	if id := "orders-127.0.0.1-" + itoa(svc.Addr().Port); cp.Instance("orders", id) != nil {
		t.Error("still registered after SIGTERM")
	}
}

func TestRunFailsAtOnceOnABadListenAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cp := fakecp.Start(t)
	cfg := testConfig(cp)
	cfg.Listen = ln.Addr().String() // taken
	svc, err := New(cfg, WithoutSignals())
	if err != nil {
		t.Fatal(err)
	}
	err = svc.Run(context.Background(), nil)
	if !meridian.IsCode(err, meridian.CodeInvalid) || !strings.Contains(err.Error(), "Listen") {
		t.Fatalf("Run = %v, want an error naming Listen", err)
	}
	if len(cp.Calls()) != 0 {
		t.Errorf("calls %v, want none", cp.Calls())
	}
}

func TestRegistrationAddress(t *testing.T) {
	cp := fakecp.Start(t)
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
	cp := fakecp.Start(t)
	r := run(t, testConfig(cp), nil)
	waitReady(t, r)
	id := "orders-127.0.0.1-" + itoa(r.Addr().Port)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	snap, err := r.Discovery().Wait(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	// The control plane's check has not passed yet (its initial status is
	// critical), so discovery does not serve the instance.
	if len(snap.Instances) != 0 {
		t.Fatalf("instances %v before the check passed", snap.Instances)
	}
	cp.SetHealth("orders", id, meridian.StatusPassing)
	select {
	case <-snap.Changed():
	case <-ctx.Done():
		t.Fatal("no change")
	}
	if s := r.Discovery().Snapshot("orders"); len(s.Instances) != 1 || s.Instances[0].ID != id {
		t.Fatalf("snapshot %+v, want the service itself", s)
	}
	if r.ControlPlane() == nil {
		t.Fatal("no control plane client")
	}
}

func TestRunTwice(t *testing.T) {
	cp := fakecp.Start(t)
	r := run(t, testConfig(cp), nil)
	if err := r.Run(context.Background(), nil); err == nil || errors.Is(err, context.Canceled) {
		t.Fatalf("second Run = %v, want an error", err)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
