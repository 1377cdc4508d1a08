package compress

import (
	"bufio"
	"bytes"
	stdgzip "compress/gzip"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
)

// jsonBody is n bytes of JSON shaped like an API listing.
func jsonBody(n int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"items":[`)
	for i := 0; b.Len() < n-64; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":%d,"name":"order-%d","status":"shipped","total":%d.%02d}`, i, i*7919%100000, i*31%1000, i%100)
	}
	b.WriteString(`]}`)
	for b.Len() < n {
		b.WriteByte(' ')
	}
	return b.Bytes()[:n]
}

// server runs h behind the middleware on a real listener. Its client never
// adds Accept-Encoding or decodes by itself: tests say what they accept.
func server(t *testing.T, cfg Config, h http.Handler) *httptest.Server {
	t.Helper()
	mw, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(mw(h))
	t.Cleanup(srv.Close)
	srv.Client().Transport.(*http.Transport).DisableCompression = true
	return srv
}

func request(t *testing.T, srv *httptest.Server, method, acceptEncoding string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	if acceptEncoding != "" {
		req.Header.Set("Accept-Encoding", acceptEncoding)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// decoder returns a reader of r's decoded body for a Content-Encoding,
// using a decoder independent of the encoder where there is one (the
// standard library's gzip).
func decoder(t *testing.T, encoding string, r io.Reader) io.Reader {
	t.Helper()
	switch encoding {
	case "gzip":
		zr, err := stdgzip.NewReader(r)
		if err != nil {
			t.Fatalf("gzip header: %v", err)
		}
		return zr
	case "zstd":
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(zr.Close)
		return zr
	case "br":
		return brotli.NewReader(r)
	case "":
		return r
	}
	t.Fatalf("unexpected Content-Encoding %q", encoding)
	return nil
}

// readBody reads resp's body whole, decoded.
func readBody(t *testing.T, resp *http.Response) (decoded []byte, wire int) {
	t.Helper()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	decoded, err = io.ReadAll(decoder(t, resp.Header.Get("Content-Encoding"), bytes.NewReader(raw)))
	if err != nil {
		t.Fatalf("decoding %s: %v", resp.Header.Get("Content-Encoding"), err)
	}
	return decoded, len(raw)
}

func TestEachEncodingRoundTrips(t *testing.T) {
	body := jsonBody(10 << 10)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Header().Set("Accept-Ranges", "bytes")
		w.Header().Set("ETag", `"v42"`)
		w.Write(body)
	})
	for _, level := range []string{"fastest", "default"} {
		srv := server(t, Config{Level: level}, h)
		for _, tt := range []struct{ accept, want string }{
			{"gzip", "gzip"},
			{"x-gzip", "gzip"},
			{"br", "br"},
			{"zstd", "zstd"},
		} {
			t.Run(level+"/"+tt.accept, func(t *testing.T) {
				resp := request(t, srv, http.MethodGet, tt.accept)
				if got := resp.Header.Get("Content-Encoding"); got != tt.want {
					t.Fatalf("Content-Encoding = %q, want %q", got, tt.want)
				}
				got, wire := readBody(t, resp)
				if !bytes.Equal(got, body) {
					t.Fatalf("decoded body differs: %d bytes, want %d", len(got), len(body))
				}
				if wire >= len(body)/3 {
					t.Errorf("%d bytes compressed to %d", len(body), wire)
				}
				for name, want := range map[string]string{
					"Vary":          "Accept-Encoding",
					"Etag":          `W/"v42"`,
					"Accept-Ranges": "",
				} {
					if got := resp.Header.Get(name); got != want {
						t.Errorf("%s = %q, want %q", name, got, want)
					}
				}
				// net/http may set the compressed length; the identity one must go.
				if resp.ContentLength != -1 && resp.ContentLength != int64(wire) {
					t.Errorf("Content-Length %d sent with a %d-byte compressed body", resp.ContentLength, wire)
				}
			})
		}
	}
}

func TestNegotiationThroughServer(t *testing.T) {
	body := jsonBody(4096)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})
	tests := []struct {
		name   string
		cfg    Config
		accept string
		want   string
	}{
		{"browser default", Config{}, "gzip, deflate, br, zstd", "zstd"},
		{"client q-values win", Config{}, "zstd;q=0.5, gzip", "gzip"},
		{"config order breaks ties", Config{Encodings: []string{"gzip", "br", "zstd"}}, "zstd, br, gzip", "gzip"},
		{"star", Config{Encodings: []string{"br", "gzip"}}, "*", "br"},
		{"nothing offered is accepted", Config{Encodings: []string{"gzip"}}, "br, zstd", ""},
		{"identity preferred", Config{}, "gzip;q=0.5, identity", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := request(t, server(t, tt.cfg, h), http.MethodGet, tt.accept)
			if got := resp.Header.Get("Content-Encoding"); got != tt.want {
				t.Fatalf("Content-Encoding = %q, want %q", got, tt.want)
			}
			if got, _ := readBody(t, resp); !bytes.Equal(got, body) {
				t.Fatal("body differs")
			}
			if got := resp.Header.Get("Vary"); got != "Accept-Encoding" {
				t.Errorf("Vary = %q", got)
			}
		})
	}
}

