package gateway_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/meridian-platform/meridian/gateway"
	"github.com/meridian-platform/meridian/internal/cptest"
	"github.com/meridian-platform/meridian/internal/testwait"
)

// TestKeptInstancesServeWhileTheControlPlaneIsDown: a gateway keeps the
// instances of the services its routes use; one restarted while the
// control plane is down seeds discovery with them and reaches the service
// instead of answering 503.
func TestKeptInstancesServeWhileTheControlPlaneIsDown(t *testing.T) {
	static := newUpstream(t, "static")
	cp := cptest.Start(t)
	registerOrders(t, cp.Client, 1)
	doc := edgeDoc("/static", static.URL)
	instFile := filepath.Join(t.TempDir(), "instances.json")

	// The first gateway serves the service, which makes discovery watch
	// it, and keeps its instances.
	{
		cache := runCache(t, cp.Client)
		gw := newGateway(t, gateway.Options{Discovery: cache})
		if err := gw.Apply(mustParse(t, doc), 1); err != nil {
			t.Fatal(err)
		}
		base := serveGateway(t, gw)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() { _ = gw.KeepInstances(ctx, instFile) })
		c := keepAliveClient(t)
		if a := get(t, c, base+"/orders/1"); a.status != http.StatusOK {
			t.Fatalf("GET /orders/1 = %d %s", a.status, a.body)
		}
		testwait.Until(t, waitLong, "the instances to be kept", func() bool {
			_, err := os.Stat(instFile)
			return err == nil
		})
		cancel()
		wg.Wait()
	}

	cp.Stop()

	cache := runCache(t, cp.Client)
	n, err := gateway.SeedInstances(cache, instFile)
	if err != nil || n != 1 {
		t.Fatalf("SeedInstances = %d, %v; want 1 service", n, err)
	}
	gw := newGateway(t, gateway.Options{Discovery: cache})
	if err := gw.Apply(mustParse(t, doc), 1); err != nil {
		t.Fatal(err)
	}
	base := serveGateway(t, gw)
	a := get(t, keepAliveClient(t), base+"/orders/1")
	if a.status != http.StatusOK || a.upstream != "orders-1" {
		t.Fatalf("GET /orders/1 during the outage = %d from %q: %s; want 200 from orders-1", a.status, a.upstream, a.body)
	}
}

func mustParse(t *testing.T, doc string) *gateway.Config {
	t.Helper()
	cfg, err := gateway.Parse("yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}
