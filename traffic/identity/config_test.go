package identity

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-platform/meridian"
)

// fields returns the Field of every *meridian.Error joined in err.
func fields(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	var out []string
	for _, e := range errs {
		var me *meridian.Error
		if !errors.As(e, &me) || me.Code != meridian.CodeInvalid {
			t.Fatalf("%v is not an invalid-input *meridian.Error", e)
		}
		out = append(out, me.Field)
	}
	return out
}

func validProvider() JWTProvider {
	return JWTProvider{Name: "corp", Issuer: "https://id.example.com", Audiences: []string{"api"}, JWKSURL: "https://id.example.com/jwks"}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name   string
		change func(c *Config)
		want   []string // fields named, in order
	}{
		{"valid", func(c *Config) {}, nil},
		{"empty config", func(c *Config) { *c = Config{} }, nil},
		{"discovery instead of a key set URL", func(c *Config) {
			c.JWT[0].JWKSURL, c.JWT[0].OIDCDiscovery = "", "https://id.example.com/.well-known/openid-configuration"
		}, nil},
		{"plain http to loopback", func(c *Config) { c.JWT[0].JWKSURL = "http://127.0.0.1:8080/jwks" }, nil},
		{"plain http allowed", func(c *Config) { c.JWT[0].JWKSURL, c.JWT[0].AllowHTTP = "http://keycloak:8080/jwks", true }, nil},
		{"missing everything", func(c *Config) { c.JWT[0] = JWTProvider{} }, []string{"jwt[0].name", "jwt[0].issuer", "jwt[0].audiences", "jwt[0].jwks_url"}},
		{"both key sources", func(c *Config) { c.JWT[0].OIDCDiscovery = "https://id.example.com/.well-known/openid-configuration" }, []string{"jwt[0].oidc_discovery"}},
		{"plain http", func(c *Config) { c.JWT[0].JWKSURL = "http://id.example.com/jwks" }, []string{"jwt[0].jwks_url"}},
		{"relative URL", func(c *Config) { c.JWT[0].JWKSURL = "/jwks" }, []string{"jwt[0].jwks_url"}},
		{"algorithms", func(c *Config) { c.JWT[0].Algorithms = []string{"RS256", "none", "HS256", "hs512", "ES257", "RS256"} },
			[]string{"jwt[0].algorithms[1]", "jwt[0].algorithms[2]", "jwt[0].algorithms[3]", "jwt[0].algorithms[4]", "jwt[0].algorithms[5]"}},
		{"leeway too long", func(c *Config) { c.JWT[0].Leeway = meridian.Duration(6 * time.Minute) }, []string{"jwt[0].leeway"}},
		{"negative leeway", func(c *Config) { c.JWT[0].Leeway = -1 }, []string{"jwt[0].leeway"}},
		{"claims", func(c *Config) {
			c.JWT[0].RolesClaim = "realm_access..roles"
			c.JWT[0].ForwardClaims = []string{"email", "e mail", "tenant_id", "tenant-id"}
		}, []string{"jwt[0].roles_claim", "jwt[0].forward_claims[1]", "jwt[0].forward_claims[3]"}},
		{"sizes and intervals", func(c *Config) {
			c.JWT[0].MaxTokenBytes = 100
			c.JWT[0].MinRefreshInterval = meridian.Duration(time.Millisecond)
			c.JWT[0].CacheTTL = meridian.Duration(48 * time.Hour)
			c.JWT[0].FetchTimeout = meridian.Duration(time.Hour)
		}, []string{"jwt[0].max_token_bytes", "jwt[0].min_refresh_interval", "jwt[0].cache_ttl", "jwt[0].fetch_timeout"}},
		{"cache ttl below the refresh interval", func(c *Config) { c.JWT[0].CacheTTL = meridian.Duration(10 * time.Second) }, []string{"jwt[0].cache_ttl"}},
		{"duplicate provider", func(c *Config) { c.JWT = append(c.JWT, c.JWT[0]) }, []string{"jwt[1].name", "jwt[1].issuer"}},
		{"audience empty", func(c *Config) { c.JWT[0].Audiences = []string{""} }, []string{"jwt[0].audiences[0]"}},
		{"api keys", func(c *Config) {
			c.APIKeys = []APIKey{
				{Name: "a", Hash: HashAPIKey("a"), Roles: []string{"x,y"}, Scopes: []string{"p q"}},
				{Name: "a", Hash: HashAPIKey("a")},
				{Name: "-bad", Hash: "plaintext"},
			}
		}, []string{"api_keys[0].roles[0]", "api_keys[0].scopes[0]", "api_keys[1].name", "api_keys[1].hash", "api_keys[2].name", "api_keys[2].hash"}},
		{"api key header", func(c *Config) { c.APIKeyHeader = "X-Meridian-Auth-Key" }, []string{"api_key_header"}},
		{"api key header not a name", func(c *Config) { c.APIKeyHeader = "X API Key" }, []string{"api_key_header"}},
		{"api key header is Authorization", func(c *Config) { c.APIKeyHeader = "authorization" }, []string{"api_key_header"}},
		{"cache size", func(c *Config) { c.TokenCacheSize = -2 }, []string{"token_cache_size"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := Config{JWT: []JWTProvider{validProvider()}}
			tc.change(&c)
			err := c.Validate()
			if got := fields(t, err); !slices.Equal(got, tc.want) {
				t.Fatalf("fields %q, want %q; err:\n%v", got, tc.want, err)
			}
			if _, nerr := New(c, Options{}); (nerr == nil) != (err == nil) {
				t.Fatalf("New: %v", nerr)
			}
		})
	}
}

// TestValidateExplainsHMAC: the refusal says why, not only that.
func TestValidateExplainsHMAC(t *testing.T) {
	c := Config{JWT: []JWTProvider{validProvider()}}
	c.JWT[0].Algorithms = []string{"HS256"}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "public key") {
		t.Fatalf("err %v", err)
	}
}

func TestConfigJSON(t *testing.T) {
	doc := `{
		"jwt": [{
			"name": "corp", "issuer": "https://id.example.com", "audiences": ["api"],
			"oidc_discovery": "https://id.example.com/.well-known/openid-configuration",
			"algorithms": ["RS256", "EdDSA"], "leeway": "10s", "roles_claim": "realm_access.roles",
			"scopes_claim": "scp", "forward_claims": ["email"], "max_token_bytes": 4096,
			"min_refresh_interval": "1m", "cache_ttl": "15m", "fetch_timeout": "2s"
		}],
		"api_keys": [{"name": "ci", "hash": "` + HashAPIKey("k") + `", "subject": "ci-bot", "roles": ["deployer"], "scopes": ["deploy"]}],
		"api_key_header": "X-Service-Key",
		"token_cache_size": 500
	}`
	dec := json.NewDecoder(strings.NewReader(doc))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	p := c.JWT[0]
	if p.Leeway.D() != 10*time.Second || p.MinRefreshInterval.D() != time.Minute || p.CacheTTL.D() != 15*time.Minute ||
		p.FetchTimeout.D() != 2*time.Second || p.MaxTokenBytes != 4096 || c.TokenCacheSize != 500 || c.APIKeys[0].Subject != "ci-bot" {
		t.Fatalf("decoded %+v", c)
	}
}