func TestResponsesLeftUncompressed(t *testing.T) {
	big := jsonBody(8192)
	write := func(status int, header map[string]string, body []byte) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			for k, v := range header {
				w.Header().Set(k, v)
			}
			w.WriteHeader(status)
			w.Write(body)
		}
	}
	json := map[string]string{"Content-Type": "application/json"}
	tests := []struct {
		name     string
		method   string
		accept   string
		handler  http.Handler
		status   int
		vary     bool  // Vary: Accept-Encoding expected
		length   int64 // Content-Length expected; -1 for none (chunked)
		encoding string
		body     []byte // expected as written
	}{
		{"small by bytes written", "GET", "gzip", write(200, json, big[:100]), 200, true, 100, "", big[:100]},
		{"small by Content-Length", "GET", "gzip", write(200, map[string]string{"Content-Type": "application/json", "Content-Length": "1000"}, big[:1000]), 200, true, 1000, "", big[:1000]},
		{"already encoded", "GET", "gzip", write(200, map[string]string{"Content-Type": "application/json", "Content-Encoding": "br"}, big), 200, false, -1, "br", big},
		{"no-transform", "GET", "gzip", write(200, map[string]string{"Content-Type": "application/json", "Cache-Control": "public, No-Transform"}, big), 200, false, -1, "", big},
		{"incompressible type", "GET", "gzip", write(200, map[string]string{"Content-Type": "image/png"}, big), 200, false, -1, "", big},
		{"grpc response", "GET", "gzip", write(200, map[string]string{"Content-Type": "application/grpc+proto"}, big), 200, false, -1, "", big},
		{"partial content", "GET", "gzip", write(206, map[string]string{"Content-Type": "application/json", "Content-Range": "bytes 0-8191/20000"}, big), 206, false, -1, "", big},
		{"head", "HEAD", "gzip", write(200, map[string]string{"Content-Type": "application/json", "Content-Length": "8192"}, nil), 200, true, 8192, "", nil},
		{"no content", "GET", "gzip", write(204, json, nil), 204, false, 0, "", nil},
		{"not modified", "GET", "gzip", write(304, map[string]string{"Content-Type": "application/json", "ETag": `"v1"`}, nil), 304, false, 0, "", nil},
		{"no Accept-Encoding", "GET", "", write(200, json, big), 200, true, -1, "", big},
		{"identity preferred", "GET", "br;q=0.1, identity;q=0.9", write(200, json, big), 200, true, -1, "", big},
		{"unsupported coding", "GET", "deflate", write(200, json, big), 200, true, -1, "", big},
		{"suppressed Content-Type", "GET", "gzip", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header()["Content-Type"] = nil
			w.Write(big)
		}), 200, false, -1, "", big},
		{"empty body", "GET", "gzip", write(200, json, nil), 200, true, 0, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := request(t, server(t, Config{}, tt.handler), tt.method, tt.accept)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if got := resp.Header.Get("Content-Encoding"); got != tt.encoding {
				t.Errorf("Content-Encoding = %q, want %q", got, tt.encoding)
			}
			if got := resp.Header.Get("Vary") == "Accept-Encoding"; got != tt.vary {
				t.Errorf("Vary = %q; want Accept-Encoding: %t", resp.Header.Get("Vary"), tt.vary)
			}
			if resp.ContentLength != tt.length {
				t.Errorf("Content-Length %d, want %d", resp.ContentLength, tt.length)
			}
			raw, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(raw, tt.body) {
				t.Errorf("body changed: %d bytes, want %d", len(raw), len(tt.body))
			}
		})
	}
}

