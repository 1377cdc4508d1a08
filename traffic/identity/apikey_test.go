package identity

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/meridian-platform/meridian"
)

func TestAPIKeys(t *testing.T) {
	cfg := Config{APIKeys: []APIKey{
		{Name: "billing", Hash: HashAPIKey("billing-secret"), Subject: "svc-billing", Roles: []string{"service"}, Scopes: []string{"orders:read"}},
		{Name: "ci", Hash: strings.ToUpper(HashAPIKey("ci-secret")[len("sha256:"):]), Roles: []string{"deployer"}},
	}}
	cfg.APIKeys[1].Hash = "sha256:" + cfg.APIKeys[1].Hash // upper-case hex is accepted
	v, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	req := func(header string, values ...string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		for _, val := range values {
			r.Header.Add(header, val)
		}
		return r
	}
	ctx := context.Background()

	id, err := v.Authenticate(ctx, req("X-API-Key", "billing-secret"))
	if err != nil {
		t.Fatal(err)
	}
	if id.Method != MethodAPIKey || id.Provider != "billing" || id.Subject != "svc-billing" || id.Issuer != "" ||
		!slices.Equal(id.Roles, []string{"service"}) || !slices.Equal(id.Scopes, []string{"orders:read"}) || id.Claims != nil {
		t.Fatalf("identity %+v", id)
	}
	id, err = v.Authenticate(ctx, req("x-api-key", "ci-secret"))
	if err != nil || id.Provider != "ci" || id.Subject != "ci" {
		t.Fatalf("%+v, %v (the subject defaults to the name)", id, err)
	}

	for name, r := range map[string]*http.Request{
		"wrong key":         req("X-API-Key", "billing-secreT"),
		"a configured hash": req("X-API-Key", HashAPIKey("billing-secret")),
		"empty":             req("X-API-Key", ""),
		"two values":        req("X-API-Key", "billing-secret", "ci-secret"),
		"too long":          req("X-API-Key", strings.Repeat("k", maxAPIKeyBytes+1)),
	} {
		id, err := v.Authenticate(ctx, r)
		if id != nil || !errors.Is(err, errAPIKey) {
			t.Errorf("%s: %+v, %v", name, id, err)
		}
		wantCode(t, err, meridian.CodeUnauthorized)
	}
	// Bearer tokens are not read when no JWT provider is configured.
	r := req("X-API-Key", "billing-secret")
	r.Header.Set("Authorization", "Bearer x.y.z")
	if id, err := v.Authenticate(ctx, r); err != nil || id.Provider != "billing" {
		t.Fatalf("%+v, %v", id, err)
	}
}

func TestAPIKeyHeader(t *testing.T) {
	v, err := New(Config{APIKeyHeader: "x-service-key", APIKeys: []APIKey{{Name: "k", Hash: HashAPIKey("s")}}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("X-API-Key", "s")
	if id, err := v.Authenticate(context.Background(), r); id != nil || err != nil {
		t.Fatalf("the default header was read: %v, %v", id, err)
	}
	r.Header.Set("X-Service-Key", "s")
	if id, err := v.Authenticate(context.Background(), r); err != nil || id.Provider != "k" {
		t.Fatalf("%+v, %v", id, err)
	}
}

// TestBearerAndAPIKey: a request with both credentials is refused, not
// resolved in favour of either.
func TestBearerAndAPIKey(t *testing.T) {
	k := rsKey("k1")
	idp := newIdP(t, k)
	clk := newClock()
	v := newVerifier(t, Config{JWT: []JWTProvider{idp.provider()}, APIKeys: []APIKey{{Name: "k", Hash: HashAPIKey("s")}}}, idp, clk)
	r := bearer(sign(t, k, claims(idp, clk)))
	r.Header.Set("X-API-Key", "s")
	if _, err := v.Authenticate(context.Background(), r); !errors.Is(err, errAmbiguous) {
		t.Fatalf("err %v", err)
	}
}

func TestHashFormat(t *testing.T) {
	good := HashAPIKey("secret")
	if !strings.HasPrefix(good, "sha256:") || len(good) != len("sha256:")+64 {
		t.Fatalf("HashAPIKey = %q", good)
	}
	cases := []struct{ name, hash, want string }{
		{"valid", good, ""},
		{"upper-case hex", "sha256:" + strings.ToUpper(good[7:]), ""},
		{"missing", "", "is required"},
		{"the key itself", "secret", `must start with "sha256:"`},
		{"another algorithm", "md5:5ebe2294ecd0e0f08eab7690d2a6ee69", `must start with "sha256:"`},
		{"prefix in capitals", "SHA256:" + good[7:], `must start with "sha256:"`},
		{"short", good[:len(good)-2], "has 62 hex digits"},
		{"long", good + "00", "has 66 hex digits"},
		{"not hex", "sha256:" + strings.Repeat("zz", 32), "is not hex"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := (&Config{APIKeys: []APIKey{{Name: "k", Hash: tc.hash}}}).Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatal(err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "api_keys[0].hash: ")):
				t.Fatalf("err %v, want api_keys[0].hash: …%s", err, tc.want)
			}
		})
	}
}
