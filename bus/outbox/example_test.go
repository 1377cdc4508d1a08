package outbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"

	"github.com/meridian-platform/meridian/bus"
	"github.com/meridian-platform/meridian/bus/outbox"
)

// An order and its "placed" event are written in one SQLite transaction;
// the relay publishes the event once the transaction has committed. A real
// service passes outbox.FromBus(backend) as the publisher.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "outbox-example-")
	defer os.RemoveAll(dir)
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "shop.db")+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(wal)")
	if err != nil {
		panic(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	ob, err := outbox.NewSQLite(db, outbox.Options{})
	if err != nil {
		panic(err)
	}
	if err := ob.Migrate(ctx); err != nil {
		panic(err)
	}
	if _, err := db.Exec(`CREATE TABLE orders (id TEXT PRIMARY KEY, total INTEGER)`); err != nil {
		panic(err)
	}

	// The business change and its event, in one transaction.
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		panic(err)
	}
	if _, err := tx.Exec(`INSERT INTO orders VALUES ('order-1', 1250)`); err != nil {
		panic(err)
	}
	err = ob.Write(ctx, tx, "orders.placed", bus.Event{
		ID: "order-1", Source: "/shop/orders", Type: "com.example.order.placed",
		DataContentType: "application/json", Data: []byte(`{"total":1250}`),
	})
	if err != nil {
		panic(err)
	}
	if err := tx.Commit(); err != nil {
		panic(err)
	}

	// The relay, owned by this function: started, then stopped and waited for.
	published := make(chan struct{})
	pub := outbox.PublisherFunc(func(ctx context.Context, topic string, e bus.Event) error {
		fmt.Println(topic, e.ID, string(e.Data))
		close(published)
		return nil
	})
	relay, err := outbox.NewRelay(ob, pub, outbox.RelayConfig{})
	if err != nil {
		panic(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- relay.Run(rctx) }()
	<-published
	stop()
	if err := <-done; err != nil {
		panic(err)
	}
	n, _ := ob.Pending(ctx)
	fmt.Println("pending:", n)
	// Output:
	// orders.placed order-1 {"total":1250}
	// pending: 0
}
