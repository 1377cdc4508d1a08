package ratelimit_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/meridian-platform/meridian/traffic/ratelimit"
)

// Each client IP may send one request a second with bursts of two; the
// third request at once is refused with the draft's RateLimit fields.
func ExampleMiddleware() {
	l, err := ratelimit.NewLocal(ratelimit.LocalConfig{Limit: ratelimit.PerSecond(1, 2)})
	if err != nil {
		panic(err)
	}
	orders := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "orders") })
	h := ratelimit.Middleware(l, ratelimit.RemoteIP)(orders)

	for range 3 {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/orders", nil))
		fmt.Printf("%d RateLimit-Policy: %s RateLimit: %s", w.Code, w.Header().Get("RateLimit-Policy"), w.Header().Get("RateLimit"))
		if ra := w.Header().Get("Retry-After"); ra != "" {
			fmt.Printf(" Retry-After: %s", ra)
		}
		fmt.Println()
	}
	// Output:
	// 200 RateLimit-Policy: "default";q=2;w=2 RateLimit: "default";r=1;t=1
	// 200 RateLimit-Policy: "default";q=2;w=2 RateLimit: "default";r=0;t=2
	// 429 RateLimit-Policy: "default";q=2;w=2 RateLimit: "default";r=0;t=2 Retry-After: 1
}
