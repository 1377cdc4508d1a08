package identity

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/meridian-platform/meridian"
)

func TestValidTokens(t *testing.T) {
	ps := testKey{kid: "p1", alg: "PS256", priv: rsaB()}
	keys := []testKey{rsKey("r1"), esKey("e1"), edKey("d1"), ps}
	idp := newIdP(t, keys...)
	clk := newClock()
	v := newVerifier(t, Config{JWT: []JWTProvider{idp.provider()}}, idp, clk)
	for _, k := range keys {
		t.Run(k.alg, func(t *testing.T) {
			id, err := v.Authenticate(context.Background(), bearer(sign(t, k, claims(idp, clk))))
			if err != nil {
				t.Fatal(err)
			}
			want := Identity{Method: MethodJWT, Provider: "test", Subject: "user-42", Issuer: idp.issuer(),
				Roles: []string{"admin", "viewer"}, Scopes: []string{"orders:read", "orders:write"}}
			if id.Method != want.Method || id.Provider != want.Provider || id.Subject != want.Subject || id.Issuer != want.Issuer ||
				!slices.Equal(id.Roles, want.Roles) || !slices.Equal(id.Scopes, want.Scopes) {
				t.Fatalf("identity %+v, want %+v", id, want)
			}
			if id.Claims["email"] != "ada@example.com" {
				t.Errorf("claims %v", id.Claims)
			}
		})
	}
	if n := idp.jwksHits.Load(); n != 1 {
		t.Errorf("%d key set fetches, want 1", n)
	}
}

func TestNoCredentials(t *testing.T) {
	k := rsKey("k1")
	idp := newIdP(t, k)
	clk := newClock()
	v := newVerifier(t, Config{JWT: []JWTProvider{idp.provider()}}, idp, clk)
	for name, set := range map[string]func(*http.Request){
		"none":         func(*http.Request) {},
		"basic auth":   func(r *http.Request) { r.SetBasicAuth("ada", "secret") },
		"API key only": func(r *http.Request) { r.Header.Set("X-API-Key", "k") }, // no API keys configured: not ours
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		set(r)
		if id, err := v.Authenticate(context.Background(), r); id != nil || err != nil {
			t.Errorf("%s: %v, %v", name, id, err)
		}
	}
	r := bearer(sign(t, k, claims(idp, clk)))
	r.Header.Add("Authorization", "bearer "+sign(t, k, claims(idp, clk)))
	if _, err := v.Authenticate(context.Background(), r); !errors.Is(err, errTwoBearers) {
		t.Errorf("two bearer tokens: %v", err)
	}
	if err := (Requirement{}).Allow(nil); !errors.Is(err, ErrNoCredentials) || Challenge(err) != "Bearer" {
		t.Errorf("Allow(nil) = %v, challenge %q", err, Challenge(err))
	}
}

func TestLeeway(t *testing.T) {
	k := esKey("e1")
	idp := newIdP(t, k)
	clk := newClock()
	strict := idp.provider()
	strict.Leeway = meridian.Duration(5 * time.Second)
	cases := []struct {
		name   string
		leeway JWTProvider
		change func(c jwt.MapClaims, now time.Time)
		want   error
	}{
		{"expired 20s ago, default leeway 30s", idp.provider(), func(c jwt.MapClaims, now time.Time) { c["exp"] = now.Add(-20 * time.Second).Unix() }, nil},
		{"expired 40s ago, default leeway 30s", idp.provider(), func(c jwt.MapClaims, now time.Time) { c["exp"] = now.Add(-40 * time.Second).Unix() }, errExpired},
		{"nbf in 20s, default leeway", idp.provider(), func(c jwt.MapClaims, now time.Time) { c["nbf"] = now.Add(20 * time.Second).Unix() }, nil},
		{"iat in 20s, default leeway", idp.provider(), func(c jwt.MapClaims, now time.Time) { c["iat"] = now.Add(20 * time.Second).Unix() }, nil},
		{"iat in 40s, default leeway", idp.provider(), func(c jwt.MapClaims, now time.Time) { c["iat"] = now.Add(40 * time.Second).Unix() }, errIssuedFuture},
		{"expired 10s ago, leeway 5s", strict, func(c jwt.MapClaims, now time.Time) { c["exp"] = now.Add(-10 * time.Second).Unix() }, errExpired},
		{"nbf in 10s, leeway 5s", strict, func(c jwt.MapClaims, now time.Time) { c["nbf"] = now.Add(10 * time.Second).Unix() }, errNotYetValid},
		{"expired 3s ago, leeway 5s", strict, func(c jwt.MapClaims, now time.Time) { c["exp"] = now.Add(-3 * time.Second).Unix() }, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := newVerifier(t, Config{JWT: []JWTProvider{tc.leeway}}, idp, clk)
			c := claims(idp, clk)
			tc.change(c, clk.Now())
			_, err := v.Authenticate(context.Background(), bearer(sign(t, k, c)))
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
		})
	}
}

