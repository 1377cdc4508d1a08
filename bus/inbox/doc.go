// Package inbox makes event consumers idempotent: the effect of handling an
// event happens exactly once, although the bus delivers it at least once
// (redeliveries after a lost acknowledgement, an outbox relay's re-sends
// after a crash, replays).
//
//	in, _ := inbox.NewPostgres(pool, inbox.Options{})  // or NewSQLite(db, …)
//	_ = in.Migrate(ctx)
//	go in.Run(ctx, onErr)                              // retention sweep; the caller owns it
//
//	func handle(ctx context.Context, d *bus.Delivery) error {
//		dup, err := in.Process(ctx, "billing", d.Event.Source, d.Event.ID,
//			func(ctx context.Context, tx pgx.Tx) error {
//				return charge(ctx, tx, d.Event)      // the effect, through tx
//			})
//		_ = dup                                      // a duplicate is acknowledged too
//		return err                                   // nil acknowledges
//	}
//
// Process inserts the key (consumer, source, id) into the inbox table and
// runs the effect in the same database transaction. If the key is there
// already the insert adds nothing, the effect does not run, and the
// delivery is acknowledged as a duplicate. If the effect fails, the
// transaction rolls back with the record, so a redelivery runs it again.
// The record and the effect commit together or not at all, which is what
// makes the effect exactly once: whatever fails between the commit and the
// acknowledgement, the next delivery finds the record.
//
// The key is the consumer's name with the CloudEvents source and id, the
// pair that identifies an event: the same event handled by two consumers
// (two groups, two handlers) is two keys.
//
// # Table
//
// Migrate creates, if missing:
//
//	<table> (default meridian_inbox; PostgreSQL: in Options.Schema)
//	  consumer      text  \
//	  source        text   } PRIMARY KEY (consumer, source, id)
//	  id            text  /   (SQLite: WITHOUT ROWID)
//	  processed_at  SQLite Unix ns / timestamptz
//	<table>_processed  index on (processed_at), for the sweep
//
// Records older than Options.Retention (default 7 days) are deleted by
// Sweep, which Run calls every SweepInterval. A duplicate that arrives
// after its record was swept runs the effect again, so Retention must
// outlast every way a copy can arrive late: the broker's retention for
// replays, and the longest a relay can be down with events it published
// but had not marked sent.
//
// SQLite and PostgreSQL share this package for the reasons package outbox
// gives; Inbox is generic in the transaction type its effect receives.
package inbox
