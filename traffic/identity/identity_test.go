package identity

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/meridian-platform/meridian"
)

func TestRequirementAllow(t *testing.T) {
	user := &Identity{Method: MethodJWT, Subject: "ada", Roles: []string{"viewer", "editor"}, Scopes: []string{"orders:read", "orders:write"}}
	robot := &Identity{Method: MethodAPIKey, Subject: "ci", Roles: []string{"deployer"}}
	cases := []struct {
		name string
		req  Requirement
		id   *Identity
		code meridian.Code // "" when allowed
		msg  string
	}{
		{name: "anonymous", req: Requirement{}, id: nil, code: meridian.CodeUnauthorized, msg: "authentication required"},
		{name: "anyone authenticated", req: Requirement{}, id: robot},
		{name: "method allowed", req: Requirement{Methods: []string{MethodJWT}}, id: user},
		{name: "method refused", req: Requirement{Methods: []string{MethodJWT}}, id: robot, code: meridian.CodeForbidden, msg: "authentication method api_key is not accepted here (accepted: jwt)"},
		{name: "one of the roles", req: Requirement{Roles: []string{"admin", "editor"}}, id: user},
		{name: "none of the roles", req: Requirement{Roles: []string{"admin", "owner"}}, id: user, code: meridian.CodeForbidden, msg: "requires one of the roles: admin, owner"},
		{name: "all the scopes", req: Requirement{Scopes: []string{"orders:write", "orders:read"}}, id: user},
		{name: "a scope missing", req: Requirement{Scopes: []string{"orders:read", "orders:delete", "users:read"}}, id: user, code: meridian.CodeForbidden, msg: "missing scopes: orders:delete users:read"},
		{name: "no scopes at all", req: Requirement{Scopes: []string{"deploy"}}, id: robot, code: meridian.CodeForbidden, msg: "missing scopes: deploy"},
		{name: "role and scope", req: Requirement{Roles: []string{"viewer"}, Scopes: []string{"orders:read"}}, id: user},
		{name: "nil id with requirements", req: Requirement{Roles: []string{"admin"}}, id: nil, code: meridian.CodeUnauthorized, msg: "authentication required"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.req.Allow(tc.id)
			if tc.code == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantCode(t, err, tc.code)
			if err.Error() != tc.msg {
				t.Fatalf("message %q, want %q", err.Error(), tc.msg)
			}
		})
	}
	user2 := *user
	if a := testing.AllocsPerRun(100, func() { _ = (Requirement{Roles: []string{"editor"}, Scopes: []string{"orders:read"}}).Allow(&user2) }); a != 0 && !raceEnabled {
		t.Errorf("an allowed check allocates %v times", a)
	}
}

func TestRequirementValidate(t *testing.T) {
	err := Requirement{Methods: []string{"jwt", "basic"}, Roles: []string{"a,b"}, Scopes: []string{""}}.Validate()
	if got := fields(t, err); !slices.Equal(got, []string{"methods[1]", "roles[0]", "scopes[0]"}) {
		t.Fatalf("fields %q: %v", got, err)
	}
	if err := (Requirement{Methods: []string{MethodAPIKey}, Roles: []string{"Domain Admins"}}).Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestStripHeaders: every client copy of an identity header goes,
// whatever its case or '_' spelling; other headers stay.
func TestStripHeaders(t *testing.T) {
	h := http.Header{
		"X-Meridian-Subject":       {"root"},
		"x-meridian-subject":       {"root"}, // a map key net/http would not make, set directly
		"X-MERIDIAN-ISSUER":        {"evil"},
		"X_Meridian_Roles":         {"admin"},
		"x_meridian-scopes":        {"*"},
		"X-Meridian-Auth-Method":   {"jwt"},
		"X-Meridian-Auth-Provider": {"corp"},
		"X-Meridian-Auth-Anything": {"x"},
		"X-Meridian-Auth":          {"x"},
		"X-Meridian-Claim-Email":   {"ceo@example.com"},
		"x-meridian-claim-tenant":  {"other"},
		"X_MERIDIAN_CLAIM_":        {"x"},
		// kept
		"X-Meridian-Trace":     {"t"},
		"X-Meridian-Authority": {"a"},
		"X-Meridian-Subjects":  {"s"},
		"Authorization":        {"Bearer t"},
		"X-Api-Key":            {"k"},
		"Meridian-Timeout":     {"1s"},
	}
	StripHeaders(h)
	var left []string
	for k := range h {
		left = append(left, k)
	}
	slices.Sort(left)
	want := []string{"Authorization", "Meridian-Timeout", "X-Api-Key", "X-Meridian-Authority", "X-Meridian-Subjects", "X-Meridian-Trace"}
	if !slices.Equal(left, want) {
		t.Fatalf("left %q, want %q", left, want)
	}
}

// TestStripHeadersOverHTTP: headers a real client sends in any case reach
// the handler canonicalized or not, and none survives StripHeaders.
func TestStripHeadersOverHTTP(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		StripHeaders(r.Header)
		var names []string
		for k := range r.Header {
			if strings.Contains(strings.ToLower(strings.ReplaceAll(k, "_", "-")), "x-meridian") {
				names = append(names, k)
			}
		}
		_ = json.NewEncoder(w).Encode(names)
	}))
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	for _, k := range []string{"x-meridian-subject", "X-MERIDIAN-ROLES", "x_meridian_scopes", "X-Meridian-Claim-Email", "x-meridian-auth-method"} {
		req.Header[k] = []string{"forged"}
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if strings.TrimSpace(string(body)) != "null" {
		t.Fatalf("identity headers left: %s", body)
	}
}

