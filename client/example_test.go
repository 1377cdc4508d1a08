package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/client"
)

// A watch that survives restarts of the control plane: it resumes after
// the last index it saw, so no change is lost or seen twice.
func ExampleClient_WatchRegistry() {
	c, err := client.New("127.0.0.1:7400", "mrd_…")
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var last uint64
	for {
		err := c.WatchRegistry(ctx, "orders", last, func(ev meridian.InstanceEvent) error {
			last = ev.Index
			switch ev.Type {
			case meridian.EventSync:
				fmt.Println("up to date at index", ev.Index)
			case meridian.EventPut:
				fmt.Println(ev.ID, ev.Instance.Health.Status)
			case meridian.EventDelete:
				fmt.Println(ev.ID, "gone:", ev.Reason)
			}
			return nil
		})
		if ctx.Err() != nil || !meridian.IsCode(err, meridian.CodeUnavailable) {
			if err != nil && !errors.Is(err, context.DeadlineExceeded) {
				log.Print(err)
			}
			return
		}
		time.Sleep(time.Second) // the stream broke: resume after `last`
	}
}
