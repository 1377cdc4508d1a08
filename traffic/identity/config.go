package identity

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/meridian-platform/meridian"
)

// Config says which credentials a Verifier accepts. The zero Config
// accepts none: Authenticate then reports every request as anonymous.
// It is decoded strictly by its embedder (unknown fields are errors) and
// checked by Validate; zero fields take the defaults documented on them.
type Config struct {
	// JWT lists the token issuers trusted. A token is matched to its
	// provider by its iss claim, so issuers are unique.
	JWT []JWTProvider `json:"jwt,omitempty"`
	// APIKeys lists the API keys accepted, by hash.
	APIKeys []APIKey `json:"api_keys,omitempty"`
	// APIKeyHeader is the request header that carries an API key. Default
	// X-API-Key. Read only when APIKeys is not empty.
	APIKeyHeader string `json:"api_key_header,omitempty"`
	// TokenCacheSize bounds the verified-token cache, in tokens. Default
	// 10,000; -1 turns the cache off (every request verifies a signature).
	TokenCacheSize int `json:"token_cache_size,omitempty"`
}

// JWTProvider is one trusted token issuer and how to get its keys.
type JWTProvider struct {
	// Name identifies the provider in X-Meridian-Auth-Provider and in
	// logs: 1-64 letters, digits and _ . -. Required, unique.
	Name string `json:"name"`
	// Issuer is compared exactly with the token's iss claim. Required,
	// unique across providers.
	Issuer string `json:"issuer"`
	// Audiences: the token's aud must hold at least one of them. Required,
	// since a token meant for another service of the same issuer would
	// otherwise pass.
	Audiences []string `json:"audiences"`
	// JWKSURL is where the provider publishes its JSON Web Key Set.
	// Exactly one of JWKSURL and OIDCDiscovery is given. https, or http
	// to a loopback host or with AllowHTTP.
	JWKSURL string `json:"jwks_url,omitempty"`
	// OIDCDiscovery is the URL of the provider's OpenID Connect discovery
	// document, normally Issuer + "/.well-known/openid-configuration"; its
	// jwks_uri names the key set and its issuer must equal Issuer.
	OIDCDiscovery string `json:"oidc_discovery,omitempty"`
	// AllowHTTP permits plain-http key URLs to any host. Keys fetched over
	// http can be replaced by anyone on the path, so leave it off outside
	// a trusted network.
	AllowHTTP bool `json:"allow_http,omitempty"`
	// Algorithms allowed in the token's alg header: any of RS256, RS384,
	// RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA. Default
	// RS256, ES256, EdDSA, PS256. none and HMAC (HS*) are refused: see the
	// package documentation.
	Algorithms []string `json:"algorithms,omitempty"`
	// Leeway is the clock skew tolerated on exp, nbf and iat. Default 30s
	// (zero takes it; 1s is about the least that makes sense), at most 5m.
	Leeway meridian.Duration `json:"leeway,omitempty"`
	// RolesClaim is the claim that lists the caller's roles: a name or a
	// dotted path into nested objects ("realm_access.roles"), holding a
	// string (split at spaces and commas) or an array of strings. Default
	// "roles".
	RolesClaim string `json:"roles_claim,omitempty"`
	// ScopesClaim is the claim that lists the granted scopes (a name or
	// dotted path), a space-separated string or an array. Default:
	// "scope", or "scp" when the token has no scope claim.
	ScopesClaim string `json:"scopes_claim,omitempty"`
	// ForwardClaims are top-level claims sent upstream as
	// X-Meridian-Claim-<Name> headers (see SetHeaders). Names are 1-64
	// letters, digits, _ and -; at most 32.
	ForwardClaims []string `json:"forward_claims,omitempty"`
	// MaxTokenBytes is the longest token accepted. Default 8 KiB, range
	// 512 B-64 KiB. The largest of all providers' limits is checked before
	// a token is decoded; the limit of the provider its iss names, before
	// its signature is checked.
	MaxTokenBytes int `json:"max_token_bytes,omitempty"`
	// MinRefreshInterval is the least time between two fetches of the key
	// set, however many tokens with unknown key ids arrive. Default 30s,
	// range 1s-1h.
	MinRefreshInterval meridian.Duration `json:"min_refresh_interval,omitempty"`
	// CacheTTL is how long fetched keys are used before the next
	// verification that needs them fetches them again (keys are still
	// used past it while the provider is unreachable). Default 10m, at
	// least MinRefreshInterval, at most 24h.
	CacheTTL meridian.Duration `json:"cache_ttl,omitempty"`
	// FetchTimeout bounds one fetch of the discovery document and key set
	// together. Default 5s, range 100ms-1m.
	FetchTimeout meridian.Duration `json:"fetch_timeout,omitempty"`
}

