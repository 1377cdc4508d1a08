package redis_test

import (
	"context"
	"log"
	"net/http"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/traffic/ratelimit"
	redislimit "github.com/meridian-platform/meridian/traffic/ratelimit/redis"
)

// One limit shared by every replica of a service: 100 requests a minute per
// API key, bursts of 20. A login endpoint fails closed; an API that would
// rather serve than refuse everyone while Redis is away would fail open.
func ExampleNew() {
	client := goredis.NewClient(&goredis.Options{
		Addr:                  "127.0.0.1:6379",
		ContextTimeoutEnabled: true, // required: the limiter's timeout must reach the socket
		MaxRetries:            -1,   // a refused connection fails at once, with its own error
		DialerRetries:         1,
	})
	defer client.Close()

	limiter, err := redislimit.New(client, redislimit.Config{
		Limit:      ratelimit.PerMinute(100, 20),
		Prefix:     "orders:api-key:",
		Timeout:    meridian.Duration(50 * time.Millisecond),
		FailPolicy: ratelimit.FailClosed,
		Observe: func(d ratelimit.Decision, took time.Duration) {
			if d.StoreErr != nil {
				log.Printf("rate limit not decided by Redis (%v): failing closed", d.StoreErr)
			}
		},
	})
	if err != nil {
		log.Fatal(err)
	}

	byAPIKey := func(r *http.Request) string { return r.Header.Get("X-API-Key") }
	orders := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	http.Handle("/orders", ratelimit.Middleware(limiter, byAPIKey, ratelimit.WithPolicyName("per-api-key"))(orders))

	d, err := limiter.Allow(context.Background(), "key-123", 1)
	log.Println(d.Allowed, d.Remaining, err)
}
