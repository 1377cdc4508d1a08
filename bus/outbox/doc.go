// Package outbox is the transactional outbox: a service writes the events
// that announce a business change into a table of its own database, in
// the same transaction as the change, and a Relay publishes them to the
// bus afterwards. An event is published if and only if its transaction
// commits, and at least once, whatever crashes in between.
//
//	ob, _ := outbox.NewSQLite(db, outbox.Options{})       // or NewPostgres(pool, …)
//	_ = ob.Migrate(ctx)
//	tx, _ := db.BeginTx(ctx, nil)
//	… the business change through tx …
//	_ = ob.Write(ctx, tx, "orders.placed", event)         // same tx
//	_ = tx.Commit()
//
//	relay, _ := outbox.NewRelay(ob, outbox.FromBus(backend), outbox.RelayConfig{})
//	go relay.Run(ctx)                                     // the caller owns it
//
// Consumers make the at-least-once delivery safe with package inbox.
//
// # Dialects
//
// SQLite (through database/sql, e.g. modernc.org/sqlite) and PostgreSQL
// (through pgx) live in this one package, behind an Outbox generic in its
// transaction type: Outbox[*sql.Tx] and Outbox[pgx.Tx]. Write then takes
// the caller's own transaction type, checked by the compiler, with no
// adapter; the relay, the schema and the guarantees are one piece of code
// and one document; and a service that uses both outbox and inbox does not
// import two packages named sqlite. The cost is that the package links pgx
// for SQLite users too; pgx is pure Go and does nothing at init.
//
// # Tables
//
// Migrate creates, if missing (CREATE … IF NOT EXISTS; safe to run from
// every instance at start, serialized by an advisory lock on PostgreSQL):
//
//	<table> (default meridian_outbox; PostgreSQL: in Options.Schema)
//	  seq         SQLite INTEGER PRIMARY KEY AUTOINCREMENT / PostgreSQL bigint identity
//	              the outbox's order; never reused
//	  topic       text      the topic handed to the Publisher
//	  event_id    text      the event's id  (for operators: was X sent?)
//	  source      text      the event's source
//	  event       SQLite TEXT / PostgreSQL json: the event in CloudEvents
//	              structured JSON, exactly as Write encoded it
//	  created_at  SQLite Unix ns / timestamptz
//	  sent_at     SQLite Unix ns / timestamptz; NULL while pending
//	<table>_pending  index on (seq) WHERE sent_at IS NULL: the relay's read
//	<table>_sent     index on (sent_at) WHERE sent_at IS NOT NULL: cleanup
//	SQLite:     <table>_relay, one row: the relay lease (owner, expires_at)
//	PostgreSQL: <table>_notify(), a statement trigger that NOTIFYs on insert
//
// # Order
//
// One relay at a time owns an outbox (below) and publishes its pending rows
// in seq order, one synchronous Publish after another, stopping at the
// first failure; a batch's published prefix is marked sent in one
// statement. So the broker receives the first copy of each event in seq
// order; a re-sent copy (after a crash or a lost acknowledgement) follows
// the first one and is dropped by the broker's dedup or by the inbox.
//
// On SQLite, writers take turns, so seq order is commit order. On
// PostgreSQL seq is drawn at insert and transactions commit in any order:
// the relay publishes rows in seq order among those committed when it
// reads, and marks exactly the rows it published, never a range (a row
// inside the range may commit later). Two promises follow. The events of
// one transaction keep their order. And if a transaction wrote its event
// after another transaction committed, the earlier event is published
// first: a later event cannot be visible without the earlier one. So
// changes to one aggregate, serialized by its row lock, are published in
// the order they were made, provided each transaction writes its events
// after the statement that locks the row. Events of concurrent
// transactions have no order to keep and are published in the order the
// relay finds them committed.
//
// # Several relays
//
// Every instance of a service may run a relay; one at a time owns the
// outbox, the others stand by, so order holds and rows are not published
// twice in the normal course.
//
// PostgreSQL: each batch is one transaction that begins with
// pg_try_advisory_xact_lock on a key derived from the table's name, reads
// the batch, publishes it and marks it sent; the commit releases the lock.
// A relay that finds the lock taken waits and tries again. Ownership and
// the marks it guards cannot part ways: a relay whose connection dies loses
// the lock and its unmarked batch together, and the next owner's read (a
// new snapshot, taken after it got the lock) sees every mark its
// predecessor committed. FOR UPDATE SKIP LOCKED was rejected: it lets
// relays publish different batches at once, which is throughput bought
// with order. The batch's transaction stays open while it publishes, so an
// idle_in_transaction_session_timeout must exceed a batch's publish time.
//
// SQLite has no advisory locks, and holding its write lock while
// publishing would stall every writer of the database. A relay takes a
// lease row instead, renews it when half of RelayConfig.LeaseTTL is left,
// and deletes it when Run stops; another relay takes it over once it
// lapses. A relay paused past its lease may publish one batch that its
// successor publishes too: duplicates, in order, harmless.
//
// # Crashes and shutdown
//
// A relay that dies between publishing and marking leaves its batch
// pending; the next owner publishes it again (at least once). When Run's
// context ends, a batch being published stops at once, and what was
// published is still marked sent (under a short detached deadline), so a
// clean stop leaves no duplicates behind.
//
// # Wake-ups
//
// After a step that found nothing, the relay waits PollInterval, doubling
// up to MaxPollInterval while the outbox stays empty; a full batch is
// followed at once by the next. On PostgreSQL the trigger's NOTIFY,
// delivered at commit, wakes the relays at once through a LISTEN on a
// connection taken out of the pool (restarted with backoff if it fails).
// On SQLite, a writer in the relay's process may call Relay.Wake after
// commit; otherwise the poll interval bounds the delay.
//
// # Cleanup
//
// Every CleanupInterval the relay deletes rows sent more than Retention
// ago, 10,000 per statement.
//
// # SQLite settings
//
// Open the database in WAL mode with a busy timeout
// ("?_pragma=busy_timeout(10000)&_pragma=journal_mode(wal)" with
// modernc.org/sqlite). A *sql.DB shared by the application, the relay and
// the inbox is best limited to one connection (SetMaxOpenConns(1)): they
// then queue for it in Go instead of sleeping in SQLite's busy handler,
// which under contention costs milliseconds a wait. With one connection,
// code inside a transaction must use that transaction, not the *sql.DB.
package outbox
