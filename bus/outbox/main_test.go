package outbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/meridian-platform/meridian/bus"
	busjs "github.com/meridian-platform/meridian/bus/jetstream"
	"github.com/meridian-platform/meridian/bus/outbox"
)

// The crash test runs a relay in a child process (this test binary, told
// so by these variables) and kills it with SIGKILL right after a publish.
const (
	childEnv       = "MERIDIAN_OUTBOX_TEST_CHILD"        // "sqlite" or "postgres"
	childLocEnv    = "MERIDIAN_OUTBOX_TEST_CHILD_LOC"    // SQLite path or PostgreSQL URL
	childSchemaEnv = "MERIDIAN_OUTBOX_TEST_CHILD_SCHEMA" // PostgreSQL schema
	childNATSEnv   = "MERIDIAN_OUTBOX_TEST_CHILD_NATS"   // the parent's broker
	childKillEnv   = "MERIDIAN_OUTBOX_TEST_CHILD_KILL"   // kill after this many publishes
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		if err := child(); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(3)
		}
		os.Exit(0) // not reached: the child kills itself
	}
	goleak.VerifyTestMain(m)
}

// child relays the outbox the parent prepared and kills itself, without
// any chance to clean up, right after its kill-th successful publish:
// between the publish and the mark-sent of the batch.
func child() error {
	ctx := context.Background()
	kill, err := strconv.Atoi(os.Getenv(childKillEnv))
	if err != nil {
		return err
	}
	nc, err := nats.Connect(os.Getenv(childNATSEnv))
	if err != nil {
		return err
	}
	be, err := busjs.New(nc, busjs.Config{NoAutoCreate: true})
	if err != nil {
		return err
	}
	pub := enginePublisher(be, false) // no dedup: the parent counts every copy
	published := 0
	killer := outbox.PublisherFunc(func(ctx context.Context, topic string, e bus.Event) error {
		if err := pub.Publish(ctx, topic, e); err != nil {
			return err
		}
		if published++; published == kill {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
		return nil
	})
	cfg := fastRelay()
	var r *outbox.Relay
	switch os.Getenv(childEnv) {
	case "sqlite":
		db, err := sql.Open("sqlite", sqliteDSN(os.Getenv(childLocEnv)))
		if err != nil {
			return err
		}
		ob, err := outbox.NewSQLite(db, outbox.Options{})
		if err != nil {
			return err
		}
		r, err = outbox.NewRelay(ob, killer, cfg)
		if err != nil {
			return err
		}
	case "postgres":
		pool, err := pgxpool.New(ctx, os.Getenv(childLocEnv))
		if err != nil {
			return err
		}
		ob, err := outbox.NewPostgres(pool, outbox.Options{Schema: os.Getenv(childSchemaEnv)})
		if err != nil {
			return err
		}
		r, err = outbox.NewRelay(ob, killer, cfg)
		if err != nil {
			return err
		}
	default:
		return fmt.Errorf("%s=%q", childEnv, os.Getenv(childEnv))
	}
	return r.Run(ctx)
}