// TestKeyRotation: a key published after the key set was fetched is used
// once a refresh is allowed; before then its tokens are refused without a
// fetch.
func TestKeyRotation(t *testing.T) {
	old, next := rsKey("2031-01"), esKey("2031-02")
	idp := newIdP(t, old)
	clk := newClock()
	v := newVerifier(t, Config{JWT: []JWTProvider{idp.provider()}}, idp, clk)
	ctx := context.Background()

	if _, err := v.Authenticate(ctx, bearer(sign(t, old, claims(idp, clk)))); err != nil {
		t.Fatal(err)
	}
	idp.publish(old, next)
	clk.Advance(DefaultMinRefreshInterval / 2)
	if _, err := v.Authenticate(ctx, bearer(sign(t, next, claims(idp, clk)))); !errors.Is(err, errUnknownKey) {
		t.Fatalf("within the refresh interval: %v", err)
	}
	if n := idp.jwksHits.Load(); n != 1 {
		t.Fatalf("%d fetches within the refresh interval", n)
	}
	clk.Advance(DefaultMinRefreshInterval / 2)
	id, err := v.Authenticate(ctx, bearer(sign(t, next, claims(idp, clk))))
	if err != nil {
		t.Fatal(err)
	}
	if id.Subject != "user-42" || idp.jwksHits.Load() != 2 {
		t.Fatalf("identity %+v after %d fetches", id, idp.jwksHits.Load())
	}
	// The old key is still published: its tokens still pass.
	if _, err := v.Authenticate(ctx, bearer(sign(t, old, claims(idp, clk)))); err != nil {
		t.Fatal(err)
	}
}

// TestUnknownKidsCollapse: 100 concurrent tokens with unknown kids cost
// the provider one fetch per MinRefreshInterval.
func TestUnknownKidsCollapse(t *testing.T) {
	k := rsKey("k1")
	idp := newIdP(t, k)
	clk := newClock()
	v := newVerifier(t, Config{JWT: []JWTProvider{idp.provider()}}, idp, clk)
	ctx := context.Background()
	if _, err := v.Authenticate(ctx, bearer(sign(t, k, claims(idp, clk)))); err != nil {
		t.Fatal(err)
	}
	ghosts := make([]string, 100)
	for i := range ghosts {
		ghosts[i] = sign(t, testKey{kid: fmt.Sprintf("ghost-%d", i), alg: "EdDSA", priv: mustEd()}, claims(idp, clk))
	}
	storm := func() {
		var wg sync.WaitGroup
		for _, g := range ghosts {
			wg.Go(func() {
				if _, err := v.Authenticate(ctx, bearer(g)); !errors.Is(err, errUnknownKey) {
					t.Errorf("err %v", err)
				}
			})
		}
		wg.Wait()
	}
	idp.delay.Store(int64(50 * time.Millisecond)) // hold the fetch so that callers pile up on it
	storm()
	if n := idp.jwksHits.Load(); n != 1 {
		t.Fatalf("%d fetches within the refresh interval, want the first only", n)
	}
	clk.Advance(DefaultMinRefreshInterval)
	storm()
	if n := idp.jwksHits.Load(); n != 2 {
		t.Fatalf("%d fetches after the interval, want 2", n)
	}
	storm()
	if n := idp.jwksHits.Load(); n != 2 {
		t.Fatalf("%d fetches, want still 2", n)
	}
}

