package discovery

import (
	"slices"
	"testing"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/client"
	"github.com/meridian-platform/meridian/internal/fakecp"
)

// These tests run the cache through the real client against fakecp, the
// in-memory stand-in for the control plane's HTTP API, which can be made
// unreachable and records the watch indexes; it stands in until the
// end-to-end tests against the real control plane (e2e_test.go in package
// sdk) cover these paths too.

// The client the SDK wires in satisfies Watcher.
var _ Watcher = (*client.Client)(nil)

func instance(id string) meridian.Instance {
	return meridian.Instance{Service: "orders", ID: id, Address: "10.0.0.1", Port: 8080, Protocol: meridian.ProtocolHTTP, Weight: 100}
}

func newClient(t *testing.T, cp *fakecp.Server) *client.Client {
	t.Helper()
	c, err := client.New(cp.URL, cp.Token)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCacheOverHTTP(t *testing.T) {
	cp := fakecp.Start(t)
	cp.Put(instance("a"))
	cp.Put(instance("b"))
	cp.Put(meridian.Instance{Service: "payments", ID: "p", Address: "10.0.0.9", Port: 9090})
	c := start(t, newClient(t, cp))

	s := waitSnapshot(t, c, "orders")
	want(t, s, 3, "a", "b")

	cp.SetHealth("orders", "a", meridian.StatusCritical)
	s = changed(t, c, s)
	want(t, s, 4, "b")

	// The control plane becomes unreachable; the last set is served.
	cp.SetDown(true)
	unchanged(t, s)
	// Changes happen meanwhile (the cache cannot see them yet).
	cp.Expire("orders", "b")
	cp.SetHealth("orders", "a", meridian.StatusPassing)
	cp.Put(instance("c"))
	cp.Put(meridian.Instance{Service: "payments", ID: "q", Address: "10.0.0.9", Port: 9091})
	time.Sleep(50 * time.Millisecond) // some reconnects fail
	if got := c.Snapshot("orders"); got != s {
		t.Fatalf("snapshot changed while the control plane was down: %+v", got)
	}

	cp.SetDown(false)
	s = changed(t, c, s)
	for s.Index < 8 {
		s = changed(t, c, s)
	}
	want(t, s, 8, "a", "c")

	var resumed []uint64
	for _, w := range cp.Watches() {
		if w.Filter != "orders" {
			t.Errorf("watch of %q, want only orders", w.Filter)
		}
		resumed = append(resumed, w.Index)
	}
	// The first watch took the full list; every later one resumed after
	// index 4, the last change applied before the outage.
	if len(resumed) < 2 || resumed[0] != 0 || slices.ContainsFunc(resumed[1:], func(i uint64) bool { return i != 4 }) {
		t.Fatalf("watch indexes = %v, want [0 4 4 …]", resumed)
	}
}
