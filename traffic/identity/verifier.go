package identity

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/meridian-platform/meridian"
)

// Options are a Verifier's dependencies.
type Options struct {
	// HTTPClient fetches discovery documents and key sets. Nil uses
	// http.DefaultClient. Each fetch is bounded by the provider's
	// FetchTimeout whatever the client's own timeout.
	HTTPClient *http.Client
	// Logger receives key fetch outcomes. Nil discards them.
	Logger *slog.Logger
	// Now is the clock for token times and refresh intervals. Nil is
	// time.Now.
	Now func() time.Time
}

// Verifier authenticates requests by bearer JWT or API key. It is safe
// for concurrent use and holds no goroutines: keys are fetched on the
// goroutine of a call that needs them.
type Verifier struct {
	now           func() time.Time
	parser        *jwt.Parser
	providers     map[string]*provider // by issuer
	algs          []string             // every provider's, the parser's allow-list
	maxTokenBytes int                  // the largest of the providers'
	cache         *tokenCache          // nil when off
	apiKeys       []apiKey
	apiKeyHeader  string // canonical

	verifications atomic.Int64 // signature checks, for tests
}

type provider struct {
	name          string
	issuer        string
	algs          []string
	maxTokenBytes int
	leeway        time.Duration
	rolesClaim    string
	scopesClaim   string
	forward       []claimHeader
	validator     *jwt.Validator
	keys          *keySource
}

type apiKey struct {
	sum [sha256.Size]byte
	id  *Identity
}

// maxAPIKeyBytes: longer values are refused without hashing them.
const maxAPIKeyBytes = 1 << 10

// hashPrefix starts every configured API key hash.
const hashPrefix = "sha256:"

// New checks cfg (see Config.Validate) and builds a Verifier. It makes no
// network call: keys are fetched when the first token needs them, or by
// Prefetch.
func New(cfg Config, opts Options) (*Verifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = http.DefaultClient
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	v := &Verifier{
		now:          opts.Now,
		providers:    make(map[string]*provider, len(cfg.JWT)),
		apiKeyHeader: http.CanonicalHeaderKey(cmpOrString(cfg.APIKeyHeader, DefaultAPIKeyHeader)),
	}
	var union []string
	for _, pc := range cfg.JWT {
		p := newProvider(pc, opts)
		v.providers[p.issuer] = p
		v.maxTokenBytes = max(v.maxTokenBytes, p.maxTokenBytes)
		for _, a := range p.algs {
			if !slices.Contains(union, a) {
				union = append(union, a)
			}
		}
	}
	// The parser refuses any alg outside the union before a key is looked
	// up; keyfunc then holds each token to its own provider's list.
	// Strict decoding refuses non-canonical base64, so one token has one
	// spelling; json.Number keeps large numeric claims exact.
	v.parser = jwt.NewParser(jwt.WithValidMethods(union), jwt.WithoutClaimsValidation(), jwt.WithStrictDecoding(), jwt.WithJSONNumber())
	v.algs = union
	if size := cmpOrInt(cfg.TokenCacheSize, DefaultTokenCacheSize); size > 0 && len(cfg.JWT) > 0 {
		v.cache = newTokenCache(size)
	}
	for _, k := range cfg.APIKeys {
		sum, _ := parseHash(k.Hash)
		id := &Identity{
			Method:   MethodAPIKey,
			Provider: k.Name,
			Subject:  cmpOrString(k.Subject, k.Name),
			Roles:    slices.Clone(k.Roles),
			Scopes:   slices.Clone(k.Scopes),
		}
		id.prepare(nil)
		v.apiKeys = append(v.apiKeys, apiKey{sum: sum, id: id})
	}
	return v, nil
}