// TestFirstFetchShared: concurrent first requests share one fetch and all
// pass.
func TestFirstFetchShared(t *testing.T) {
	k := edKey("d1")
	idp := newIdP(t, k)
	idp.delay.Store(int64(20 * time.Millisecond))
	clk := newClock()
	v := newVerifier(t, Config{JWT: []JWTProvider{idp.provider()}, TokenCacheSize: -1}, idp, clk)
	token := sign(t, k, claims(idp, clk))
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			if _, err := v.Authenticate(context.Background(), bearer(token)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := idp.jwksHits.Load(); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}
}

// TestWaiterLeavesOnCancel: a caller waiting on another's fetch returns
// when its own context ends.
func TestWaiterLeavesOnCancel(t *testing.T) {
	k := edKey("d1")
	idp := newIdP(t, k)
	idp.delay.Store(int64(300 * time.Millisecond))
	clk := newClock()
	v := newVerifier(t, Config{JWT: []JWTProvider{idp.provider()}}, idp, clk)
	token := sign(t, k, claims(idp, clk))
	leader := make(chan error, 1)
	go func() {
		_, err := v.Authenticate(context.Background(), bearer(token))
		leader <- err
	}()
	for idp.jwksHits.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := v.Authenticate(ctx, bearer(token))
	wantCode(t, err, meridian.CodeUnavailable)
	if d := time.Since(start); d > 200*time.Millisecond {
		t.Errorf("waiter left after %s", d)
	}
	if err := <-leader; err != nil {
		t.Fatalf("leader: %v", err)
	}
}

