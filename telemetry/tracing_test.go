package telemetry_test

import (
	"context"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/internal/testwait"
	"github.com/meridian-platform/meridian/telemetry"
)

// A parent as a caller's tracer writes it.
const (
	parentTraceID   = "4bf92f3577b34da6a3ce929d0e0e4736"
	parentSpanID    = "00f067aa0ba902b7"
	sampledParent   = "00-" + parentTraceID + "-" + parentSpanID + "-01"
	unsampledParent = "00-" + parentTraceID + "-" + parentSpanID + "-00"
)

// clearOTLPEnv keeps an exporter configured in the environment that runs
// the tests out of them.
func clearOTLPEnv(t *testing.T) {
	for _, k := range []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
		"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
	} {
		t.Setenv(k, "")
	}
}

// newTracing builds a Tracing that t shuts down.
func newTracing(t *testing.T, cfg telemetry.TracingConfig, opts ...telemetry.Option) *telemetry.Tracing {
	t.Helper()
	if cfg.ServiceName == "" {
		cfg.ServiceName = "meridian-gateway"
	}
	tr, err := telemetry.NewTracing(context.Background(), cfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tr.Shutdown(context.Background()); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return tr
}

// recording returns a Tracing sampling roots at ratio, with no exporter,
// and the recorder of its ended spans.
func recording(t *testing.T, ratio float64) (*telemetry.Tracing, *tracetest.SpanRecorder) {
	t.Helper()
	clearOTLPEnv(t)
	rec := tracetest.NewSpanRecorder()
	return newTracing(t, telemetry.TracingConfig{SampleRatio: ratio}, telemetry.WithSpanProcessor(rec)), rec
}

// request is a GET through the gateway, with traceparent if not empty.
func request(traceparent string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/orders/42?token=secret", nil)
	if traceparent != "" {
		r.Header.Set("traceparent", traceparent)
	}
	return r
}

// serve runs r through the middleware for route around h.
func serve(tr *telemetry.Tracing, route string, h http.HandlerFunc, r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	tr.Middleware(route, h).ServeHTTP(w, r)
	return w
}

func ok(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }

// injected returns the headers Inject writes for the request's context.
func injected(tr *telemetry.Tracing, r *http.Request) http.Header {
	h := http.Header{}
	tr.Inject(r.Context(), h)
	return h
}

func attrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

func onlySpan(t *testing.T, rec *tracetest.SpanRecorder) sdktrace.ReadOnlySpan {
	t.Helper()
	ended := rec.Ended()
	if len(ended) != 1 {
		t.Fatalf("%d spans ended, want 1", len(ended))
	}
	return ended[0]
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   telemetry.TracingConfig
		field string // "" = valid
	}{
		{"zero value with a name", telemetry.TracingConfig{ServiceName: "meridian-gateway"}, ""},
		{"everything set", telemetry.TracingConfig{ServiceName: "orders", SampleRatio: 0.01, Endpoint: "https://collector:4318/v1/traces", Protocol: "http/protobuf"}, ""},
		{"grpc endpoint", telemetry.TracingConfig{ServiceName: "orders", SampleRatio: 1, Endpoint: "http://collector:4317", Protocol: "grpc"}, ""},
		{"no service name", telemetry.TracingConfig{}, "service_name"},
		{"service name not a DNS label", telemetry.TracingConfig{ServiceName: "Orders API"}, "service_name"},
		{"negative ratio", telemetry.TracingConfig{ServiceName: "orders", SampleRatio: -0.1}, "sample_ratio"},
		{"ratio above 1", telemetry.TracingConfig{ServiceName: "orders", SampleRatio: 1.5}, "sample_ratio"},
		{"NaN ratio", telemetry.TracingConfig{ServiceName: "orders", SampleRatio: math.NaN()}, "sample_ratio"},
		{"unknown protocol", telemetry.TracingConfig{ServiceName: "orders", Protocol: "http/json"}, "protocol"},
		{"endpoint without scheme", telemetry.TracingConfig{ServiceName: "orders", Endpoint: "collector:4317"}, "endpoint"},
		{"endpoint with another scheme", telemetry.TracingConfig{ServiceName: "orders", Endpoint: "grpc://collector:4317"}, "endpoint"},
		{"endpoint without host", telemetry.TracingConfig{ServiceName: "orders", Endpoint: "http:///v1/traces"}, "endpoint"},
		{"endpoint with query", telemetry.TracingConfig{ServiceName: "orders", Endpoint: "http://collector:4318/?x=1"}, "endpoint"},
		{"endpoint not a URL", telemetry.TracingConfig{ServiceName: "orders", Endpoint: "http://[::1"}, "endpoint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var me *meridian.Error
			if !errors.As(err, &me) || me.Code != meridian.CodeInvalid || me.Field != tc.field {
				t.Fatalf("Validate = %v, want an invalid *meridian.Error naming %q", err, tc.field)
			}
			// NewTracing validates too, before building anything.
			if _, err := telemetry.NewTracing(context.Background(), tc.cfg); !errors.As(err, &me) || me.Field != tc.field {
				t.Fatalf("NewTracing = %v, want the error naming %q", err, tc.field)
			}
		})
	}
}