func newProvider(c JWTProvider, opts Options) *provider {
	algs := c.Algorithms
	if len(algs) == 0 {
		algs = defaultAlgorithms
	}
	p := &provider{
		name:          c.Name,
		issuer:        c.Issuer,
		algs:          slices.Clone(algs),
		maxTokenBytes: cmpOrInt(c.MaxTokenBytes, DefaultMaxTokenBytes),
		leeway:        cmpOr(c.Leeway.D(), DefaultLeeway),
		rolesClaim:    cmpOrString(c.RolesClaim, DefaultRolesClaim),
		scopesClaim:   c.ScopesClaim,
		forward:       claimHeaders(c.ForwardClaims),
	}
	// Signatures are checked first; this validator then checks the
	// claims against the provider's own rules. exp is required: a token
	// that never expires cannot be revoked, and the cache bounds entries
	// by it.
	p.validator = jwt.NewValidator(
		jwt.WithIssuer(c.Issuer),
		jwt.WithAudience(c.Audiences...),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(p.leeway),
		jwt.WithTimeFunc(opts.Now),
	)
	p.keys = &keySource{
		provider:     c.Name,
		issuer:       c.Issuer,
		jwksURL:      c.JWKSURL,
		discoveryURL: c.OIDCDiscovery,
		allowHTTP:    c.AllowHTTP,
		client:       opts.HTTPClient,
		log:          opts.Logger,
		now:          opts.Now,
		minRefresh:   cmpOr(c.MinRefreshInterval.D(), DefaultMinRefreshInterval),
		ttl:          cmpOr(c.CacheTTL.D(), DefaultCacheTTL),
		timeout:      cmpOr(c.FetchTimeout.D(), DefaultFetchTimeout),
	}
	return p
}

// The reasons Authenticate gives for refusing a credential: short, fixed,
// never echoing the credential.
var (
	errTokenTooLarge = unauthorized("token too large")
	errMalformed     = unauthorized("malformed token")
	errAlgorithm     = unauthorized("token signing algorithm not accepted")
	errKeyMismatch   = unauthorized("token signing algorithm does not match its key")
	errCritical      = unauthorized("token has critical header parameters")
	errIssuer        = unauthorized("token issuer not trusted")
	errUnknownKey    = unauthorized("token signing key unknown")
	errSignature     = unauthorized("token signature invalid")
	errExpired       = unauthorized("token expired")
	errNotYetValid   = unauthorized("token not valid yet")
	errIssuedFuture  = unauthorized("token issued in the future")
	errAudience      = unauthorized("token not meant for this audience")
	errClaims        = unauthorized("token claims invalid")
	errNoSubject     = unauthorized("token subject missing or invalid")
	errAPIKey        = unauthorized("API key invalid")
	errTwoBearers    = unauthorized("more than one bearer token")
	errAmbiguous     = unauthorized("both a bearer token and an API key")
)

func unauthorized(reason string) *meridian.Error {
	return &meridian.Error{Code: meridian.CodeUnauthorized, Message: reason}
}

// Authenticate returns who sent r. A request with no credentials that
// the Verifier reads (a bearer token when JWT providers are configured, the
// API key header when API keys are) is anonymous: nil, nil. A credential
// that fails is a *meridian.Error with CodeUnauthorized and a short reason
// (answer 401 with Challenge(err)); keys that cannot be fetched, with none
// cached, are CodeUnavailable (answer 503). Authorization headers of other
// schemes are not read. The returned Identity is shared and read-only.
func (v *Verifier) Authenticate(ctx context.Context, r *http.Request) (*Identity, error) {
	var token string
	var hasToken bool
	if len(v.providers) > 0 {
		for _, h := range r.Header["Authorization"] {
			scheme, rest, _ := strings.Cut(h, " ")
			if !strings.EqualFold(scheme, "Bearer") {
				continue
			}
			if hasToken {
				return nil, errTwoBearers
			}
			token, hasToken = strings.TrimSpace(rest), true
		}
	}
	var key string
	var hasKey bool
	if len(v.apiKeys) > 0 {
		switch vals := r.Header[v.apiKeyHeader]; len(vals) {
		case 0:
		case 1:
			key, hasKey = vals[0], true
		default:
			return nil, errAPIKey
		}
	}
	switch {
	case hasToken && hasKey:
		return nil, errAmbiguous
	case hasToken:
		return v.VerifyToken(ctx, token)
	case hasKey:
		return v.verifyAPIKey(key)
	}
	return nil, nil
}

