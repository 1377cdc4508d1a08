package ratelimit

import (
	"context"
	"hash/maphash"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-platform/meridian"
)

// DefaultMaxKeys is LocalConfig.MaxKeys when it is zero.
const DefaultMaxKeys = 100_000

// LocalConfig configures a Local limiter.
type LocalConfig struct {
	// Limit applies to every key. Required.
	Limit Limit `json:"limit"`
	// MaxKeys caps how many keys the limiter holds at once, which bounds its
	// memory (roughly 100 bytes a key plus the key itself). Default
	// DefaultMaxKeys. See Local for what happens when it is reached.
	MaxKeys int `json:"max_keys,omitempty"`
	// Now is the clock; nil means the system's monotonic clock, so that
	// wall-clock steps change nothing. Tests inject a fake one; times are
	// taken relative to its first reading.
	Now func() time.Time `json:"-"`
}

// Normalize fills defaults into c and checks it; errors name the field
// ("limit.rate", "max_keys").
func (c *LocalConfig) Normalize() error {
	if err := c.Limit.normalize("limit."); err != nil {
		return err
	}
	if c.MaxKeys == 0 {
		c.MaxKeys = DefaultMaxKeys
	}
	if c.MaxKeys < 1 {
		return meridian.FieldError("max_keys", "%d must be at least 1", c.MaxKeys)
	}
	return nil
}

// Local is an in-process GCRA limiter with one state per key. It is safe
// for concurrent use; decisions on one key are linearizable, so concurrent
// callers never get more than the Limit between them.
//
// Keys live in a fixed set of shards, each a map behind its own mutex,
// chosen by a seeded hash of the key: callers on different keys rarely
// share a lock, and Allow on a key already held allocates nothing.
//
// Memory is bounded two ways, with no goroutine. Idle keys (TAT passed, so
// indistinguishable from new ones) are dropped by a sweep of the shard that
// runs when a new key finds the shard doubled in size since its last sweep,
// so the cost is amortized over inserts. And a shard holds at most
// MaxKeys/shards keys (shards: up to 64, a power of two, at least 64 keys
// each where MaxKeys allows). A new key arriving at a full shard first
// sweeps it, if some key there has gone idle and at least a shard's eighth
// of keys have been inserted since the last sweep (which keeps a flood of
// new keys at amortized O(1)); if the shard is still full, one key is
// evicted: of up to 8 keys looked at (Go's randomized map order makes them
// a sample) the first idle one, which changes nothing, or else the one
// nearest to idle, whose loss forgives the fewest units. That is the only
// way a Local can allow more than its Limit: a key evicted while busy
// starts afresh, gaining at most the Burst it had used. Stats counts those
// evictions; a rising count means MaxKeys is too small for the traffic, or
// someone is spraying keys.
type Local struct {
	limit    Limit
	interval int64        // T, ns
	tau      int64        // Burst·T, ns
	elapsed  func() int64 // ns since the limiter was made, on cfg.Now
	seed     maphash.Seed
	mask     uint64
	shardCap int
	shards   []shard
	evicted  atomic.Uint64
}

var _ Limiter = (*Local)(nil)

// shard is one lock's worth of keys, padded to its own cache line.
type shard struct {
	mu         sync.Mutex
	tats       map[string]int64 // key → TAT, ns on Local.elapsed
	sweepAt    int              // sweep idle keys when len(tats) reaches this
	nextIdle   int64            // no key goes idle before this (a lower bound)
	sinceSweep int              // keys inserted since the last sweep
	_          [24]byte
}

const (
	maxShards      = 64
	minShardKeys   = 64 // fewer shards rather than shards smaller than this
	minSweep       = 64
	evictionSample = 8
)

