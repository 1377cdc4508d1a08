// Command upstream is the server behind every proxy in bench/gateway: it
// answers every request but /jwks.json with the same small body, serves
// the JWKS of a key it makes at start on /jwks.json, and writes a JWT
// signed with that key to -token-file, for the gateway's full chain. It
// also takes OTLP/HTTP trace exports on /v1/traces and drops them, and
// counts the connections it accepts (GET /conns).
//
// The token is RS256 over a 2048-bit key by default: verifying RS256 costs
// Go about a third of ES256 (P-256), so the gateway's figure carries the
// cheaper of the two. -alg ES256 signs with P-256 instead.
//
// Run it with GOMAXPROCS=1 and pinned to a core (the benchmark does).
package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/meridian-platform/meridian/bench/internal/benchenv"
)

func main() { benchenv.Main("upstream", run) }

// Body is what the upstream answers: small, so that the benchmark
// measures the proxies' per-request work rather than copying.
const Body = "hello from the upstream\n"

// The token's claims, as the gateway's routes file for the full chain
// expects them.
const (
	Issuer   = "https://bench.local"
	Audience = "bench"
	Subject  = "bench-client"
	KeyID    = "bench-1"
)

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("upstream", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		listen    = fs.String("listen", "127.0.0.1:0", "address to serve on")
		alg       = fs.String("alg", "RS256", "signing algorithm of the JWKS key and the token: RS256 or ES256")
		tokenFile = fs.String("token-file", "", "where to write the signed token (empty: print it)")
		ttl       = fs.Duration("token-ttl", 10*365*24*time.Hour, "the token's lifetime (exp - iat)")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	k, err := newKey(*alg)
	if err != nil {
		return err
	}
	now := time.Now()
	token, err := k.mint(map[string]any{
		"iss": Issuer, "aud": Audience, "sub": Subject,
		"iat": now.Unix(), "nbf": now.Add(-time.Minute).Unix(), "exp": now.Add(*ttl).Unix(),
	})
	if err != nil {
		return err
	}
	jwks, err := json.Marshal(map[string]any{"keys": []any{k.jwk}})
	if err != nil {
		return err
	}

	// Listen before writing the token, so that a caller who waits for the
	// token file knows the port is bound.
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	if *tokenFile != "" {
		if err := os.WriteFile(*tokenFile, []byte(token), 0o600); err != nil {
			return err
		}
	} else {
		fmt.Fprintln(stdout, token)
	}
	fmt.Fprintf(stdout, "listening on %s\n", ln.Addr())

	body := []byte(Body)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /jwks.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(jwks)
	})
	// An OTLP/HTTP receiver that keeps nothing, so that a gateway tracing a
	// share of its requests exports them (its exporter's cost is part of
	// tracing's); GET tells how many batches arrived.
	var exports atomic.Int64
	mux.HandleFunc("POST /v1/traces", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		exports.Add(1)
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK) // an empty ExportTraceServiceResponse
	})
	mux.HandleFunc("GET /v1/traces", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, exports.Load())
	})
	// How many connections it has accepted, this request's included: a
	// proxy that keeps its upstream connections alive opens none while it
	// is measured.
	var conns atomic.Int64
	mux.HandleFunc("GET /conns", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, conns.Load())
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h["Content-Type"] = []string{"text/plain"}
		_, _ = w.Write(body)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 10 * time.Minute,
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		}}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

// key signs tokens and describes itself as a JWK.
type key struct {
	alg  string
	sign func(digest []byte) ([]byte, error)
	jwk  map[string]string
}

func newKey(alg string) (*key, error) {
	b64 := base64.RawURLEncoding.EncodeToString
	switch alg {
	case "RS256":
		pk, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, err
		}
		return &key{
			alg: alg,
			sign: func(d []byte) ([]byte, error) {
				return rsa.SignPKCS1v15(rand.Reader, pk, crypto.SHA256, d)
			},
			jwk: map[string]string{
				"kty": "RSA", "use": "sig", "alg": alg, "kid": KeyID,
				"n": b64(pk.N.Bytes()), "e": b64(big.NewInt(int64(pk.E)).Bytes()),
			},
		}, nil
	case "ES256":
		pk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		pub, err := pk.PublicKey.Bytes() // 0x04 || X || Y, 32 bytes each
		if err != nil {
			return nil, err
		}
		return &key{
			alg: alg,
			sign: func(d []byte) ([]byte, error) {
				r, s, err := ecdsa.Sign(rand.Reader, pk, d)
				if err != nil {
					return nil, err
				}
				// JWS (RFC 7518 §3.4): R and S as 32-byte big-endian
				// integers, concatenated; not ASN.1.
				sig := make([]byte, 64)
				r.FillBytes(sig[:32])
				s.FillBytes(sig[32:])
				return sig, nil
			},
			jwk: map[string]string{
				"kty": "EC", "use": "sig", "alg": alg, "kid": KeyID, "crv": "P-256",
				"x": b64(pub[1:33]), "y": b64(pub[33:]),
			},
		}, nil
	}
	return nil, fmt.Errorf("-alg %q: want RS256 or ES256", alg)
}

// mint returns a compact JWS (RFC 7515 §7.1) of claims.
func (k *key) mint(claims map[string]any) (string, error) {
	h, err := json.Marshal(map[string]string{"alg": k.alg, "typ": "JWT", "kid": KeyID})
	if err != nil {
		return "", err
	}
	c, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	b64 := base64.RawURLEncoding.EncodeToString
	signing := b64(h) + "." + b64(c)
	d := sha256.Sum256([]byte(signing))
	sig, err := k.sign(d[:])
	if err != nil {
		return "", err
	}
	return signing + "." + b64(sig), nil
}