// VerifyToken verifies a bearer token taken from elsewhere than an HTTP
// request (gRPC metadata, say), with Authenticate's results.
func (v *Verifier) VerifyToken(ctx context.Context, token string) (*Identity, error) {
	switch {
	case len(v.providers) == 0:
		return nil, errIssuer
	case token == "":
		return nil, errMalformed
	case len(token) > v.maxTokenBytes:
		return nil, errTokenTooLarge
	}
	now := v.now()
	if v.cache != nil {
		if id, err, ok := v.cache.get(token, now); ok {
			return id, err
		}
	}
	id, entry, err := v.verify(ctx, token)
	if err != nil {
		return nil, err
	}
	if v.cache != nil {
		v.cache.put(token, entry, now)
	}
	return id, nil
}

// verify checks token's signature and claims.
func (v *Verifier) verify(ctx context.Context, token string) (*Identity, *cachedToken, error) {
	v.verifications.Add(1)
	var (
		p   *provider
		key *publicKey
	)
	claims := jwt.MapClaims{}
	t, err := v.parser.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		if _, ok := t.Header["crit"]; ok {
			// RFC 7515 §4.1.11: extensions marked critical must be
			// understood; this verifier understands none.
			return nil, errCritical
		}
		iss, _ := claims["iss"].(string)
		if p = v.providers[iss]; p == nil {
			return nil, errIssuer
		}
		if len(token) > p.maxTokenBytes {
			return nil, errTokenTooLarge
		}
		alg := t.Method.Alg()
		if !slices.Contains(p.algs, alg) {
			return nil, errAlgorithm
		}
		kid, ok := t.Header["kid"].(string)
		if !ok && t.Header["kid"] != nil {
			return nil, errMalformed
		}
		var err error
		key, err = p.key(ctx, t, kid, alg)
		if err != nil {
			return nil, err
		}
		return key.pub, nil
	})
	if err != nil {
		return nil, nil, v.reason(t, err)
	}
	if err := p.validator.Validate(claims); err != nil {
		return nil, nil, claimsReason(err)
	}
	// The subject travels in a header: one with control characters would
	// make the upstream request invalid.
	sub, _ := claims["sub"].(string)
	if !validName(sub, "") {
		return nil, nil, errNoSubject
	}
	id := &Identity{
		Method:   MethodJWT,
		Provider: p.name,
		Subject:  sub,
		Issuer:   p.issuer,
		Claims:   claims,
	}
	if r, ok := lookupClaim(claims, p.rolesClaim); ok {
		id.Roles = claimList(r, " ,")
	}
	s, ok := lookupClaim(claims, p.scopesClaim)
	if p.scopesClaim == "" {
		if s, ok = claims["scope"]; !ok {
			s, ok = claims["scp"]
		}
	}
	if ok {
		id.Scopes = claimList(s, " ")
	}
	id.prepare(p.forward)

	e := &cachedToken{id: id, notBefore: math.MinInt64, key: key, src: p.keys}
	exp, _ := claims.GetExpirationTime() // required and checked by the validator
	e.notAfter = unixNano(exp.Add(p.leeway))
	if nbf, _ := claims.GetNotBefore(); nbf != nil {
		e.notBefore = unixNano(nbf.Add(-p.leeway))
	}
	return id, e, nil
}

// unixNano is t in Unix nanoseconds, saturated outside the years
// 1678-2262 that int64 nanoseconds hold (a token may say exp=1e12).
func unixNano(t time.Time) int64 {
	switch {
	case t.After(time.Unix(0, math.MaxInt64)):
		return math.MaxInt64
	case t.Before(time.Unix(0, math.MinInt64)):
		return math.MinInt64
	}
	return t.UnixNano()
}

