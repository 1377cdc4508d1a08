package sdk

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/client"
	"github.com/meridian-platform/meridian/internal/cptest"
	"github.com/meridian-platform/meridian/internal/loadtest"
	"github.com/meridian-platform/meridian/internal/logtest"
)

// These tests run Go services calling each other by name: every service
// is a real sdk.Service on loopback, registered with the real control
// plane (package cptest); the callers use Service.HTTPClient and
// Service.GRPCClient as a service's code does.

// killable is a TCP listener whose service can be killed the way a
// crashed process dies: the listening socket closes (new connections are
// refused) and every open connection is cut, with no graceful anything.
// The Service does not notice (it keeps heartbeating, as a hung process
// whose port died would); the control plane's health check finds out.
type killable struct {
	net.Listener
	mu     sync.Mutex
	conns  []net.Conn
	killed bool
	closed chan struct{}
	once   sync.Once
}

func listenKillable(t *testing.T) *killable {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return &killable{Listener: ln, closed: make(chan struct{})}
}

func (k *killable) Accept() (net.Conn, error) {
	c, err := k.Listener.Accept()
	k.mu.Lock()
	defer k.mu.Unlock()
	if err != nil {
		if k.killed {
			k.mu.Unlock()
			<-k.closed // dead: accept nothing until the server stops
			k.mu.Lock()
			return nil, net.ErrClosed
		}
		return nil, err
	}
	if k.killed {
		c.Close()
	}
	k.conns = append(k.conns, c)
	return c, nil
}

func (k *killable) kill() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.killed = true
	k.Listener.Close()
	for _, c := range k.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0) // reset, as the kernel does for a dead process's sockets
		}
		c.Close()
	}
}

func (k *killable) Close() error {
	k.once.Do(func() { close(k.closed) })
	return k.Listener.Close()
}

// answering is a handler that names its instance in X-Instance.
func answering(id string, served *atomic.Int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		w.Header().Set("X-Instance", id)
		io.WriteString(w, id)
	})
}

// waitDiscovered waits until svc sees n serving instances of service.
func waitDiscovered(t *testing.T, svc *running, service string, n int) {
	t.Helper()
	eventually(t, strconv.Itoa(n)+" instances of "+service+" in discovery", func() bool {
		s := svc.Discovery().Snapshot(service)
		return s != nil && len(s.Instances) == n
	})
}

// A Go service calling another by name with GETs: one of the callee's two
// instances is killed abruptly in the middle of the load, and no request
// fails: each try that meets the dead instance is retried on the other,
// the outlier detector ejects the dead one, and the control plane's check
// takes it out of discovery.
func TestCallByNameSurvivesAKilledInstance(t *testing.T) {
	cp := cptest.Start(t)
	check := &meridian.CheckSpec{Kind: meridian.CheckHTTP, Target: "/readyz", Interval: meridian.Duration(200 * time.Millisecond)}
	var servedA, servedB atomic.Int64
	lnA := listenKillable(t)
	cfgA := testConfig(cp)
	cfgA.ID, cfgA.Check = "orders-a", check
	a := run(t, cfgA, answering("a", &servedA), WithListener(lnA))
	cfgB := testConfig(cp)
	cfgB.ID, cfgB.Check = "orders-b", check
	b := run(t, cfgB, answering("b", &servedB))
	caller := testConfig(cp)
	caller.Name, caller.NoCheck = "checkout", true
	checkout := run(t, caller, nil)
	for _, r := range []*running{a, b, checkout} {
		waitReady(t, r)
	}
	waitDiscovered(t, checkout, "orders", 2)

	l := startLoad(checkout.HTTPClient(), "http://orders/items/1")
	eventually(t, "both instances to serve under load", func() bool { return servedA.Load() > 100 && servedB.Load() > 100 })
	lnA.kill()
	killedAt := l.sent.Load()
	waitDiscovered(t, checkout, "orders", 1)
	afterDrop := servedB.Load()
	eventually(t, "more load after the dead instance left discovery", func() bool { return servedB.Load() > afterDrop+200 })
	l.stop()
	t.Logf("%d GETs (%d after the kill), %d failed; a served %d, b %d", l.sent.Load(), l.sent.Load()-killedAt, l.failed.Load(), servedA.Load(), servedB.Load())
	if n := l.failed.Load(); n != 0 {
		t.Fatalf("%d of %d GETs failed; first: %v", n, l.sent.Load(), l.first.Load())
	}
}

// load keeps 8 callers sending GET url through hc, counting what fails,
// until stop.
type load struct {
	sent, failed atomic.Int64
	first        atomic.Value // the first failure
	stop         func()       // stops the callers and waits for them
}

