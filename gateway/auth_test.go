package gateway

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"

	"github.com/meridian-platform/meridian/traffic/identity"
)

// authFixture is a gateway with a JWT provider (a real JWKS endpoint), an
// API key, a protected route and a public one, in front of an upstream
// that counts what reaches it and reports the identity headers it got.
type authFixture struct {
	base      string
	issuer    string
	rsa       *rsa.PrivateKey
	ec        *ecdsa.PrivateKey
	forwarded atomic.Int64
}

func newAuthFixture(t *testing.T) *authFixture {
	f := &authFixture{}
	var err error
	if f.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	if f.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	jwks := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
			{Key: f.rsa.Public(), KeyID: "rsa-1", Algorithm: "RS256", Use: "sig"},
			{Key: f.ec.Public(), KeyID: "ec-1", Algorithm: "ES256", Use: "sig"},
		}})
	})
	f.issuer = "https://id.example.com"
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		f.forwarded.Add(1)
		got := map[string]string{}
		for k, v := range r.Header {
			if strings.HasPrefix(strings.ToLower(strings.ReplaceAll(k, "_", "-")), "x-meridian-") {
				got[k] = strings.Join(v, ",")
			}
		}
		_ = json.NewEncoder(w).Encode(got)
	})
	f.base, _ = startGateway(t, `
auth:
  jwt:
    - name: main
      issuer: https://id.example.com
      audiences: [shop]
      jwks_url: UPSTREAM1/jwks.json
      forward_claims: [email]
  api_keys:
    - {name: partner, subject: partner-a, hash: "`+identity.HashAPIKey("sekret-key")+`", roles: [partner]}
routes:
  - name: admin
    match: {path_prefix: /admin}
    upstream: {urls: ["UPSTREAM2"]}
    auth: {methods: [jwt], roles: [admin]}
  - name: orders
    match: {path_prefix: /orders}
    upstream: {urls: ["UPSTREAM2"]}
    auth: {}
  - name: public
    match: {path_prefix: /public}
    upstream: {urls: ["UPSTREAM2"]}
`, jwks, up)
	return f
}

func (f *authFixture) claims() jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{"iss": f.issuer, "aud": "shop", "sub": "user-42", "iat": now.Unix(),
		"nbf": now.Unix(), "exp": now.Add(10 * time.Minute).Unix(), "roles": []string{"admin"}, "email": "ada@example.com"}
}

func (f *authFixture) sign(t *testing.T, m jwt.SigningMethod, kid string, key any, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, c)
	tok.Header["kid"] = kid
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (f *authFixture) request(t *testing.T, path string, hdr ...string) (*http.Response, string) {
	t.Helper()
	return get(t, f.base+path, hdr...)
}

