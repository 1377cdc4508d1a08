package discovery_test

import (
	"context"
	"log"
	"os"

	"github.com/meridian-platform/meridian/client"
	"github.com/meridian-platform/meridian/traffic/discovery"
)

// A balancer rebuilds whenever the service's set changes; Changed cannot
// miss a change that happens between reading a Snapshot and waiting.
func ExampleCache() {
	c, err := client.New("127.0.0.1:7400", os.Getenv("MERIDIAN_TOKEN"))
	if err != nil {
		log.Fatal(err)
	}
	cache := discovery.New(c)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { // owned by this function, which stops it on return
		defer close(done)
		_ = cache.Run(ctx)
	}()
	defer func() { cancel(); <-done }()

	snap, err := cache.Wait(ctx, "payments")
	if err != nil {
		log.Fatal(err) // CodeUnavailable: no list yet; the cache keeps trying
	}
	for {
		log.Printf("payments at index %d: %d serving instances", snap.Index, len(snap.Instances))
		select {
		case <-snap.Changed():
			snap = cache.Snapshot("payments")
		case <-ctx.Done():
			return
		}
	}
}
