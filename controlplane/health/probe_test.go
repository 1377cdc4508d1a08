package health

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/meridian-platform/meridian"
)

// instanceAt is an instance whose address and port are those of addr.
func instanceAt(t *testing.T, addr net.Addr, spec meridian.CheckSpec) *meridian.Instance {
	t.Helper()
	tcp := addr.(*net.TCPAddr)
	if err := spec.Normalize(); err != nil {
		t.Fatal(err)
	}
	return &meridian.Instance{
		Service: "orders", ID: "orders-1",
		Address: tcp.IP.String(), Port: tcp.Port,
		Check: &spec,
	}
}

// flipServer is an HTTP server whose status code the test sets.
type flipServer struct {
	*httptest.Server
	code  atomic.Int32
	hits  atomic.Int64
	paths chan string
}

func newFlipServer(t *testing.T) *flipServer {
	t.Helper()
	s := &flipServer{paths: make(chan string, 1000)}
	s.code.Store(http.StatusOK)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		select {
		case s.paths <- r.URL.Path:
		default:
		}
		w.WriteHeader(int(s.code.Load()))
		// More than Probe reads, to show a large body does not hold it up.
		_, _ = w.Write([]byte(strings.Repeat("x", 64<<10)))
	}))
	t.Cleanup(s.Close)
	return s
}

func TestProbeHTTP(t *testing.T) {
	srv := newFlipServer(t)
	client := newHTTPClient()
	ctx := t.Context()

	tests := []struct {
		name     string
		target   string
		code     int
		wantOK   bool
		wantOut  string
		wantPath string
	}{
		{"default path passes on 200", "", http.StatusOK, true, "HTTP 200 OK", "/healthz"},
		{"204 is 2xx", "/ready", http.StatusNoContent, true, "HTTP 204 No Content", "/ready"},
		{"503 fails", "/ready", http.StatusServiceUnavailable, false, "HTTP 503 Service Unavailable", "/ready"},
		{"3xx without location fails", "/ready", http.StatusNotModified, false, "HTTP 304 Not Modified", "/ready"},
		{"path without slash", "status", http.StatusOK, true, "HTTP 200 OK", "/status"},
		{"full URL", srv.URL + "/custom", http.StatusOK, true, "HTTP 200 OK", "/custom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv.code.Store(int32(tt.code))
			inst := instanceAt(t, srv.Listener.Addr(), meridian.CheckSpec{Kind: meridian.CheckHTTP, Target: tt.target})
			if tt.target == srv.URL+"/custom" {
				inst.Port = 1 // the URL, not the instance's port, must be used
			}
			got := Probe(ctx, inst, client)
			if got.OK != tt.wantOK || got.Output != tt.wantOut {
				t.Errorf("Probe = %+v, want OK=%v Output=%q", got, tt.wantOK, tt.wantOut)
			}
			if p := <-srv.paths; p != tt.wantPath {
				t.Errorf("server saw path %q, want %q", p, tt.wantPath)
			}
		})
	}
}

// An endpoint that flips between 200 and 503 is seen flipping.
func TestProbeHTTPFlips(t *testing.T) {
	srv := newFlipServer(t)
	inst := instanceAt(t, srv.Listener.Addr(), meridian.CheckSpec{Kind: meridian.CheckHTTP})
	client := newHTTPClient()
	for i, code := range []int{200, 503, 200, 503} {
		srv.code.Store(int32(code))
		got := Probe(t.Context(), inst, client)
		if want := code == 200; got.OK != want {
			t.Fatalf("probe %d with HTTP %d: OK = %v (%s)", i, code, got.OK, got.Output)
		}
	}
}

func TestProbeHTTPTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release) // runs first: frees a handler before Close waits for it

	inst := instanceAt(t, srv.Listener.Addr(), meridian.CheckSpec{
		Kind: meridian.CheckHTTP, Interval: meridian.Duration(time.Second), Timeout: meridian.Duration(100 * time.Millisecond),
	})
	got := Probe(t.Context(), inst, newHTTPClient())
	if got.OK || got.Output != "timed out after 100ms" {
		t.Fatalf("Probe = %+v, want a failure reading %q", got, "timed out after 100ms")
	}
}