// APIKey is one accepted API key. The key itself is never configured,
// only its hash.
type APIKey struct {
	// Name identifies the key in X-Meridian-Auth-Provider and in logs:
	// 1-64 letters, digits and _ . -. Required, unique.
	Name string `json:"name"`
	// Hash is "sha256:" and the hex SHA-256 of the key, as HashAPIKey
	// makes it. Required, unique. Keys are random secrets, not passwords,
	// so an unsalted fast hash is enough: it hides the key from whoever
	// reads the config, and a guess still needs the key's full entropy.
	Hash string `json:"hash"`
	// Subject is the caller's identity upstream. Default Name.
	Subject string `json:"subject,omitempty"`
	// Roles and Scopes are granted to whoever presents the key.
	Roles  []string `json:"roles,omitempty"`
	Scopes []string `json:"scopes,omitempty"`
}

// Defaults and limits of Config and JWTProvider.
const (
	DefaultAPIKeyHeader       = "X-API-Key"
	DefaultTokenCacheSize     = 10_000
	MaxTokenCacheSize         = 1_000_000
	DefaultLeeway             = 30 * time.Second
	MaxLeeway                 = 5 * time.Minute
	DefaultRolesClaim         = "roles"
	DefaultMaxTokenBytes      = 8 << 10
	DefaultMinRefreshInterval = 30 * time.Second
	DefaultCacheTTL           = 10 * time.Minute
	DefaultFetchTimeout       = 5 * time.Second
)

// defaultAlgorithms are the algorithms of a provider that lists none.
var defaultAlgorithms = []string{"RS256", "ES256", "EdDSA", "PS256"}

// supportedAlgorithms maps each accepted alg to the key it needs.
var supportedAlgorithms = map[string]keyKind{
	"RS256": kindRSA, "RS384": kindRSA, "RS512": kindRSA,
	"PS256": kindRSA, "PS384": kindRSA, "PS512": kindRSA,
	"ES256": kindP256, "ES384": kindP384, "ES512": kindP521,
	"EdDSA": kindEd25519,
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)
var claimNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Validate checks every field and returns every problem found, joined
// (errors.Join), each a *meridian.Error with CodeInvalid whose Field is
// the path of the offending field ("jwt[0].jwks_url",
// "api_keys[2].hash"); nil when c is valid. It changes nothing.
func (c *Config) Validate() error {
	var v validator
	names := map[string]int{}
	issuers := map[string]int{}
	for i := range c.JWT {
		v.provider(i, &c.JWT[i], names, issuers)
	}
	names = map[string]int{}
	hashes := map[string]int{}
	for i := range c.APIKeys {
		v.apiKey(i, &c.APIKeys[i], names, hashes)
	}
	if h := c.APIKeyHeader; h != "" {
		switch {
		case !meridian.IsToken(h):
			v.add("api_key_header", "%q is not a header name", h)
		case isIdentityHeader(h):
			v.add("api_key_header", "%q is in the X-Meridian identity namespace, which is stripped from every request", h)
		case strings.EqualFold(h, "Authorization"):
			v.add("api_key_header", "Authorization carries bearer tokens; pick another header")
		}
	}
	if n := c.TokenCacheSize; n < -1 || n > MaxTokenCacheSize {
		v.add("token_cache_size", "%d is out of range 1-%d (0 for the default %d, -1 for no cache)", n, MaxTokenCacheSize, DefaultTokenCacheSize)
	}
	return v.err()
}

