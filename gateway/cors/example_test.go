package cors_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/gateway/cors"
)

// A preflight from an allowed subdomain is answered at the gateway; one
// from elsewhere gets the same 204 without the headers a browser needs.
func ExampleNew() {
	mw, err := cors.New(cors.Config{
		AllowOrigins: []string{"https://*.example.com"},
		AllowMethods: []string{"GET", "PUT"},
		AllowHeaders: []string{"Content-Type"},
		MaxAge:       meridian.Duration(10 * time.Minute),
	})
	if err != nil {
		panic(err)
	}
	orders := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Println("upstream reached:", r.Method)
	}))

	for _, origin := range []string{"https://shop.example.com", "https://evil.example.net"} {
		req := httptest.NewRequest(http.MethodOptions, "/orders/7", nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "PUT")
		req.Header.Set("Access-Control-Request-Headers", "content-type")
		rec := httptest.NewRecorder()
		orders.ServeHTTP(rec, req)
		h := rec.Header()
		fmt.Printf("preflight from %s: %d allow-origin=%q allow-methods=%q max-age=%q\n",
			origin, rec.Code, h.Get("Access-Control-Allow-Origin"), h.Get("Access-Control-Allow-Methods"), h.Get("Access-Control-Max-Age"))
	}

	req := httptest.NewRequest(http.MethodPut, "/orders/7", nil)
	req.Header.Set("Origin", "https://shop.example.com")
	rec := httptest.NewRecorder()
	orders.ServeHTTP(rec, req)
	fmt.Printf("PUT: %d allow-origin=%q vary=%q\n", rec.Code, rec.Header().Get("Access-Control-Allow-Origin"), rec.Header().Get("Vary"))
	// Output:
	// preflight from https://shop.example.com: 204 allow-origin="https://shop.example.com" allow-methods="PUT" max-age="600"
	// preflight from https://evil.example.net: 204 allow-origin="" allow-methods="" max-age=""
	// upstream reached: PUT
	// PUT: 200 allow-origin="https://shop.example.com" vary="Origin"
}