// Requests that switch protocols, tunnel or speak gRPC reach the handler
// with the server's own ResponseWriter.
func TestRequestsPassedThrough(t *testing.T) {
	mw, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		method  string
		header  map[string]string
		wrapped bool
	}{
		{"plain GET", "GET", map[string]string{"Accept-Encoding": "gzip"}, true},
		{"CONNECT", "CONNECT", map[string]string{"Accept-Encoding": "gzip"}, false},
		{"websocket", "GET", map[string]string{"Accept-Encoding": "gzip", "Connection": "Upgrade", "Upgrade": "websocket"}, false},
		{"grpc", "POST", map[string]string{"Accept-Encoding": "gzip", "Content-Type": "application/grpc"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var wrapped bool
			h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, wrapped = w.(*responseWriter)
			}))
			r := httptest.NewRequest(tt.method, "/", nil)
			for k, v := range tt.header {
				r.Header.Set(k, v)
			}
			h.ServeHTTP(httptest.NewRecorder(), r)
			if wrapped != tt.wrapped {
				t.Errorf("handler got the middleware's writer: %t, want %t", wrapped, tt.wrapped)
			}
		})
	}
}

func TestSmallWritesAreHeldBackUntilMinSize(t *testing.T) {
	chunk := jsonBody(20)
	tests := []struct {
		name     string
		writes   int
		encoding string
	}{
		{"below min size", 10, ""},
		{"exactly min size", 1024 / 20, ""}, // 1020 bytes
		{"above min size", 100, "gzip"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := server(t, Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				for range tt.writes {
					w.Write(chunk)
				}
			}))
			resp := request(t, srv, "GET", "gzip")
			if got := resp.Header.Get("Content-Encoding"); got != tt.encoding {
				t.Fatalf("Content-Encoding = %q, want %q", got, tt.encoding)
			}
			got, _ := readBody(t, resp)
			if want := bytes.Repeat(chunk, tt.writes); !bytes.Equal(got, want) {
				t.Fatalf("body: %d bytes, want %d", len(got), len(want))
			}
			if tt.encoding == "" && resp.ContentLength != int64(tt.writes*len(chunk)) {
				t.Errorf("an uncompressed small response should keep net/http's Content-Length; got %d", resp.ContentLength)
			}
		})
	}
}

func TestMissingContentTypeIsSniffed(t *testing.T) {
	page := []byte("<!DOCTYPE html><html><body>" + strings.Repeat("<p>hello, gateway</p>", 200) + "</body></html>")
	srv := server(t, Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(page[:10]) // sniffed from all that was held back, not the first write
		w.Write(page[10:])
	}))
	resp := request(t, srv, "GET", "br")
	if got := resp.Header.Get("Content-Type"); got != "text/html; charset=utf-8" {
		t.Errorf("Content-Type = %q", got)
	}
	if got := resp.Header.Get("Content-Encoding"); got != "br" {
		t.Fatalf("Content-Encoding = %q", got)
	}
	if got, _ := readBody(t, resp); !bytes.Equal(got, page) {
		t.Fatal("body differs")
	}
}

func TestVaryIsMergedNotDuplicated(t *testing.T) {
	tests := []struct {
		name string
		vary []string // set by the handler
		want []string
	}{
		{"none", nil, []string{"Accept-Encoding"}},
		{"another field", []string{"Origin"}, []string{"Origin", "Accept-Encoding"}},
		{"already there", []string{"Origin, accept-encoding"}, []string{"Origin, accept-encoding"}},
		{"star", []string{"*"}, []string{"*"}},
	}
	body := jsonBody(2048)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := server(t, Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				for _, v := range tt.vary {
					w.Header().Add("Vary", v)
				}
				w.Write(body)
			}))
			for _, accept := range []string{"gzip", ""} {
				resp := request(t, srv, "GET", accept)
				if got := resp.Header.Values("Vary"); strings.Join(got, "|") != strings.Join(tt.want, "|") {
					t.Errorf("Accept-Encoding %q: Vary = %q, want %q", accept, got, tt.want)
				}
			}
		})
	}
}

// Server-sent events pass through unbuffered: the client reads each event
// before the handler writes the next.
func TestServerSentEventsStreamEventByEvent(t *testing.T) {
	next := make(chan struct{})
	srv := server(t, Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		for i := range 3 {
			fmt.Fprintf(w, "id: %d\ndata: %s\n\n", i, strings.Repeat("x", 50))
			w.(http.Flusher).Flush()
			select {
			case <-next:
			case <-r.Context().Done():
				return
			}
		}
	}))
	resp := request(t, srv, "GET", "gzip, deflate, br, zstd")
	if got := resp.Header.Get("Content-Encoding"); got != "" {
		t.Fatalf("Content-Encoding = %q on an event stream", got)
	}
	if got := resp.Header.Get("Vary"); got != "" {
		t.Errorf("Vary = %q on an event stream", got)
	}
	events := bufio.NewReader(resp.Body)
	for i := range 3 {
		var event strings.Builder
		for {
			line, err := events.ReadString('\n')
			if err != nil {
				t.Fatalf("event %d: %v", i, err)
			}
			if line == "\n" {
				break
			}
			event.WriteString(line)
		}
		if want := fmt.Sprintf("id: %d\n", i); !strings.HasPrefix(event.String(), want) {
			t.Fatalf("event %d = %q", i, event.String())
		}
		next <- struct{}{} // the handler is blocked until the event is read
	}
}

