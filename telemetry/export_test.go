package telemetry_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/telemetry"
)

// No OTLP collector runs beside the tests, so these receivers stand in for
// one: they decode what the exporters send, enough to check that
// Endpoint, Protocol and the environment reach the right exporter and that
// Shutdown flushes the batcher through it.

// received collects the spans an OTLP receiver got, by service.name.
type received struct {
	mu    sync.Mutex
	paths []string
	spans map[string][]string // service.name → span names
}

func (rc *received) add(path string, req *collectortrace.ExportTraceServiceRequest) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.paths = append(rc.paths, path)
	if rc.spans == nil {
		rc.spans = map[string][]string{}
	}
	for _, rs := range req.GetResourceSpans() {
		var service string
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				rc.spans[service] = append(rc.spans[service], s.GetName())
			}
		}
	}
}

func (rc *received) check(t *testing.T, wantPath string) {
	t.Helper()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.paths) == 0 {
		t.Fatal("the receiver got nothing")
	}
	for _, p := range rc.paths {
		if p != wantPath {
			t.Errorf("export to %q, want %q", p, wantPath)
		}
	}
	if got := rc.spans["meridian-gateway"]; len(got) != 1 || got[0] != "orders" {
		t.Errorf("received %v, want one span named orders from meridian-gateway", rc.spans)
	}
}

// httpReceiver is an OTLP/HTTP (protobuf) receiver.
func httpReceiver(t *testing.T) (*httptest.Server, *received) {
	rc := &received{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		var req collectortrace.ExportTraceServiceRequest
		if err == nil {
			err = proto.Unmarshal(body, &req)
		}
		if err != nil || r.Header.Get("Content-Type") != "application/x-protobuf" {
			http.Error(w, "not an OTLP protobuf request", http.StatusBadRequest)
			return
		}
		rc.add(r.URL.Path, &req)
		resp, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(resp)
	}))
	t.Cleanup(srv.Close)
	return srv, rc
}

type grpcTraceService struct {
	collectortrace.UnimplementedTraceServiceServer
	rc *received
}

func (s grpcTraceService) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	s.rc.add("grpc", req)
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

// grpcReceiver is an OTLP/gRPC receiver; it returns its address.
func grpcReceiver(t *testing.T) (string, *received) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rc := &received{}
	s := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(s, grpcTraceService{rc: rc})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(lis)
	}()
	t.Cleanup(func() {
		s.Stop()
		<-done
	})
	return lis.Addr().String(), rc
}

// exportOne serves one request at ratio 1 and shuts down, which must
// flush the span to the exporter.
func exportOne(t *testing.T, cfg telemetry.TracingConfig) {
	t.Helper()
	cfg.ServiceName, cfg.SampleRatio = "meridian-gateway", 1
	tr, err := telemetry.NewTracing(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	serve(tr, "orders", ok, request(""))
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

func TestOTLPExport(t *testing.T) {
	t.Run("http/protobuf endpoint without a path", func(t *testing.T) {
		clearOTLPEnv(t)
		srv, rc := httpReceiver(t)
		exportOne(t, telemetry.TracingConfig{Endpoint: srv.URL, Protocol: telemetry.ProtocolHTTP})
		rc.check(t, "/v1/traces")
	})
	t.Run("http/protobuf endpoint with a path", func(t *testing.T) {
		clearOTLPEnv(t)
		srv, rc := httpReceiver(t)
		exportOne(t, telemetry.TracingConfig{Endpoint: srv.URL + "/otlp/traces", Protocol: telemetry.ProtocolHTTP})
		rc.check(t, "/otlp/traces")
	})
	t.Run("grpc is the default protocol", func(t *testing.T) {
		clearOTLPEnv(t)
		addr, rc := grpcReceiver(t)
		exportOne(t, telemetry.TracingConfig{Endpoint: "http://" + addr})
		rc.check(t, "grpc")
	})
	t.Run("endpoint and protocol from the environment", func(t *testing.T) {
		clearOTLPEnv(t)
		srv, rc := httpReceiver(t)
		t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
		t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
		exportOne(t, telemetry.TracingConfig{})
		rc.check(t, "/v1/traces")
	})
	t.Run("traces endpoint from the environment, grpc", func(t *testing.T) {
		clearOTLPEnv(t)
		addr, rc := grpcReceiver(t)
		t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://"+addr)
		exportOne(t, telemetry.TracingConfig{})
		rc.check(t, "grpc")
	})
}

func TestUnsupportedProtocolFromEnvironment(t *testing.T) {
	clearOTLPEnv(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")
	_, err := telemetry.NewTracing(context.Background(), telemetry.TracingConfig{ServiceName: "meridian-gateway"})
	var me *meridian.Error
	if !errors.As(err, &me) || me.Field != "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL" {
		t.Fatalf("NewTracing = %v, want an error naming OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", err)
	}
}