func TestSampledParentIsFollowedEvenAtRatioZero(t *testing.T) {
	tr, rec := recording(t, 0)
	serve(tr, "orders", ok, request(sampledParent))

	s := onlySpan(t, rec)
	if got := s.SpanContext().TraceID().String(); got != parentTraceID {
		t.Errorf("trace id %s, want the parent's %s", got, parentTraceID)
	}
	if got := s.Parent().SpanID().String(); got != parentSpanID || !s.Parent().IsRemote() {
		t.Errorf("parent %s (remote %v), want the remote %s", got, s.Parent().IsRemote(), parentSpanID)
	}
	if !s.SpanContext().IsSampled() {
		t.Error("span not sampled")
	}
	if s.SpanKind() != trace.SpanKindServer {
		t.Errorf("kind %v, want server", s.SpanKind())
	}
}

func TestUnsampledParentIsFollowedEvenAtRatioOne(t *testing.T) {
	tr, rec := recording(t, 1)
	var out http.Header
	serve(tr, "orders", func(w http.ResponseWriter, r *http.Request) { out = injected(tr, r) }, request(unsampledParent))

	if n := len(rec.Ended()); n != 0 {
		t.Fatalf("%d spans recorded under an unsampled parent", n)
	}
	// The decision travels on, so the next hop does not start a trace.
	sc := parseTraceparent(t, out)
	if sc.TraceID().String() != parentTraceID || sc.IsSampled() {
		t.Errorf("forwarded %q, want trace %s, not sampled", out.Get("traceparent"), parentTraceID)
	}
}

func TestRootSampling(t *testing.T) {
	const requests = 200
	for _, tc := range []struct {
		name  string
		ratio float64
		want  int
	}{
		{"ratio 1 samples every root", 1, requests},
		{"ratio 0 samples no root", 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, rec := recording(t, tc.ratio)
			var forwarded []http.Header
			h := func(w http.ResponseWriter, r *http.Request) { forwarded = append(forwarded, injected(tr, r)) }
			for range requests {
				serve(tr, "orders", h, request(""))
			}
			ended := rec.Ended()
			if len(ended) != tc.want {
				t.Fatalf("%d of %d roots sampled, want %d", len(ended), requests, tc.want)
			}
			traces := map[trace.TraceID]bool{}
			for _, s := range ended {
				traces[s.SpanContext().TraceID()] = true
			}
			if len(traces) != len(ended) {
				t.Errorf("%d spans in %d traces: every root starts its own", len(ended), len(traces))
			}
			// Sampled or not, a root's decision is forwarded.
			for _, h := range forwarded {
				if sc := parseTraceparent(t, h); sc.IsSampled() != (tc.ratio == 1) {
					t.Fatalf("forwarded %q with ratio %v", h.Get("traceparent"), tc.ratio)
				}
			}
		})
	}
}

