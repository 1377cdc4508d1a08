package identity_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/meridian-platform/meridian/traffic/identity"
)

// The configuration holds the hash of an API key, never the key.
func ExampleHashAPIKey() {
	fmt.Println(identity.HashAPIKey("mk_live_2f6c1e0b9a"))
	// Output:
	// sha256:bb9fb714e50163f25ee4efe94296e363032379d4f0457c269648e9eea81b8e18
}

// A gateway's handling of one request: authenticate, check the route's
// requirement, answer 401/403 with a challenge, or forward the identity
// with the client's forged headers stripped.
func ExampleVerifier_Authenticate() {
	v, err := identity.New(identity.Config{
		APIKeys: []identity.APIKey{{
			Name:   "billing",
			Hash:   identity.HashAPIKey("mk_live_2f6c1e0b9a"),
			Roles:  []string{"service"},
			Scopes: []string{"orders:read"},
		}},
	}, identity.Options{})
	if err != nil {
		panic(err)
	}
	route := identity.Requirement{Roles: []string{"service"}, Scopes: []string{"orders:read"}}

	handle := func(r *http.Request) {
		id, err := v.Authenticate(context.Background(), r)
		if err == nil {
			err = route.Allow(id)
		}
		if err != nil {
			fmt.Printf("refused: %v; WWW-Authenticate: %s\n", err, identity.Challenge(err))
			return
		}
		v.Forward(r.Header, id)
		fmt.Println("forwarded as", r.Header.Get(identity.HeaderSubject), "via", r.Header.Get(identity.HeaderAuthMethod),
			"scopes", r.Header.Get(identity.HeaderScopes), "roles", r.Header.Get(identity.HeaderRoles))
	}

	anonymous := httptest.NewRequest(http.MethodGet, "/orders", nil)
	anonymous.Header.Set("X-Meridian-Subject", "admin") // forged, and useless
	handle(anonymous)

	wrong := httptest.NewRequest(http.MethodGet, "/orders", nil)
	wrong.Header.Set("X-API-Key", "guess")
	handle(wrong)

	good := httptest.NewRequest(http.MethodGet, "/orders", nil)
	good.Header.Set("X-API-Key", "mk_live_2f6c1e0b9a")
	good.Header.Set("x-meridian-roles", "admin") // stripped before the real ones are set
	handle(good)
	// Output:
	// refused: authentication required; WWW-Authenticate: Bearer
	// refused: API key invalid; WWW-Authenticate: Bearer error="invalid_token", error_description="API key invalid"
	// forwarded as billing via api_key scopes orders:read roles service
}

func ExampleRequirement_Allow() {
	id := &identity.Identity{Method: identity.MethodJWT, Subject: "ada", Roles: []string{"viewer"}, Scopes: []string{"orders:read"}}
	for _, req := range []identity.Requirement{
		{Roles: []string{"viewer", "editor"}},
		{Scopes: []string{"orders:read", "orders:write"}},
		{Methods: []string{identity.MethodAPIKey}},
	} {
		err := req.Allow(id)
		fmt.Printf("%v; challenge %q\n", err, identity.Challenge(err))
	}
	// Output:
	// <nil>; challenge ""
	// missing scopes: orders:write; challenge "Bearer error=\"insufficient_scope\", error_description=\"missing scopes: orders:write\""
	// authentication method jwt is not accepted here (accepted: api_key); challenge "Bearer error=\"insufficient_scope\", error_description=\"authentication method jwt is not accepted here (accepted: api_key)\""
}