// TestProviderDown: with keys cached, tokens keep verifying while the
// key set cannot be fetched, even past the cache TTL; with none, the
// answer is unavailable (503), not unauthorized.
func TestProviderDown(t *testing.T) {
	k := esKey("e1")
	ctx := context.Background()
	t.Run("keys cached", func(t *testing.T) {
		idp := newIdP(t, k)
		clk := newClock()
		v := newVerifier(t, Config{JWT: []JWTProvider{idp.provider()}}, idp, clk)
		if _, err := v.Authenticate(ctx, bearer(sign(t, k, claims(idp, clk)))); err != nil {
			t.Fatal(err)
		}
		idp.down.Store(true)
		clk.Advance(time.Minute)
		if _, err := v.Authenticate(ctx, bearer(sign(t, k, claims(idp, clk)))); err != nil {
			t.Fatal(err)
		}
		if n := idp.jwksHits.Load(); n != 1 {
			t.Fatalf("%d fetches within the TTL", n)
		}
		clk.Advance(DefaultCacheTTL)
		for range 3 {
			if _, err := v.Authenticate(ctx, bearer(sign(t, k, claims(idp, clk)))); err != nil {
				t.Fatalf("past the TTL: %v", err)
			}
		}
		if n := idp.jwksHits.Load(); n != 2 {
			t.Fatalf("%d fetches, want one failed refresh past the TTL", n)
		}
	})
	t.Run("no keys", func(t *testing.T) {
		idp := newIdP(t, k)
		idp.down.Store(true)
		clk := newClock()
		v := newVerifier(t, Config{JWT: []JWTProvider{idp.provider()}}, idp, clk)
		for range 3 {
			_, err := v.Authenticate(ctx, bearer(sign(t, k, claims(idp, clk))))
			wantCode(t, err, meridian.CodeUnavailable)
			var me *meridian.Error
			if !errors.As(err, &me) || me.RetryAfter <= 0 || Challenge(err) != "" {
				t.Fatalf("err %#v, challenge %q", err, Challenge(err))
			}
		}
		if n := idp.jwksHits.Load(); n != 1 {
			t.Fatalf("%d fetches, want 1 per refresh interval", n)
		}
		wantCode(t, v.Prefetch(ctx), meridian.CodeUnavailable)
		idp.down.Store(false)
		clk.Advance(DefaultMinRefreshInterval)
		if err := v.Prefetch(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := v.Authenticate(ctx, bearer(sign(t, k, claims(idp, clk)))); err != nil {
			t.Fatal(err)
		}
	})
}

func TestOIDCDiscovery(t *testing.T) {
	k := rsKey("k1")
	ctx := context.Background()
	discovery := func(idp *testIdP) JWTProvider {
		p := idp.provider()
		p.JWKSURL = ""
		p.OIDCDiscovery = idp.srv.URL + "/.well-known/openid-configuration"
		return p
	}
	t.Run("keys from jwks_uri", func(t *testing.T) {
		idp := newIdP(t, k)
		clk := newClock()
		v := newVerifier(t, Config{JWT: []JWTProvider{discovery(idp)}}, idp, clk)
		if _, err := v.Authenticate(ctx, bearer(sign(t, k, claims(idp, clk)))); err != nil {
			t.Fatal(err)
		}
		if idp.discovered.Load() != 1 || idp.jwksHits.Load() != 1 {
			t.Fatalf("%d discovery and %d key set fetches", idp.discovered.Load(), idp.jwksHits.Load())
		}
	})
	t.Run("document names another issuer", func(t *testing.T) {
		idp := newIdP(t, k)
		idp.docIssuer = "https://impostor.example"
		clk := newClock()
		v := newVerifier(t, Config{JWT: []JWTProvider{discovery(idp)}}, idp, clk)
		_, err := v.Authenticate(ctx, bearer(sign(t, k, claims(idp, clk))))
		wantCode(t, err, meridian.CodeUnavailable)
		if n := idp.jwksHits.Load(); n != 0 {
			t.Fatalf("key set fetched from a document for another issuer")
		}
	})
	t.Run("discovery down, last jwks_uri used", func(t *testing.T) {
		idp := newIdP(t, k)
		clk := newClock()
		v := newVerifier(t, Config{JWT: []JWTProvider{discovery(idp)}}, idp, clk)
		if _, err := v.Authenticate(ctx, bearer(sign(t, k, claims(idp, clk)))); err != nil {
			t.Fatal(err)
		}
		idp.mu.Lock()
		idp.docIssuer = "https://impostor.example" // the document now fails
		idp.mu.Unlock()
		next := esKey("e2")
		idp.publish(k, next)
		clk.Advance(DefaultMinRefreshInterval)
		if _, err := v.Authenticate(ctx, bearer(sign(t, next, claims(idp, clk)))); err != nil {
			t.Fatal(err)
		}
	})
}

// TestProvidersByIssuer: tokens go to the provider of their iss.
func TestProvidersByIssuer(t *testing.T) {
	ka, kb := rsKey("a1"), esKey("b1")
	a, b := newIdP(t, ka), newIdP(t, kb)
	clk := newClock()
	pa, pb := a.provider(), b.provider()
	pa.Name, pb.Name = "corp", "partners"
	pb.RolesClaim = "realm_access.roles"
	v := newVerifier(t, Config{JWT: []JWTProvider{pa, pb}}, a, clk) // a's client reaches b as well
	ctx := context.Background()
	id, err := v.Authenticate(ctx, bearer(sign(t, ka, claims(a, clk))))
	if err != nil || id.Provider != "corp" {
		t.Fatalf("%+v, %v", id, err)
	}
	c := claims(b, clk)
	c["realm_access"] = map[string]any{"roles": []string{"partner"}}
	id, err = v.Authenticate(ctx, bearer(sign(t, kb, c)))
	if err != nil || id.Provider != "partners" || !slices.Equal(id.Roles, []string{"partner"}) {
		t.Fatalf("%+v, %v", id, err)
	}
	// b's key does not sign for a's issuer.
	if _, err := v.Authenticate(ctx, bearer(sign(t, kb, claims(a, clk)))); !errors.Is(err, errUnknownKey) {
		t.Fatalf("cross-issuer token: %v", err)
	}
}

func TestRolesAndScopes(t *testing.T) {
	cases := []struct {
		name        string
		provider    func(*JWTProvider)
		claims      jwt.MapClaims
		roles, scps []string
	}{
		{name: "roles array, scope string", claims: jwt.MapClaims{"roles": []any{"a", "b"}, "scope": "x y"}, roles: []string{"a", "b"}, scps: []string{"x", "y"}},
		{name: "roles string", claims: jwt.MapClaims{"roles": "a b,c"}, roles: []string{"a", "b", "c"}},
		{name: "scp array", claims: jwt.MapClaims{"scp": []any{"x", "y"}}, scps: []string{"x", "y"}},
		{name: "scp string (Azure)", claims: jwt.MapClaims{"scp": "x y"}, scps: []string{"x", "y"}},
		{name: "scope wins over scp", claims: jwt.MapClaims{"scope": "x", "scp": []any{"y"}}, scps: []string{"x"}},
		{name: "nested roles", provider: func(p *JWTProvider) { p.RolesClaim = "realm_access.roles" },
			claims: jwt.MapClaims{"realm_access": map[string]any{"roles": []any{"ops"}}}, roles: []string{"ops"}},
		{name: "namespaced claim with dots", provider: func(p *JWTProvider) { p.RolesClaim = "https://example.com/roles" },
			claims: jwt.MapClaims{"https://example.com/roles": []any{"ops"}}, roles: []string{"ops"}},
		{name: "custom scopes claim", provider: func(p *JWTProvider) { p.ScopesClaim = "permissions" },
			claims: jwt.MapClaims{"permissions": []any{"read:orders"}, "scope": "ignored"}, scps: []string{"read:orders"}},
		{name: "names that cannot be forwarded are dropped", claims: jwt.MapClaims{"roles": []any{"a,b", "ok", 7, "", "bad\n"}}, roles: []string{"ok"}},
		{name: "missing", claims: jwt.MapClaims{"roles": nil}},
	}
	k := edKey("d1")
	idp := newIdP(t, k)
	clk := newClock()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := idp.provider()
			if tc.provider != nil {
				tc.provider(&p)
			}
			v := newVerifier(t, Config{JWT: []JWTProvider{p}}, idp, clk)
			c := claims(idp, clk)
			delete(c, "roles")
			delete(c, "scope")
			for name, val := range tc.claims {
				c[name] = val
			}
			id, err := v.Authenticate(context.Background(), bearer(sign(t, k, c)))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(id.Roles, tc.roles) || !slices.Equal(id.Scopes, tc.scps) {
				t.Fatalf("roles %q scopes %q, want %q %q", id.Roles, id.Scopes, tc.roles, tc.scps)
			}
		})
	}
}

