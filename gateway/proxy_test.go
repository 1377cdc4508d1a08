package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// serveGateway runs g on a real loopback listener until the test ends and
// returns its base URL.
func serveGateway(t *testing.T, g *Gateway) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = Serve(ctx, ln, g, ServerConfig{}) })
	wg.Go(func() { _ = g.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return "http://" + ln.Addr().String()
}

// startGateway applies doc, in which every UPSTREAM is replaced by up,
// and serves it.
func startGateway(t *testing.T, doc string, up ...string) (string, *Gateway) {
	t.Helper()
	for i, u := range up {
		doc = strings.ReplaceAll(doc, fmt.Sprintf("UPSTREAM%d", i+1), u)
	}
	g := newTestGateway(t)
	if err := g.Apply(mustParse(t, doc), 1); err != nil {
		t.Fatal(err)
	}
	return serveGateway(t, g), g
}

func upstream(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s.URL
}

func get(t *testing.T, url string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestRewriteAndHeaders: the upstream sees the rewritten path and host,
// the added and removed headers, X-Forwarded-For and the request id; the
// client sees the response header changes.
func TestRewriteAndHeaders(t *testing.T) {
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Server", "upstream")
		w.Header().Set("X-Internal", "secret")
		_ = json.NewEncoder(w).Encode(map[string]string{
			"path": r.URL.Path, "query": r.URL.RawQuery, "host": r.Host,
			"added": r.Header.Get("X-Added"), "removed": r.Header.Get("X-Remove-Me"),
			"xff": r.Header.Get("X-Forwarded-For"), "id": r.Header.Get("X-Request-Id"),
		})
	})
	base, _ := startGateway(t, `
routes:
  - name: order
    match: {path: "/v1/orders/{id}"}
    rewrite: {path: "/internal/orders/{id}", host: orders.internal}
    upstream: {urls: ["UPSTREAM1"]}
    headers:
      request: {set: {X-Added: "yes"}, remove: [X-Remove-Me]}
      response: {remove: [X-Internal], set: {Server: meridian}}
  - name: strip
    match: {path_prefix: /api/}
    rewrite: {strip_prefix: true, add_prefix: /v2}
    upstream: {urls: ["UPSTREAM1"]}
`, up)
	resp, body := get(t, base+"/v1/orders/42?x=1", "X-Remove-Me", "1", "X-Request-Id", "req-1")
	var got map[string]string
	_ = json.Unmarshal([]byte(body), &got)
	want := map[string]string{"path": "/internal/orders/42", "query": "x=1", "host": "orders.internal",
		"added": "yes", "removed": "", "xff": "127.0.0.1", "id": "req-1"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("upstream saw %s=%q; want %q", k, got[k], v)
		}
	}
	if resp.Header.Get("X-Internal") != "" || resp.Header.Get("Server") != "meridian" || resp.Header.Get("X-Request-Id") != "req-1" {
		t.Errorf("response headers %v", resp.Header)
	}
	_, body = get(t, base+"/api/items/7")
	_ = json.Unmarshal([]byte(body), &got)
	if got["path"] != "/v2/items/7" {
		t.Errorf("strip+add prefix: upstream saw %q", got["path"])
	}
}

