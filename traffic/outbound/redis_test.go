package outbound_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/traffic/outbound"
	"github.com/meridian-platform/meridian/traffic/ratelimit"
	"github.com/meridian-platform/meridian/traffic/ratelimit/redis"
)

// A rate-limit policy backed by Redis through Options.Limiter holds across
// two clients (two Transports, as two replicas of a caller would have):
// together they get the limit, not twice it. Needs the machine's Redis.
func TestRateLimitOnRedisHoldsAcrossClients(t *testing.T) {
	addr := os.Getenv("MERIDIAN_TEST_REDIS")
	if addr == "" {
		t.Skip("set MERIDIAN_TEST_REDIS=127.0.0.1:6379 to run the Redis rate-limit test")
	}
	rc := goredis.NewClient(&goredis.Options{Addr: addr, ContextTimeoutEnabled: true})
	defer rc.Close()
	prefix := fmt.Sprintf("meridian-test:outbound:%d-%d:", os.Getpid(), time.Now().UnixNano())
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		iter := rc.Scan(ctx, 0, prefix+"*", 100).Iterator()
		for iter.Next(ctx) {
			rc.Del(ctx, iter.Val())
		}
	}()
	onRedis := func(o *outbound.Options) {
		o.Limiter = func(upstream, name string, l ratelimit.Limit) (ratelimit.Limiter, error) {
			return redis.New(rc, redis.Config{Limit: l, Prefix: prefix + name + ":", FailPolicy: ratelimit.FailClosed})
		}
	}
	spec := `policies: {rate_limits: {shared: {rate: 10, period: 1h}}}
targets: {orders: {rate_limit: shared}}`
	h := start(t, spec, onRedis)
	in := h.instance("orders", "a")
	h.waitServed("orders", "a")
	var o outbound.Options
	onRedis(&o)
	other := outbound.New(h.cache, o) // the other replica's client
	if err := other.Apply(h.tr.Spec()); err != nil {
		t.Fatal(err)
	}
	clients := []*http.Client{h.client, {Transport: other}}
	defer clients[1].CloseIdleConnections()
	ok, limited := 0, 0
	for i := range 30 {
		resp, err := clients[i%2].Get("http://orders/")
		switch {
		case err == nil && resp.StatusCode == 200:
			resp.Body.Close()
			ok++
		case meridian.IsCode(err, meridian.CodeRateLimited):
			limited++
		default:
			t.Fatalf("request %d: %v, %v", i, resp, err)
		}
	}
	if ok != 10 || limited != 20 || in.received.Load() != 10 {
		t.Fatalf("two clients: %d allowed, %d limited, %d received; want 10, 20, 10 (one limit between them)", ok, limited, in.received.Load())
	}
}
