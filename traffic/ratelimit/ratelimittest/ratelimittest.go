// Package ratelimittest is the conformance suite for ratelimit.Limiter
// implementations: every engine runs Run against itself, so that a Decision
// means the same whichever engine made it.
//
// The suite uses the engines' real clocks, so it checks durations with a
// tolerance and uses slow rates (one unit an hour) where it checks counts;
// an engine with an injectable clock tests exactness over time itself.
package ratelimittest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/traffic/ratelimit"
)

// Factory returns a limiter enforcing l. The suite uses keys derived from
// t.Name(), so keys do not collide between subtests; an engine with shared
// state (Redis) adds a prefix unique to the test run.
type Factory func(t *testing.T, l ratelimit.Limit) ratelimit.Limiter

// slack is how much time may pass, on the engine's clock, between the
// first and last call of a case.
const slack = 10 * time.Second

var hourly = ratelimit.Limit{Rate: 1, Period: meridian.Duration(time.Hour)}

// Run runs the suite as subtests of t.
func Run(t *testing.T, newLimiter Factory) {
	t.Run("burst then deny", func(t *testing.T) {
		lim := hourly
		lim.Burst = 5
		l := newLimiter(t, lim)
		want := normalized(t, lim)
		T := want.Interval()
		for i := 1; i <= 5; i++ {
			d := allow(t, l, t.Name(), 1)
			if !d.Allowed || d.Remaining != 5-i || d.RetryAfter != 0 || !within(d.ResetAfter, time.Duration(i)*T) || d.StoreErr != nil {
				t.Fatalf("request %d: %+v; want allowed, remaining %d, reset after ≈%s", i, d, 5-i, time.Duration(i)*T)
			}
			if d.Limit != want {
				t.Fatalf("request %d: Limit = %+v, want %+v", i, d.Limit, want)
			}
		}
		d := allow(t, l, t.Name(), 1)
		if d.Allowed || d.Remaining != 0 || !within(d.RetryAfter, T) || !within(d.ResetAfter, 5*T) {
			t.Fatalf("request 6: %+v; want denied, remaining 0, retry after ≈%s, reset after ≈%s", d, T, 5*T)
		}
	})

	t.Run("cost and denial consumes nothing", func(t *testing.T) {
		lim := hourly
		lim.Burst = 10
		l := newLimiter(t, lim)
		T := normalized(t, lim).Interval()
		if d := allow(t, l, t.Name(), 4); !d.Allowed || d.Remaining != 6 {
			t.Fatalf("4 of 10: %+v; want allowed, remaining 6", d)
		}
		if d := allow(t, l, t.Name(), 7); d.Allowed || d.Remaining != 6 || !within(d.RetryAfter, T) {
			t.Fatalf("7 of the 6 left: %+v; want denied, remaining 6, retry after ≈%s", d, T)
		}
		if d := allow(t, l, t.Name(), 6); !d.Allowed || d.Remaining != 0 {
			t.Fatalf("6 of the 6 left: %+v; want allowed, remaining 0", d)
		}
	})

	t.Run("n zero reports without consuming", func(t *testing.T) {
		lim := hourly
		lim.Burst = 3
		l := newLimiter(t, lim)
		if d := allow(t, l, t.Name(), 0); !d.Allowed || d.Remaining != 3 || d.ResetAfter != 0 {
			t.Fatalf("peek at a new key: %+v; want allowed, remaining 3, reset after 0", d)
		}
		allow(t, l, t.Name(), 1)
		for range 2 {
			if d := allow(t, l, t.Name(), 0); !d.Allowed || d.Remaining != 2 {
				t.Fatalf("peek after one: %+v; want allowed, remaining 2", d)
			}
		}
	})

	t.Run("cost out of range is invalid", func(t *testing.T) {
		lim := hourly
		lim.Burst = 3
		l := newLimiter(t, lim)
		for _, n := range []int{-1, 4} {
			d, err := l.Allow(context.Background(), t.Name(), n)
			if !meridian.IsCode(err, meridian.CodeInvalid) || d.Allowed {
				t.Errorf("n = %d: %+v, %v; want not allowed and a CodeInvalid error", n, d, err)
			}
		}
		if d := allow(t, l, t.Name(), 3); !d.Allowed {
			t.Fatalf("n = burst after the refusals: %+v; want allowed", d)
		}
	})

	t.Run("keys are independent", func(t *testing.T) {
		lim := hourly
		lim.Burst = 2
		l := newLimiter(t, lim)
		a, b := t.Name()+"/a", t.Name()+"/b"
		allow(t, l, a, 2)
		if d := allow(t, l, a, 1); d.Allowed {
			t.Fatalf("a after its burst: %+v; want denied", d)
		}
		if d := allow(t, l, b, 2); !d.Allowed {
			t.Fatalf("b while a is exhausted: %+v; want allowed", d)
		}
	})

	t.Run("concurrent callers never exceed the limit", func(t *testing.T) {
		const burst, workers, each = 50, 16, 10
		lim := hourly
		lim.Burst = burst
		l := newLimiter(t, lim)
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			allowed int
			errs    []error
		)
		for range workers {
			wg.Go(func() {
				for range each {
					d, err := l.Allow(context.Background(), t.Name(), 1)
					mu.Lock()
					if err != nil {
						errs = append(errs, err)
					} else if d.Allowed {
						allowed++
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if len(errs) > 0 {
			t.Fatalf("%d errors, first %v", len(errs), errs[0])
		}
		if allowed != burst {
			t.Fatalf("%d workers × %d requests: %d allowed, want exactly %d", workers, each, allowed, burst)
		}
	})

	t.Run("a denied caller waiting RetryAfter is allowed", func(t *testing.T) {
		l := newLimiter(t, ratelimit.PerSecond(5, 1)) // T = 200ms
		allow(t, l, t.Name(), 1)
		d := allow(t, l, t.Name(), 1)
		if d.Allowed || d.RetryAfter <= 0 || d.RetryAfter > 200*time.Millisecond {
			t.Fatalf("second request at once: %+v; want denied, retry after (0, 200ms]", d)
		}
		time.Sleep(d.RetryAfter + 20*time.Millisecond)
		if d := allow(t, l, t.Name(), 1); !d.Allowed {
			t.Fatalf("after RetryAfter: %+v; want allowed", d)
		}
	})
}

func allow(t *testing.T, l ratelimit.Limiter, key string, n int) ratelimit.Decision {
	t.Helper()
	d, err := l.Allow(context.Background(), key, n)
	if err != nil {
		t.Fatalf("Allow(%q, %d): %v", key, n, err)
	}
	return d
}

func normalized(t *testing.T, l ratelimit.Limit) ratelimit.Limit {
	t.Helper()
	if err := l.Normalize(); err != nil {
		t.Fatal(err)
	}
	return l
}

// within reports whether got is want less the time that may have passed.
func within(got, want time.Duration) bool { return got <= want && got > want-slack }