func TestSpanNameAndStatus(t *testing.T) {
	for _, tc := range []struct {
		name      string
		handler   http.HandlerFunc
		status    int64
		errorType string // "" = span status unset
	}{
		{"write", ok, 200, ""},
		{"nothing written", func(http.ResponseWriter, *http.Request) {}, 200, ""},
		{"created", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(201) }, 201, ""},
		{"client error is not the server's", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(404) }, 404, ""},
		{"internal error", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(500) }, 500, "500"},
		{"upstream down", func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "no upstream", 503) }, 503, "503"},
		{"early hints then the answer", func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusEarlyHints)
			w.WriteHeader(502)
		}, 502, "502"},
		{"flush sends 200", func(w http.ResponseWriter, _ *http.Request) {
			_ = http.NewResponseController(w).Flush()
			w.WriteHeader(500) // too late: 200 has gone
		}, 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, rec := recording(t, 1)
			serve(tr, "orders-api", tc.handler, request(""))

			s := onlySpan(t, rec)
			if s.Name() != "orders-api" {
				t.Errorf("span named %q, want the route %q", s.Name(), "orders-api")
			}
			a := attrs(s)
			if got := a["http.response.status_code"].AsInt64(); got != tc.status {
				t.Errorf("http.response.status_code %d, want %d", got, tc.status)
			}
			wantCode := codes.Unset
			if tc.errorType != "" {
				wantCode = codes.Error
			}
			if s.Status().Code != wantCode {
				t.Errorf("span status %v, want %v", s.Status().Code, wantCode)
			}
			if got := a["error.type"].AsString(); got != tc.errorType {
				t.Errorf("error.type %q, want %q", got, tc.errorType)
			}
		})
	}
}

func TestRequestAttributes(t *testing.T) {
	tr, rec := recording(t, 1)
	mux := http.NewServeMux()
	mux.Handle("GET /orders/{id}", tr.Middleware("orders", http.HandlerFunc(ok)))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/orders/42?token=secret", nil)
	req.Header.Set("User-Agent", "shop/1.0")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	waitEnded(t, rec, 1)

	a := attrs(rec.Ended()[0])
	_, port := hostPort(t, srv.Listener.Addr().String())
	for k, want := range map[attribute.Key]any{
		"http.request.method":       "GET",
		"url.scheme":                "http",
		"url.path":                  "/orders/42",
		"http.route":                "/orders/{id}",
		"server.address":            "127.0.0.1",
		"server.port":               int64(port),
		"network.protocol.version":  "1.1",
		"client.address":            "127.0.0.1",
		"network.peer.address":      "127.0.0.1",
		"user_agent.original":       "shop/1.0",
		"http.response.status_code": int64(200),
	} {
		if got := a[k].AsInterface(); got != want {
			t.Errorf("%s = %v, want %v", k, got, want)
		}
	}
	if a["network.peer.port"].AsInt64() == 0 {
		t.Error("network.peer.port not set")
	}
	if _, ok := a["url.query"]; ok {
		t.Error("url.query recorded: query strings carry tokens")
	}
}

func TestUnregisteredMethodIsOther(t *testing.T) {
	tr, rec := recording(t, 1)
	r := request("")
	r.Method = "PURGE"
	serve(tr, "cache", ok, r)

	a := attrs(onlySpan(t, rec))
	if a["http.request.method"].AsString() != "_OTHER" || a["http.request.method_original"].AsString() != "PURGE" {
		t.Errorf("method %q, original %q; want _OTHER, PURGE", a["http.request.method"].AsString(), a["http.request.method_original"].AsString())
	}
}

func TestPanicEndsSpanAsErrorAndPanicsOn(t *testing.T) {
	tr, rec := recording(t, 1)
	func() {
		defer func() {
			if p := recover(); p != "boom" {
				t.Errorf("recovered %v, want the handler's panic", p)
			}
		}()
		serve(tr, "orders", func(http.ResponseWriter, *http.Request) { panic("boom") }, request(""))
	}()

	s := onlySpan(t, rec)
	if s.Status().Code != codes.Error || s.Status().Description != "panic: boom" {
		t.Errorf("status %+v, want an error describing the panic", s.Status())
	}
}

