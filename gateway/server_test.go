package gateway

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-platform/meridian/internal/testwait"
)

// TestRateLimitAtTheEdge: a client over its limit gets 429 problem+json
// with Retry-After and the RateLimit fields, and is not forwarded; another
// client (another key) is unaffected.
func TestRateLimitAtTheEdge(t *testing.T) {
	var forwarded atomic.Int64
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) { forwarded.Add(1) })
	doc := `
rate_limits:
  per-tenant: {rate: 3, period: 1m, key: "header:X-Tenant"}
routes:
  - {name: api, match: {path_prefix: /}, upstream: {urls: ["UPSTREAM1"]}, rate_limit: per-tenant}
`
	base, g := startGateway(t, doc, up)
	for i := 0; i < 3; i++ {
		if resp, _ := get(t, base+"/x", "X-Tenant", "a"); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d", i, resp.StatusCode)
		}
	}
	resp, body := get(t, base+"/x", "X-Tenant", "a")
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" || resp.Header.Get("RateLimit") == "" ||
		!strings.Contains(resp.Header.Get("Content-Type"), "problem+json") {
		t.Fatalf("over the limit: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	if resp, _ := get(t, base+"/x", "X-Tenant", "b"); resp.StatusCode != 200 {
		t.Fatalf("another tenant: %d", resp.StatusCode)
	}
	if n := forwarded.Load(); n != 4 {
		t.Fatalf("%d forwarded; want 4", n)
	}
	// A reload that leaves the limit alone keeps the clients' counts.
	doc = strings.ReplaceAll(doc, "UPSTREAM1", up) + "  - {name: other, match: {path: /other}, upstream: {urls: [\"" + up + "\"]}}\n"
	if err := g.Apply(mustParse(t, doc), 2); err != nil {
		t.Fatal(err)
	}
	if resp, _ := get(t, base+"/x", "X-Tenant", "a"); resp.StatusCode != 429 {
		t.Fatalf("after a reload tenant a got %d; want still 429", resp.StatusCode)
	}
}

// TestMirrorSendsCopies: every request answered by the primary is also
// sent, with its body, to the shadow, whose answer is ignored.
func TestMirrorSendsCopies(t *testing.T) {
	var mu sync.Mutex
	var shadowBodies []string
	shadow := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		shadowBodies = append(shadowBodies, r.Method+" "+r.URL.Path+" "+string(b)+" "+r.Header.Get("X-Meridian-Mirror"))
		mu.Unlock()
		http.Error(w, "shadow fails", 500)
	})
	primary := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, "primary got "+string(b))
	})
	base, _ := startGateway(t, `
routes:
  - name: orders
    match: {path_prefix: /}
    upstream: {urls: ["UPSTREAM1"]}
    mirror: {urls: ["UPSTREAM2"]}
`, primary, shadow)
	for i := 0; i < 5; i++ {
		resp, err := http.Post(base+"/orders", "text/plain", strings.NewReader("order-"+string(rune('a'+i))))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "primary got order-"+string(rune('a'+i)) {
			t.Fatalf("%d %s", resp.StatusCode, b)
		}
	}
	testwait.Until(t, 10*time.Second, "the shadow to get 5 copies", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(shadowBodies) == 5
	})
	mu.Lock()
	defer mu.Unlock()
	if !strings.HasPrefix(shadowBodies[0], "POST /orders order-") || !strings.HasSuffix(shadowBodies[0], " 1") {
		t.Fatalf("shadow saw %q", shadowBodies)
	}
}

// TestTLSNegotiatesHTTP2: with a certificate the listener speaks TLS and
// offers h2 by ALPN; HTTP/1.1 clients still work.
func TestTLSNegotiatesHTTP2(t *testing.T) {
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	g := newTestGateway(t)
	if err := g.Apply(mustParse(t, `routes: [{name: a, match: {path_prefix: /}, upstream: {urls: ["`+up+`"]}}]`), 1); err != nil {
		t.Fatal(err)
	}
	// httptest's self-signed certificate for 127.0.0.1, written out as
	// the PEM files an operator gives.
	certFile, keyFile := writeTestCert(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = Serve(ctx, ln, g, ServerConfig{TLSCert: certFile, TLSKey: keyFile}) })
	defer func() { cancel(); wg.Wait() }()

	for _, h2 := range []bool{true, false} {
		tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: h2}
		if !h2 {
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		resp, err := (&http.Client{Transport: tr}).Get("https://" + ln.Addr().String() + "/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		tr.CloseIdleConnections()
		want := 1
		if h2 {
			want = 2
		}
		if resp.ProtoMajor != want || string(b) != "ok" {
			t.Fatalf("h2=%v: %s %q", h2, resp.Proto, b)
		}
	}
}

// TestSlowHeadersAreCutOff: a client that never finishes its headers is
// disconnected after ReadHeaderTimeout (slowloris); a header block over
// MaxHeaderBytes is refused with 431.
func TestSlowHeadersAreCutOff(t *testing.T) {
	g := newTestGateway(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		_ = Serve(ctx, ln, g, ServerConfig{ReadHeaderTimeout: 200 * time.Millisecond, MaxHeaderBytes: 4 << 10})
	})
	defer func() { cancel(); wg.Wait() }()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
	// The read ends when the server closes the connection; the deadline
	// only keeps a broken server from hanging the test.
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadAll(c); err != nil {
		t.Fatalf("the server kept a slow client: %v", err)
	}

	c2, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	io.WriteString(c2, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", 16<<10)+"\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c2), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("big header: %d", resp.StatusCode)
	}
}

// writeTestCert writes a self-signed certificate for 127.0.0.1 and its
// key as the PEM files an operator gives.
func writeTestCert(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "gateway test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
