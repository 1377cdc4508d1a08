package controlplane_test

import (
	"context"
	"testing"
	"time"

	"github.com/meridian-platform/meridian"
)

// BenchmarkHeartbeat measures one heartbeat through the HTTP API, client
// and server in this process, for profiling (go test -bench Heartbeat
// -cpuprofile); bench/registry measures the server alone against etcd.
func BenchmarkHeartbeat(b *testing.B) {
	ns := natsServer(b, b.TempDir())
	c := startCP(b, ns.ClientURL(), "")
	ctx := context.Background()
	if _, err := c.Admin.Register(ctx, &meridian.Instance{Service: "bench", ID: "b1", Address: "127.0.0.1", Port: 1, TTL: meridian.Duration(time.Minute)}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if err := c.Admin.Heartbeat(ctx, "bench", "b1"); err != nil {
			b.Fatal(err)
		}
	}
}