// TestCanarySplit sends 10,000 requests through a 90/10 split and finds
// each backend's share within ±2 points of its weight; a header pins a
// request to the canary whatever the weights.
func TestCanarySplit(t *testing.T) {
	stable := upstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "v1") })
	canary := upstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "v2") })
	base, _ := startGateway(t, `
routes:
  - name: shop
    match: {path_prefix: /}
    split:
      - {urls: ["UPSTREAM1"], weight: 90}
      - {urls: ["UPSTREAM2"], weight: 10, when: {headers: {X-Canary: always}, cookies: {}}}
`, stable, canary)
	const n = 10000
	counts := map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	tr := &http.Transport{MaxIdleConnsPerHost: 8}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	for w := 0; w < 8; w++ {
		wg.Go(func() {
			for i := 0; i < n/8; i++ {
				resp, err := c.Get(base + "/")
				if err != nil {
					t.Error(err)
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				mu.Lock()
				counts[string(b)]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	share := float64(counts["v2"]) / n * 100
	if math.Abs(share-10) > 2 || counts["v1"]+counts["v2"] != n {
		t.Fatalf("canary got %.2f%% (%v); want 10%% ± 2", share, counts)
	}
	for i := 0; i < 20; i++ {
		if _, b := get(t, base+"/", "X-Canary", "always"); b != "v2" {
			t.Fatalf("pinned request went to %s", b)
		}
	}
}

// TestBlueGreenFlip: weights 0/100 send everything to green; a document
// with 100/0 sends everything back.
func TestBlueGreenFlip(t *testing.T) {
	blue := upstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "blue") })
	green := upstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "green") })
	doc := `
routes:
  - name: shop
    match: {path_prefix: /}
    split:
      - {urls: ["UPSTREAM1"], weight: BLUE}
      - {urls: ["UPSTREAM2"], weight: GREEN}
`
	doc = strings.NewReplacer("UPSTREAM1", blue, "UPSTREAM2", green).Replace(doc)
	base, g := startGateway(t, strings.NewReplacer("BLUE", "0", "GREEN", "100").Replace(doc))
	for i := 0; i < 50; i++ {
		if _, b := get(t, base+"/"); b != "green" {
			t.Fatalf("request %d went to %s", i, b)
		}
	}
	if err := g.Apply(mustParse(t, strings.NewReplacer("BLUE", "100", "GREEN", "0").Replace(doc)), 2); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		if _, b := get(t, base+"/"); b != "blue" {
			t.Fatalf("after the flip request %d went to %s", i, b)
		}
	}
}

// TestSSEStreamsThrough: each event reaches the client before the
// upstream sends the next.
func TestSSEStreamsThrough(t *testing.T) {
	next := make(chan struct{})
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 1; i <= 3; i++ {
			fmt.Fprintf(w, "data: event %d\n\n", i)
			w.(http.Flusher).Flush()
			select {
			case <-next:
			case <-r.Context().Done():
				return
			}
		}
	})
	base, _ := startGateway(t, `routes: [{name: events, match: {path: /events}, upstream: {urls: ["UPSTREAM1"]}}]`, up)
	resp, err := http.Get(base + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	rd := bufio.NewReader(resp.Body)
	for i := 1; i <= 3; i++ {
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("data: event %d\n", i); line != want {
			t.Fatalf("got %q; want %q", line, want)
		}
		_, _ = rd.ReadString('\n')
		next <- struct{}{} // the upstream sends the next only now
	}
}

// TestWebSocketEcho: an upgrade passes through, and messages flow both
// ways.
func TestWebSocketEcho(t *testing.T) {
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		c, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(mt, append([]byte("echo: "), msg...)); err != nil {
				return
			}
		}
	})
	base, _ := startGateway(t, `routes: [{name: ws, match: {path: /ws}, upstream: {urls: ["UPSTREAM1"]}}]`, up)
	c, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(base, "http")+"/ws", nil)
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	defer c.Close()
	for _, m := range []string{"hello", "again"} {
		if err := c.WriteMessage(websocket.TextMessage, []byte(m)); err != nil {
			t.Fatal(err)
		}
		_, got, err := c.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != "echo: "+m {
			t.Fatalf("got %q", got)
		}
	}
}

// TestUpstreamFailuresAreProblems: an upstream that cannot be reached is
// 502 problem+json with the request id; a body over the route's limit is
// 413 and never forwarded.
func TestUpstreamFailuresAreProblems(t *testing.T) {
	var forwarded int
	var mu sync.Mutex
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		forwarded++
		mu.Unlock()
		io.Copy(io.Discard, r.Body)
	})
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadURL := "http://" + dead.Addr().String()
	dead.Close()
	base, _ := startGateway(t, `
default: {retry: none}
routes:
  - {name: dead, match: {path: /dead}, upstream: {urls: ["UPSTREAM1"]}}
  - {name: small, match: {path: /small}, upstream: {urls: ["UPSTREAM2"]}, max_body_bytes: 1024}
`, deadURL, up)
	resp, body := get(t, base+"/dead")
	if resp.StatusCode != 502 || resp.Header.Get("Content-Type") != "application/problem+json" || resp.Header.Get("X-Request-Id") == "" {
		t.Fatalf("dead upstream: %d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	resp, err := http.Post(base+"/small", "text/plain", strings.NewReader(strings.Repeat("x", 2048)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Fatalf("big body: %d", resp.StatusCode)
	}
	// Chunked, without Content-Length: refused when reading passes the limit.
	pr, pw := io.Pipe()
	go func() { pw.Write([]byte(strings.Repeat("y", 4096))); pw.Close() }()
	resp, err = http.Post(base+"/small", "text/plain", pr)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Fatalf("big chunked body: %d", resp.StatusCode)
	}
	mu.Lock()
	defer mu.Unlock()
	if forwarded > 1 { // the chunked one may have started upstream
		t.Fatalf("%d oversized requests reached the upstream", forwarded)
	}
}

