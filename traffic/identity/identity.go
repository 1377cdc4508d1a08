package identity

import (
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/meridian-platform/meridian"
)

// Authentication methods, the values of Identity.Method and of the
// X-Meridian-Auth-Method header.
const (
	MethodJWT    = "jwt"
	MethodAPIKey = "api_key"
)

// Identity is a verified caller. Authenticate returns one that may be shared
// with every other request that presented the same credential (the token
// cache and each API key hold one), so it and its slices and map are
// read-only.
type Identity struct {
	// Method is how the caller proved who it is: MethodJWT or MethodAPIKey.
	Method string `json:"method"`
	// Provider is the name of the JWT provider that verified the token, or
	// the name of the API key.
	Provider string `json:"provider"`
	// Subject is the token's sub claim, or the API key's subject.
	Subject string `json:"subject"`
	// Issuer is the token's iss claim; empty for an API key.
	Issuer string `json:"issuer,omitempty"`
	// Roles are what the provider's roles claim lists, or the API key's.
	Roles []string `json:"roles,omitempty"`
	// Scopes are the OAuth scopes the token grants, or the API key's.
	Scopes []string `json:"scopes,omitempty"`
	// Claims are all of a token's claims as decoded JSON (numbers are
	// json.Number); nil for an API key.
	Claims map[string]any `json:"claims,omitempty"`

	// Precomputed when the Identity is made by this package, so that
	// forwarding a cached identity costs no joins.
	rolesHeader, scopesHeader string
	forward                   []claimHeader
}

// prepare fills the precomputed header values.
func (id *Identity) prepare(forward []claimHeader) {
	id.rolesHeader = strings.Join(id.Roles, ",")
	id.scopesHeader = strings.Join(id.Scopes, " ")
	id.forward = forward
}

// Requirement is what a route demands of its caller. The zero Requirement
// admits any authenticated caller.
type Requirement struct {
	// Methods are the authentication methods allowed (MethodJWT,
	// MethodAPIKey); empty allows any.
	Methods []string `json:"methods,omitempty"`
	// Roles: the caller must hold at least one of them; empty requires none.
	Roles []string `json:"roles,omitempty"`
	// Scopes: the caller must hold every one of them; empty requires none.
	Scopes []string `json:"scopes,omitempty"`
}

// ErrNoCredentials is what Requirement.Allow returns for a caller that
// presented no credentials: CodeUnauthorized, and Challenge answers it with
// a bare "Bearer" (RFC 6750 §3.1: no error code when none was tried).
var ErrNoCredentials = &meridian.Error{Code: meridian.CodeUnauthorized, Message: "authentication required"}

// Allow reports whether id meets r: nil when it does, ErrNoCredentials
// when id is nil, and otherwise a *meridian.Error with CodeForbidden that
// names what is missing (the method, the roles of which one is needed, or
// the scopes lacking). Allow allocates only when it refuses.
func (r Requirement) Allow(id *Identity) error {
	if id == nil {
		return ErrNoCredentials
	}
	if len(r.Methods) > 0 && !slices.Contains(r.Methods, id.Method) {
		return meridian.Errorf(meridian.CodeForbidden, "authentication method %s is not accepted here (accepted: %s)", id.Method, strings.Join(r.Methods, ", "))
	}
	if len(r.Roles) > 0 && !slices.ContainsFunc(r.Roles, func(role string) bool { return slices.Contains(id.Roles, role) }) {
		return meridian.Errorf(meridian.CodeForbidden, "requires one of the roles: %s", strings.Join(r.Roles, ", "))
	}
	for i, s := range r.Scopes {
		if !slices.Contains(id.Scopes, s) {
			var missing []string
			for _, s := range r.Scopes[i:] {
				if !slices.Contains(id.Scopes, s) {
					missing = append(missing, s)
				}
			}
			return meridian.Errorf(meridian.CodeForbidden, "missing scopes: %s", strings.Join(missing, " "))
		}
	}
	return nil
}

// Validate checks r's methods, and that roles and scopes are non-empty
// strings; errors name the field ("methods[0]").
func (r Requirement) Validate() error {
	var v validator
	for i, m := range r.Methods {
		if m != MethodJWT && m != MethodAPIKey {
			v.add(index("methods", i), "%q is not one of %s, %s", m, MethodJWT, MethodAPIKey)
		}
	}
	v.names("roles", r.Roles, ",")
	v.names("scopes", r.Scopes, " ")
	return v.err()
}

// The headers that carry a verified identity upstream. StripHeaders removes
// every client-sent header in this namespace: these names, any header
// starting with X-Meridian-Auth- or X-Meridian-Claim-, in any letter case
// and with '_' in place of any '-'.
const (
	HeaderSubject      = "X-Meridian-Subject"
	HeaderIssuer       = "X-Meridian-Issuer"
	HeaderAuthMethod   = "X-Meridian-Auth-Method"
	HeaderAuthProvider = "X-Meridian-Auth-Provider"
	HeaderRoles        = "X-Meridian-Roles"  // comma-separated
	HeaderScopes       = "X-Meridian-Scopes" // space-separated
	// HeaderClaimPrefix is followed by the claim's name in header case:
	// claim "email" travels as X-Meridian-Claim-Email, "tenant_id" as
	// X-Meridian-Claim-Tenant-Id.
	HeaderClaimPrefix = "X-Meridian-Claim-"
)