func TestProbeHTTPRefused(t *testing.T) {
	addr := closedAddr(t)
	inst := instanceAt(t, addr, meridian.CheckSpec{Kind: meridian.CheckHTTP})
	got := Probe(t.Context(), inst, newHTTPClient())
	if got.OK || !strings.Contains(got.Output, "connection refused") {
		t.Fatalf("Probe = %+v, want a refused connection", got)
	}
}

// closedAddr is a local address on which nothing listens any more.
func closedAddr(t *testing.T) net.Addr {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr()
	_ = ln.Close()
	return addr
}

func TestProbeTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	inst := instanceAt(t, ln.Addr(), meridian.CheckSpec{Kind: meridian.CheckTCP})

	if got := Probe(t.Context(), inst, nil); !got.OK || got.Output != "connected" {
		t.Fatalf("open listener: Probe = %+v, want connected", got)
	}

	_ = ln.Close()
	<-accepted
	got := Probe(t.Context(), inst, nil)
	if got.OK || !strings.Contains(got.Output, "connection refused") {
		t.Fatalf("closed listener: Probe = %+v, want a refused connection", got)
	}

	// An explicit target wins over the instance's address.
	inst.Check.Target = closedAddr(t).String()
	inst.Port = ln.Addr().(*net.TCPAddr).Port
	if got := Probe(t.Context(), inst, nil); got.OK {
		t.Fatalf("target: Probe = %+v, want a failure", got)
	}
}

func TestProbeGRPC(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := grpchealth.NewServer()
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	served := make(chan error, 1)
	go func() { served <- gs.Serve(ln) }()
	defer func() {
		gs.Stop()
		<-served
	}()

	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("orders.v1.Orders", healthpb.HealthCheckResponse_NOT_SERVING)

	tests := []struct {
		name    string
		service string
		set     *healthpb.HealthCheckResponse_ServingStatus
		wantOK  bool
		wantOut string
	}{
		{"server serving", "", nil, true, "SERVING"},
		{"service not serving", "orders.v1.Orders", nil, false, "NOT_SERVING"},
		{"server not serving", "", ptr(healthpb.HealthCheckResponse_NOT_SERVING), false, "NOT_SERVING"},
		{"server serving again", "", ptr(healthpb.HealthCheckResponse_SERVING), true, "SERVING"},
		{"unknown service", "nope.v1.Nope", nil, false, "code = NotFound"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.set != nil {
				hs.SetServingStatus("", *tt.set)
			}
			inst := instanceAt(t, ln.Addr(), meridian.CheckSpec{Kind: meridian.CheckGRPC, GRPCService: tt.service})
			got := Probe(t.Context(), inst, nil)
			if got.OK != tt.wantOK || !strings.Contains(got.Output, tt.wantOut) {
				t.Errorf("Probe = %+v, want OK=%v and output containing %q", got, tt.wantOK, tt.wantOut)
			}
		})
	}

	t.Run("server gone", func(t *testing.T) {
		inst := instanceAt(t, closedAddr(t), meridian.CheckSpec{Kind: meridian.CheckGRPC})
		got := Probe(t.Context(), inst, nil)
		if got.OK || !strings.Contains(got.Output, "Unavailable") {
			t.Errorf("Probe = %+v, want an Unavailable failure", got)
		}
	})
}

func ptr[T any](v T) *T { return &v }

func TestProbeBadInstance(t *testing.T) {
	ctx := context.Background()
	if got := Probe(ctx, &meridian.Instance{}, nil); got.OK || got.Output == "" {
		t.Errorf("no check: Probe = %+v, want a failure with a reason", got)
	}
	inst := &meridian.Instance{Address: "127.0.0.1", Port: 1, Check: &meridian.CheckSpec{Kind: "icmp"}}
	if got := Probe(ctx, inst, nil); got.OK || !strings.Contains(got.Output, "icmp") {
		t.Errorf("unknown kind: Probe = %+v, want a failure naming the kind", got)
	}
}

func TestTruncate(t *testing.T) {
	s := strings.Repeat("é", 10) // 2 bytes each
	if got := truncate(s, 5); got != "éé" {
		t.Errorf("truncate = %q, want %q", got, "éé")
	}
	if got := truncate("short", 10); got != "short" {
		t.Errorf("truncate = %q", got)
	}
}