func TestSetHeaders(t *testing.T) {
	id := &Identity{
		Method: MethodJWT, Provider: "corp", Subject: "user-42", Issuer: "https://id.example.com",
		Roles: []string{"admin", "Domain Admins"}, Scopes: []string{"orders:read", "orders:write"},
		Claims: map[string]any{
			"email":     "ada@example.com",
			"tenant":    json.Number("12345678901234567890"),
			"verified":  true,
			"groups":    []any{"a", "b"},
			"address":   map[string]any{"city": "x"},
			"bio":       "line one\nline two",
			"tenant_id": "t-1",
			"nothing":   nil,
		},
	}
	h := http.Header{}
	id.SetHeaders(h, []string{"email", "tenant", "verified", "groups", "address", "bio", "tenant_id", "nothing", "absent"})
	want := http.Header{
		"X-Meridian-Subject":         {"user-42"},
		"X-Meridian-Issuer":          {"https://id.example.com"},
		"X-Meridian-Auth-Method":     {"jwt"},
		"X-Meridian-Auth-Provider":   {"corp"},
		"X-Meridian-Roles":           {"admin,Domain Admins"},
		"X-Meridian-Scopes":          {"orders:read orders:write"},
		"X-Meridian-Claim-Email":     {"ada@example.com"},
		"X-Meridian-Claim-Tenant":    {"12345678901234567890"},
		"X-Meridian-Claim-Verified":  {"true"},
		"X-Meridian-Claim-Groups":    {"a,b"},
		"X-Meridian-Claim-Tenant-Id": {"t-1"},
	}
	if !equalHeaders(h, want) {
		t.Fatalf("headers\n%v\nwant\n%v", h, want)
	}
	// Everything SetHeaders writes is what StripHeaders removes.
	StripHeaders(h)
	if len(h) != 0 {
		t.Fatalf("left after strip: %v", h)
	}
	// An API key identity has no issuer and no claims.
	h = http.Header{}
	(&Identity{Method: MethodAPIKey, Provider: "ci", Subject: "ci"}).SetHeaders(h, []string{"email"})
	if !equalHeaders(h, http.Header{"X-Meridian-Subject": {"ci"}, "X-Meridian-Auth-Method": {"api_key"}, "X-Meridian-Auth-Provider": {"ci"}}) {
		t.Fatalf("headers %v", h)
	}
}

func equalHeaders(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

// TestForward: the gateway's step strips what the client sent and writes
// the verified identity with the provider's forwarded claims.
func TestForward(t *testing.T) {
	k := edKey("d1")
	idp := newIdP(t, k)
	clk := newClock()
	p := idp.provider()
	p.ForwardClaims = []string{"email", "tenant"}
	v := newVerifier(t, Config{JWT: []JWTProvider{p}}, idp, clk)
	c := claims(idp, clk)
	c["tenant"] = 7
	r := bearer(sign(t, k, c))
	r.Header.Set("X-Meridian-Roles", "root")
	r.Header["x_meridian_claim_tenant"] = []string{"0"}
	id, err := v.Authenticate(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	out := r.Header.Clone()
	v.Forward(out, id)
	if got := out.Get(HeaderRoles); got != "admin,viewer" {
		t.Errorf("roles %q", got)
	}
	if got := out.Values("X-Meridian-Claim-Tenant"); !slices.Equal(got, []string{"7"}) || out["x_meridian_claim_tenant"] != nil {
		t.Errorf("tenant %q, headers %v", got, out)
	}
	if got := out.Get("X-Meridian-Claim-Email"); got != "ada@example.com" {
		t.Errorf("email %q", got)
	}
	anon := r.Header.Clone()
	v.Forward(anon, nil)
	if anon.Get(HeaderRoles) != "" || anon["x_meridian_claim_tenant"] != nil {
		t.Errorf("anonymous request kept %v", anon)
	}
}

func TestChallenge(t *testing.T) {
	cases := []struct {
		err  error
		want string
	}{
		{nil, ""},
		{ErrNoCredentials, "Bearer"},
		{errExpired, `Bearer error="invalid_token", error_description="token expired"`},
		{errAPIKey, `Bearer error="invalid_token", error_description="API key invalid"`},
		{meridian.Errorf(meridian.CodeForbidden, `missing scopes: "a\b`), `Bearer error="insufficient_scope", error_description="missing scopes: ab"`},
		{meridian.Errorf(meridian.CodeUnavailable, "keys unavailable"), ""},
		{errors.New("plain"), ""},
	}
	for _, tc := range cases {
		if got := Challenge(tc.err); got != tc.want {
			t.Errorf("Challenge(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