func startLoad(hc *http.Client, url string) *load {
	l := &load{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		loadtest.Loop(ctx, 8, func() {
			l.sent.Add(1)
			if err := getOK(hc, url); err != nil {
				l.failed.Add(1)
				l.first.CompareAndSwap(nil, err)
			}
		})
	}()
	l.stop = func() { cancel(); <-done }
	return l
}

// getOK sends GET url and fails unless the answer is 200.
func getOK(hc *http.Client, url string) error {
	resp, err := hc.Get(url)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errors.New(resp.Status)
	}
	return nil
}

// The resiliency spec lives in the config center under
// meridian/resiliency/<caller>: a revision applies to the caller's client
// without a restart, an invalid one is rejected and the last good one
// stays, revisions written under load drop no request, and deleting the
// key brings back the built-in policies.
func TestResiliencySpecFromTheConfigCenter(t *testing.T) {
	cp := cptest.Start(t)
	var slow atomic.Bool
	var served atomic.Int64
	orders := run(t, testConfig(cp), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		if slow.Load() {
			select {
			case <-time.After(time.Second):
			case <-r.Context().Done(): // the caller's deadline, from Meridian-Timeout
				http.Error(w, "gave up", http.StatusGatewayTimeout)
				return
			}
		}
		io.WriteString(w, "ok")
	}))
	caller := testConfig(cp)
	caller.Name = "checkout"
	logs := logtest.NewCounter()
	caller.Logger = slog.New(logs)
	checkout := run(t, caller, nil)
	waitReady(t, orders)
	waitReady(t, checkout)
	waitDiscovered(t, checkout, "orders", 1)
	get := func() error { return getOK(checkout.HTTPClient(), "http://orders/") }

	const key = "meridian/resiliency/checkout"
	put := func(value string) uint64 {
		t.Helper()
		e, err := cp.Client.PutConfig(context.Background(), key, client.PutConfigRequest{Value: value, Format: meridian.FormatYAML})
		if err != nil {
			t.Fatal(err)
		}
		return e.Revision
	}
	short := `policies:
  timeouts: {short: 100ms}
targets:
  orders: {timeout: short, retry: none}
`
	put(short)
	eventually(t, "the spec to apply", func() bool { return checkout.Outbound().Spec().Targets["orders"].Timeout == "short" })
	slow.Store(true)
	begin := time.Now()
	if err := get(); err == nil {
		t.Fatal("a 1s call under a 100ms timeout succeeded")
	}
	if took := time.Since(begin); took >= time.Second {
		t.Fatalf("the timeout did not cut the call (%v)", took)
	}
	slow.Store(false)

	// An invalid revision is rejected; the spec in force stays.
	put("targets:\n  orders: {retry: fast}\n")
	eventually(t, "the invalid revision to be rejected", func() bool {
		return logs.Count("config revision rejected; keeping the last good value") == 1
	})
	if checkout.Outbound().Spec().Targets["orders"].Timeout != "short" {
		t.Fatal("an invalid revision replaced the spec")
	}

	// Revisions under load: nothing is dropped.
	l := startLoad(checkout.HTTPClient(), "http://orders/")
	other := `policies:
  timeouts: {long: 10s}
  circuit_breakers: {b: {mode: consecutive, consecutive_failures: 20}}
  balancers: {rr: {policy: round_robin}}
targets:
  orders: {timeout: long, circuit_breaker: b, balancer: rr}
`
	var last uint64
	for i := range 20 {
		if i%2 == 0 {
			last = put(other)
		} else {
			last = put(short)
		}
	}
	eventually(t, "the last revision to apply", func() bool {
		return checkout.Outbound().Spec().Targets["orders"].Timeout == "short" && served.Load() > 200
	})
	l.stop()
	t.Logf("%d requests during 20 revisions (last %d), %d failed", l.sent.Load(), last, l.failed.Load())
	if n := l.failed.Load(); n != 0 {
		t.Fatalf("%d of %d requests failed during reloads; first: %v", n, l.sent.Load(), l.first.Load())
	}

	// Deleting the key brings back the built-in policies: no timeout.
	if err := cp.Client.DeleteConfig(context.Background(), key, nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the built-in policies", func() bool { return len(checkout.Outbound().Spec().Targets) == 0 })
	slow.Store(true)
	if err := get(); err != nil {
		t.Fatalf("a 1s call under the built-in policies: %v", err)
	}
}

