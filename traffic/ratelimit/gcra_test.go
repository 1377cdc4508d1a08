package ratelimit

import (
	"math"
	"math/rand/v2"
	"testing"
)

// The algorithm alone, in ticks: T = 10, Burst = 3 (τ = 30).
func TestGCRA(t *testing.T) {
	const T, tau = 10, 30
	never := int64(math.MinInt64)
	for _, tc := range []struct {
		name        string
		tat, now, n int64
		want        verdict
	}{
		{"new key", never, 100, 1, verdict{allowed: true, tat: 110, remaining: 2, resetAfter: 10}},
		{"second of three", 110, 100, 1, verdict{allowed: true, tat: 120, remaining: 1, resetAfter: 20}},
		{"third of three", 120, 100, 1, verdict{allowed: true, tat: 130, remaining: 0, resetAfter: 30}},
		{"fourth is denied", 130, 100, 1, verdict{tat: 130, remaining: 0, retryAfter: 10, resetAfter: 30}},
		{"allowed exactly at RetryAfter", 130, 110, 1, verdict{allowed: true, tat: 140, remaining: 0, resetAfter: 30}},
		{"idle key takes the whole burst", 50, 100, 3, verdict{allowed: true, tat: 130, remaining: 0, resetAfter: 30}},
		{"n zero on an idle key", 50, 100, 0, verdict{allowed: true, tat: 100, remaining: 3, resetAfter: 0}},
		{"n zero on a busy key", 130, 105, 0, verdict{allowed: true, tat: 130, remaining: 0, resetAfter: 25}},
		{"two wanted, one left", 115, 100, 2, verdict{tat: 115, remaining: 1, retryAfter: 5, resetAfter: 15}},
		{"two wanted, none left", 125, 100, 2, verdict{tat: 125, remaining: 0, retryAfter: 15, resetAfter: 25}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := gcra(tc.tat, tc.now, T, tau, tc.n); got != tc.want {
				t.Errorf("gcra(tat %d, now %d, n %d) = %+v, want %+v", tc.tat, tc.now, tc.n, got, tc.want)
			}
		})
	}
}

// For random arrivals and costs, no span of time [a, b] ever sees more than
// Burst + ⌊(b−a)/T⌋ units allowed: the defining property of GCRA.
func TestGCRANeverExceedsAnySpan(t *testing.T) {
	type event struct{ at, n int64 }
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 1))
		T := 1 + rng.Int64N(50)
		burst := 1 + rng.Int64N(8)
		tau := burst * T
		tat, now := int64(math.MinInt64), int64(0)
		var allowed []event
		for range 1500 {
			now += rng.Int64N(2 * T)
			n := rng.Int64N(burst + 1)
			if v := gcra(tat, now, T, tau, n); v.allowed {
				tat = v.tat
				if n > 0 {
					allowed = append(allowed, event{now, n})
				}
			}
		}
		for i := range allowed {
			var sum int64
			for j := i; j < len(allowed); j++ {
				sum += allowed[j].n
				span := allowed[j].at - allowed[i].at
				if limit := burst + span/T; sum > limit {
					t.Fatalf("seed %d (T %d, burst %d): %d units allowed in [%d, %d], more than %d", seed, T, burst, sum, allowed[i].at, allowed[j].at, limit)
				}
			}
		}
	}
}