// Flush makes everything written so far decodable at the client, in every
// encoding, and sends the headers at once when nothing is written yet.
func TestFlushStreamsCompressedBody(t *testing.T) {
	for _, encoding := range []string{"gzip", "br", "zstd"} {
		t.Run(encoding, func(t *testing.T) {
			next := make(chan struct{})
			srv := server(t, Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				rc := http.NewResponseController(w)
				w.Header().Set("Content-Type", "application/x-ndjson")
				w.WriteHeader(http.StatusOK)
				if err := rc.Flush(); err != nil {
					t.Errorf("flushing the headers: %v", err)
				}
				for i := range 3 {
					select {
					case <-next:
					case <-r.Context().Done():
						return
					}
					fmt.Fprintf(w, "{\"line\":%d}\n", i)
					if err := rc.Flush(); err != nil {
						t.Errorf("flush %d: %v", i, err)
					}
				}
			}))
			// The client has the headers while the handler still waits.
			resp := request(t, srv, "GET", encoding)
			if got := resp.Header.Get("Content-Encoding"); got != encoding {
				t.Fatalf("Content-Encoding = %q", got)
			}
			next <- struct{}{}
			lines := bufio.NewReader(decoder(t, encoding, resp.Body))
			for i := range 3 {
				line, err := lines.ReadString('\n')
				if want := fmt.Sprintf("{\"line\":%d}\n", i); err != nil || line != want {
					t.Fatalf("line %d = %q, %v; want %q", i, line, err, want)
				}
				if i < 2 {
					next <- struct{}{}
				}
			}
			if rest, err := io.ReadAll(lines); err != nil || len(rest) != 0 {
				t.Fatalf("after the last line: %q, %v", rest, err)
			}
		})
	}
}

func TestTrailersPassThrough(t *testing.T) {
	tests := []struct {
		name string
		size int
	}{
		{"large", 8192},
		{"small", 100}, // declared trailers make it a stream: compressed anyway
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := jsonBody(tt.size)
			srv := server(t, Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("Trailer", "X-Checksum")
				w.WriteHeader(http.StatusOK)
				w.Write(body)
				w.Header().Set("X-Checksum", "c0ffee")
				w.Header().Set(http.TrailerPrefix+"X-Late", "undeclared")
			}))
			resp := request(t, srv, "GET", "gzip")
			if got := resp.Header.Get("Content-Encoding"); got != "gzip" {
				t.Fatalf("Content-Encoding = %q", got)
			}
			if got, _ := readBody(t, resp); !bytes.Equal(got, body) {
				t.Fatal("body differs")
			}
			if got := resp.Trailer.Get("X-Checksum"); got != "c0ffee" {
				t.Errorf("trailer X-Checksum = %q", got)
			}
			if got := resp.Trailer.Get("X-Late"); got != "undeclared" {
				t.Errorf("trailer X-Late = %q", got)
			}
			if got := resp.Header.Get("X-Checksum"); got != "" {
				t.Errorf("trailer sent as a header too: %q", got)
			}
		})
	}
}

func TestInformationalResponsesGoOutAtOnce(t *testing.T) {
	body := jsonBody(4096)
	srv := server(t, Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</app.css>; rel=preload; as=style")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	}))
	var hints []int
	ctx := httptrace.WithClientTrace(t.Context(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, header textproto.MIMEHeader) error {
			hints = append(hints, code)
			return nil
		},
	})
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL, nil)
	req.Header.Set("Accept-Encoding", "zstd")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if len(hints) != 1 || hints[0] != http.StatusEarlyHints {
		t.Errorf("1xx responses: %v", hints)
	}
	if resp.Header.Get("Content-Encoding") != "zstd" {
		t.Fatalf("Content-Encoding = %q", resp.Header.Get("Content-Encoding"))
	}
	if got, _ := readBody(t, resp); !bytes.Equal(got, body) {
		t.Fatal("body differs")
	}
}