// TestAudienceAnyOf: a token is accepted when its aud holds any one of the
// provider's audiences.
func TestAudienceAnyOf(t *testing.T) {
	k := esKey("e1")
	idp := newIdP(t, k)
	clk := newClock()
	v := newVerifier(t, Config{JWT: []JWTProvider{idp.provider()}}, idp, clk) // orders, payments
	for _, aud := range []any{"payments", []string{"search", "payments"}, []string{"orders"}} {
		c := claims(idp, clk)
		c["aud"] = aud
		if _, err := v.Authenticate(context.Background(), bearer(sign(t, k, c))); err != nil {
			t.Errorf("aud %v: %v", aud, err)
		}
	}
}

// TestProviderTokenLimit: each provider's MaxTokenBytes holds for its own
// tokens when another provider allows larger ones.
func TestProviderTokenLimit(t *testing.T) {
	ka, kb := edKey("a1"), edKey("b1")
	a, b := newIdP(t, ka), newIdP(t, kb)
	clk := newClock()
	pa, pb := a.provider(), b.provider()
	pa.Name, pa.MaxTokenBytes = "small", 1024
	pb.Name, pb.MaxTokenBytes = "large", 16<<10
	v := newVerifier(t, Config{JWT: []JWTProvider{pa, pb}}, a, clk)
	ctx := context.Background()
	for _, tc := range []struct {
		idp  *testIdP
		key  testKey
		want error
	}{{a, ka, errTokenTooLarge}, {b, kb, nil}} {
		c := claims(tc.idp, clk)
		c["pad"] = strings.Repeat("x", 2048)
		if _, err := v.Authenticate(ctx, bearer(sign(t, tc.key, c))); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.idp.issuer(), err, tc.want)
		}
	}
}

type panicTransport struct{}

func (panicTransport) RoundTrip(*http.Request) (*http.Response, error) { panic("transport bug") }

// TestFetchPanicReleasesFlight: a fetch that panics leaves no flight
// behind for later callers to wait on.
func TestFetchPanicReleasesFlight(t *testing.T) {
	k := edKey("d1")
	idp := newIdP(t, k)
	clk := newClock()
	v, err := New(Config{JWT: []JWTProvider{idp.provider()}}, Options{HTTPClient: &http.Client{Transport: panicTransport{}}, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	token := sign(t, k, claims(idp, clk))
	func() {
		defer func() { _ = recover() }()
		_, _ = v.Authenticate(context.Background(), bearer(token))
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err = v.Authenticate(ctx, bearer(token))
	wantCode(t, err, meridian.CodeUnavailable)
	if ctx.Err() != nil {
		t.Fatal("the second caller waited on the panicked fetch")
	}
}
