package balance_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http/httptest"
	"os"
	"sync"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/client"
	"github.com/meridian-platform/meridian/traffic/balance"
	"github.com/meridian-platform/meridian/traffic/discovery"
)

// A request with a user ID header goes to the same instance as that user's
// previous requests; a retry avoids the instance that just failed.
func ExampleBalancer() {
	b, err := balance.New("carts", balance.Config{Policy: balance.RingHash})
	if err != nil {
		log.Fatal(err)
	}
	b.Update(&discovery.Snapshot{Service: "carts", Instances: []*meridian.Instance{
		{ID: "carts-1", Address: "10.0.0.1", Port: 8080},
		{ID: "carts-2", Address: "10.0.0.2", Port: 8080},
		{ID: "carts-3", Address: "10.0.0.3", Port: 8080},
	}})

	r := httptest.NewRequest("GET", "/cart", nil)
	r.Header.Set("X-User-Id", "alice")
	req := balance.Request{Hash: balance.HashHeader(r.Header, "X-User-Id")}

	first, err := b.Pick(req)
	if err != nil {
		log.Fatal(err) // wraps balance.ErrNoEndpoints
	}
	fmt.Println("alice →", first.Endpoint().Instance().HostPort())
	first.Done(errors.New("connection reset")) // say it failed

	req.Avoid = first.Endpoint()
	retry, err := b.Pick(req)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("retry on another instance:", retry.Endpoint() != first.Endpoint())
	retry.Done(nil)
	// Output:
	// alice → 10.0.0.2:8080
	// retry on another instance: true
}

// A balancer follows the discovery cache; both goroutines belong to the
// function that starts them and stop with its context.
func ExampleBalancer_Run() {
	c, err := client.New("127.0.0.1:7400", os.Getenv("MERIDIAN_TOKEN"))
	if err != nil {
		log.Fatal(err)
	}
	cache := discovery.New(c)
	b, err := balance.New("payments", balance.Config{
		Policy: balance.PeakEWMA,
		Zone:   balance.ZoneConfig{Local: os.Getenv("MERIDIAN_ZONE")},
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = cache.Run(ctx) })
	wg.Go(func() {
		if err := b.Run(ctx, cache); err != nil {
			log.Print(err)
		}
	})
	defer func() { cancel(); wg.Wait() }()

	p, err := b.Pick(balance.Request{})
	if err != nil {
		log.Print(err) // no list yet: answer 503 and let the caller retry
		return
	}
	defer p.Done(nil)
	log.Print("calling ", p.Endpoint().Instance().HostPort())
}
