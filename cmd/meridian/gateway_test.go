package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/client"
	"github.com/meridian-platform/meridian/gateway"
	"github.com/meridian-platform/meridian/internal/cptest"
	"github.com/meridian-platform/meridian/internal/testwait"
)

// These tests run `meridian gateway` through run(), as main does, with
// real upstream servers, and against a real control plane (cptest).

// gatewayWait bounds every wait for something that should happen in
// milliseconds; it only ends a test that is stuck.
const gatewayWait = 20 * time.Second

// named starts a server that answers every request 200 with X-Upstream:
// name.
func named(t *testing.T, name string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Upstream", name)
		_, _ = io.WriteString(w, name)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// runningGateway is a `meridian gateway` running in the test.
type runningGateway struct {
	url, admin string // base URLs of the gateway and its admin listener
	cancel     context.CancelFunc
	done       chan outcome
}

// bannerRE is the line the command prints once it listens.
var bannerRE = regexp.MustCompile(`meridian gateway on http://(\S+) .*metrics on http://(\S+)/metrics`)

// startGateway runs `meridian gateway` with args on loopback ports it
// chooses (:0), and returns once it has printed where it listens. The
// gateway stops when stop is called or the test ends.
func startGateway(t *testing.T, env map[string]string, args ...string) *runningGateway {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stderr := &syncBuffer{}
	g := &runningGateway{cancel: cancel, done: make(chan outcome, 1)}
	args = append([]string{"gateway", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--access-log=false"}, args...)
	go func() { g.done <- invocation{env: env, ctx: ctx, stderr: stderr}.run(t, args...) }()
	var ended *outcome
	testwait.Until(t, gatewayWait, "the gateway to listen", func() bool {
		select {
		case o := <-g.done:
			ended = &o
			return true
		default:
		}
		m := bannerRE.FindStringSubmatch(stderr.String())
		if m == nil {
			return false
		}
		g.url, g.admin = "http://"+m[1], "http://"+m[2]
		return true
	})
	if ended != nil {
		t.Fatalf("meridian gateway ended at start: %s\nstderr: %s", ended.line, ended.stderr)
	}
	t.Cleanup(func() { g.stop(t) })
	return g
}

// stop cancels the command's context, as SIGTERM does, and fails the test
// unless run returns nil.
func (g *runningGateway) stop(t *testing.T) {
	t.Helper()
	if g.cancel == nil {
		return
	}
	g.cancel()
	g.cancel = nil
	if o := <-g.done; o.err != nil {
		t.Errorf("meridian gateway after cancel: %s (exit %d), want a clean stop\nstderr: %s", o.line, o.code, o.stderr)
	}
}

// gatewayGet is one GET through the gateway: its status and X-Upstream.
func gatewayGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: gatewayWait}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("X-Upstream")
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestGatewayServesItsRoutesFileAndStopsCleanly runs the gateway on a
// routes file without a control plane: it serves the file's route to the
// upstream, /readyz says ready, and canceling the context (SIGTERM) ends
// run with nil.
func TestGatewayServesItsRoutesFileAndStopsCleanly(t *testing.T) {
	up := named(t, "shop")
	routes := writeFile(t, "routes.yaml", fmt.Sprintf(`routes:
  - name: shop
    match: {path_prefix: /shop}
    upstream: {urls: [%q]}
`, up.URL))
	// HOME is a fresh directory: there is no token anywhere, and a
	// gateway on a routes file of URLs runs without one.
	g := startGateway(t, nil, "--routes-file", routes)

	if status, from := gatewayGet(t, g.url+"/shop/cart"); status != http.StatusOK || from != "shop" {
		t.Errorf("GET /shop/cart = %d from %q, want 200 from shop", status, from)
	}
	if status, _ := gatewayGet(t, g.url+"/elsewhere"); status != http.StatusNotFound {
		t.Errorf("GET /elsewhere = %d, want 404", status)
	}
	if status, _ := gatewayGet(t, g.admin+"/readyz"); status != http.StatusOK {
		t.Errorf("GET /readyz = %d, want 200", status)
	}
	g.stop(t)
}

// TestGatewayRefusesABadRoutesFile runs the gateway on routes files that
// do not decode or do not validate: it exits at once with status 1 and
// an error that names the file and the line (syntax, unknown field) or
// the route and the field (validation).
func TestGatewayRefusesABadRoutesFile(t *testing.T) {
	tests := []struct {
		name, file, content string
		want                []string // each must be in the error line
	}{
		{
			name: "YAML syntax",
			file: "routes.yaml",
			content: `routes:
  - name: shop
    match: {path_prefix: /shop
    upstream: {urls: ["http://127.0.0.1:1"]}
`,
			want: []string{"routes.yaml", "line 4"},
		},
		{
			name: "unknown field",
			file: "routes.yaml",
			content: `routes:
  - name: shop
    match: {path_prefix: /shop}
    upstreams: {urls: ["http://127.0.0.1:1"]}
`,
			want: []string{"routes.yaml", "line 4", "upstreams"},
		},
		{
			name: "upstream URL with a path",
			file: "routes.yaml",
			content: `routes:
  - name: shop
    match: {path_prefix: /shop}
    upstream: {urls: ["http://127.0.0.1:1/v1"]}
`,
			want: []string{"routes.yaml", "routes[0].upstream.urls[0]", `route "shop"`},
		},
		{
			name: "two routes of the same name, JSON",
			file: "routes.json",
			content: `{"routes": [
  {"name": "shop", "match": {"path_prefix": "/shop"}, "upstream": {"urls": ["http://127.0.0.1:1"]}},
  {"name": "shop", "match": {"path_prefix": "/cart"}, "upstream": {"urls": ["http://127.0.0.1:1"]}}
]}`,
			want: []string{"routes.json", "routes[1].name", `route "shop"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, tt.file, tt.content)
			o := invocation{}.run(t, "gateway", "--routes-file", path, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0")
			if o.err == nil || o.code != 1 {
				t.Fatalf("exit %d (%v), want 1 with an error", o.code, o.err)
			}
			for _, w := range tt.want {
				if !strings.Contains(o.line, w) {
					t.Errorf("error %q does not say %q", o.line, w)
				}
			}
		})
	}
}

// TestGatewayServesTheConfigCenterDocument runs the gateway against a
// real control plane, with --addr and --token: it serves the document
// stored under its name (a static route, and a service route to a
// registered instance), follows a new revision, and keeps the revision it
// applied in --state-dir.
func TestGatewayServesTheConfigCenterDocument(t *testing.T) {
	static, orders := named(t, "static"), named(t, "orders-1")
	cp := cptest.Start(t)
	ctx := context.Background()
	inst := &meridian.Instance{Service: "orders", ID: "orders-1", Address: "127.0.0.1",
		Port: orders.Listener.Addr().(*net.TCPAddr).Port, Protocol: meridian.ProtocolHTTP}
	if _, err := cp.Client.Register(ctx, inst); err != nil {
		t.Fatal(err)
	}
	doc := func(staticPrefix string) string {
		return fmt.Sprintf(`routes:
  - name: orders
    match: {path_prefix: /orders}
    upstream: {service: orders}
  - name: static
    match: {path_prefix: %s}
    upstream: {urls: [%q]}
`, staticPrefix, static.URL)
	}
	put := func(value string) uint64 {
		t.Helper()
		e, err := cp.Client.PutConfig(ctx, gateway.Key("edge"), client.PutConfigRequest{Value: value, Format: meridian.FormatYAML})
		if err != nil {
			t.Fatal(err)
		}
		return e.Revision
	}
	put(doc("/static"))

	stateDir := t.TempDir()
	g := startGateway(t, nil, "--addr", cp.URL, "--token", cp.Secret, "--name", "edge", "--state-dir", stateDir)

	testwait.Until(t, gatewayWait, "the stored document to be served", func() bool {
		status, from := gatewayGet(t, g.url+"/static/x")
		return status == http.StatusOK && from == "static"
	})
	if status, from := gatewayGet(t, g.url+"/orders/1"); status != http.StatusOK || from != "orders-1" {
		t.Errorf("GET /orders/1 = %d from %q, want 200 from the registered instance", status, from)
	}

	rev := put(doc("/assets"))
	testwait.Until(t, gatewayWait, "the new revision to be served", func() bool {
		status, from := gatewayGet(t, g.url+"/assets/x")
		return status == http.StatusOK && from == "static"
	})
	// The state file is written right after the document is applied.
	testwait.Until(t, gatewayWait, "the new revision to be kept in --state-dir", func() bool {
		kept, err := gateway.LoadState(filepath.Join(stateDir, "routes.json"))
		return err == nil && kept != nil && kept.Revision == rev
	})
	g.stop(t)
}