// The gateway forwards its span to the upstream, whose own middleware
// continues the trace under it, baggage included.
func TestInjectContinuesTraceAtNextHop(t *testing.T) {
	gw, gwRec := recording(t, 1)
	up, upRec := recording(t, 0) // follows the gateway's decision

	var tenant string
	upstream := httptest.NewServer(up.Middleware("orders-svc", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tenant = baggage.FromContext(r.Context()).Member("tenant").Value()
	})))
	defer upstream.Close()
	gateway := httptest.NewServer(gw.Middleware("orders", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		out, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, upstream.URL, nil)
		gw.Inject(r.Context(), out.Header)
		resp, err := upstream.Client().Do(out)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
	})))
	defer gateway.Close()

	req, _ := http.NewRequest(http.MethodGet, gateway.URL, nil)
	req.Header.Set("baggage", "tenant=acme")
	resp, err := gateway.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	waitEnded(t, gwRec, 1)
	waitEnded(t, upRec, 1)

	g, u := gwRec.Ended()[0].SpanContext(), upRec.Ended()[0]
	if u.SpanContext().TraceID() != g.TraceID() {
		t.Errorf("upstream trace %s, want the gateway's %s", u.SpanContext().TraceID(), g.TraceID())
	}
	if u.Parent().SpanID() != g.SpanID() {
		t.Errorf("upstream parent %s, want the gateway span %s", u.Parent().SpanID(), g.SpanID())
	}
	if tenant != "acme" {
		t.Errorf("upstream baggage tenant=%q, want acme", tenant)
	}
}

// ResponseController, and the interfaces a handler may assert, work
// through the middleware on both paths.
func TestFlushThroughMiddleware(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ratio float64
	}{{"sampled", 1}, {"unsampled", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			tr, rec := recording(t, tc.ratio)
			release := make(chan struct{})
			srv := httptest.NewServer(tr.Middleware("stream", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				rc := http.NewResponseController(w)
				if err := rc.SetWriteDeadline(time.Now().Add(time.Minute)); err != nil {
					t.Errorf("SetWriteDeadline: %v", err)
				}
				if _, ok := w.(http.Flusher); !ok {
					t.Error("writer is not an http.Flusher")
				}
				_, _ = w.Write([]byte("first;"))
				if err := rc.Flush(); err != nil {
					t.Errorf("Flush: %v", err)
				}
				select { // the client must have the first part before the handler goes on
				case <-release:
				case <-r.Context().Done():
					return
				}
				_, _ = w.Write([]byte("second"))
			})))
			defer srv.Close()

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatalf("no flushed header: %v", err)
			}
			defer resp.Body.Close()
			first := make([]byte, len("first;"))
			if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "first;" {
				t.Fatalf("read %q, %v: want the flushed first part", first, err)
			}
			close(release)
			rest, err := io.ReadAll(resp.Body)
			if err != nil || string(rest) != "second" {
				t.Fatalf("read %q, %v", rest, err)
			}
			if tc.ratio == 1 {
				waitEnded(t, rec, 1)
				if got := attrs(rec.Ended()[0])["http.response.status_code"].AsInt64(); got != 200 {
					t.Errorf("status code %d, want 200", got)
				}
			}
		})
	}
}

func TestHijackThroughMiddleware(t *testing.T) {
	for _, tc := range []struct {
		name   string
		hijack func(http.ResponseWriter) (net.Conn, error)
	}{
		{"ResponseController", func(w http.ResponseWriter) (net.Conn, error) {
			c, _, err := http.NewResponseController(w).Hijack()
			return c, err
		}},
		{"http.Hijacker", func(w http.ResponseWriter) (net.Conn, error) {
			h, ok := w.(http.Hijacker)
			if !ok {
				return nil, errors.New("not an http.Hijacker")
			}
			c, _, err := h.Hijack()
			return c, err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, rec := recording(t, 1)
			srv := httptest.NewServer(tr.Middleware("upgrade", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				c, err := tc.hijack(w)
				if err != nil {
					t.Errorf("hijack: %v", err)
					return
				}
				defer c.Close()
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nhijacked")
			})))
			defer srv.Close()

			resp, err := srv.Client().Get(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != "hijacked" {
				t.Fatalf("body %q", body)
			}
			waitEnded(t, rec, 1)
			if v, ok := attrs(rec.Ended()[0])["http.response.status_code"]; ok {
				t.Errorf("status code %v recorded for a hijacked connection, whose status the middleware cannot see", v.AsInterface())
			}
		})
	}
}

