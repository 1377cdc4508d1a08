package cptest_test

import (
	"context"
	"testing"

	"go.uber.org/goleak"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/client"
	"github.com/meridian-platform/meridian/internal/cptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStopRestartAndPeer(t *testing.T) {
	cp := cptest.Start(t)
	ctx := context.Background()
	reg := func(c *client.Client, id string) error {
		_, err := c.Register(ctx, &meridian.Instance{Service: "orders", ID: id, Address: "127.0.0.1", Port: 8080})
		return err
	}
	if err := reg(cp.Client, "before"); err != nil {
		t.Fatal(err)
	}
	addr := cp.Addr

	cp.Stop()
	cp.Stop() // idempotent
	if err := reg(cp.Client, "during"); !meridian.IsCode(err, meridian.CodeUnavailable) {
		t.Fatalf("register while stopped = %v, want unavailable", err)
	}
	// The rest of the cluster goes on.
	peer := cp.Peer()
	if peer.Addr == addr || peer.Secret != cp.Secret {
		t.Fatalf("peer at %s with secret %q; want another address and the same secret", peer.Addr, peer.Secret)
	}
	if err := reg(peer.Client, "during"); err != nil {
		t.Fatal(err)
	}

	cp.Restart()
	if cp.Addr != addr {
		t.Fatalf("restarted on %s, want %s", cp.Addr, addr)
	}
	list, _, err := cp.Client.Instances(ctx, "orders", client.InstancesQuery{})
	if err != nil || len(list) != 2 || list[0].ID != "before" || list[1].ID != "during" {
		t.Fatalf("after restart: %+v, %v; want before and during", list, err)
	}
	cp.Restart() // a running replica is stopped first
	if _, err := cp.Client.Instance(ctx, "orders", "before"); err != nil {
		t.Fatal(err)
	}
}