// A handler behind the middleware can still take the connection over
// through http.ResponseController, which reaches the server's writer
// through Unwrap; a WebSocket handshake (Upgrade) is not wrapped at all, so
// libraries that type-assert http.Hijacker work too.
func TestHijack(t *testing.T) {
	tests := []struct {
		name    string
		upgrade string // the request's Upgrade header
		hijack  func(w http.ResponseWriter) (net.Conn, *bufio.ReadWriter, error)
	}{
		{"ResponseController through the wrapper", "", func(w http.ResponseWriter) (net.Conn, *bufio.ReadWriter, error) {
			if _, ok := w.(*responseWriter); !ok {
				return nil, nil, fmt.Errorf("handler got %T, not the middleware's writer", w)
			}
			rc := http.NewResponseController(w)
			if err := rc.SetWriteDeadline(time.Now().Add(time.Minute)); err != nil {
				return nil, nil, fmt.Errorf("SetWriteDeadline: %w", err)
			}
			return rc.Hijack()
		}},
		{"type assertion on an Upgrade request", "websocket", func(w http.ResponseWriter) (net.Conn, *bufio.ReadWriter, error) {
			hj, ok := w.(http.Hijacker)
			if !ok {
				return nil, nil, fmt.Errorf("%T is no http.Hijacker", w)
			}
			return hj.Hijack()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := server(t, Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				conn, rw, err := tt.hijack(w)
				if err != nil {
					t.Error(err)
					http.Error(w, err.Error(), http.StatusInternalServerError)
					return
				}
				defer conn.Close()
				rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
				rw.Flush()
				line, err := rw.ReadString('\n')
				if err != nil {
					t.Error(err)
					return
				}
				rw.WriteString("echo: " + line)
				rw.Flush()
			}))
			conn, err := net.Dial("tcp", srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			req := "GET / HTTP/1.1\r\nHost: gateway\r\nAccept-Encoding: gzip\r\n"
			if tt.upgrade != "" {
				req += "Connection: Upgrade\r\nUpgrade: " + tt.upgrade + "\r\n"
			}
			io.WriteString(conn, req+"\r\n")
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("status %d", resp.StatusCode)
			}
			io.WriteString(conn, "ping\n")
			if line, err := br.ReadString('\n'); err != nil || line != "echo: ping\n" {
				t.Fatalf("read %q, %v", line, err)
			}
			// The middleware writes nothing after the handler returns.
			if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
				t.Fatalf("after the exchange: %q, %v", rest, err)
			}
		})
	}
}

// Encoders and writers are pooled: responses interleaved across goroutines
// in every encoding and size still decode to what was written.
func TestConcurrentResponsesDecode(t *testing.T) {
	srv := server(t, Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		w.Header().Set("Content-Type", "application/json")
		body := jsonBody(n)
		for len(body) > 0 { // uneven writes
			k := min(len(body), 700)
			w.Write(body[:k])
			body = body[k:]
		}
	}))
	encodings := []string{"gzip", "br", "zstd", ""}
	sizes := []int{100, 1500, 9000, 70000}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 16 {
				enc, n := encodings[(g+i)%len(encodings)], sizes[(g*3+i)%len(sizes)]
				req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL+"?n="+strconv.Itoa(n), nil)
				if enc != "" {
					req.Header.Set("Accept-Encoding", enc)
				}
				resp, err := srv.Client().Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				raw, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil {
					t.Error(err)
					return
				}
				got, err := decodeAll(resp.Header.Get("Content-Encoding"), raw)
				if err != nil || !bytes.Equal(got, jsonBody(n)) {
					t.Errorf("%s, %d bytes: decoded %d bytes, %v", enc, n, len(got), err)
				}
			}
		})
	}
	wg.Wait()
}

func decodeAll(encoding string, raw []byte) ([]byte, error) {
	switch encoding {
	case "gzip":
		zr, err := stdgzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, err
		}
		return io.ReadAll(zr)
	case "br":
		return io.ReadAll(brotli.NewReader(bytes.NewReader(raw)))
	case "zstd":
		zr, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, err
		}
		defer zr.Close()
		return zr.DecodeAll(raw, nil)
	}
	return raw, nil
}

// A handler that panics leaves its writer and encoder to the garbage
// collector; the next response is unaffected.
func TestPanickingHandler(t *testing.T) {
	body := jsonBody(4096)
	srv := server(t, Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
		if r.URL.Path == "/panic" {
			panic(http.ErrAbortHandler)
		}
	}))
	req, _ := http.NewRequestWithContext(context.Background(), "GET", srv.URL+"/panic", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	if resp, err := srv.Client().Do(req); err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil {
			t.Error("an aborted response read as complete")
		}
	}
	resp := request(t, srv, "GET", "gzip")
	if got, _ := readBody(t, resp); !bytes.Equal(got, body) {
		t.Fatal("body differs after an aborted response")
	}
}
