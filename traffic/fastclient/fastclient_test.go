package fastclient

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// server is a real upstream that counts the connections it accepted.
func server(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var conns atomic.Int64
	s := httptest.NewUnstartedServer(h)
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s, &conns
}

func newTransport(t *testing.T) *Transport {
	t.Helper()
	tr := New(Options{})
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

func do(t *testing.T, tr http.RoundTripper, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// TestExchanges: methods, bodies of known and unknown length both ways,
// headers, Host, and no-body answers, all on one kept connection.
func TestExchanges(t *testing.T) {
	s, conns := server(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Seen", r.Method+" "+r.Host+" "+r.URL.RequestURI()+" "+r.Header.Get("X-Custom")+" "+fmt.Sprint(r.ContentLength))
		w.Header().Add("X-Multi", "a")
		w.Header().Add("X-Multi", "b")
		switch r.URL.Path {
		case "/chunked":
			w.(http.Flusher).Flush() // no length: chunked
			io.WriteString(w, "part one, ")
			w.(http.Flusher).Flush()
			io.WriteString(w, "part two")
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		default:
			w.Write(b)
		}
	})
	tr := newTransport(t)
	for i, tc := range []struct {
		method, path, body string
		chunked            bool
		want               string
		wantLen            int64
	}{
		{method: "GET", path: "/a/b%2Fc?x=1&y=2", want: "", wantLen: 0},
		{method: "POST", path: "/echo", body: "hello", want: "hello", wantLen: 5},
		{method: "PUT", path: "/echo", body: strings.Repeat("z", 100000), chunked: true, want: strings.Repeat("z", 100000), wantLen: -1},
		{method: "GET", path: "/chunked", want: "part one, part two", wantLen: -1},
		{method: "DELETE", path: "/empty", want: "", wantLen: 0},
	} {
		var body io.Reader
		if tc.body != "" {
			body = strings.NewReader(tc.body)
			if tc.chunked {
				body = io.MultiReader(body) // hides the length
			}
		}
		req, _ := http.NewRequest(tc.method, s.URL+tc.path, body)
		req.Host = "orders.internal"
		req.Header.Set("X-Custom", fmt.Sprint(i))
		resp, got := do(t, tr, req)
		if got != tc.want {
			t.Fatalf("%s %s: body %.40q; want %.40q", tc.method, tc.path, got, tc.want)
		}
		if tc.path != "/empty" && resp.ContentLength != tc.wantLen && tc.method != "HEAD" {
			t.Fatalf("%s %s: length %d; want %d", tc.method, tc.path, resp.ContentLength, tc.wantLen)
		}
		if seen := resp.Header.Get("X-Seen"); !strings.HasPrefix(seen, tc.method+" orders.internal "+tc.path+" "+fmt.Sprint(i)) {
			t.Fatalf("upstream saw %q", seen)
		}
		if m := resp.Header.Values("X-Multi"); len(m) != 2 {
			t.Fatalf("X-Multi %q", m)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections for sequential exchanges; want 1 kept alive", n)
	}
	req, _ := http.NewRequest("HEAD", s.URL+"/echo", nil)
	if resp, body := do(t, tr, req); resp.StatusCode != 200 || body != "" || resp.Header.Get("X-Seen") == "" {
		t.Fatalf("HEAD: %d %q %v", resp.StatusCode, body, resp.Header)
	}
}

// TestUnreadBodyClosesTheConnection: a body closed before its end cannot
// leave the connection in the pool.
func TestUnreadBodyClosesTheConnection(t *testing.T) {
	s, conns := server(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strings.Repeat("x", 100000))
	})
	tr := newTransport(t)
	for i := 0; i < 3; i++ {
		req, _ := http.NewRequest("GET", s.URL, nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 10)
		io.ReadFull(resp.Body, buf)
		resp.Body.Close()
	}
	if n := conns.Load(); n != 3 {
		t.Fatalf("%d connections; want 3 (none reused after a partial read)", n)
	}
}

// TestStaleConnectionIsRetried: the upstream closed the kept connection;
// the next GET goes out on a fresh one without the caller seeing an error.
func TestStaleConnectionIsRetried(t *testing.T) {
	s, conns := server(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	tr := newTransport(t)
	req, _ := http.NewRequest("GET", s.URL, nil)
	do(t, tr, req)
	s.CloseClientConnections() // the upstream drops its idle connections
	req, _ = http.NewRequest("GET", s.URL, nil)
	if _, body := do(t, tr, req); body != "ok" {
		t.Fatalf("body %q", body)
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d connections; want 2", n)
	}
}

// TestStreamingAndCancel: an SSE-like answer arrives piece by piece, and
// canceling the request's context ends a read blocked on the upstream and
// drops the connection (the upstream sees its client go).
func TestStreamingAndCancel(t *testing.T) {
	next := make(chan struct{})
	gone := make(chan struct{})
	s, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 1; ; i++ {
			fmt.Fprintf(w, "data: %d\n\n", i)
			w.(http.Flusher).Flush()
			select {
			case <-next:
			case <-r.Context().Done():
				close(gone)
				return
			}
		}
	})
	tr := newTransport(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", s.URL, nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	rd := bufio.NewReader(resp.Body)
	for i := 1; i <= 2; i++ {
		line, err := rd.ReadString('\n')
		if err != nil || line != fmt.Sprintf("data: %d\n", i) {
			t.Fatalf("event %d: %q %v", i, line, err)
		}
		rd.ReadString('\n')
		if i == 1 {
			next <- struct{}{}
		}
	}
	// The upstream now waits; a read blocks until the cancel.
	errc := make(chan error, 1)
	go func() { _, err := rd.ReadString('\n'); errc <- err }()
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("read after cancel succeeded")
	}
	resp.Body.Close()
	<-gone
}