// StripHeaders deletes from h every header in the identity namespace (see
// HeaderSubject), whatever its case and whether it is spelled with '-' or
// '_': upstreams behind CGI-style frameworks read X_Meridian_Subject as
// X-Meridian-Subject, so both spellings are a client's attempt to speak for
// the gateway. The gateway calls it on every request it forwards,
// authenticated or not, before SetHeaders.
func StripHeaders(h http.Header) {
	for k := range h {
		if isIdentityHeader(k) {
			delete(h, k)
		}
	}
}

func isIdentityHeader(k string) bool {
	const prefix = "x-meridian-"
	if len(k) <= len(prefix) || !foldEqual(k[:len(prefix)], prefix) {
		return false
	}
	rest := k[len(prefix):]
	for _, name := range [...]string{"subject", "issuer", "roles", "scopes", "auth", "claim"} {
		if foldEqual(rest, name) {
			return true
		}
	}
	for _, p := range [...]string{"auth-", "claim-"} {
		if len(rest) >= len(p) && foldEqual(rest[:len(p)], p) {
			return true
		}
	}
	return false
}

// foldEqual compares s with lower, a lower-case ASCII name, ignoring ASCII
// case and reading '_' in s as '-'.
func foldEqual(s, lower string) bool {
	if len(s) != len(lower) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		case c == '_':
			c = '-'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// SetHeaders writes id into h for the upstream: subject, issuer, method,
// provider, roles and scopes (each only when non-empty), and for each name
// in forwardClaims whose claim is a string, number, boolean or array of
// those, X-Meridian-Claim-<Name> (arrays comma-joined). A claim value with
// control characters is left out rather than forwarded. It replaces values
// of the headers it writes but deletes nothing: call StripHeaders first
// (Verifier.Forward does both).
func (id *Identity) SetHeaders(h http.Header, forwardClaims []string) {
	w := headerWriter{h: h, vals: make([]string, 0, 6+len(forwardClaims))}
	id.writeHeaders(&w)
	for _, c := range forwardClaims {
		if v, ok := claimValue(id.Claims[c]); ok {
			w.set(claimHeaderName(c), v)
		}
	}
}

func (id *Identity) writeHeaders(w *headerWriter) {
	w.set(HeaderSubject, id.Subject)
	w.set(HeaderIssuer, id.Issuer)
	w.set(HeaderAuthMethod, id.Method)
	w.set(HeaderAuthProvider, id.Provider)
	if id.rolesHeader != "" || len(id.Roles) == 0 {
		w.set(HeaderRoles, id.rolesHeader)
	} else {
		w.set(HeaderRoles, strings.Join(id.Roles, ","))
	}
	if id.scopesHeader != "" || len(id.Scopes) == 0 {
		w.set(HeaderScopes, id.scopesHeader)
	} else {
		w.set(HeaderScopes, strings.Join(id.Scopes, " "))
	}
}

// headerWriter sets single-valued headers whose value slices share one
// backing array, as net/http's Header.Clone does: one allocation for all
// of them. Each slice's capacity is its length, so an Add to one of them
// copies instead of writing over its neighbour.
type headerWriter struct {
	h    http.Header
	vals []string
}

func (w *headerWriter) set(k, v string) {
	if v == "" {
		return
	}
	w.vals = append(w.vals, v)
	n := len(w.vals)
	w.h[k] = w.vals[n-1 : n : n]
}

// claimHeader is a claim to forward and its header name, computed once
// per provider.
type claimHeader struct{ claim, header string }

func claimHeaders(claims []string) []claimHeader {
	out := make([]claimHeader, len(claims))
	for i, c := range claims {
		out[i] = claimHeader{c, claimHeaderName(c)}
	}
	return out
}

func claimHeaderName(claim string) string {
	return http.CanonicalHeaderKey(HeaderClaimPrefix + strings.ReplaceAll(claim, "_", "-"))
}

// Challenge is the WWW-Authenticate value (RFC 6750 §3) for an error from
// Authenticate or Requirement.Allow: a bare "Bearer" for ErrNoCredentials,
// `Bearer error="invalid_token", error_description="…"` for any other
// CodeUnauthorized, `Bearer error="insufficient_scope", …` for
// CodeForbidden, and "" for anything else (a 503 carries no challenge).
func Challenge(err error) string {
	var me *meridian.Error
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrNoCredentials):
		return "Bearer"
	case !errors.As(err, &me):
		return ""
	case me.Code == meridian.CodeUnauthorized:
		return `Bearer error="invalid_token", error_description="` + quotable(me.Message) + `"`
	case me.Code == meridian.CodeForbidden:
		return `Bearer error="insufficient_scope", error_description="` + quotable(me.Message) + `"`
	}
	return ""
}

// quotable keeps what RFC 6750 allows in error_description: printable
// ASCII except '"' and '\'.
func quotable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			return -1
		}
		return r
	}, s)
}
