package identity

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/meridian-platform/meridian"
)

// keyKind is the kind of public key an algorithm needs.
type keyKind uint8

const (
	kindNone keyKind = iota
	kindRSA
	kindP256
	kindP384
	kindP521
	kindEd25519
)

// minRSABits: RFC 7518 §3.3 requires 2048-bit keys for RS*/PS*.
const minRSABits = 2048

// maxKeySetBytes bounds a discovery document or key set read from the
// network.
const maxKeySetBytes = 1 << 20

// publicKey is one usable key of a key set. Keys are immutable, and a
// refresh that finds the same kid with the same key keeps the old
// *publicKey, so a cached token can check that the key that verified it is
// still published with a pointer comparison.
type publicKey struct {
	kid  string
	alg  string // the JWK's alg member; "" allows any alg of its kind
	kind keyKind
	pub  crypto.PublicKey
}

// allows reports whether the key may verify a token of alg.
func (k *publicKey) allows(alg string) bool {
	return supportedAlgorithms[alg] == k.kind && (k.alg == "" || k.alg == alg)
}

// keySnapshot is one fetched key set; never modified once published.
type keySnapshot struct {
	byKID   map[string]*publicKey
	keys    []*publicKey
	fetched time.Time
}

func (s *keySnapshot) contains(k *publicKey) bool {
	if k.kid != "" {
		return s.byKID[k.kid] == k
	}
	for _, c := range s.keys {
		if c == k {
			return true
		}
	}
	return false
}

// keySource holds one provider's keys. Reads take an atomic snapshot; a
// refresh happens on the caller's goroutine, at most once per minRefresh,
// and concurrent callers that need one wait for the same fetch (a flight)
// or leave when their ctx ends. Nothing runs between calls.
type keySource struct {
	provider     string
	issuer       string
	jwksURL      string // fixed, or "" with discoveryURL
	discoveryURL string
	allowHTTP    bool
	client       *http.Client
	log          *slog.Logger
	now          func() time.Time
	minRefresh   time.Duration
	ttl          time.Duration
	timeout      time.Duration

	snap        atomic.Pointer[keySnapshot]
	lastAttempt atomic.Pointer[time.Time] // start of the last fetch; nil before the first

	inFlight atomic.Bool // a fetch is in progress: join it even when no new one may start

	mu         sync.Mutex
	flight     *flight // the fetch in progress, if any
	discovered string  // jwks_uri from the last discovery document read
}

type flight struct {
	done chan struct{}
	err  error
}

// mayFetch reports whether minRefresh has passed since the last attempt.
func (s *keySource) mayFetch(now time.Time) bool {
	last := s.lastAttempt.Load()
	return last == nil || now.Sub(*last) >= s.minRefresh
}

// keys returns a snapshot for which need reports true, fetching a new one
// if the current one is missing, older than the TTL or fails need, and the
// rate limit allows. It returns the newest snapshot it has even when that
// one still fails need (the caller then reports an unknown key), and an
// error only when it has none at all: CodeUnavailable.
func (s *keySource) keys(ctx context.Context, need func(*keySnapshot) bool) (*keySnapshot, error) {
	now := s.now()
	snap := s.snap.Load()
	if snap != nil && now.Sub(snap.fetched) < s.ttl && need(snap) {
		return snap, nil
	}
	if s.mayFetch(now) || s.inFlight.Load() {
		_ = s.refresh(ctx) // a failure is logged there; the old snapshot, if any, serves
		if fresh := s.snap.Load(); fresh != nil {
			snap = fresh
		}
	}
	if snap == nil {
		retry := s.minRefresh
		if last := s.lastAttempt.Load(); last != nil {
			retry = max(time.Second, s.minRefresh-now.Sub(*last))
		}
		return nil, &meridian.Error{
			Code:       meridian.CodeUnavailable,
			Message:    fmt.Sprintf("signing keys of provider %s are unavailable", s.provider),
			RetryAfter: retry,
		}
	}
	return snap, nil
}

