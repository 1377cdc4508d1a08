package compress_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/meridian-platform/meridian/gateway/compress"
)

// The client's q-values pick the coding, the config's order breaks ties,
// and every response that could have been compressed says so in Vary.
func ExampleNew() {
	mw, err := compress.New(compress.Config{Encodings: []string{"br", "gzip"}})
	if err != nil {
		panic(err)
	}
	orders := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, "["+strings.Repeat(`{"id":1,"status":"shipped"},`, 100)+`{"id":2}]`)
	}))

	for _, accept := range []string{"gzip, deflate, br, zstd", "gzip;q=1, br;q=0.5", "zstd", ""} {
		req := httptest.NewRequest(http.MethodGet, "/orders", nil)
		if accept != "" {
			req.Header.Set("Accept-Encoding", accept)
		}
		rec := httptest.NewRecorder()
		orders.ServeHTTP(rec, req)
		h := rec.Result().Header
		fmt.Printf("%-26q Content-Encoding: %-6q Vary: %s\n", accept, h.Get("Content-Encoding"), h.Get("Vary"))
	}
	// Output:
	// "gzip, deflate, br, zstd"  Content-Encoding: "br"   Vary: Accept-Encoding
	// "gzip;q=1, br;q=0.5"       Content-Encoding: "gzip" Vary: Accept-Encoding
	// "zstd"                     Content-Encoding: ""     Vary: Accept-Encoding
	// ""                         Content-Encoding: ""     Vary: Accept-Encoding
}
