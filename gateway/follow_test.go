package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/client"
	"github.com/meridian-platform/meridian/gateway"
	"github.com/meridian-platform/meridian/internal/cptest"
	"github.com/meridian-platform/meridian/internal/testwait"
	"github.com/meridian-platform/meridian/traffic/discovery"
)

// These tests run a gateway against a real control plane (cptest): the
// routing document lives in its config center, the "orders" instances in
// its registry, and the control plane is stopped and restarted to provoke
// an outage.

// edgeKey is the config key of the routing document of the gateway
// "edge".
var edgeKey = gateway.Key("edge")

// edgeDoc is a routing document: /orders to the registered service
// "orders", round robin so that both instances are seen in a few
// requests, and staticPrefix to the fixed upstream staticURL.
func edgeDoc(staticPrefix, staticURL string) string {
	return fmt.Sprintf(`policies:
  balancers:
    rr: {policy: round_robin}
default:
  balancer: rr
routes:
  - name: orders
    match: {path_prefix: /orders}
    upstream: {service: orders}
  - name: static
    match: {path_prefix: %s}
    upstream: {urls: [%q]}
`, staticPrefix, staticURL)
}

// putDoc puts a YAML routing document under edgeKey and returns its
// revision.
func putDoc(t *testing.T, c *client.Client, doc string) uint64 {
	t.Helper()
	e, err := c.PutConfig(context.Background(), edgeKey, client.PutConfigRequest{Value: doc, Format: meridian.FormatYAML})
	if err != nil {
		t.Fatal(err)
	}
	return e.Revision
}

// registerOrders starts n instances of "orders", registers them without a
// lease, and returns their IDs.
func registerOrders(t *testing.T, c *client.Client, n int) []string {
	t.Helper()
	var ids []string
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("orders-%d", i)
		srv := newUpstream(t, id)
		port := srv.Listener.Addr().(*net.TCPAddr).Port
		inst := &meridian.Instance{Service: "orders", ID: id, Address: "127.0.0.1", Port: port, Protocol: meridian.ProtocolHTTP}
		if _, err := c.Register(context.Background(), inst); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

// runCache runs a discovery cache of c until the test ends. Register it
// before the gateway that uses it, so that it stops after the gateway.
func runCache(t *testing.T, c discovery.Watcher) *discovery.Cache {
	t.Helper()
	cache := discovery.New(c, discovery.WithBackoff(10*time.Millisecond, 250*time.Millisecond))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = cache.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return cache
}

// follow runs gw.Follow until the test ends.
func follow(t *testing.T, gw *gateway.Gateway, w gateway.ConfigWatcher, stateFile string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- gw.Follow(ctx, w, edgeKey, stateFile) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Follow: %v", err)
		}
	})
}

// answer is what the gateway answered to one GET.
type answer struct {
	status      int
	upstream    string // X-Upstream: which server answered
	contentType string
	body        string
}

// get GETs url, failing t if there is no answer.
func get(t *testing.T, c *http.Client, url string) answer {
	t.Helper()
	a, err := tryGet(c, url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return a
}

func tryGet(c *http.Client, url string) (answer, error) {
	resp, err := c.Get(url)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, err
	}
	return answer{resp.StatusCode, resp.Header.Get("X-Upstream"), resp.Header.Get("Content-Type"), string(b)}, nil
}

