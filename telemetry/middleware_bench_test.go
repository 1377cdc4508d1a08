package telemetry

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
)

// discardWriter is a ResponseWriter that costs nothing, so that the
// benchmark measures the middleware.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(int)             {}
func (w *discardWriter) Flush()                      {}

// BenchmarkMiddleware compares Middleware with otelhttp's handler on the
// same tracer provider and propagator, with no exporter (spans that are
// sampled are recorded and dropped), for the package doc's table.
func BenchmarkMiddleware(b *testing.B) {
	const route = "orders"
	if os.Getenv(envEndpoint) != "" || os.Getenv(envTracesEndpoint) != "" {
		b.Skip("an OTLP exporter is configured in the environment; the figures are for none")
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })

	for _, bc := range []struct {
		name        string
		ratio       float64
		traceparent string
	}{
		{"root at ratio 0.01", 0.01, ""},
		{"parent not sampled", 0.01, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"},
		{"parent sampled", 0.01, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		{"propagation only", 0, ""},
	} {
		t, err := NewTracing(context.Background(), TracingConfig{ServiceName: "meridian-gateway", SampleRatio: bc.ratio})
		if err != nil {
			b.Fatal(err)
		}
		r := httptest.NewRequest(http.MethodGet, "/orders/42", nil)
		if bc.traceparent != "" {
			r.Header.Set("traceparent", bc.traceparent)
		}
		for _, impl := range []struct {
			name string
			h    http.Handler
		}{
			{"hand-written", t.Middleware(route, handler)},
			{"otelhttp", otelhttp.NewHandler(handler, route,
				otelhttp.WithTracerProvider(t.tp),
				otelhttp.WithPropagators(t.prop),
				otelhttp.WithMeterProvider(metricnoop.NewMeterProvider()),
				otelhttp.WithSpanNameFormatter(func(string, *http.Request) string { return route }),
			)},
		} {
			b.Run(bc.name+"/"+impl.name, func(b *testing.B) {
				w := &discardWriter{h: http.Header{}}
				b.ReportAllocs()
				for b.Loop() {
					impl.h.ServeHTTP(w, r)
				}
			})
		}
		if err := t.Shutdown(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}
