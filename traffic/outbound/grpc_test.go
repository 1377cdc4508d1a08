package outbound_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/traffic/outbound"
	"github.com/meridian-platform/meridian/traffic/resilience/breaker"
)

// grpcInstance is a real gRPC server on loopback serving the standard
// health service, registered as an instance. Its interceptors count the
// calls and streams it receives, fail them with UNAVAILABLE while failing
// is set, and record whether a call arrived with a deadline.
type grpcInstance struct {
	id          string
	srv         *grpc.Server
	calls       atomic.Int64
	failing     atomic.Bool
	delay       atomic.Int64
	sawDeadline atomic.Bool
}

func (h *harness) grpcInstance(service, id string) *grpcInstance {
	h.t.Helper()
	g := &grpcInstance{id: id}
	g.srv = grpc.NewServer(
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
			g.calls.Add(1)
			if _, ok := ctx.Deadline(); ok {
				g.sawDeadline.Store(true)
			}
			if d := time.Duration(g.delay.Load()); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
					return nil, status.FromContextError(ctx.Err()).Err()
				}
			}
			if g.failing.Load() {
				return nil, status.Error(codes.Unavailable, "failing on purpose")
			}
			return next(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, next grpc.StreamHandler) error {
			g.calls.Add(1)
			if g.failing.Load() {
				return status.Error(codes.Unavailable, "failing on purpose")
			}
			return next(srv, ss)
		}),
	)
	healthpb.RegisterHealthServer(g.srv, health.NewServer())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		h.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = g.srv.Serve(ln) }()
	h.t.Cleanup(func() { g.srv.Stop(); <-done })
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	p, _ := strconv.Atoi(port)
	if _, err := h.cp.Client.Register(context.Background(), &meridian.Instance{
		Service: service, ID: id, Address: host, Port: p, Protocol: meridian.ProtocolGRPC,
	}); err != nil {
		h.t.Fatal(err)
	}
	return g
}

func (h *harness) grpcConn(service string) healthpb.HealthClient {
	h.t.Helper()
	conn, err := grpc.NewClient(outbound.GRPCTarget(service), h.tr.GRPCDialOptions()...)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { conn.Close() })
	return healthpb.NewHealthClient(conn)
}

func check(c healthpb.HealthClient) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

// gRPC calls to meridian:///<service> are spread over the instances the
// resolver lists, retried on UNAVAILABLE within the attempts, given the
// target's timeout as their deadline, and guarded by the breaker, which
// opens, fails fast with a status, and recovers through half-open.
func TestGRPCInterceptorsAgainstARealServer(t *testing.T) {
	h := start(t, `policies:
  timeouts: {t: 2s, short: 100ms}
  retries: {three: {max_attempts: 3, base_delay: 1ms, max_delay: 2ms}}
  circuit_breakers: {b: {consecutive_failures: 4, open_for: 200ms, open_for_growth: 1, close_after: 2}}
default: {timeout: t, retry: three, circuit_breaker: b}
targets: {slow: {timeout: short, retry: none}}`)
	a, b := h.grpcInstance("inventory", "a"), h.grpcInstance("inventory", "b")
	c := h.grpcConn("inventory")

	// Both instances serve (round robin over the resolver's list), with
	// a deadline on every call.
	eventually(t, "both instances to get calls", func() bool {
		if err := check(c); err != nil {
			t.Fatalf("Check: %v", err)
		}
		return a.calls.Load() > 0 && b.calls.Load() > 0
	})
	if !a.sawDeadline.Load() || !b.sawDeadline.Load() {
		t.Fatal("a call arrived without the target's deadline")
	}

	// One failing instance: every call still succeeds, retried on the
	// other (round robin moves on).
	a.failing.Store(true)
	for i := range 20 {
		if err := check(c); err != nil {
			t.Fatalf("call %d with one instance failing: %v", i, err)
		}
	}

	// Both failing: the breaker opens within its 4 failed tries and then
	// fails fast, with UNAVAILABLE, reaching no server.
	b.failing.Store(true)
	opened := false
	for i := 0; i < 10 && !opened; i++ {
		err := check(c)
		if err == nil {
			t.Fatal("a call succeeded while both instances fail")
		}
		opened = errors.Is(err, breaker.ErrOpen)
	}
	if !opened {
		t.Fatal("the breaker did not open")
	}
	before := a.calls.Load() + b.calls.Load()
	for range 10 {
		err := check(c)
		if !errors.Is(err, breaker.ErrOpen) || status.Code(err) != codes.Unavailable {
			t.Fatalf("open breaker: %v (code %v)", err, status.Code(err))
		}
	}
	if n := a.calls.Load() + b.calls.Load() - before; n != 0 {
		t.Fatalf("%d calls reached the servers through an open breaker", n)
	}
	a.failing.Store(false)
	b.failing.Store(false)
	u, err := h.tr.Upstream("inventory")
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the breaker to close through half-open", func() bool {
		return check(c) == nil && u.Breaker().State() == breaker.Closed
	})

	// Streams: admitted by the breaker, bounded by the timeout.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := c.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := w.Recv(); err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Watch: %v, %v", resp, err)
	}
	cancel()
	if _, err := w.Recv(); status.Code(err) != codes.Canceled {
		t.Fatalf("after cancel: %v", err)
	}

	// The target's timeout: a slow call ends with DEADLINE_EXCEEDED.
	s := h.grpcInstance("slow", "s")
	s.delay.Store(int64(time.Second))
	sc := h.grpcConn("slow")
	begin := time.Now()
	if err := check(sc); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("slow call: %v", err)
	}
	if took := time.Since(begin); took >= time.Second {
		t.Fatalf("the 100ms timeout did not cut a 1s call (took %v)", took)
	}
}
