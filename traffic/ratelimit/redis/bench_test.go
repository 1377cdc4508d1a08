package redis

import (
	"context"
	"strconv"
	"testing"

	"github.com/meridian-platform/meridian/traffic/ratelimit"
)

// BenchmarkAllow measures the Redis limiter's round trip (EVALSHA of the
// GCRA script) beside a bare PING on the same client, which is the floor
// any Redis-backed limiter pays. Parallel runs use 1024 keys.
func BenchmarkAllow(b *testing.B) {
	c := sharedRedis(b)
	l, err := New(c, Config{Limit: ratelimit.PerSecond(1_000_000, 1_000_000), Prefix: testPrefix(b, c), FailPolicy: ratelimit.FailClosed})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = "client-" + strconv.Itoa(i)
	}
	b.Run("redis-gcra/serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := l.Allow(ctx, keys[0], 1); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("redis-ping/serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := c.Ping(ctx).Err(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("redis-gcra/parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				if _, err := l.Allow(ctx, keys[i%len(keys)], 1); err != nil {
					b.Error(err)
					return
				}
				i++
			}
		})
	})
	b.Run("redis-ping/parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := c.Ping(ctx).Err(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
