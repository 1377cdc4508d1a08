package sdk

import (
	"context"
	"testing"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/client"
	"github.com/meridian-platform/meridian/internal/cptest"
)

// TestEndToEnd runs the lifecycle, discovery and config binding against the
// real control plane: registration with an active check that the control
// plane runs against /readyz, discovery of the instance once the check
// passes, config revisions (good, undecodable, deleted), re-registration
// after the registry forgot the instance, deregistration on stop.
func TestEndToEnd(t *testing.T) {
	cp := cptest.Start(t)
	cfg := Config{Name: "orders", Listen: "127.0.0.1:0", ControlPlane: cp.URL, Token: cp.Secret, TTL: time.Second, DrainDelay: -1,
		Check: &meridian.CheckSpec{Kind: meridian.CheckHTTP, Target: "/readyz", Interval: meridian.Duration(200 * time.Millisecond)}}
	r := run(t, cfg, nil)
	waitReady(t, r)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	snap, err := r.Discovery().Wait(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	for len(snap.Instances) == 0 {
		select {
		case <-snap.Changed():
			snap = r.Discovery().Snapshot("orders")
		case <-ctx.Done():
			t.Fatal("the control plane's check never passed")
		}
	}
	if in := snap.Instances[0]; in.Port != r.Addr().Port || in.Health.Status != meridian.StatusPassing {
		t.Fatalf("discovered %+v", in)
	}

	c := cp.Client
	if _, err := c.PutConfig(ctx, "prod/orders/limits", client.PutConfigRequest{Value: `{"max_items": 1}`, Format: meridian.FormatJSON}); err != nil {
		t.Fatal(err)
	}
	rec := newRecorder[limits]()
	b := bind(t, c, "prod/orders/limits", rec)
	if _, err := c.PutConfig(ctx, "prod/orders/limits", client.PutConfigRequest{Value: `{"max_items": 2}`, Format: meridian.FormatJSON}); err != nil {
		t.Fatal(err)
	}
	rec.wait(t)
	if b.Get().MaxItems != 2 {
		t.Fatalf("Get = %+v, want the second revision", b.Get())
	}
	if _, err := c.PutConfig(ctx, "prod/orders/limits", client.PutConfigRequest{Value: `{"max_itemz": 3}`, Format: meridian.FormatJSON}); err != nil {
		t.Fatal(err)
	}
	rec.wait(t)
	if b.Get().MaxItems != 2 || !meridian.IsCode(b.Err(), meridian.CodeInvalid) {
		t.Fatalf("after an undecodable revision: %+v, %v", b.Get(), b.Err())
	}
	if err := c.DeleteConfig(ctx, "prod/orders/limits", nil); err != nil {
		t.Fatal(err)
	}
	rec.wait(t)
	if b.Get().MaxItems != 2 || !meridian.IsCode(b.Err(), meridian.CodeNotFound) {
		t.Fatalf("after deletion: %+v, %v", b.Get(), b.Err())
	}

	// The registry forgets the instance (as when its lease expired): the
	// next heartbeat answers not_found and the service registers again.
	id := snap.Instances[0].ID
	if err := c.Deregister(ctx, "orders", id); err != nil {
		t.Fatal(err)
	}
	eventually(t, "re-registered", func() bool { _, err := c.Instance(ctx, "orders", id); return err == nil })
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Instance(ctx, "orders", id); !meridian.IsCode(err, meridian.CodeNotFound) {
		t.Fatalf("after stop the instance is still registered (%v)", err)
	}
}
