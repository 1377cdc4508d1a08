package inbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"

	"github.com/meridian-platform/meridian/bus/inbox"
)

// The same event delivered twice charges the customer once: the second
// delivery finds the first one's record and is acknowledged as a
// duplicate.
func ExampleInbox_Process() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "inbox-example-")
	defer os.RemoveAll(dir)
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "billing.db")+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(wal)")
	if err != nil {
		panic(err)
	}
	defer db.Close()
	in, err := inbox.NewSQLite(db, inbox.Options{})
	if err != nil {
		panic(err)
	}
	if err := in.Migrate(ctx); err != nil {
		panic(err)
	}
	if _, err := db.Exec(`CREATE TABLE charges (order_id TEXT, amount INTEGER)`); err != nil {
		panic(err)
	}
	charge := func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO charges VALUES ('order-1', 1250)`)
		return err
	}
	for range 2 { // a delivery and its redelivery
		dup, err := in.Process(ctx, "billing", "/shop/orders", "order-1", charge)
		fmt.Println("duplicate:", dup, "error:", err)
	}
	var n int
	db.QueryRow(`SELECT count(*) FROM charges`).Scan(&n)
	fmt.Println("charges:", n)
	// Output:
	// duplicate: false error: <nil>
	// duplicate: true error: <nil>
	// charges: 1
}
