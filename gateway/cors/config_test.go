package cors

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/meridian-platform/meridian"
)

func TestConfigValidate(t *testing.T) {
	origins := func(o ...string) Config { return Config{AllowOrigins: o} }
	tests := []struct {
		name  string
		cfg   Config
		field string // "" when valid
		msg   string // part of the message
	}{
		{"exact origins", origins("https://app.example.com", "http://localhost:3000", "http://127.0.0.1:8080", "https://[::1]:8443", "HTTPS://Admin.Example.com"), "", ""},
		{"wildcard", origins("https://*.example.com", "https://*.eu.example.com:8443"), "", ""},
		{"star", origins("*"), "", ""},
		{"everything set", Config{
			AllowOrigins: []string{"https://app.example.com"}, AllowMethods: []string{"GET", "PUT", "PURGE"},
			AllowHeaders: []string{"Authorization", "content-type"}, ExposeHeaders: []string{"X-Request-Id"},
			AllowCredentials: true, MaxAge: meridian.Duration(24 * time.Hour),
		}, "", ""},
		{"star headers without credentials", Config{AllowOrigins: []string{"*"}, AllowHeaders: []string{"*"}, ExposeHeaders: []string{"*"}}, "", ""},

		{"no origins", Config{}, "allow_origins", "is required"},
		{"no scheme", origins("https://ok.example.com", "app.example.com"), "allow_origins[1]", "must be scheme://host[:port]"},
		{"trailing slash", origins("https://app.example.com/"), "allow_origins[0]", "no path, query or trailing slash"},
		{"path", origins("https://app.example.com/login"), "allow_origins[0]", "no path"},
		{"user info", origins("https://me@app.example.com"), "allow_origins[0]", "must be scheme://host[:port]"},
		{"empty host", origins("https://"), "allow_origins[0]", "must be scheme://host[:port]"},
		{"bad host", origins("https://exa mple.com"), "allow_origins[0]", "must be scheme://host[:port]"},
		{"underscore host", origins("https://my_app.example.com"), "allow_origins[0]", "invalid host name"},
		{"default https port", origins("https://app.example.com:443"), "allow_origins[0]", "default port :443"},
		{"default http port", origins("http://app.example.com:80"), "allow_origins[0]", "default port :80"},
		{"port zero", origins("https://app.example.com:0"), "allow_origins[0]", "invalid port"},
		{"port too large", origins("https://app.example.com:65536"), "allow_origins[0]", "invalid port"},
		{"port wildcard", origins("https://app.example.com:*"), "allow_origins[0]", "invalid port"},
		{"bad IPv6", origins("http://[::g]:8080"), "allow_origins[0]", "invalid IPv6"},
		{"null", origins("null"), "allow_origins[0]", "sandboxed pages"},
		{"inner wildcard", origins("https://api.*.example.com"), "allow_origins[0]", "one wildcard, as the whole first label"},
		{"partial label wildcard", origins("https://*api.example.com"), "allow_origins[0]", "one wildcard"},
		{"two wildcards", origins("https://*.*.example.com"), "allow_origins[0]", "host name after"},
		{"scheme wildcard", origins("*://app.example.com"), "allow_origins[0]", "must be scheme://host[:port]"},
		{"bare wildcard host", origins("*.example.com"), "allow_origins[0]", "must be scheme://host[:port]"},
		{"top-level wildcard", origins("https://*.com"), "allow_origins[0]", "top-level domain"},
		{"star with others", origins("https://app.example.com", "*"), "allow_origins[1]", "list no others"},
		{"star with credentials", Config{AllowOrigins: []string{"*"}, AllowCredentials: true}, "allow_origins[0]", "cannot be combined with allow_credentials"},
		{"duplicate origin", origins("https://app.example.com", "https://APP.example.com"), "allow_origins[1]", "listed twice"},
		{"lowercase method", Config{AllowOrigins: []string{"*"}, AllowMethods: []string{"GET", "delete"}}, "allow_methods[1]", `write "DELETE"`},
		{"star method", Config{AllowOrigins: []string{"*"}, AllowMethods: []string{"*"}}, "allow_methods[0]", "list the methods"},
		{"bad method", Config{AllowOrigins: []string{"*"}, AllowMethods: []string{"GET POST"}}, "allow_methods[0]", "not a method name"},
		{"bad header", Config{AllowOrigins: []string{"*"}, AllowHeaders: []string{"X-Ok", "X Bad"}}, "allow_headers[1]", "not a header name"},
		{"empty header", Config{AllowOrigins: []string{"*"}, AllowHeaders: []string{""}}, "allow_headers[0]", "not a header name"},
		{"star header with credentials", Config{AllowOrigins: []string{"https://a.example.com"}, AllowCredentials: true, AllowHeaders: []string{"*"}}, "allow_headers[0]", "cannot be combined with allow_credentials"},
		{"star header with others", Config{AllowOrigins: []string{"*"}, AllowHeaders: []string{"X-Id", "*"}}, "allow_headers[1]", "list no others"},
		{"star expose with credentials", Config{AllowOrigins: []string{"https://a.example.com"}, AllowCredentials: true, ExposeHeaders: []string{"*"}}, "expose_headers[0]", "cannot be combined"},
		{"negative max age", Config{AllowOrigins: []string{"*"}, MaxAge: meridian.Duration(-time.Second)}, "max_age", "must not be negative"},
		{"max age too long", Config{AllowOrigins: []string{"*"}, MaxAge: meridian.Duration(25 * time.Hour)}, "max_age", "above the limit of 24h"},
		{"fractional max age", Config{AllowOrigins: []string{"*"}, MaxAge: meridian.Duration(1500 * time.Millisecond)}, "max_age", "whole number of seconds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				if _, err := New(tt.cfg); err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			var me *meridian.Error
			if !errors.As(err, &me) || me.Code != meridian.CodeInvalid || me.Field != tt.field || !strings.Contains(me.Message, tt.msg) {
				t.Fatalf("Validate = %v; want an invalid error on %s saying %q", err, tt.field, tt.msg)
			}
			if _, err := New(tt.cfg); err == nil {
				t.Fatal("New accepted what Validate refused")
			}
		})
	}
}

