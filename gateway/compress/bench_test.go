package compress

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/klauspost/compress/gzhttp"
	"github.com/klauspost/compress/gzip"
)

// discard is a ResponseWriter that counts the bytes it is sent, so that a
// benchmark measures the middleware and the encoder, not a network.
type discard struct {
	h http.Header
	n int
}

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) WriteHeader(int)             {}
func (d *discard) Write(p []byte) (int, error) { d.n += len(p); return len(p), nil }
func (d *discard) Flush()                      {}

// BenchmarkJSON10KiB serves a 10 KiB JSON response per op through the
// middleware in each coding and uncompressed, and through klauspost's
// gzhttp at the same levels as a peer. wire-B is the body sent.
//
//	go test -run '^$' -bench JSON10KiB -benchmem ./gateway/compress/
func BenchmarkJSON10KiB(b *testing.B) {
	body := jsonBody(10 << 10)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})
	fastest, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	deflt, err := New(Config{Level: "default"})
	if err != nil {
		b.Fatal(err)
	}
	peer, err := gzhttp.NewWrapper(gzhttp.CompressionLevel(gzip.BestSpeed), gzhttp.MinSize(DefaultMinSize))
	if err != nil {
		b.Fatal(err)
	}
	peerMW := func(h http.Handler) http.Handler { return peer(h) }
	noMW := func(h http.Handler) http.Handler { return h }

	for _, bc := range []struct {
		name   string
		mw     func(http.Handler) http.Handler
		accept string
	}{
		{"no-middleware", noMW, "gzip"},
		{"identity", fastest, ""},
		{"gzip", fastest, "gzip"},
		{"zstd", fastest, "zstd"},
		{"br", fastest, "br"},
		{"level=default/gzip", deflt, "gzip"},
		{"level=default/zstd", deflt, "zstd"},
		{"level=default/br", deflt, "br"},
		{"peer=gzhttp/gzip", peerMW, "gzip"},
		{"peer=gzhttp/zstd", peerMW, "zstd"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			handler := bc.mw(h)
			req := httptest.NewRequest(http.MethodGet, "/orders", nil)
			if bc.accept != "" {
				req.Header.Set("Accept-Encoding", bc.accept)
			}
			w := &discard{h: make(http.Header)}
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				w.n = 0
				handler.ServeHTTP(w, req)
			}
			b.ReportMetric(float64(w.n), "wire-B/op")
		})
	}
}

// BenchmarkNegotiate parses a browser's Accept-Encoding.
func BenchmarkNegotiate(b *testing.B) {
	values := []string{"gzip, deflate, br, zstd"}
	prefs := []coding{zstdCoding, brCoding, gzipCoding}
	b.ReportAllocs()
	for b.Loop() {
		negotiate(values, prefs)
	}
}
