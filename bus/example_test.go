package bus_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/meridian-platform/meridian/bus"
	"github.com/meridian-platform/meridian/bus/jetstream"
	"github.com/meridian-platform/meridian/internal/natsembed"
)

type OrderPlaced struct {
	OrderID string `json:"order_id"`
	Total   int    `json:"total_cents"`
}

// Orders is a typed topic: its events carry OrderPlaced as JSON.
var Orders = bus.NewTopic[OrderPlaced]("orders", "com.example.order.placed", "/orders")

func Example() {
	// An in-process NATS server with JetStream; a service would connect to
	// the control plane's (sdk.OpenBus).
	dir, _ := os.MkdirTemp("", "bus-example")
	defer os.RemoveAll(dir)
	ns, err := natsembed.Start(natsembed.Options{StoreDir: dir})
	if err != nil {
		panic(err)
	}
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	nc, err := natsembed.Connect(ns, "example")
	if err != nil {
		panic(err)
	}
	defer nc.Close()
	b, err := jetstream.New(nc, jetstream.Config{})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	defer b.Close(ctx)

	done := make(chan struct{})
	sub, err := bus.Subscribe(ctx, b, Orders, "billing", func(ctx context.Context, m bus.Message[OrderPlaced]) error {
		fmt.Printf("bill %s: %d cents (attempt %d)\n", m.Data.OrderID, m.Data.Total, m.Attempt)
		close(done)
		return nil // an error would bring it back after a backoff, then dead-letter it
	}, bus.SubscribeOptions{Ordered: true, MaxDeliveries: 5})
	if err != nil {
		panic(err)
	}
	defer sub.Close()

	r, err := bus.Publish(ctx, b, Orders, OrderPlaced{OrderID: "o-42", Total: 1999}, bus.WithKey("o-42"))
	if err != nil {
		panic(err)
	}
	fmt.Println("stored at sequence", r.Sequence)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		fmt.Println("not delivered")
	}
	// Output:
	// stored at sequence 1
	// bill o-42: 1999 cents (attempt 1)
}
