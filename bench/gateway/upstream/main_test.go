package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"strings"
	"testing"
)

// TestTokenVerifiesWithJWK checks what a gateway will check: the token's
// header names the JWK's kid and alg, and its signature verifies with the
// public key rebuilt from the JWK alone.
func TestTokenVerifiesWithJWK(t *testing.T) {
	for _, alg := range []string{"RS256", "ES256"} {
		t.Run(alg, func(t *testing.T) {
			k, err := newKey(alg)
			if err != nil {
				t.Fatal(err)
			}
			tok, err := k.mint(map[string]any{"iss": Issuer, "aud": Audience, "exp": 4102444800})
			if err != nil {
				t.Fatal(err)
			}
			parts := strings.Split(tok, ".")
			if len(parts) != 3 {
				t.Fatalf("token has %d parts", len(parts))
			}
			dec := func(s string) []byte {
				b, err := base64.RawURLEncoding.DecodeString(s)
				if err != nil {
					t.Fatal(err)
				}
				return b
			}
			var hdr map[string]string
			if err := json.Unmarshal(dec(parts[0]), &hdr); err != nil {
				t.Fatal(err)
			}
			if hdr["kid"] != k.jwk["kid"] || hdr["alg"] != alg {
				t.Fatalf("header %v, jwk %v", hdr, k.jwk)
			}
			d := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
			sig := dec(parts[2])
			switch alg {
			case "RS256":
				pub := &rsa.PublicKey{N: new(big.Int).SetBytes(dec(k.jwk["n"])), E: int(new(big.Int).SetBytes(dec(k.jwk["e"])).Int64())}
				if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, d[:], sig); err != nil {
					t.Fatal(err)
				}
			case "ES256":
				pub := &ecdsa.PublicKey{Curve: elliptic.P256(), X: new(big.Int).SetBytes(dec(k.jwk["x"])), Y: new(big.Int).SetBytes(dec(k.jwk["y"]))}
				if len(sig) != 64 || !ecdsa.Verify(pub, d[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
					t.Fatal("ES256 signature does not verify")
				}
			}
			var claims map[string]any
			if err := json.Unmarshal(dec(parts[1]), &claims); err != nil || claims["iss"] != Issuer || claims["aud"] != Audience {
				t.Fatalf("claims %v (%v)", claims, err)
			}
		})
	}
}