// The caller's deadline reaches the callee's handler through
// Meridian-Timeout (capped by the callee's MaxDeadline); with NoDeadline
// the callee ignores it.
func TestDeadlineReachesTheCallee(t *testing.T) {
	cp := cptest.Start(t)
	left := make(chan time.Duration, 10)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dl, ok := r.Context().Deadline()
		if !ok {
			left <- -1
			return
		}
		left <- time.Until(dl)
	})
	cfg := testConfig(cp)
	cfg.MaxDeadline, cfg.NoCheck = 5*time.Second, true
	orders := run(t, cfg, handler)
	cfg2 := testConfig(cp)
	cfg2.Name, cfg2.NoDeadline, cfg2.NoCheck = "legacy", true, true
	legacy := run(t, cfg2, handler)
	caller := testConfig(cp)
	caller.Name = "checkout"
	checkout := run(t, caller, nil)
	for _, r := range []*running{orders, legacy, checkout} {
		waitReady(t, r)
	}
	waitDiscovered(t, checkout, "orders", 1)
	waitDiscovered(t, checkout, "legacy", 1)
	call := func(service string, timeout time.Duration) time.Duration {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+service+"/", nil)
		resp, err := checkout.HTTPClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return <-left
	}
	if d := call("orders", 2*time.Second); d <= 0 || d > 2*time.Second {
		t.Fatalf("with a 2s deadline the callee has %v left", d)
	}
	if d := call("orders", time.Minute); d <= 0 || d > 5*time.Second {
		t.Fatalf("with a 1m deadline and MaxDeadline 5s the callee has %v left", d)
	}
	if d := call("legacy", 2*time.Second); d != -1 {
		t.Fatalf("with NoDeadline the callee has a deadline (%v left)", d)
	}
	// Without a header, MaxDeadline is the deadline.
	resp, err := http.Get("http://" + orders.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if d := <-left; d <= 0 || d > 5*time.Second {
		t.Fatalf("without the header the callee has %v left, want MaxDeadline", d)
	}
}

// A service pushed to 3× its capacity keeps serving about its capacity
// with bounded latency and sheds the rest with 503 and Retry-After, by
// the load shedding Run puts in front of every handler.
func TestOverloadIsShed(t *testing.T) {
	if testing.Short() {
		t.Skip("seconds of load")
	}
	const (
		C        = 4
		S        = 50 * time.Millisecond
		capacity = float64(C) / 0.050 // 80 requests/s
		rate     = 3 * capacity
		length   = 3 * time.Second
		warmup   = 500 * time.Millisecond
	)
	svc := run(t, testConfig(cptest.Start(t)), loadtest.Capacity(C, S))
	tr := &http.Transport{MaxIdleConnsPerHost: 1000}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	results, elapsed := loadtest.OpenLoop(rate, length, loadtest.Get(hc, svc.url("/work")))
	s := loadtest.Summarize(results, elapsed, warmup)
	t.Logf("offered %d in %v: %d served (%.0f/s, capacity %.0f/s), %d shed, p99 after warm-up %v",
		s.Sent, elapsed.Round(time.Millisecond), s.OK, s.Throughput, capacity, s.Shed, s.P99)
	switch {
	case s.Other > 0:
		t.Fatalf("%d answers neither 200 nor 503", s.Other)
	case s.NoRetryAfter > 0:
		t.Fatalf("%d shed answers without Retry-After", s.NoRetryAfter)
	case s.Throughput < 0.5*capacity:
		t.Fatalf("served %.0f/s, under half the capacity %.0f/s: collapse", s.Throughput, capacity)
	case s.Shed < s.Sent/4:
		t.Fatalf("shed %d of %d: the excess queued instead", s.Shed, s.Sent)
	case s.P99 > 10*S:
		t.Fatalf("p99 of served requests %v, over 10× the service time", s.P99)
	}
}

// A gRPC service is called by name: GRPCClient resolves meridian:///<name>
// through discovery and applies the upstream's policies.
func TestGRPCClientByName(t *testing.T) {
	cp := cptest.Start(t)
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	defer func() { srv.Stop(); <-done }()
	port := ln.Addr().(*net.TCPAddr).Port
	if _, err := cp.Client.Register(context.Background(), &meridian.Instance{
		Service: "inventory", ID: "inventory-1", Address: "127.0.0.1", Port: port, Protocol: meridian.ProtocolGRPC,
	}); err != nil {
		t.Fatal(err)
	}
	caller := testConfig(cp)
	caller.Name = "checkout"
	checkout := run(t, caller, nil)
	if _, err := checkout.GRPCClient("Not A Name"); !meridian.IsCode(err, meridian.CodeInvalid) {
		t.Fatalf("GRPCClient with a bad name: %v", err)
	}
	conn, err := checkout.GRPCClient("inventory")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Check: %v, %v", resp, err)
	}
}
