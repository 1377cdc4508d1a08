package sdk

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/bus"
	"github.com/meridian-platform/meridian/internal/natstest"
)

func TestOpenBusPublishesAndSubscribes(t *testing.T) {
	srv := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, err := OpenBus(ctx, BusConfigFromEnv(func(k string) string { return map[string]string{EnvBusURL: srv.ClientURL()}[k] }))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	type ping struct{ N int }
	topic := bus.NewTopic[ping]("pings", "dev.meridian.ping", "/sdk-test")
	got := make(chan int, 1)
	sub, err := bus.Subscribe(ctx, b, topic, "g", func(ctx context.Context, m bus.Message[ping]) error {
		got <- m.Data.N
		return nil
	}, bus.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if _, err := bus.Publish(ctx, b, topic, ping{N: 7}); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-got:
		if n != 7 {
			t.Fatalf("got %d", n)
		}
	case <-ctx.Done():
		t.Fatal("not delivered")
	}
}

func TestOpenBusNamesTheURLWhenUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := OpenBus(ctx, BusConfig{URL: "nats://127.0.0.1:1"})
	var me *meridian.Error
	if !errors.As(err, &me) || me.Field != "URL" || me.Code != meridian.CodeUnavailable {
		t.Fatalf("err = %v, want unavailable naming URL", err)
	}
}