// refresh fetches the key set unless a fetch is in flight (it then waits
// for that one, or for ctx) or one started less than minRefresh ago. The
// fetch runs on this goroutine, detached from ctx's cancellation so that
// the callers waiting on it are not failed by this caller leaving, and
// bounded by the fetch timeout. A failure keeps the previous snapshot and
// is logged here, once per attempt.
func (s *keySource) refresh(ctx context.Context) error {
	s.mu.Lock()
	if f := s.flight; f != nil {
		s.mu.Unlock()
		select {
		case <-f.done:
			return f.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	now := s.now()
	if !s.mayFetch(now) {
		s.mu.Unlock()
		return nil
	}
	f := &flight{done: make(chan struct{})}
	s.flight = f
	s.inFlight.Store(true)
	s.lastAttempt.Store(&now)
	s.mu.Unlock()

	// Released however fetch ends, a panic included: a flight left open
	// would hold every later caller until its ctx ends.
	var snap *keySnapshot
	err := errors.New("key fetch did not complete")
	defer func() {
		s.mu.Lock()
		if err == nil {
			s.snap.Store(snap)
		}
		f.err = err
		s.flight = nil
		s.inFlight.Store(false)
		s.mu.Unlock()
		close(f.done)
	}()

	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
	defer cancel()
	snap, err = s.fetch(fctx)
	switch cur := s.snap.Load(); {
	case err == nil:
		s.log.DebugContext(ctx, "identity: signing keys fetched", "provider", s.provider, "keys", len(snap.keys))
	case cur != nil:
		s.log.WarnContext(ctx, "identity: signing keys refresh failed; using the cached keys", "provider", s.provider, "age", now.Sub(cur.fetched).Round(time.Second), "err", err)
	default:
		s.log.ErrorContext(ctx, "identity: signing keys unavailable", "provider", s.provider, "retry_in", s.minRefresh, "err", err)
	}
	return err
}

// fetch reads the discovery document (if configured) and the key set.
func (s *keySource) fetch(ctx context.Context) (*keySnapshot, error) {
	jwksURL := s.jwksURL
	if s.discoveryURL != "" {
		u, err := s.discover(ctx)
		s.mu.Lock()
		switch {
		case err == nil:
			s.discovered = u
		case s.discovered != "":
			s.log.WarnContext(ctx, "identity: discovery failed; using the last jwks_uri", "provider", s.provider, "err", err)
			u = s.discovered
		default:
			s.mu.Unlock()
			return nil, err
		}
		s.mu.Unlock()
		jwksURL = u
	}
	body, err := s.get(ctx, jwksURL)
	if err != nil {
		return nil, err
	}
	return s.parse(body)
}

func (s *keySource) discover(ctx context.Context) (string, error) {
	body, err := s.get(ctx, s.discoveryURL)
	if err != nil {
		return "", err
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return "", fmt.Errorf("discovery document: %w", err)
	}
	// OpenID Connect Discovery §4.3: the issuer must be exactly the one
	// the document was looked up for.
	if doc.Issuer != s.issuer {
		return "", fmt.Errorf("discovery document names issuer %q, not %q", doc.Issuer, s.issuer)
	}
	if doc.JWKSURI == "" {
		return "", errors.New("discovery document has no jwks_uri")
	}
	base, _ := url.Parse(s.discoveryURL)
	ref, err := url.Parse(doc.JWKSURI)
	if err != nil {
		return "", fmt.Errorf("discovery document: jwks_uri: %w", err)
	}
	u := base.ResolveReference(ref).String()
	if err := keyURL("jwks_uri", u, s.allowHTTP); err != nil {
		return "", fmt.Errorf("discovery document: %w", err)
	}
	return u, nil
}

func (s *keySource) get(ctx context.Context, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxKeySetBytes+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	if len(body) > maxKeySetBytes {
		return nil, fmt.Errorf("GET %s: more than %d bytes", u, maxKeySetBytes)
	}
	return body, nil
}

// parse reads a JWK Set. Keys it cannot use (other types, encryption keys,
// weak RSA, anything with private or symmetric material) are skipped, as
// RFC 7517 §5 asks; the set as a whole fails only if it is not a key set.
func (s *keySource) parse(body []byte) (*keySnapshot, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("key set: %w", err)
	}
	if set.Keys == nil {
		return nil, errors.New("key set has no keys member")
	}
	old := s.snap.Load()
	snap := &keySnapshot{byKID: make(map[string]*publicKey, len(set.Keys)), fetched: s.now()}
	for i, raw := range set.Keys {
		k, err := parseKey(raw)
		if err != nil {
			// Keys of other types or uses are normal in a shared key set;
			// a private key published is not.
			level := slog.LevelDebug
			if errors.Is(err, errPrivateKey) {
				level = slog.LevelWarn
			}
			s.log.Log(context.Background(), level, "identity: key skipped", "provider", s.provider, "index", i, "reason", err)
			continue
		}
		if k.kid != "" {
			if _, dup := snap.byKID[k.kid]; dup {
				s.log.Warn("identity: key skipped", "provider", s.provider, "index", i, "reason", "duplicate kid "+k.kid)
				continue
			}
		}
		if old != nil {
			k = old.same(k)
		}
		if k.kid != "" {
			snap.byKID[k.kid] = k
		}
		snap.keys = append(snap.keys, k)
	}
	if len(snap.keys) == 0 {
		s.log.Warn("identity: key set has no usable keys", "provider", s.provider, "published", len(set.Keys))
	}
	return snap, nil
}

// same returns s's key equal to k (same kid, alg and public key), or k.
func (s *keySnapshot) same(k *publicKey) *publicKey {
	for _, o := range s.keys {
		if o.kid == k.kid && o.alg == k.alg && o.kind == k.kind && o.pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(k.pub) {
			return o
		}
	}
	return k
}

// errPrivateKey: a published private or symmetric key is a provider's
// mistake, and verifying with it would trust anyone who read the key set.
var errPrivateKey = errors.New("private or symmetric key material in a public key set")

func parseKey(raw json.RawMessage) (*publicKey, error) {
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(raw); err != nil {
		return nil, err
	}
	if jwk.Use != "" && jwk.Use != "sig" {
		return nil, fmt.Errorf("use is %q, not sig", jwk.Use)
	}
	if !jwk.IsPublic() {
		return nil, errPrivateKey
	}
	k := &publicKey{kid: jwk.KeyID, alg: jwk.Algorithm, pub: jwk.Key}
	switch pub := jwk.Key.(type) {
	case *rsa.PublicKey:
		if pub.N.BitLen() < minRSABits {
			return nil, fmt.Errorf("RSA key of %d bits; at least %d are required", pub.N.BitLen(), minRSABits)
		}
		k.kind = kindRSA
	case *ecdsa.PublicKey:
		switch pub.Curve {
		case elliptic.P256():
			k.kind = kindP256
		case elliptic.P384():
			k.kind = kindP384
		case elliptic.P521():
			k.kind = kindP521
		default:
			return nil, errors.New("unsupported curve")
		}
	case ed25519.PublicKey:
		k.kind = kindEd25519
	default:
		return nil, fmt.Errorf("unsupported key type %T", jwk.Key)
	}
	if k.alg != "" && supportedAlgorithms[k.alg] != k.kind {
		return nil, fmt.Errorf("alg %q does not fit the key", k.alg)
	}
	return k, nil
}