// reloads is the gateway's count of routing documents offered, by result
// ("applied", "invalid").
func reloads(t *testing.T, reg *prometheus.Registry, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "meridian_gateway_config_reloads_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestFollowAppliesNewRevisionsAndKeepsTheLastGoodDocument follows the
// routing document in the config center: the first revision serves a
// service route balanced over both registered instances and a static
// route; a new revision that moves the static route is picked up; a
// revision that does not validate (the control plane stores it: it does
// not check routing documents) is refused and the last good one keeps
// serving; the state file holds the revision applied.
func TestFollowAppliesNewRevisionsAndKeepsTheLastGoodDocument(t *testing.T) {
	static := newUpstream(t, "static")
	cp := cptest.Start(t)
	ids := registerOrders(t, cp.Client, 2)
	rev1 := putDoc(t, cp.Client, edgeDoc("/static", static.URL))

	cache := runCache(t, cp.Client)
	reg := prometheus.NewRegistry()
	gw := newGateway(t, gateway.Options{Discovery: cache, Registerer: reg})
	base := serveGateway(t, gw)
	stateFile := filepath.Join(t.TempDir(), "state", "routes.json")
	follow(t, gw, cp.Client, stateFile)
	c := keepAliveClient(t)

	testwait.Until(t, waitLong, "the first revision to be applied", func() bool { return gw.Revision() == rev1 })
	// Both instances take requests.
	seen := map[string]int{}
	for range 20 {
		a := get(t, c, base+"/orders/1")
		if a.status != http.StatusOK {
			t.Fatalf("GET /orders/1 = %d %s", a.status, a.body)
		}
		seen[a.upstream]++
	}
	for _, id := range ids {
		if seen[id] < 5 {
			t.Errorf("instance %s answered %d of 20 requests under round robin; answers by instance: %v", id, seen[id], seen)
		}
	}
	if a := get(t, c, base+"/static/x"); a.status != http.StatusOK || a.upstream != "static" {
		t.Fatalf("GET /static/x = %d from %q, want 200 from static", a.status, a.upstream)
	}

	// A new revision moves the static route to /assets.
	rev2 := putDoc(t, cp.Client, edgeDoc("/assets", static.URL))
	testwait.Until(t, waitLong, "/assets to be served", func() bool {
		a := get(t, c, base+"/assets/x")
		return a.status == http.StatusOK && a.upstream == "static"
	})
	if got := gw.Revision(); got != rev2 {
		t.Fatalf("Revision() = %d, want %d", got, rev2)
	}
	if a := get(t, c, base+"/static/x"); a.status != http.StatusNotFound {
		t.Errorf("GET /static/x = %d under the second revision, which has no such route; want 404", a.status)
	}

	// A revision that parses but does not validate: two routes named
	// orders. The control plane stores it; the gateway refuses it.
	invalid := edgeDoc("/assets", static.URL) + `  - name: orders
    match: {path_prefix: /elsewhere}
    upstream: {urls: [` + fmt.Sprintf("%q", static.URL) + `]}
`
	rev3 := putDoc(t, cp.Client, invalid)
	testwait.Until(t, waitLong, "the invalid revision to be refused", func() bool { return reloads(t, reg, "invalid") >= 1 })
	if got := gw.Revision(); got != rev2 {
		t.Errorf("Revision() = %d after the invalid revision %d, want %d still", got, rev3, rev2)
	}
	if a := get(t, c, base+"/assets/x"); a.status != http.StatusOK || a.upstream != "static" {
		t.Errorf("GET /assets/x = %d from %q after the invalid revision, want 200 from static", a.status, a.upstream)
	}
	if a := get(t, c, base+"/orders/1"); a.status != http.StatusOK || !strings.HasPrefix(a.upstream, "orders-") {
		t.Errorf("GET /orders/1 = %d from %q after the invalid revision, want 200 from an instance", a.status, a.upstream)
	}

	// The state file holds the last revision applied, not the refused one.
	kept, err := gateway.LoadState(stateFile)
	if err != nil {
		t.Fatal(err)
	}
	if kept == nil || kept.Key != edgeKey || kept.Revision != rev2 || kept.Value != edgeDoc("/assets", static.URL) {
		t.Fatalf("LoadState = %+v, want revision %d of %s with the second document", kept, rev2, edgeKey)
	}
	if n := reloads(t, reg, "applied"); n != 2 {
		t.Errorf("%v documents applied, want 2", n)
	}
}

// TestRestoreServesTheKeptDocumentWhileTheControlPlaneIsDown starts a
// gateway during a control-plane outage, from the document an earlier
// gateway kept: it serves at once, static routes as usual and service
// routes with a 503 problem (it has no instance list, and cannot get one
// while the control plane is down), and once the control plane is back it
// follows new revisions and reaches the service's instances.
func TestRestoreServesTheKeptDocumentWhileTheControlPlaneIsDown(t *testing.T) {
	static := newUpstream(t, "static")
	cp := cptest.Start(t)
	registerOrders(t, cp.Client, 2)
	rev1 := putDoc(t, cp.Client, edgeDoc("/static", static.URL))
	stateFile := filepath.Join(t.TempDir(), "routes.json")

	// A first gateway follows the config center and keeps what it applies.
	{
		gw := newGateway(t, gateway.Options{})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- gw.Follow(ctx, cp.Client, edgeKey, stateFile) }()
		testwait.Until(t, waitLong, "the first gateway to keep revision 1", func() bool {
			e, err := gateway.LoadState(stateFile)
			return err == nil && e != nil && e.Revision == rev1
		})
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Follow: %v", err)
		}
		gw.Close()
	}

	cp.Stop()

	// A new gateway starts while the control plane is down.
	cache := runCache(t, cp.Client)
	gw := newGateway(t, gateway.Options{Discovery: cache})
	rev, err := gw.Restore(stateFile)
	if err != nil || rev != rev1 {
		t.Fatalf("Restore = %d, %v; want revision %d", rev, err, rev1)
	}
	if !gw.Ready() || gw.Revision() != rev1 {
		t.Fatalf("after Restore: Ready() = %v, Revision() = %d; want true, %d", gw.Ready(), gw.Revision(), rev1)
	}
	base := serveGateway(t, gw)
	follow(t, gw, cp.Client, stateFile)
	c := keepAliveClient(t)

	if a := get(t, c, base+"/static/x"); a.status != http.StatusOK || a.upstream != "static" {
		t.Fatalf("GET /static/x during the outage = %d from %q, want 200 from static", a.status, a.upstream)
	}
	// No instance list can be had: the gateway must say so, not hold the
	// request until the client gives up (c's timeout, waitLong).
	a, err := tryGet(c, base+"/orders/1")
	if err != nil {
		t.Fatalf("GET /orders/1 during the outage: no answer (%v); want a 503 problem", err)
	}
	var p struct {
		Status int    `json:"status"`
		Code   string `json:"code"`
	}
	if a.status != http.StatusServiceUnavailable || a.contentType != "application/problem+json" ||
		json.Unmarshal([]byte(a.body), &p) != nil || p.Status != http.StatusServiceUnavailable || p.Code != string(meridian.CodeUnavailable) {
		t.Fatalf("GET /orders/1 during the outage = %d %s %s; want a 503 problem with code unavailable", a.status, a.contentType, a.body)
	}
	// The answer goes to the gateway's public clients: it must not show
	// them where the control plane is, nor how reaching it failed.
	if strings.Contains(a.body, cp.Addr) || strings.Contains(a.body, "dial tcp") {
		t.Errorf("the 503 tells the client about the control plane: %s", a.body)
	}

	// The control plane comes back: the gateway follows a new revision and
	// the service route reaches the instances.
	cp.Restart()
	rev2 := putDoc(t, cp.Client, edgeDoc("/assets", static.URL))
	testwait.Until(t, waitLong, "the restored gateway to serve the new revision", func() bool {
		a := get(t, c, base+"/assets/x")
		return a.status == http.StatusOK && a.upstream == "static"
	})
	if got := gw.Revision(); got != rev2 {
		t.Errorf("Revision() = %d, want %d", got, rev2)
	}
	testwait.Until(t, waitLong, "the service route to reach an instance", func() bool {
		a := get(t, c, base+"/orders/1")
		return a.status == http.StatusOK && strings.HasPrefix(a.upstream, "orders-")
	})
	// The state file is written right after the document is applied.
	testwait.Until(t, waitLong, "the new revision to be kept", func() bool {
		kept, err := gateway.LoadState(stateFile)
		return err == nil && kept != nil && kept.Revision == rev2
	})
}
