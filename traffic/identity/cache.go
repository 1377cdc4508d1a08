package identity

import (
	"hash/maphash"
	"strings"
	"sync"
	"time"
)

// tokenCache maps a token string that verified to what verifying it gave.
// It is sharded so that concurrent requests seldom share a lock, and
// bounded per shard: a full shard evicts, of up to evictSample entries
// that map iteration hands it (a random start), an expired one, or else
// the one that expires first. That costs no list upkeep on hits, which
// only read-lock.
type tokenCache struct {
	seed   maphash.Seed
	mask   uint64
	shards []cacheShard
}

type cacheShard struct {
	mu  sync.RWMutex
	m   map[string]*cachedToken
	max int
	_   [88]byte // 128 bytes a shard: neighbouring shards' locks on separate cache lines
}

// cachedToken is a verified token's outcome. Entries are immutable.
type cachedToken struct {
	id *Identity
	// notBefore and notAfter bound when the token is accepted, leeway
	// included, as Unix nanoseconds: nbf-leeway (or the minimum) and
	// exp+leeway. A use at t is accepted when notBefore ≤ t < notAfter,
	// which is what the signature-time check accepted.
	notBefore, notAfter int64
	// key verified the token; src publishes the provider's keys. An entry
	// is used only while src's current key set still holds key, so a key
	// withdrawn from the provider's key set ends its tokens' cache entries
	// at the next refresh.
	key *publicKey
	src *keySource
}

const evictSample = 8

func newTokenCache(size int) *tokenCache {
	n := 1
	for n < 64 && n*128 < size {
		n *= 2
	}
	c := &tokenCache{seed: maphash.MakeSeed(), mask: uint64(n - 1), shards: make([]cacheShard, n)}
	per := (size + n - 1) / n
	for i := range c.shards {
		c.shards[i].m = make(map[string]*cachedToken)
		c.shards[i].max = per
	}
	return c
}

func (c *tokenCache) shard(token string) *cacheShard {
	return &c.shards[maphash.String(c.seed, token)&c.mask]
}

// get returns the cached outcome of token: ok is false when it is not
// cached (or its key is no longer published, or it has expired, when
// the entry is also dropped); err is errNotYetValid for a token before its
// nbf, and errExpired for one past its exp.
func (c *tokenCache) get(token string, now time.Time) (id *Identity, err error, ok bool) {
	sh := c.shard(token)
	sh.mu.RLock()
	e := sh.m[token]
	sh.mu.RUnlock()
	if e == nil {
		return nil, nil, false
	}
	t := now.UnixNano()
	switch snap := e.src.snap.Load(); {
	case t >= e.notAfter:
		c.drop(sh, token, e)
		return nil, errExpired, true
	case snap == nil || !snap.contains(e.key):
		c.drop(sh, token, e)
		return nil, nil, false
	case t < e.notBefore:
		return nil, errNotYetValid, true
	}
	return e.id, nil, true
}

func (c *tokenCache) drop(sh *cacheShard, token string, e *cachedToken) {
	sh.mu.Lock()
	if sh.m[token] == e {
		delete(sh.m, token)
	}
	sh.mu.Unlock()
}

// put caches e under token, which it copies so that the entry holds no
// part of the request.
func (c *tokenCache) put(token string, e *cachedToken, now time.Time) {
	sh := c.shard(token)
	token = strings.Clone(token)
	t := now.UnixNano()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if _, ok := sh.m[token]; !ok && len(sh.m) >= sh.max {
		var victim string
		var soonest int64
		n := 0
		for k, o := range sh.m {
			if o.notAfter <= t {
				victim = k
				break
			}
			if n == 0 || o.notAfter < soonest {
				victim, soonest = k, o.notAfter
			}
			if n++; n == evictSample {
				break
			}
		}
		delete(sh.m, victim)
	}
	sh.m[token] = e
}

// len is the number of cached tokens.
func (c *tokenCache) len() int {
	n := 0
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.RLock()
		n += len(sh.m)
		sh.mu.RUnlock()
	}
	return n
}