// TestDeadlineIsContextDeadline: an upstream slower than the request's
// deadline gives context.DeadlineExceeded (the gateway's 504).
func TestDeadlineIsContextDeadline(t *testing.T) {
	release := make(chan struct{})
	s, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	tr := newTransport(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", s.URL, nil)
	_, err := tr.RoundTrip(req)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v; want context.DeadlineExceeded", err)
	}
}

// TestRefusedConnection: nothing listening is an error the retry layer
// recognises as a dial failure.
func TestRefusedConnection(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
	_, err := newTransport(t).RoundTrip(req)
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" {
		t.Fatalf("err %v; want a dial *net.OpError", err)
	}
}

// TestUpgradeGoesToFallback: a WebSocket-style upgrade is handed to the
// fallback transport, whose answer comes back as it is.
func TestUpgradeGoesToFallback(t *testing.T) {
	var fell atomic.Bool
	tr := New(Options{Fallback: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		fell.Store(true)
		return &http.Response{StatusCode: 101, Body: http.NoBody, Header: http.Header{}}, nil
	})})
	req, _ := http.NewRequest("GET", "http://127.0.0.1:1/ws", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	resp, err := tr.RoundTrip(req)
	if err != nil || resp.StatusCode != 101 || !fell.Load() {
		t.Fatalf("%v %v fallback=%v", resp, err, fell.Load())
	}
}

// TestHTTPS: https URLs are HTTP/1.1 over TLS, verified against the
// configured roots.
func TestHTTPS(t *testing.T) {
	s := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, r.Proto, " ", r.TLS != nil)
	}))
	defer s.Close()
	pool := x509.NewCertPool()
	pool.AddCert(s.Certificate())
	tr := New(Options{TLSConfig: &tls.Config{RootCAs: pool}})
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest("GET", s.URL, nil)
	if _, body := do(t, tr, req); body != "HTTP/1.1 true" {
		t.Fatalf("body %q", body)
	}
	// Without the roots the certificate is refused.
	bad := New(Options{})
	defer bad.CloseIdleConnections()
	req, _ = http.NewRequest("GET", s.URL, nil)
	if _, err := bad.RoundTrip(req); err == nil {
		t.Fatal("an unknown certificate was accepted")
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestEarlyAnswerIsHeard: an upstream that refuses an upload without
// reading it is heard (its 413 comes back, not a write error), and the
// connection is not reused.
func TestEarlyAnswerIsHeard(t *testing.T) {
	s, conns := server(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/upload" {
			http.Error(w, "too big for me", http.StatusRequestEntityTooLarge)
			return
		}
		io.WriteString(w, "ok")
	})
	tr := newTransport(t)
	for _, chunked := range []bool{false, true} {
		var body io.Reader = strings.NewReader(strings.Repeat("u", 8<<20))
		if chunked {
			body = io.MultiReader(body)
		}
		req, _ := http.NewRequest("POST", s.URL+"/upload", body)
		resp, got := do(t, tr, req)
		if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(got, "too big") {
			t.Fatalf("chunked=%v: %d %q", chunked, resp.StatusCode, got)
		}
	}
	req, _ := http.NewRequest("GET", s.URL+"/after", nil)
	if _, got := do(t, tr, req); got != "ok" {
		t.Fatalf("after: %q", got)
	}
	if n := conns.Load(); n != 3 {
		t.Fatalf("%d connections; want 3 (none reused after an early answer)", n)
	}
}

// TestFailingBodySourceEndsTheExchange: when reading the request body
// fails halfway (the client went away, a body limit), the upstream would
// wait for the rest for ever; the exchange ends with the source's error.
func TestFailingBodySourceEndsTheExchange(t *testing.T) {
	s, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
	})
	boom := errors.New("client went away")
	body := io.MultiReader(strings.NewReader(strings.Repeat("b", 10000)), errReader{boom})
	req, _ := http.NewRequest("POST", s.URL, body)
	_, err := newTransport(t).RoundTrip(req)
	if !errors.Is(err, boom) {
		t.Fatalf("err %v; want the source's error", err)
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }
