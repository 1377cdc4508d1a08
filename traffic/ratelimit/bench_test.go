package ratelimit_test

import (
	"context"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"

	"golang.org/x/time/rate"

	"github.com/meridian-platform/meridian/traffic/ratelimit"
)

// The peer: golang.org/x/time/rate with one token bucket per key in a
// mutex-guarded map, the usual way to key it.
type rateMap struct {
	mu    sync.Mutex
	m     map[string]*rate.Limiter
	r     rate.Limit
	burst int
}

func (p *rateMap) Allow(key string) bool {
	p.mu.Lock()
	l, ok := p.m[key]
	if !ok {
		l = rate.NewLimiter(p.r, p.burst)
		p.m[key] = l
	}
	p.mu.Unlock()
	return l.Allow()
}

// BenchmarkAllow measures a decision on a key the limiter already holds:
// serially on one key, and in parallel with each goroutine walking its own
// slice of 1024 keys (many clients, as a gateway sees them). The rate is
// high enough that requests are allowed; a denial costs the same.
func BenchmarkAllow(b *testing.B) {
	const nkeys = 1024
	keys := make([]string, nkeys)
	for i := range keys {
		keys[i] = "client-" + strconv.Itoa(i)
	}
	ctx := context.Background()

	local, err := ratelimit.NewLocal(ratelimit.LocalConfig{Limit: ratelimit.PerSecond(1_000_000, 1_000_000)})
	if err != nil {
		b.Fatal(err)
	}
	peer := &rateMap{m: map[string]*rate.Limiter{}, r: 1_000_000, burst: 1_000_000}
	for _, k := range keys {
		local.Allow(ctx, k, 1)
		peer.Allow(k)
	}

	b.Run("meridian-local/serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			local.Allow(ctx, keys[0], 1)
		}
	})
	b.Run("x-time-rate-map/serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			peer.Allow(keys[0])
		}
	})
	b.Run("meridian-local/parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := rand.IntN(nkeys)
			for pb.Next() {
				local.Allow(ctx, keys[i%nkeys], 1)
				i++
			}
		})
	})
	b.Run("x-time-rate-map/parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := rand.IntN(nkeys)
			for pb.Next() {
				peer.Allow(keys[i%nkeys])
				i++
			}
		})
	})
}
