package identity

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// TestCacheSkipsVerification: the second Authenticate of a token does not
// check its signature again, and costs no allocation.
func TestCacheSkipsVerification(t *testing.T) {
	k := rsKey("k1")
	idp := newIdP(t, k)
	clk := newClock()
	v := newVerifier(t, Config{JWT: []JWTProvider{idp.provider()}}, idp, clk)
	r := bearer(sign(t, k, claims(idp, clk)))
	ctx := context.Background()
	first, err := v.Authenticate(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	second, err := v.Authenticate(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if first != second {
		t.Error("the cached identity is not the one verified")
	}
	if n := v.verifications.Load(); n != 1 {
		t.Fatalf("%d verifications, want 1", n)
	}
	if raceEnabled {
		return
	}
	if a := testing.AllocsPerRun(100, func() { _, _ = v.Authenticate(ctx, r) }); a != 0 {
		t.Errorf("a cache hit allocates %v times", a)
	}
}

// TestCachedTokenExpires: a cached token is refused once past exp (and
// leeway), and its entry goes.
func TestCachedTokenExpires(t *testing.T) {
	k := esKey("e1")
	idp := newIdP(t, k)
	clk := newClock()
	v := newVerifier(t, Config{JWT: []JWTProvider{idp.provider()}}, idp, clk)
	c := claims(idp, clk)
	c["exp"] = clk.Now().Add(time.Minute).Unix()
	r := bearer(sign(t, k, c))
	ctx := context.Background()
	if _, err := v.Authenticate(ctx, r); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Minute + DefaultLeeway - time.Second)
	if _, err := v.Authenticate(ctx, r); err != nil {
		t.Fatalf("within the leeway: %v", err)
	}
	clk.Advance(time.Second)
	if _, err := v.Authenticate(ctx, r); !errors.Is(err, errExpired) {
		t.Fatalf("past exp and leeway: %v", err)
	}
	if n := v.cache.len(); n != 0 {
		t.Errorf("%d entries left", n)
	}
	if _, err := v.Authenticate(ctx, r); !errors.Is(err, errExpired) {
		t.Fatalf("again, uncached: %v", err)
	}
	if n := v.verifications.Load(); n != 2 {
		t.Errorf("%d verifications", n)
	}
}

// TestCachedTokenNotBefore: nbf is checked on every use of an entry.
func TestCachedTokenNotBefore(t *testing.T) {
	clk := newClock()
	src := &keySource{}
	key := &publicKey{kid: "k"}
	src.snap.Store(&keySnapshot{byKID: map[string]*publicKey{"k": key}, keys: []*publicKey{key}})
	c := newTokenCache(10)
	id := &Identity{Subject: "s"}
	now := clk.Now()
	c.put("t", &cachedToken{id: id, notBefore: now.Add(time.Minute).UnixNano(), notAfter: now.Add(time.Hour).UnixNano(), key: key, src: src}, now)
	if _, err, ok := c.get("t", now); !ok || !errors.Is(err, errNotYetValid) {
		t.Fatalf("before nbf: %v %v", err, ok)
	}
	if got, err, ok := c.get("t", now.Add(time.Minute)); !ok || err != nil || got != id {
		t.Fatalf("at nbf: %v %v %v", got, err, ok)
	}
}

// TestCacheFollowsKeys: a cached token is used only while its key is
// published; a refresh that finds the same keys keeps the entries.
func TestCacheFollowsKeys(t *testing.T) {
	old, next := rsKey("k1"), edKey("k2")
	idp := newIdP(t, old, next)
	clk := newClock()
	v := newVerifier(t, Config{JWT: []JWTProvider{idp.provider()}}, idp, clk)
	ctx := context.Background()
	long := claims(idp, clk)
	long["exp"] = clk.Now().Add(time.Hour).Unix()
	cached := bearer(sign(t, old, long))
	if _, err := v.Authenticate(ctx, cached); err != nil {
		t.Fatal(err)
	}

	clk.Advance(DefaultCacheTTL) // the next verification refreshes: same keys
	if _, err := v.Authenticate(ctx, bearer(sign(t, next, claims(idp, clk)))); err != nil {
		t.Fatal(err)
	}
	if idp.jwksHits.Load() != 2 {
		t.Fatalf("%d fetches", idp.jwksHits.Load())
	}
	before := v.verifications.Load()
	if _, err := v.Authenticate(ctx, cached); err != nil {
		t.Fatal(err)
	}
	if v.verifications.Load() != before {
		t.Fatal("a refresh with the same keys dropped the cache entry")
	}

	idp.publish(next) // k1 withdrawn
	clk.Advance(DefaultCacheTTL)
	if _, err := v.Authenticate(ctx, bearer(sign(t, next, claims(idp, clk)))); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Authenticate(ctx, cached); !errors.Is(err, errUnknownKey) {
		t.Fatalf("token of a withdrawn key: %v", err)
	}
}

// TestCacheBounded: the cache holds at most its size, and an expired
// entry is evicted before a live one.
func TestCacheBounded(t *testing.T) {
	k := edKey("d1")
	idp := newIdP(t, k)
	clk := newClock()
	v := newVerifier(t, Config{JWT: []JWTProvider{idp.provider()}, TokenCacheSize: 100}, idp, clk)
	ctx := context.Background()
	for i := range 1000 {
		c := claims(idp, clk)
		c["jti"] = fmt.Sprint(i)
		if _, err := v.Authenticate(ctx, bearer(sign(t, k, c))); err != nil {
			t.Fatal(err)
		}
	}
	if n := v.cache.len(); n > 100 {
		t.Fatalf("%d entries in a cache of 100", n)
	}

	// A full cache with one short-lived token: once that one expires, it
	// is what a new token replaces.
	small := newTokenCache(4)
	now := clk.Now()
	src := v.providers[idp.issuer()].keys
	entry := func(life time.Duration) *cachedToken {
		return &cachedToken{id: &Identity{}, notAfter: now.Add(life).UnixNano(), src: src}
	}
	small.put("short", entry(time.Second), now)
	for i := range 3 {
		small.put(fmt.Sprint(i), entry(time.Hour), now)
	}
	small.put("new", entry(time.Hour), now.Add(time.Minute))
	sh := small.shard("short")
	if _, ok := sh.m["short"]; ok || len(sh.m) != 4 {
		t.Fatalf("entries %v", sh.m)
	}
}

func TestCacheOff(t *testing.T) {
	k := edKey("d1")
	idp := newIdP(t, k)
	clk := newClock()
	v := newVerifier(t, Config{JWT: []JWTProvider{idp.provider()}, TokenCacheSize: -1}, idp, clk)
	r := bearer(sign(t, k, claims(idp, clk)))
	for range 3 {
		if _, err := v.Authenticate(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	if n := v.verifications.Load(); n != 3 {
		t.Fatalf("%d verifications, want 3", n)
	}
}

// TestCacheKeyIsExactToken: a token that differs in any byte is verified
// on its own, even when it decodes to the same claims.
func TestCacheKeyIsExactToken(t *testing.T) {
	k := rsKey("k1")
	idp := newIdP(t, k)
	clk := newClock()
	v := newVerifier(t, Config{JWT: []JWTProvider{idp.provider()}}, idp, clk)
	ctx := context.Background()
	token := sign(t, k, claims(idp, clk))
	if _, err := v.Authenticate(ctx, bearer(token)); err != nil {
		t.Fatal(err)
	}
	tampered := token[:len(token)-2] + "AA"
	if tampered == token {
		tampered = token[:len(token)-2] + "BA"
	}
	if _, err := v.Authenticate(ctx, bearer(tampered)); err == nil {
		t.Fatal("a token differing from a cached one was accepted")
	}
}

// TestCacheFarFutureExp: an exp past what int64 nanoseconds hold does not
// wrap into an expired entry.
func TestCacheFarFutureExp(t *testing.T) {
	k := edKey("d1")
	idp := newIdP(t, k)
	clk := newClock()
	v := newVerifier(t, Config{JWT: []JWTProvider{idp.provider()}}, idp, clk)
	c := claims(idp, clk)
	c["exp"] = int64(1e12)
	r := bearer(sign(t, k, c))
	for range 2 {
		if _, err := v.Authenticate(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	if n := v.verifications.Load(); n != 1 {
		t.Fatalf("%d verifications", n)
	}
}
