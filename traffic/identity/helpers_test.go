package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/goleak"

	"github.com/meridian-platform/meridian"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testKey is a signing key the tests' identity provider may publish.
type testKey struct {
	kid  string
	alg  string
	priv crypto.Signer
}

func (k testKey) method() jwt.SigningMethod { return jwt.GetSigningMethod(k.alg) }

func (k testKey) jwk() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.priv.Public(), KeyID: k.kid, Algorithm: k.alg, Use: "sig"}
}

// RSA keys take a while to generate, so each is made once per test binary.
var (
	rsaA = sync.OnceValue(func() *rsa.PrivateKey { return mustRSA() })
	rsaB = sync.OnceValue(func() *rsa.PrivateKey { return mustRSA() })
)

func mustRSA() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
}

func mustEC(c elliptic.Curve) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}

func mustEd() ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}

func rsKey(kid string) testKey { return testKey{kid: kid, alg: "RS256", priv: rsaA()} }
func esKey(kid string) testKey { return testKey{kid: kid, alg: "ES256", priv: mustEC(elliptic.P256())} }
func edKey(kid string) testKey { return testKey{kid: kid, alg: "EdDSA", priv: mustEd()} }

// testIdP serves a JWK Set and an OpenID Connect discovery document, and
// counts the fetches of each.
type testIdP struct {
	srv       *httptest.Server
	mu        sync.Mutex
	keys      []jose.JSONWebKey
	docIssuer string // the discovery document's issuer; default the server URL

	down       atomic.Bool
	delay      atomic.Int64 // ns each key set answer waits, so callers pile up
	jwksHits   atomic.Int64
	discovered atomic.Int64
}

func newIdP(t testing.TB, keys ...testKey) *testIdP {
	t.Helper()
	idp := &testIdP{}
	idp.publish(keys...)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		idp.jwksHits.Add(1)
		if d := time.Duration(idp.delay.Load()); d > 0 {
			time.Sleep(d)
		}
		if idp.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		idp.mu.Lock()
		body, err := json.Marshal(jose.JSONWebKeySet{Keys: idp.keys})
		idp.mu.Unlock()
		if err != nil {
			t.Error(err)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		idp.discovered.Add(1)
		if idp.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		idp.mu.Lock()
		iss := idp.docIssuer
		idp.mu.Unlock()
		if iss == "" {
			iss = idp.srv.URL
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": iss, "jwks_uri": "/jwks"})
	})
	idp.srv = httptest.NewServer(mux)
	t.Cleanup(idp.srv.Close)
	return idp
}

// publish replaces the published keys.
func (idp *testIdP) publish(keys ...testKey) {
	idp.mu.Lock()
	defer idp.mu.Unlock()
	idp.keys = idp.keys[:0]
	for _, k := range keys {
		idp.keys = append(idp.keys, k.jwk())
	}
}

func (idp *testIdP) issuer() string { return idp.srv.URL }

// provider is a JWT provider for idp with the defaults.
func (idp *testIdP) provider() JWTProvider {
	return JWTProvider{
		Name:          "test",
		Issuer:        idp.issuer(),
		Audiences:     []string{"orders", "payments"},
		JWKSURL:       idp.srv.URL + "/jwks",
		ForwardClaims: []string{"email", "tenant"},
	}
}

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2031, 3, 14, 15, 9, 26, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newVerifier(t testing.TB, cfg Config, idp *testIdP, clk *clock) *Verifier {
	t.Helper()
	v, err := New(cfg, Options{HTTPClient: idp.srv.Client(), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// claims are valid claims for idp at clk's time.
func claims(idp *testIdP, clk *clock) jwt.MapClaims {
	now := clk.Now()
	return jwt.MapClaims{
		"iss":   idp.issuer(),
		"aud":   "orders",
		"sub":   "user-42",
		"iat":   now.Unix(),
		"nbf":   now.Unix(),
		"exp":   now.Add(10 * time.Minute).Unix(),
		"roles": []string{"admin", "viewer"},
		"scope": "orders:read orders:write",
		"email": "ada@example.com",
	}
}

// sign makes a token of c signed by k, with k's kid in the header.
func sign(t testing.TB, k testKey, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(k.method(), c)
	tok.Header["kid"] = k.kid
	s, err := tok.SignedString(k.priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func bearer(token string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/orders", nil)
	r.Header.Set("Authorization", "Bearer "+token)
	return r
}

// wantCode fails t unless err is a *meridian.Error with code.
func wantCode(t *testing.T, err error, code meridian.Code) {
	t.Helper()
	if got := meridian.ErrorCode(err); got != code {
		t.Fatalf("error %v: code %s, want %s", err, got, code)
	}
}
