package jetstream_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-platform/meridian/bus"
	"github.com/meridian-platform/meridian/bus/bustest"
	"github.com/meridian-platform/meridian/bus/jetstream"
	"github.com/meridian-platform/meridian/internal/natstest"
)

func TestConformance(t *testing.T) {
	srv := natstest.Start(t)
	bustest.Run(t, func(t *testing.T) bus.Backend {
		b, _ := open(t, srv)
		return b
	})
}

// open returns a backend on a new connection to srv, closed when t ends.
func open(t testing.TB, srv *natstest.Server) (*jetstream.Backend, *nats.Conn) {
	t.Helper()
	nc := srv.Connect(t)
	b, err := jetstream.New(nc, jetstream.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Close(ctx); err != nil && !nc.IsClosed() {
			t.Errorf("close: %v", err)
		}
	})
	return b, nc
}