// provider checks c.JWT[i]. names and issuers map what earlier providers
// used to their index+1.
func (v *validator) provider(i int, p *JWTProvider, names, issuers map[string]int) {
	path := index("jwt", i)
	v.name(path+".name", p.Name, "jwt", i, names)
	switch {
	case p.Issuer == "":
		v.add(path+".issuer", "is required")
	case issuers[p.Issuer] > 0:
		v.add(path+".issuer", "%q is also the issuer of jwt[%d]: tokens are matched to providers by issuer", p.Issuer, issuers[p.Issuer]-1)
	default:
		issuers[p.Issuer] = i + 1
	}
	if len(p.Audiences) == 0 {
		v.add(path+".audiences", "is required: without it a token issued for any other service would be accepted")
	}
	for i, a := range p.Audiences {
		if a == "" {
			v.add(index(path+".audiences", i), "is empty")
		}
	}
	switch {
	case p.JWKSURL == "" && p.OIDCDiscovery == "":
		v.add(path+".jwks_url", "give jwks_url or oidc_discovery")
	case p.JWKSURL != "" && p.OIDCDiscovery != "":
		v.add(path+".oidc_discovery", "give jwks_url or oidc_discovery, not both")
	case p.JWKSURL != "":
		v.wrap(keyURL(path+".jwks_url", p.JWKSURL, p.AllowHTTP))
	default:
		v.wrap(keyURL(path+".oidc_discovery", p.OIDCDiscovery, p.AllowHTTP))
	}
	for i, alg := range p.Algorithms {
		field := index(path+".algorithms", i)
		switch {
		case strings.EqualFold(alg, "none"):
			v.add(field, "unsigned tokens are never accepted")
		case len(alg) > 2 && strings.EqualFold(alg[:2], "HS"):
			v.add(field, "%s is refused: HMAC uses one secret to sign and verify, so a gateway holding it could mint tokens, and a verifier that accepts it can be fooled with the public key as the secret", alg)
		case supportedAlgorithms[alg] == kindNone:
			v.add(field, "%q is not one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA", alg)
		case slices.Index(p.Algorithms, alg) < i:
			v.add(field, "%s is listed twice", alg)
		}
	}
	v.durRange(path+".leeway", p.Leeway, time.Nanosecond, MaxLeeway)
	v.claimPath(path+".roles_claim", p.RolesClaim)
	v.claimPath(path+".scopes_claim", p.ScopesClaim)
	if len(p.ForwardClaims) > 32 {
		v.add(path+".forward_claims", "has %d claims; the limit is 32", len(p.ForwardClaims))
	}
	headers := map[string]bool{}
	for i, c := range p.ForwardClaims {
		field := index(path+".forward_claims", i)
		switch h := claimHeaderName(c); {
		case !claimNameRE.MatchString(c):
			v.add(field, "%q is not a claim name that can be a header: use 1-64 letters, digits, _ and -", c)
		case headers[h]:
			v.add(field, "%q is forwarded twice (as %s)", c, h)
		default:
			headers[h] = true
		}
	}
	if n := p.MaxTokenBytes; n != 0 && (n < 512 || n > 64<<10) {
		v.add(path+".max_token_bytes", "%d is out of range 512-65536 (0 for the default %d)", n, DefaultMaxTokenBytes)
	}
	v.durRange(path+".min_refresh_interval", p.MinRefreshInterval, time.Second, time.Hour)
	v.durRange(path+".cache_ttl", p.CacheTTL, time.Second, 24*time.Hour)
	minRefresh := cmpOr(p.MinRefreshInterval.D(), DefaultMinRefreshInterval)
	if ttl := cmpOr(p.CacheTTL.D(), DefaultCacheTTL); ttl > 0 && ttl < minRefresh {
		v.add(path+".cache_ttl", "%s is shorter than min_refresh_interval (%s)", ttl, minRefresh)
	}
	v.durRange(path+".fetch_timeout", p.FetchTimeout, 100*time.Millisecond, time.Minute)
}