// key finds the key for a token of alg: by kid, or for a token without
// one, the only key of the set that can verify alg (or, of several, the
// one whose signature check passes). An unknown kid or no candidate
// refreshes the key set, within the rate limit.
func (p *provider) key(ctx context.Context, t *jwt.Token, kid, alg string) (*publicKey, error) {
	if kid != "" {
		snap, err := p.keys.keys(ctx, func(s *keySnapshot) bool { return s.byKID[kid] != nil })
		if err != nil {
			return nil, err
		}
		k := snap.byKID[kid]
		switch {
		case k == nil:
			return nil, errUnknownKey
		case !k.allows(alg):
			return nil, errKeyMismatch
		}
		return k, nil
	}
	fits := func(s *keySnapshot) bool {
		return slices.ContainsFunc(s.keys, func(k *publicKey) bool { return k.allows(alg) })
	}
	snap, err := p.keys.keys(ctx, fits)
	if err != nil {
		return nil, err
	}
	var candidates []*publicKey
	for _, k := range snap.keys {
		if k.allows(alg) {
			candidates = append(candidates, k)
		}
	}
	switch len(candidates) {
	case 0:
		return nil, errUnknownKey
	case 1:
		return candidates[0], nil
	}
	signed := t.Raw[:strings.LastIndexByte(t.Raw, '.')]
	for _, k := range candidates {
		if t.Method.Verify(signed, t.Signature, k.pub) == nil {
			return k, nil
		}
	}
	return nil, errSignature
}

// reason maps a parse error to the reason given to the caller.
func (v *Verifier) reason(t *jwt.Token, err error) error {
	var me *meridian.Error
	switch {
	case errors.As(err, &me): // from keyfunc
		return me
	case errors.Is(err, jwt.ErrTokenMalformed):
		return errMalformed
	case t == nil || t.Method == nil || !slices.Contains(v.algs, t.Method.Alg()):
		// no alg, one the library does not know, or one WithValidMethods
		// refused before any key was looked up
		return errAlgorithm
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return errSignature
	}
	return errMalformed
}

// claimsReason maps a claims validation error, which may hold several, to
// one reason.
func claimsReason(err error) error {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return errExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return errNotYetValid
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return errIssuedFuture
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return errAudience
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return errIssuer
	}
	return errClaims
}

// verifyAPIKey finds the key among the configured hashes, comparing with
// every one in constant time so that neither which key matched nor how
// much of a hash did shows in the timing.
func (v *Verifier) verifyAPIKey(key string) (*Identity, error) {
	if key == "" || len(key) > maxAPIKeyBytes {
		return nil, errAPIKey
	}
	sum := sha256.Sum256([]byte(key))
	match := -1
	for i := range v.apiKeys {
		eq := subtle.ConstantTimeCompare(sum[:], v.apiKeys[i].sum[:])
		match = subtle.ConstantTimeSelect(eq, i, match)
	}
	if match < 0 {
		return nil, errAPIKey
	}
	return v.apiKeys[match].id, nil
}

// HashAPIKey is the Hash to configure for key: "sha256:" and its hex
// SHA-256.
func HashAPIKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hashPrefix + hex.EncodeToString(sum[:])
}

// Forward prepares h, the headers of a request about to go upstream:
// it strips every client-sent identity header (StripHeaders) and, when
// id is not nil, writes id with the claims its provider forwards. Call it
// on every forwarded request, authenticated or not.
func (v *Verifier) Forward(h http.Header, id *Identity) {
	StripHeaders(h)
	if id == nil {
		return
	}
	w := headerWriter{h: h, vals: make([]string, 0, 6+len(id.forward))}
	id.writeHeaders(&w)
	for _, c := range id.forward {
		if val, ok := claimValue(id.Claims[c.claim]); ok {
			w.set(c.header, val)
		}
	}
}

// Prefetch fetches the keys of every provider that has none yet, within
// the rate limit, and reports those still without keys (CodeUnavailable,
// joined). A gateway may call it at start so that the first requests find
// keys cached and readiness reflects the providers; Authenticate does not
// need it.
func (v *Verifier) Prefetch(ctx context.Context) error {
	var errs []error
	for _, p := range v.providers {
		if _, err := p.keys.keys(ctx, func(*keySnapshot) bool { return true }); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func cmpOrString(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func cmpOrInt(n, def int) int {
	if n == 0 {
		return def
	}
	return n
}
