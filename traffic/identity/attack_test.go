package identity

import (
	"context"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/meridian-platform/meridian"
)

// TestAttacks: every forged, stale, misdirected or malformed token is
// refused with CodeUnauthorized, for the reason meant to catch it, and
// the error never echoes the token.
func TestAttacks(t *testing.T) {
	good := rsKey("k1")
	ec := esKey("e1")
	idp := newIdP(t, good, ec)
	clk := newClock()

	pubDER, err := x509.MarshalPKIXPublicKey(good.priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	pubJWK, err := json.Marshal(good.jwk())
	if err != nil {
		t.Fatal(err)
	}
	hmac := func(secret []byte) func(*testing.T) string {
		return func(t *testing.T) string {
			tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims(idp, clk))
			tok.Header["kid"] = good.kid
			s, err := tok.SignedString(secret)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
	}
	with := func(k testKey, change func(jwt.MapClaims)) func(*testing.T) string {
		return func(t *testing.T) string {
			c := claims(idp, clk)
			change(c)
			return sign(t, k, c)
		}
	}
	// rewrite replaces one segment of a good token, keeping the others.
	rewrite := func(seg int, change func(map[string]any)) func(*testing.T) string {
		return func(t *testing.T) string {
			parts := strings.Split(sign(t, good, claims(idp, clk)), ".")
			raw, err := base64.RawURLEncoding.DecodeString(parts[seg])
			if err != nil {
				t.Fatal(err)
			}
			m := map[string]any{}
			if err := json.Unmarshal(raw, &m); err != nil {
				t.Fatal(err)
			}
			change(m)
			raw, _ = json.Marshal(m)
			parts[seg] = base64.RawURLEncoding.EncodeToString(raw)
			return strings.Join(parts, ".")
		}
	}
	withHeader := func(k testKey, set map[string]any) func(*testing.T) string {
		return func(t *testing.T) string {
			tok := jwt.NewWithClaims(k.method(), claims(idp, clk))
			tok.Header["kid"] = k.kid
			for h, v := range set {
				tok.Header[h] = v
			}
			s, err := tok.SignedString(k.priv)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
	}
	attacker := testKey{kid: "k1", alg: "RS256", priv: rsaB()}
	ghost := testKey{kid: "ghost", alg: "RS256", priv: rsaB()}

	cases := []struct {
		name     string
		token    func(*testing.T) string
		want     error
		provider func(*JWTProvider)
	}{
		{name: "alg none", want: errAlgorithm, token: func(t *testing.T) string {
			tok := jwt.NewWithClaims(jwt.SigningMethodNone, claims(idp, clk))
			tok.Header["kid"] = good.kid
			s, err := tok.SignedString(jwt.UnsafeAllowNoneSignatureType)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}},
		{name: "alg None in other case", want: errAlgorithm, token: rewrite(0, func(h map[string]any) { h["alg"] = "None" })},
		{name: "HS256 keyed with the RSA public key DER", want: errAlgorithm, token: hmac(pubDER)},
		{name: "HS256 keyed with the RSA public key PEM", want: errAlgorithm, token: hmac(pubPEM)},
		{name: "HS256 keyed with the public JWK", want: errAlgorithm, token: hmac(pubJWK)},
		{name: "expired", want: errExpired, token: with(good, func(c jwt.MapClaims) { c["exp"] = clk.Now().Add(-time.Hour).Unix() })},
		{name: "expired just past the leeway", want: errExpired, token: with(good, func(c jwt.MapClaims) { c["exp"] = clk.Now().Add(-31 * time.Second).Unix() })},
		{name: "not yet valid", want: errNotYetValid, token: with(good, func(c jwt.MapClaims) { c["nbf"] = clk.Now().Add(time.Hour).Unix() })},
		{name: "issued in the future", want: errIssuedFuture, token: with(good, func(c jwt.MapClaims) { c["iat"] = clk.Now().Add(time.Hour).Unix() })},
		{name: "no exp", want: errClaims, token: with(good, func(c jwt.MapClaims) { delete(c, "exp") })},
		{name: "exp of the wrong type", want: errClaims, token: with(good, func(c jwt.MapClaims) { c["exp"] = "tomorrow" })},
		{name: "wrong aud", want: errAudience, token: with(good, func(c jwt.MapClaims) { c["aud"] = []string{"billing", "search"} })},
		{name: "no aud", want: errClaims, token: with(good, func(c jwt.MapClaims) { delete(c, "aud") })},
		{name: "wrong iss", want: errIssuer, token: with(good, func(c jwt.MapClaims) { c["iss"] = idp.issuer() + "/evil" })},
		{name: "no iss", want: errIssuer, token: with(good, func(c jwt.MapClaims) { delete(c, "iss") })},
		{name: "no sub", want: errNoSubject, token: with(good, func(c jwt.MapClaims) { delete(c, "sub") })},
		{name: "sub with a line break", want: errNoSubject, token: with(good, func(c jwt.MapClaims) { c["sub"] = "ada\r\nX-Meridian-Roles: admin" })},
		{name: "unknown kid, still unknown after a refresh", want: errUnknownKey, token: func(t *testing.T) string { return sign(t, ghost, claims(idp, clk)) }},
		{name: "key in the jwk header", want: errUnknownKey, token: withHeader(ghost, map[string]any{"jwk": ghost.jwk()})},
		{name: "key set in the jku header", want: errUnknownKey, token: withHeader(ghost, map[string]any{"jku": "https://evil.example/jwks"})},
		{name: "kid not a string", want: errMalformed, token: withHeader(good, map[string]any{"kid": 7})},
		{name: "critical header", want: errCritical, token: withHeader(good, map[string]any{"crit": []string{"exp"}, "exp": 1})},
		{name: "tampered payload", want: errSignature, token: rewrite(1, func(c map[string]any) { c["sub"] = "admin" })},
		{name: "tampered payload: roles added", want: errSignature, token: rewrite(1, func(c map[string]any) { c["roles"] = []string{"root"} })},
		{name: "tampered header: field added", want: errSignature, token: rewrite(0, func(h map[string]any) { h["typ"] = "at+jwt" })},
		{name: "tampered header: RS256 relabelled PS256, the key's alg being RS256", want: errKeyMismatch, token: rewrite(0, func(h map[string]any) { h["alg"] = "PS256" })},
		{name: "tampered header: kid of another key", want: errKeyMismatch, token: rewrite(0, func(h map[string]any) { h["kid"] = ec.kid })},
		{name: "signature from another key with the same kid", want: errSignature, token: func(t *testing.T) string { return sign(t, attacker, claims(idp, clk)) }},
		{name: "signature stripped", want: errSignature, token: func(t *testing.T) string {
			s := sign(t, good, claims(idp, clk))
			return s[:strings.LastIndexByte(s, '.')+1]
		}},
		{name: "signature base64 not canonical", want: errMalformed, token: func(t *testing.T) string {
			// The last character of a 256-byte signature carries 4 unused
			// bits; setting one spells the same bytes another way.
			s := []byte(sign(t, good, claims(idp, clk)))
			c := s[len(s)-1]
			i := strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", c)
			s[len(s)-1] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[i^1]
			return string(s)
		}},
		{name: "ES256 token under an RSA kid", want: errKeyMismatch, token: func(t *testing.T) string {
			return sign(t, testKey{kid: good.kid, alg: "ES256", priv: mustEC(elliptic.P256())}, claims(idp, clk))
		}},
		{name: "algorithm the provider does not allow", want: errAlgorithm,
			provider: func(p *JWTProvider) { p.Algorithms = []string{"RS256"} },
			token:    func(t *testing.T) string { return sign(t, ec, claims(idp, clk)) }},
		{name: "oversized token", want: errTokenTooLarge, token: with(good, func(c jwt.MapClaims) { c["pad"] = strings.Repeat("x", DefaultMaxTokenBytes) })},
		{name: "garbage", want: errMalformed, token: func(*testing.T) string { return "not a token" }},
		{name: "garbage in three parts", want: errMalformed, token: func(*testing.T) string { return "a.b.c" }},
		{name: "four parts", want: errMalformed, token: func(t *testing.T) string { return sign(t, good, claims(idp, clk)) + ".x" }},
		{name: "header not JSON", want: errMalformed, token: func(t *testing.T) string {
			s := sign(t, good, claims(idp, clk))
			return base64.RawURLEncoding.EncodeToString([]byte("{alg")) + s[strings.IndexByte(s, '.'):]
		}},
		{name: "empty bearer", want: errMalformed, token: func(*testing.T) string { return "" }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := idp.provider()
			if tc.provider != nil {
				tc.provider(&p)
			}
			v := newVerifier(t, Config{JWT: []JWTProvider{p}}, idp, clk)
			token := tc.token(t)
			id, err := v.Authenticate(context.Background(), bearer(token))
			if id != nil {
				t.Fatalf("accepted as %+v", id)
			}
			wantCode(t, err, meridian.CodeUnauthorized)
			if !errors.Is(err, tc.want) {
				t.Fatalf("refused for %q, want %q", err, tc.want)
			}
			if !strings.HasPrefix(Challenge(err), `Bearer error="invalid_token"`) {
				t.Errorf("challenge %q", Challenge(err))
			}
			if len(token) > 8 && strings.Contains(err.Error(), token[len(token)-8:]) {
				t.Errorf("error %q echoes the token", err)
			}
		})
	}
}

// TestOversizedTokenIsNotParsed: the size check comes before any decoding.
func TestOversizedTokenIsNotParsed(t *testing.T) {
	k := rsKey("k1")
	idp := newIdP(t, k)
	clk := newClock()
	v := newVerifier(t, Config{JWT: []JWTProvider{idp.provider()}}, idp, clk)
	_, err := v.Authenticate(context.Background(), bearer(strings.Repeat("a", DefaultMaxTokenBytes+1)))
	if !errors.Is(err, errTokenTooLarge) {
		t.Fatalf("err %v", err)
	}
	if n := v.verifications.Load(); n != 0 {
		t.Fatalf("%d verifications", n)
	}
	if n := idp.jwksHits.Load(); n != 0 {
		t.Fatalf("%d key set fetches", n)
	}
}