// NewLocal returns a Local limiter enforcing cfg.Limit on every key.
func NewLocal(cfg LocalConfig) (*Local, error) {
	if err := cfg.Normalize(); err != nil {
		return nil, err
	}
	n := 1
	for n < maxShards && n*2*minShardKeys <= cfg.MaxKeys {
		n *= 2
	}
	l := &Local{
		limit:    cfg.Limit,
		interval: int64(cfg.Limit.Interval()),
		tau:      int64(cfg.Limit.Window()),
		elapsed:  elapsedSince(cfg.Now),
		seed:     maphash.MakeSeed(),
		mask:     uint64(n - 1),
		shardCap: cfg.MaxKeys / n,
		shards:   make([]shard, n),
	}
	for i := range l.shards {
		l.shards[i].tats = make(map[string]int64)
		l.shards[i].sweepAt = minSweep
		l.shards[i].nextIdle = math.MaxInt64
	}
	return l, nil
}

// elapsedSince is a clock reading nanoseconds since its first reading.
// Without an injected clock it reads only the monotonic clock
// (time.Since), half the cost of time.Now, which also reads the wall clock.
func elapsedSince(now func() time.Time) func() int64 {
	if now == nil {
		epoch := time.Now()
		return func() int64 { return int64(time.Since(epoch)) }
	}
	epoch := now()
	return func() int64 { return int64(now().Sub(epoch)) }
}

// Allow decides a request of n units under key. It never blocks and never
// fails for a valid n; ctx is unused.
func (l *Local) Allow(_ context.Context, key string, n int) (Decision, error) {
	if err := l.limit.CheckCost(n); err != nil {
		return Decision{Limit: l.limit}, err
	}
	now := l.elapsed()
	s := &l.shards[maphash.String(l.seed, key)&l.mask]
	s.mu.Lock()
	tat, held := s.tats[key]
	if !held {
		tat = math.MinInt64
	}
	v := gcra(tat, now, l.interval, l.tau, int64(n))
	if v.allowed && v.tat > now {
		if held {
			s.tats[key] = v.tat
		} else {
			l.insert(s, key, v.tat, now)
		}
	}
	s.mu.Unlock()
	return v.decision(l.limit), nil
}

// insert adds a key to s, which is locked, making room first.
func (l *Local) insert(s *shard, key string, tat, now int64) {
	full := len(s.tats) >= l.shardCap
	if len(s.tats) >= s.sweepAt || full && now >= s.nextIdle && s.sinceSweep >= l.shardCap/8 {
		s.sweep(now)
	}
	if len(s.tats) >= l.shardCap {
		l.evictOne(s, now)
	}
	// Clone so that a key sliced from a large string (a header, a body)
	// does not keep the whole of it alive.
	s.tats[strings.Clone(key)] = tat
	s.nextIdle = min(s.nextIdle, tat)
	s.sinceSweep++
}

// sweep drops s's idle keys and notes when the next one goes idle.
func (s *shard) sweep(now int64) {
	next := int64(math.MaxInt64)
	for k, t := range s.tats {
		if t <= now {
			delete(s.tats, k)
		} else {
			next = min(next, t)
		}
	}
	s.nextIdle, s.sinceSweep = next, 0
	s.sweepAt = max(2*len(s.tats), minSweep)
}

func (l *Local) evictOne(s *shard, now int64) {
	victim, earliest, seen := "", int64(math.MaxInt64), 0
	for k, t := range s.tats {
		if t <= now {
			delete(s.tats, k)
			return
		}
		if t < earliest {
			victim, earliest = k, t
		}
		if seen++; seen == evictionSample {
			break
		}
	}
	delete(s.tats, victim)
	l.evicted.Add(1)
}

// LocalStats describes a Local limiter's memory, for metrics.
type LocalStats struct {
	// Keys is how many keys are held now (idle ones included until swept).
	Keys int
	// Evicted counts keys dropped while busy because their shard was full;
	// each may have let its key exceed the Limit by up to the units it had
	// used. Zero unless MaxKeys was reached.
	Evicted uint64
}

// Stats reports the limiter's key count and busy evictions.
func (l *Local) Stats() LocalStats {
	st := LocalStats{Evicted: l.evicted.Load()}
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		st.Keys += len(s.tats)
		s.mu.Unlock()
	}
	return st
}