// TestJWTAttacksAreRefusedAtTheEdge: every forged, stale or misdirected
// token is 401 with a Bearer challenge, and nothing reaches the upstream.
func TestJWTAttacksAreRefusedAtTheEdge(t *testing.T) {
	f := newAuthFixture(t)
	valid := f.claims()
	with := func(k string, v any) jwt.MapClaims {
		c := jwt.MapClaims{}
		for kk, vv := range valid {
			c[kk] = vv
		}
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	pubDER, _ := x509.MarshalPKIXPublicKey(f.rsa.Public())
	good := f.sign(t, jwt.SigningMethodRS256, "rsa-1", f.rsa, valid)
	parts := strings.Split(good, ".")
	evil, _ := json.Marshal(with("roles", []string{"admin", "root"}))
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString(evil) + "." + parts[2]
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, valid).SignedString(jwt.UnsafeAllowNoneSignatureType)
	other, _ := rsa.GenerateKey(rand.Reader, 2048)

	for _, tc := range []struct{ name, token string }{
		{"alg none", none},
		{"HS256 with the RSA public key as secret", f.sign(t, jwt.SigningMethodHS256, "rsa-1", pubDER, valid)},
		{"expired", f.sign(t, jwt.SigningMethodRS256, "rsa-1", f.rsa, with("exp", time.Now().Add(-time.Hour).Unix()))},
		{"not yet valid", f.sign(t, jwt.SigningMethodRS256, "rsa-1", f.rsa, with("nbf", time.Now().Add(time.Hour).Unix()))},
		{"wrong audience", f.sign(t, jwt.SigningMethodRS256, "rsa-1", f.rsa, with("aud", "billing"))},
		{"wrong issuer", f.sign(t, jwt.SigningMethodRS256, "rsa-1", f.rsa, with("iss", "https://evil.example.com"))},
		{"unknown kid", f.sign(t, jwt.SigningMethodRS256, "rsa-9", f.rsa, valid)},
		{"tampered payload", tampered},
		{"signed by another key with a known kid", f.sign(t, jwt.SigningMethodRS256, "rsa-1", other, valid)},
		{"oversized", f.sign(t, jwt.SigningMethodRS256, "rsa-1", f.rsa, with("pad", strings.Repeat("x", 16<<10)))},
		{"garbage", "not.a.token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := f.request(t, "/orders/1", "Authorization", "Bearer "+tc.token)
			if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") ||
				resp.Header.Get("Content-Type") != "application/problem+json" {
				t.Fatalf("%d %q %s", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body)
			}
		})
	}
	if n := f.forwarded.Load(); n != 0 {
		t.Fatalf("%d refused requests reached the upstream", n)
	}
	// The same route with the genuine token goes through.
	if resp, body := f.request(t, "/orders/1", "Authorization", "Bearer "+good); resp.StatusCode != 200 {
		t.Fatalf("valid token: %d %s", resp.StatusCode, body)
	}
}

// TestIdentityHeadersFromClientsNeverReachTheUpstream: a client's own
// X-Meridian-Subject (any case, underscores) is removed on public and
// protected routes; the verified identity replaces it; a caller without
// the role is 403; an API key works where any method is allowed.
func TestIdentityHeadersFromClientsNeverReachTheUpstream(t *testing.T) {
	f := newAuthFixture(t)
	forged := []string{"X-Meridian-Subject", "root", "x-meridian-roles", "admin", "X_Meridian_Scopes", "all", "X-Meridian-Claim-Email", "boss@example.com"}

	_, body := f.request(t, "/public/x", forged...)
	if body != "{}\n" {
		t.Fatalf("public route forwarded client identity headers: %s", body)
	}

	tok := f.sign(t, jwt.SigningMethodES256, "ec-1", f.ec, f.claims())
	resp, body := f.request(t, "/admin/x", append(forged, "Authorization", "Bearer "+tok)...)
	var got map[string]string
	_ = json.Unmarshal([]byte(body), &got)
	if resp.StatusCode != 200 || got["X-Meridian-Subject"] != "user-42" || got["X-Meridian-Roles"] != "admin" ||
		got["X-Meridian-Claim-Email"] != "ada@example.com" || got["X-Meridian-Scopes"] != "" {
		t.Fatalf("%d upstream saw %v", resp.StatusCode, got)
	}

	c := f.claims()
	c["roles"] = []string{"viewer"}
	viewer := f.sign(t, jwt.SigningMethodRS256, "rsa-1", f.rsa, c)
	before := f.forwarded.Load()
	if resp, _ := f.request(t, "/admin/x", "Authorization", "Bearer "+viewer); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("viewer on an admin route: %d", resp.StatusCode)
	}
	if resp, _ := f.request(t, "/admin/x", "X-API-Key", "sekret-key"); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("api key on a jwt-only route: %d", resp.StatusCode)
	}
	if resp, _ := f.request(t, "/orders/x"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no credentials: %d", resp.StatusCode)
	}
	if f.forwarded.Load() != before {
		t.Fatal("a refused request reached the upstream")
	}
	resp, body = f.request(t, "/orders/x", "X-API-Key", "sekret-key", "X-Meridian-Subject", "root")
	_ = json.Unmarshal([]byte(body), &got)
	if resp.StatusCode != 200 || got["X-Meridian-Subject"] != "partner-a" || got["X-Meridian-Auth-Method"] != "api_key" {
		t.Fatalf("api key: %d upstream saw %v", resp.StatusCode, got)
	}
}
