package ratelimit

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-platform/meridian"
)

// fakeClock is a clock the test moves; safe for concurrent use.
type fakeClock struct{ ns atomic.Int64 }

var clockBase = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func (c *fakeClock) Now() time.Time          { return clockBase.Add(time.Duration(c.ns.Load())) }
func (c *fakeClock) Set(d time.Duration)     { c.ns.Store(int64(d)) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func newLocal(t testing.TB, cfg LocalConfig) *Local {
	t.Helper()
	l, err := NewLocal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// With rate R and burst B, a key that asks at every step of a simulated
// span t is allowed exactly B + ⌊t/T⌋ units, R·t when T divides the span.
func TestLocalExactOverTime(t *testing.T) {
	for _, tc := range []struct {
		name       string
		limit      Limit
		span, step time.Duration
		want       int
	}{
		{"100/s burst 20 over 10s", PerSecond(100, 20), 10 * time.Second, time.Millisecond, 20 + 100*10},
		{"1000/s burst 1 over 2s", PerSecond(1000, 1), 2 * time.Second, 100 * time.Microsecond, 1 + 1000*2},
		{"60/min burst 5 over 1h", PerMinute(60, 5), time.Hour, 250 * time.Millisecond, 5 + 3600},
		// T = 333333µs: 180 intervals fit in a minute with 60µs to spare.
		// Steps that do not divide T arrive late; a burst of 2 banks the
		// lateness (a burst of 1 cannot, in any algorithm).
		{"3/s burst 2 over 1m", PerSecond(3, 2), time.Minute, 7 * time.Millisecond, 2 + 3*60},
		{"steps longer than T keep the burst", PerSecond(10, 10), 10 * time.Second, 500 * time.Millisecond, 10 + 10*10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var clock fakeClock
			l := newLocal(t, LocalConfig{Limit: tc.limit, Now: clock.Now})
			got := 0
			for at := time.Duration(0); ; at += tc.step {
				at = min(at, tc.span) // the last step lands on the span's end
				clock.Set(at)
				for {
					d, err := l.Allow(context.Background(), "k", 1)
					if err != nil {
						t.Fatal(err)
					}
					if !d.Allowed {
						break
					}
					got++
				}
				if at == tc.span {
					break
				}
			}
			if got != tc.want {
				t.Fatalf("allowed %d over %s, want exactly %d", got, tc.span, tc.want)
			}
		})
	}
}

// Callers racing on one key while the clock moves are never allowed more
// than B + ⌊t/T⌋ between them; with the clock stopped at the end, the
// units left are handed out exactly.
func TestLocalConcurrentCallersWithMovingClock(t *testing.T) {
	const burst = 20
	var clock fakeClock
	l := newLocal(t, LocalConfig{Limit: PerSecond(1000, burst), Now: clock.Now}) // T = 1ms
	var allowed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if d, _ := l.Allow(context.Background(), "k", 1); d.Allowed {
					allowed.Add(1)
				}
			}
		})
	}
	const span = 500 * time.Millisecond
	for at := time.Duration(0); at < span; at += 500 * time.Microsecond {
		clock.Set(at)
		time.Sleep(10 * time.Microsecond)
	}
	clock.Set(span)
	close(stop)
	wg.Wait()
	max := int64(burst + span/time.Millisecond)
	if got := allowed.Load(); got > max {
		t.Fatalf("allowed %d in %s, more than %d", got, span, max)
	}
	t.Logf("allowed %d of at most %d while racing", allowed.Load(), max)
}

func TestLocalIdleKeysAreSwept(t *testing.T) {
	var clock fakeClock
	l := newLocal(t, LocalConfig{Limit: PerSecond(10, 1), Now: clock.Now}) // idle 100ms after use
	ctx := context.Background()
	for i := range 10_000 {
		l.Allow(ctx, "old-"+strconv.Itoa(i), 1)
	}
	clock.Advance(time.Second)
	for i := range 10_000 {
		l.Allow(ctx, "new-"+strconv.Itoa(i), 1)
	}
	st := l.Stats()
	if st.Keys > 15_000 || st.Evicted != 0 {
		t.Fatalf("after 10000 idle and 10000 busy keys: %+v; want most idle keys swept, no busy evictions", st)
	}
	t.Logf("%+v", st)
}