func (v *validator) apiKey(i int, k *APIKey, names, hashes map[string]int) {
	path := index("api_keys", i)
	v.name(path+".name", k.Name, "api_keys", i, names)
	switch _, err := parseHash(k.Hash); {
	case err != nil:
		v.add(path+".hash", "%v", err)
	case hashes[strings.ToLower(k.Hash)] > 0:
		v.add(path+".hash", "is also the hash of api_keys[%d]", hashes[strings.ToLower(k.Hash)]-1)
	default:
		hashes[strings.ToLower(k.Hash)] = i + 1
	}
	if k.Subject != "" && !validName(k.Subject, "") {
		v.add(path+".subject", "has control characters")
	}
	v.names(path+".roles", k.Roles, ",")
	v.names(path+".scopes", k.Scopes, " ")
}

// parseHash reads "sha256:<64 hex digits>".
func parseHash(s string) ([32]byte, error) {
	var sum [32]byte
	hexPart, ok := strings.CutPrefix(s, hashPrefix)
	switch {
	case s == "":
		return sum, errors.New("is required: \"sha256:\" and the hex SHA-256 of the key (HashAPIKey makes it)")
	case !ok:
		return sum, errors.New("must start with \"sha256:\" (the key itself is never configured; HashAPIKey makes the hash)")
	case len(hexPart) != 2*len(sum):
		return sum, fmt.Errorf("has %d hex digits after \"sha256:\"; a SHA-256 has 64", len(hexPart))
	}
	if _, err := hex.Decode(sum[:], []byte(hexPart)); err != nil {
		return sum, errors.New("is not hex after \"sha256:\"")
	}
	return sum, nil
}

// keyURL checks a key or discovery URL: absolute, https unless the host is
// a loopback address or allowHTTP.
func keyURL(field, raw string, allowHTTP bool) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return meridian.FieldError(field, "%q is not an absolute http(s) URL", raw)
	}
	if u.Scheme == "http" && !allowHTTP && !isLoopback(u.Hostname()) {
		return meridian.FieldError(field, "%q is plain http: keys fetched over it can be forged on the way; use https (or allow_http on a trusted network)", raw)
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// validator collects field errors, as traffic/policy's does.
type validator struct{ errs []error }

func (v *validator) add(field, format string, args ...any) {
	v.errs = append(v.errs, meridian.FieldError(field, format, args...))
}

func (v *validator) wrap(err error) {
	if err != nil {
		v.errs = append(v.errs, err)
	}
}

func (v *validator) err() error { return errors.Join(v.errs...) }

// name checks list[i]'s name; seen maps earlier names to their index+1.
func (v *validator) name(field, name, list string, i int, seen map[string]int) {
	switch {
	case name == "":
		v.add(field, "is required")
	case !nameRE.MatchString(name):
		v.add(field, "%q is not a valid name: use 1-64 letters, digits and _ . -, starting with a letter or digit", name)
	case seen[name] > 0:
		v.add(field, "%q is also the name of %s[%d]", name, list, seen[name]-1)
	default:
		seen[name] = i + 1
	}
}

// names checks a list of roles or scopes: each non-empty, without control
// characters or sep (the separator of its forwarded header).
func (v *validator) names(field string, list []string, sep string) {
	for i, s := range list {
		if !validName(s, sep+",") || strings.TrimSpace(s) != s {
			v.add(index(field, i), "%q must be non-empty, without surrounding space, control characters or commas", s)
		}
	}
}

func (v *validator) claimPath(field, path string) {
	if path == "" {
		return
	}
	for seg := range strings.SplitSeq(path, ".") {
		if seg == "" {
			v.add(field, "%q has an empty segment", path)
			return
		}
	}
}

// durRange checks a duration where zero means the default.
func (v *validator) durRange(field string, d meridian.Duration, lo, hi time.Duration) {
	if d != 0 && (d.D() < lo || d.D() > hi) {
		v.add(field, "%s is out of range %s-%s (0 for the default)", d, lo, hi)
	}
}

func index(field string, i int) string { return fmt.Sprintf("%s[%d]", field, i) }

func cmpOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}