// The config is read from JSON with snake_case names and no unknown fields.
func TestConfigJSON(t *testing.T) {
	const doc = `{
		"allow_origins": ["https://*.example.com"],
		"allow_methods": ["GET", "PUT"],
		"allow_headers": ["Authorization"],
		"expose_headers": ["X-Request-Id"],
		"allow_credentials": true,
		"max_age": "10m"
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
	if c.MaxAge.D() != 10*time.Minute || !c.AllowCredentials || c.AllowOrigins[0] != "https://*.example.com" ||
		c.AllowMethods[1] != "PUT" || c.AllowHeaders[0] != "Authorization" || c.ExposeHeaders[0] != "X-Request-Id" {
		t.Errorf("decoded %+v", c)
	}
	out, err := json.Marshal(Config{AllowOrigins: []string{"*"}})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, []byte(`{"allow_origins":["*"]}`)) {
		t.Errorf("encoded %s", out)
	}
}

func TestOriginMatching(t *testing.T) {
	o := compileOrigins([]string{"https://app.example.com", "http://localhost:3000", "https://*.example.com", "https://*.internal.example.org:8443"})
	tests := []struct {
		origin string
		want   bool
	}{
		{"https://app.example.com", true},
		{"https://APP.example.com", true},
		{"http://app.example.com", false},
		{"https://app.example.com:8443", false},
		{"http://localhost:3000", true},
		{"http://localhost:3001", false},
		{"https://shop.example.com", true},
		{"https://a.b.example.com", true},
		{"https://example.com", false},
		{"https://.example.com", false},
		{"https://evilexample.com", false},
		{"https://example.com.evil.net", false},
		{"https://shop.example.com.evil.net", false},
		{"https://shop.example.com:8443", false},
		{"https://evil.net#.example.com", false},
		{"https://evil.net/.example.com", false},
		{"https://-bad.example.com", false},
		{"http://shop.example.com", false},
		{"https://api.internal.example.org:8443", true},
		{"https://api.internal.example.org", false},
		{"null", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := o.allowed(tt.origin); got != tt.want {
			t.Errorf("allowed(%q) = %t, want %t", tt.origin, got, tt.want)
		}
	}
}