// TestAggregateThroughGateway: one route fans out to three upstreams; the
// slow branch times out and the failing one fails, and with on_failure
// partial the client gets the good branch and both errors.
func TestAggregateThroughGateway(t *testing.T) {
	good := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"id":"`+r.URL.Path[len("/orders/"):]+`"}`)
	})
	slow := upstream(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	failing := upstream(t, func(w http.ResponseWriter, r *http.Request) { http.Error(w, "boom", 500) })
	base, _ := startGateway(t, `
default: {retry: none}
routes:
  - name: order-page
    match: {path: "/pages/order/{id}"}
    aggregate:
      on_failure: partial
      branches:
        - {name: order, url: "UPSTREAM1/orders/{id}"}
        - {name: reviews, url: "UPSTREAM2/reviews", timeout: 100ms}
        - {name: stock, url: "UPSTREAM3/stock"}
`, good, slow, failing)
	resp, body := get(t, base+"/pages/order/42")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	var got map[string]json.RawMessage
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	if string(got["order"]) != `{"id":"42"}` || string(got["reviews"]) != "null" || string(got["stock"]) != "null" {
		t.Fatalf("merged %s", body)
	}
	var errs map[string]struct{ Status int }
	_ = json.Unmarshal(got["_errors"], &errs)
	if errs["reviews"].Status != 504 || errs["stock"].Status != 500 {
		t.Fatalf("_errors %s", got["_errors"])
	}
}

// TestCompressionAndCORS: a large JSON answer is compressed for a client
// that accepts gzip; a preflight is answered at the edge and never
// forwarded, and the actual request carries the CORS headers.
func TestCompressionAndCORS(t *testing.T) {
	var forwarded sync.Map
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		forwarded.Store(r.Method, true)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"items":"`+strings.Repeat("abc", 2000)+`"}`)
	})
	base, _ := startGateway(t, `
cors: {allow_origins: ["https://shop.example.com"], allow_methods: [GET, PUT], max_age: 10m}
routes:
  - {name: api, match: {path_prefix: /api}, upstream: {urls: ["UPSTREAM1"]}}
  - {name: raw, match: {path_prefix: /raw}, upstream: {urls: ["UPSTREAM1"]}, compress: false}
`, up)
	req, _ := http.NewRequest("GET", base+"/api/items", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	req.Header.Set("Origin", "https://shop.example.com")
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Header.Get("Content-Encoding") != "gzip" || len(b) > 1000 {
		t.Fatalf("encoding %q, %d bytes", resp.Header.Get("Content-Encoding"), len(b))
	}
	if resp.Header.Get("Access-Control-Allow-Origin") != "https://shop.example.com" {
		t.Fatalf("CORS headers %v", resp.Header)
	}
	req, _ = http.NewRequest("GET", base+"/raw/items", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err = http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Content-Encoding") != "" {
		t.Fatal("compress: false route compressed")
	}
	req, _ = http.NewRequest("OPTIONS", base+"/api/items", nil)
	req.Header.Set("Origin", "https://shop.example.com")
	req.Header.Set("Access-Control-Request-Method", "PUT")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Methods") != "PUT" || resp.Header.Get("Access-Control-Max-Age") != "600" {
		t.Fatalf("preflight: %d %v", resp.StatusCode, resp.Header)
	}
	if _, ok := forwarded.Load("OPTIONS"); ok {
		t.Fatal("the preflight reached the upstream")
	}
}

// TestLargeUploadWithExpectContinue: a 4 MiB body announced with
// Expect: 100-continue streams through to the upstream intact.
func TestLargeUploadWithExpectContinue(t *testing.T) {
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, n)
	})
	base, _ := startGateway(t, `routes: [{name: up, match: {path: /upload}, upstream: {urls: ["UPSTREAM1"]}}]`, up)
	body := strings.Repeat("u", 4<<20)
	req, _ := http.NewRequest("POST", base+"/upload", strings.NewReader(body))
	req.Header.Set("Expect", "100-continue")
	tr := &http.Transport{ExpectContinueTimeout: 5 * time.Second}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != fmt.Sprint(len(body)) {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
}
