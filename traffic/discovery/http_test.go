package discovery

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/client"
	"github.com/meridian-platform/meridian/internal/cptest"
	"github.com/meridian-platform/meridian/internal/logtest"
	"github.com/meridian-platform/meridian/internal/testwait"
)

// These tests run the cache through the real client against the real
// control plane (package cptest): health changes come from the control
// plane's own checks, an outage is the watched replica stopped while the
// rest of the cluster (a peer replica on the same store) changes the
// registry, and the recovery is that replica restarted on its address.

// The client the SDK wires in satisfies Watcher.
var _ Watcher = (*client.Client)(nil)

func instance(id string) meridian.Instance {
	return meridian.Instance{Service: "orders", ID: id, Address: "10.0.0.1", Port: 8080, Protocol: meridian.ProtocolHTTP, Weight: 100}
}

func register(t *testing.T, c *client.Client, in meridian.Instance) *meridian.Instance {
	t.Helper()
	out, err := c.Register(context.Background(), &in)
	if err != nil {
		t.Fatalf("register %s/%s: %v", in.Service, in.ID, err)
	}
	return out
}

// served lists what the control plane serves of a service (passing and
// warning instances), and the service's index.
func served(t *testing.T, c *client.Client, service string) ([]string, uint64) {
	t.Helper()
	list, index, err := c.Instances(context.Background(), service, client.InstancesQuery{Healthy: true})
	if err != nil {
		t.Fatalf("instances of %s: %v", service, err)
	}
	var out []string
	for _, in := range list {
		out = append(out, in.ID)
	}
	return out, index
}

// converge waits until the cache's view of orders is the control plane's
// (the same serving instances at the same index) and that view is wantIDs,
// and returns it.
func converge(t *testing.T, c *Cache, cl *client.Client, wantIDs ...string) *Snapshot {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := c.Snapshot("orders")
		got, index := served(t, cl, "orders")
		if s != nil && slices.Equal(ids(s), wantIDs) && slices.Equal(got, wantIDs) && s.Index == index {
			return s
		}
		if time.Now().After(deadline) {
			if s == nil {
				t.Fatalf("the cache has no snapshot of orders; the control plane serves %v at index %d", got, index)
			}
			t.Fatalf("the cache did not converge on %v: it has %v at index %d; the control plane serves %v at index %d", wantIDs, ids(s), s.Index, got, index)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCacheOverHTTP(t *testing.T) {
	cp := cptest.Start(t)
	// a's health is whatever the control plane's probes of this endpoint
	// find.
	var code atomic.Int32
	code.Store(http.StatusOK)
	probed := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(int(code.Load())) }))
	t.Cleanup(probed.Close)
	host, portStr, _ := net.SplitHostPort(probed.Listener.Addr().String())
	port, _ := strconv.Atoi(portStr)
	a := instance("a")
	a.Address, a.Port = host, port
	a.Check = &meridian.CheckSpec{Kind: meridian.CheckHTTP, InitialStatus: meridian.StatusPassing,
		Interval: meridian.Duration(500 * time.Millisecond), Timeout: meridian.Duration(500 * time.Millisecond)}
	register(t, cp.Client, a)
	register(t, cp.Client, instance("b"))
	register(t, cp.Client, meridian.Instance{Service: "payments", ID: "p", Address: "10.0.0.9", Port: 9090})

	logs := logtest.NewCounter()
	c := start(t, cp.Client, WithLogger(slog.New(logs)))
	waitSnapshot(t, c, "orders")
	converge(t, c, cp.Client, "a", "b")

	// a's check fails: the control plane takes it out of discovery.
	code.Store(http.StatusServiceUnavailable)
	s := converge(t, c, cp.Client, "b")

	// The watched replica goes down. The cache notices, fails to reconnect
	// and serves the last set meanwhile.
	cp.Stop()
	eventually(t, "the watch to break and a reconnect to fail", func() bool {
		return logs.Count("discovery: registry watch broke; serving the last known instances") >= 2
	})
	if got := c.Snapshot("orders"); got != s {
		t.Fatalf("snapshot changed when the control plane went down: %+v", got)
	}
	// The rest of the cluster changes the registry, out of the cache's
	// sight: b goes, a passes its checks again (run by the peer now), c
	// comes, and a payments instance comes last.
	peer := cp.Peer()
	if err := peer.Client.Deregister(context.Background(), "orders", "b"); err != nil {
		t.Fatal(err)
	}
	code.Store(http.StatusOK)
	register(t, peer.Client, instance("c"))
	eventually(t, "a to pass again", func() bool { got, _ := served(t, peer.Client, "orders"); return slices.Equal(got, []string{"a", "c"}) })
	q := register(t, peer.Client, meridian.Instance{Service: "payments", ID: "q", Address: "10.0.0.9", Port: 9091})
	if got := c.Snapshot("orders"); got != s {
		t.Fatalf("snapshot changed while the control plane was down: %+v", got)
	}

	// The replica comes back: the cache resumes, and publishes what it
	// missed in one snapshot, exactly the control plane's set.
	cp.Restart()
	s = changed(t, c, s)
	if got := ids(s); !slices.Equal(got, []string{"a", "c"}) {
		t.Fatalf("first snapshot after the outage = %v, want [a c]: the missed changes, all at once", got)
	}
	s = converge(t, c, cp.Client, "a", "c")
	for _, in := range s.Instances {
		if in.Service != "orders" || in.Health.Status != meridian.StatusPassing {
			t.Errorf("served %s/%s, %s", in.Service, in.ID, in.Health.Status)
		}
	}
	// The cache watches only the service looked up: its index is that of
	// orders, below the later payments change.
	if s.Index >= q.Revision {
		t.Errorf("orders snapshot at index %d, at or after the payments change at %d", s.Index, q.Revision)
	}
}

// eventually polls cond until it holds or a generous deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testwait.Until(t, 10*time.Second, what, cond)
}