func TestLocalMaxKeys(t *testing.T) {
	var clock fakeClock
	l := newLocal(t, LocalConfig{Limit: PerSecond(1, 1), MaxKeys: 100, Now: clock.Now})
	ctx := context.Background()
	for i := range 1000 {
		if d, _ := l.Allow(ctx, strconv.Itoa(i), 1); !d.Allowed {
			t.Fatalf("new key %d denied", i)
		}
		if st := l.Stats(); st.Keys > 100 {
			t.Fatalf("after %d keys: %+v, more than MaxKeys", i+1, st)
		}
	}
	before := l.Stats().Evicted
	if before < 900 {
		t.Fatalf("Evicted = %d after 1000 busy keys into 100 slots, want at least 900", before)
	}
	// Once every key is idle, making room costs nothing: idle keys go first
	// and are not counted.
	clock.Advance(2 * time.Second)
	for i := range 100 {
		l.Allow(ctx, "later-"+strconv.Itoa(i), 1)
	}
	if st := l.Stats(); st.Evicted != before || st.Keys > 100 {
		t.Fatalf("after idle keys made room: %+v; want Evicted still %d", st, before)
	}
}

// A busy key evicted for room starts afresh, which is why eviction prefers
// the key nearest to idle: with eight candidates, the oldest use goes.
func TestLocalEvictsNearestToIdle(t *testing.T) {
	var clock fakeClock
	l := newLocal(t, LocalConfig{Limit: PerMinute(1, 1), MaxKeys: 8, Now: clock.Now})
	ctx := context.Background()
	for i := range 8 {
		clock.Set(time.Duration(i) * time.Second)
		l.Allow(ctx, strconv.Itoa(i), 1)
	}
	l.Allow(ctx, "new", 1)
	for i := 1; i < 8; i++ {
		if d, _ := l.Allow(ctx, strconv.Itoa(i), 1); d.Allowed {
			t.Fatalf("key %d was evicted; want key 0, the nearest to idle", i)
		}
	}
	if d, _ := l.Allow(ctx, "0", 1); !d.Allowed {
		t.Fatal("key 0 still held; want it evicted")
	}
}

func TestLocalAllocatesNothingForAHeldKey(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	l := newLocal(t, LocalConfig{Limit: PerSecond(1_000_000, 1_000_000)})
	ctx := context.Background()
	key := "client-203.0.113.7"
	l.Allow(ctx, key, 1)
	if n := testing.AllocsPerRun(1000, func() { l.Allow(ctx, key, 1) }); n != 0 {
		t.Fatalf("Allow on a held key: %v allocs, want 0", n)
	}
}

func TestLocalConfigErrorsNameTheField(t *testing.T) {
	for _, tc := range []struct {
		cfg   LocalConfig
		field string
	}{
		{LocalConfig{}, "limit.rate"},
		{LocalConfig{Limit: Limit{Rate: 2_000_000}}, "limit.rate"},
		{LocalConfig{Limit: Limit{Rate: 1, Period: -1}}, "limit.period"},
		{LocalConfig{Limit: Limit{Rate: 1, Burst: -1}}, "limit.burst"},
		{LocalConfig{Limit: Limit{Rate: 1, Period: meridian.Duration(24 * time.Hour), Burst: 1 << 20}}, "limit.burst"},
		{LocalConfig{Limit: Limit{Rate: 1}, MaxKeys: -1}, "max_keys"},
	} {
		_, err := NewLocal(tc.cfg)
		var me *meridian.Error
		if !asError(err, &me) || me.Code != meridian.CodeInvalid || me.Field != tc.field {
			t.Errorf("NewLocal(%+v) = %v; want CodeInvalid naming %s", tc.cfg, err, tc.field)
		}
	}
}

func TestLimitDefaults(t *testing.T) {
	l := Limit{Rate: 50}
	if err := l.Normalize(); err != nil {
		t.Fatal(err)
	}
	if want := PerSecond(50, 50); l != want {
		t.Fatalf("Limit{Rate: 50} normalized to %+v, want %+v", l, want)
	}
	if got := PerSecond(3, 1).Interval(); got != 333333*time.Microsecond {
		t.Fatalf("3/s interval = %s, want 333.333ms", got)
	}
}
