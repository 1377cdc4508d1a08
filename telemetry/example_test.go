package telemetry_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"

	"github.com/meridian-platform/meridian/telemetry"
)

// A gateway route: the middleware continues the caller's trace, and the
// upstream call carries it on.
func ExampleTracing_Middleware() {
	ctx := context.Background()
	tracing, err := telemetry.NewTracing(ctx, telemetry.TracingConfig{
		ServiceName: "meridian-gateway",
		SampleRatio: 0.01,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer tracing.Shutdown(ctx)

	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tp := r.Header.Get("traceparent") // version-traceid-spanid-flags
		fmt.Println("upstream: trace", tp[3:35], "flags", tp[53:])
	}))
	defer upstream.Close()

	orders := tracing.Middleware("orders", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		out, err := http.NewRequestWithContext(r.Context(), r.Method, upstream.URL+r.URL.Path, nil)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		tracing.Inject(r.Context(), out.Header)
		resp, err := upstream.Client().Do(out)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
	}))

	// A caller that sampled its trace: the gateway follows, whatever its ratio.
	req := httptest.NewRequest(http.MethodGet, "/orders/42", nil)
	req.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	orders.ServeHTTP(httptest.NewRecorder(), req)
	// Output:
	// upstream: trace 4bf92f3577b34da6a3ce929d0e0e4736 flags 01
}