// A writer that cannot hijack, as HTTP/2's, is not made to claim it can.
func TestWrapperClaimsOnlyWhatItCanDo(t *testing.T) {
	tr, rec := recording(t, 1)
	serve(tr, "orders", func(w http.ResponseWriter, _ *http.Request) {
		if _, ok := w.(http.Hijacker); ok {
			t.Error("wrapper of a ResponseRecorder claims http.Hijacker")
		}
		if _, _, err := http.NewResponseController(w).Hijack(); !errors.Is(err, http.ErrNotSupported) {
			t.Errorf("Hijack: %v, want ErrNotSupported", err)
		}
		if _, ok := w.(http.Flusher); !ok {
			t.Error("wrapper of a ResponseRecorder is not an http.Flusher")
		}
	}, request(""))
	onlySpan(t, rec)
}

// keptExporter is tracetest's in-memory exporter, whose Shutdown would
// discard what the batcher just flushed into it.
type keptExporter struct {
	*tracetest.InMemoryExporter
}

func (keptExporter) Shutdown(context.Context) error { return nil }

func TestShutdownFlushesBatcher(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent()) // the batcher's goroutine ends
	clearOTLPEnv(t)
	exp := keptExporter{tracetest.NewInMemoryExporter()}
	// An hour: only Shutdown can have exported the span.
	bsp := sdktrace.NewBatchSpanProcessor(exp, sdktrace.WithBatchTimeout(time.Hour))
	tr, err := telemetry.NewTracing(context.Background(), telemetry.TracingConfig{ServiceName: "meridian-gateway", SampleRatio: 1}, telemetry.WithSpanProcessor(bsp))
	if err != nil {
		t.Fatal(err)
	}
	serve(tr, "orders", ok, request(""))
	if n := len(exp.GetSpans()); n != 0 {
		t.Fatalf("%d spans exported before Shutdown", n)
	}
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	spans := exp.GetSpans()
	if len(spans) != 1 || spans[0].Name != "orders" {
		t.Fatalf("exported %d spans after Shutdown, want the one named orders", len(spans))
	}
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
}

func TestPropagationOnly(t *testing.T) {
	clearOTLPEnv(t)
	tr := newTracing(t, telemetry.TracingConfig{}) // ratio 0, no exporter

	var out http.Header
	var sc trace.SpanContext
	h := func(w http.ResponseWriter, r *http.Request) {
		out = injected(tr, r)
		_, span := tr.Tracer("test").Start(r.Context(), "child")
		sc = span.SpanContext()
		span.End()
	}

	r := request(sampledParent)
	r.Header.Set("baggage", "tenant=acme")
	serve(tr, "orders", h, r)
	if got := out.Get("traceparent"); got != sampledParent {
		t.Errorf("forwarded traceparent %q, want the caller's %q unchanged", got, sampledParent)
	}
	if got := out.Get("baggage"); got != "tenant=acme" {
		t.Errorf("forwarded baggage %q", got)
	}
	if sc.TraceID().String() != parentTraceID {
		t.Errorf("a child span has trace %s, want the caller's", sc.TraceID())
	}

	serve(tr, "orders", h, request(""))
	if len(out) != 0 {
		t.Errorf("forwarded %v for a request without trace context", out)
	}
}

func parseTraceparent(t *testing.T, h http.Header) trace.SpanContext {
	t.Helper()
	sc := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), propagation.HeaderCarrier(h)))
	if !sc.IsValid() {
		t.Fatalf("no valid traceparent in %v", h)
	}
	return sc
}

func waitEnded(t *testing.T, rec *tracetest.SpanRecorder, n int) {
	t.Helper()
	testwait.Until(t, 5*time.Second, "spans to end", func() bool { return len(rec.Ended()) >= n })
}

func hostPort(t *testing.T, hp string) (string, int) {
	t.Helper()
	host, p, err := net.SplitHostPort(hp)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return host, port
}
