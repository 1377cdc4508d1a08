// Package identity is edge authentication for the gateway (and, later,
// the sidecar): it verifies a caller's bearer JWT or API key, turns it into
// an Identity, checks it against a route's Requirement, and forwards it
// upstream in headers the upstream can trust because the edge strips
// every client-sent copy of them.
//
// The gateway's use, per request:
//
//	id, err := v.Authenticate(ctx, r)      // nil, nil when no credentials
//	if err == nil {
//		err = route.Requirement.Allow(id)  // ErrNoCredentials for nil id
//	}
//	if err != nil {
//		if c := identity.Challenge(err); c != "" {
//			w.Header().Set("WWW-Authenticate", c)
//		}
//		problem.Write(w, r, log, err)          // 401, 403 or 503 by code
//		return
//	}
//	v.Forward(outreq.Header, id)           // strip, then set (also when id is nil)
//
// # Tokens
//
// A token is matched to its JWTProvider by its iss claim, so several
// issuers may be trusted at once. Its signature is checked with
// github.com/golang-jwt/jwt/v5 against a key from the provider's JSON Web
// Key Set, whose keys github.com/go-jose/go-jose/v4 decodes (it checks
// that EC points are on their curve and that an x5c chain matches its
// key); this package writes no cryptography. golang-jwt was chosen for
// its per-request cost: it decodes a token once, into the map the claims
// are read from, and its verify adds little to the signature check itself
// (see BenchmarkVerify, which prints the library alone beside this
// package's verify).
//
// Then iss must equal the provider's Issuer exactly, aud must hold one of
// its Audiences, exp must be present and not passed, nbf (if present)
// passed and iat (if present) not in the future, each with the provider's
// Leeway. sub must be a non-empty string. A token longer than
// MaxTokenBytes is refused before it is decoded (with several providers,
// the largest limit then, and its own provider's before the signature
// check), header parameters marked
// critical (crit) are refused since none is understood, and base64 must be
// canonical, so that one token has one spelling. Keys named by the token
// itself (jwk, jku, x5u, x5c headers) are never used: only the configured
// key set is trusted.
//
// # Why HMAC and none are refused
//
// alg is chosen by whoever made the token. Accepting "none" accepts
// unsigned tokens. Accepting HS256 next to RS256 is the classic key
// confusion: the verifier holds the provider's public key, and a library
// that lets the token pick the algorithm will check an HMAC keyed with that
// public key's bytes, which anyone can compute. HMAC at the edge would also
// mean the gateway holds the secret that mints tokens. So the allow-list
// (JWTProvider.Algorithms) admits only asymmetric algorithms, validation
// refuses none and HS* by name, the parser refuses any alg outside the
// providers' lists before looking up a key, a key is used only for
// algorithms of its type (an ES256 token naming an RSA key's kid, or an
// RS256 token naming a key published as PS256, is refused), and key sets
// are read for public keys only: a symmetric (oct) or private key published
// by mistake is skipped and logged.
//
// # Keys: fetched on use, rate limited, never in the background
//
// A provider's keys come from JWKSURL, or from the jwks_uri of its OpenID
// Connect discovery document (whose issuer must equal Issuer). New makes
// no network call; the first token that needs keys fetches them, on its
// own goroutine. After CacheTTL the next token that needs keys fetches
// them again, and a token whose kid is not in the set fetches at once —
// that is how a rotated-in key is picked up — but never more often than
// once per MinRefreshInterval: a flood of tokens with made-up kids costs
// the provider one request per interval. Concurrent callers that need a
// fetch wait for the one in flight (each can still leave when its ctx
// ends); the fetch runs detached from its caller's cancellation, bounded
// by FetchTimeout, so one caller leaving does not fail the others. That
// is singleflight's collapse written out with a ctx-aware wait, since
// singleflight.Do's waiters cannot leave and DoChan's fetch runs on a
// goroutine of its own. The Verifier holds no goroutines.
//
// When a fetch fails, keys already fetched go on being used, however old,
// and the failure is logged. With no keys at all, a token is answered with
// CodeUnavailable (503, Retry-After until the next fetch is allowed), not
// 401: the caller's token may be fine.
//
// # The verified-token cache
//
// The gateway's whole chain aims at about 30 µs of CPU per request, and
// one RS256 or ES256 signature check costs that or more on its own, while
// a client sends the same token for many requests. So, as Envoy's
// jwt_authn does with its jwt_cache, a token that verified is remembered
// by its exact string, and a later request with the same string skips the
// decoding and the signature check (BenchmarkAuthenticate: about 0.15 µs
// and no allocation for a hit, against 40-150 µs for a verify). The cache is bounded (Config.TokenCacheSize,
// default 10,000) and evicts without bookkeeping on hits: a full shard drops
// an expired entry or the soonest-expiring of a few sampled. Each use still
// checks exp and nbf, so an entry never outlives its token, and an entry is
// used only while the key that verified it is still published: a key
// withdrawn from the key set ends its tokens' entries at the next refresh.
// Failures are not cached.
//
// # API keys
//
// Config holds only "sha256:<hex>" of each key (HashAPIKey makes it), so
// reading the config does not reveal them. The key comes from the
// APIKeyHeader header (default X-API-Key); its hash is compared with every
// configured hash in constant time, so timing tells neither which key
// matched nor how close a guess came. Keys are random secrets, not
// passwords, so one fast hash is enough. A request that carries both a
// bearer token and an API key is refused rather than guessed at.
//
// # Roles and scopes
//
// Roles come from JWTProvider.RolesClaim (default "roles"; a dotted path
// such as "realm_access.roles" reads nested objects), as an array of
// strings or one string split at spaces and commas. Scopes come from
// "scope" (a space-separated string, RFC 8693) or, failing that, "scp"
// (an array, or Azure's string). Names that could not survive the
// forwarded header (a comma, a control character) are dropped. A
// Requirement admits a caller holding any of its Roles and all of its
// Scopes.
//
// # Headers sent upstream
//
//	X-Meridian-Subject        sub, or the API key's subject
//	X-Meridian-Issuer         iss (tokens only)
//	X-Meridian-Auth-Method    jwt | api_key
//	X-Meridian-Auth-Provider  the provider's or API key's name
//	X-Meridian-Roles          roles, comma-separated
//	X-Meridian-Scopes         scopes, space-separated
//	X-Meridian-Claim-<Name>   each of the provider's ForwardClaims
//
// An upstream trusts these only because the edge removes whatever a client
// sent under these names: StripHeaders (and Forward) delete every header
// named X-Meridian-Subject, -Issuer, -Roles, -Scopes, -Auth-* or -Claim-*,
// in any letter case and with '_' for '-' (CGI-style servers read
// X_Meridian_Subject as the same header). The gateway calls it on every
// forwarded request, authenticated or not.
package identity
