package cors

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-platform/meridian"
)

// want lists the response fields a case checks; "" means absent.
type want struct {
	status        int
	reached       bool // the next handler ran
	allowOrigin   string
	credentials   string
	allowMethods  string
	allowHeaders  string
	exposeHeaders string
	maxAge        string
	vary          string // must be among the Vary values
}

func TestMiddleware(t *testing.T) {
	const (
		app    = "https://app.example.com"
		shop   = "https://shop.example.com"
		deep   = "https://eu.shop.example.com"
		other  = "https://evil.example.net"
		bare   = "https://example.com"
		lookal = "https://app.example.com.evil.net"
	)
	strict := Config{AllowOrigins: []string{app, "https://*.example.com"}}
	full := Config{
		AllowOrigins:     []string{app},
		AllowMethods:     []string{"GET", "PUT", "DELETE"},
		AllowHeaders:     []string{"Authorization", "Content-Type", "X-Request-Id"},
		ExposeHeaders:    []string{"X-Request-Id", "ratelimit"},
		AllowCredentials: true,
		MaxAge:           meridian.Duration(10 * time.Minute),
	}
	anyOrigin := Config{AllowOrigins: []string{"*"}, AllowHeaders: []string{"*"}, ExposeHeaders: []string{"*"}}

	tests := []struct {
		name   string
		cfg    Config
		method string
		header map[string]string
		want   want
	}{
		// Actual requests.
		{"exact origin", strict, "GET", map[string]string{"Origin": app},
			want{status: 200, reached: true, allowOrigin: app, vary: "Origin"}},
		{"wildcard subdomain", strict, "GET", map[string]string{"Origin": shop},
			want{status: 200, reached: true, allowOrigin: shop, vary: "Origin"}},
		{"wildcard deeper subdomain", strict, "POST", map[string]string{"Origin": deep},
			want{status: 200, reached: true, allowOrigin: deep, vary: "Origin"}},
		{"wildcard does not cover the bare domain", strict, "GET", map[string]string{"Origin": bare},
			want{status: 200, reached: true, vary: "Origin"}},
		{"lookalike suffix", strict, "GET", map[string]string{"Origin": lookal},
			want{status: 200, reached: true, vary: "Origin"}},
		{"other origin is served without CORS headers", strict, "GET", map[string]string{"Origin": other},
			want{status: 200, reached: true, vary: "Origin"}},
		{"same-origin or non-browser request", strict, "GET", nil,
			want{status: 200, reached: true, vary: "Origin"}},
		{"method outside allow_methods", strict, "PUT", map[string]string{"Origin": app},
			want{status: 200, reached: true, vary: "Origin"}},
		{"credentials echo the origin", full, "DELETE", map[string]string{"Origin": app},
			want{status: 200, reached: true, allowOrigin: app, credentials: "true", exposeHeaders: "X-Request-Id, Ratelimit", vary: "Origin"}},
		{"any origin without credentials is a literal star", anyOrigin, "GET", map[string]string{"Origin": other},
			want{status: 200, reached: true, allowOrigin: "*", exposeHeaders: "*", vary: "Origin"}},
		{"plain OPTIONS is not a preflight", strict, "OPTIONS", map[string]string{"Origin": app},
			want{status: 200, reached: true, allowOrigin: app, vary: "Origin"}},

		// Preflights: answered here, never forwarded.
		{"preflight allowed", full, "OPTIONS", map[string]string{"Origin": app, "Access-Control-Request-Method": "PUT", "Access-Control-Request-Headers": "authorization,content-type"},
			want{status: 204, allowOrigin: app, credentials: "true", allowMethods: "PUT", allowHeaders: "authorization,content-type", maxAge: "600", vary: "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"}},
		{"preflight for a wildcard subdomain", strict, "OPTIONS", map[string]string{"Origin": shop, "Access-Control-Request-Method": "POST"},
			want{status: 204, allowOrigin: shop, allowMethods: "POST", vary: "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"}},
		{"preflight from another origin", full, "OPTIONS", map[string]string{"Origin": other, "Access-Control-Request-Method": "GET"},
			want{status: 204, vary: "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"}},
		{"preflight for a method not allowed", full, "OPTIONS", map[string]string{"Origin": app, "Access-Control-Request-Method": "PATCH"},
			want{status: 204}},
		{"preflight for the default methods only", strict, "OPTIONS", map[string]string{"Origin": app, "Access-Control-Request-Method": "DELETE"},
			want{status: 204}},
		{"preflight for a header not allowed", full, "OPTIONS", map[string]string{"Origin": app, "Access-Control-Request-Method": "PUT", "Access-Control-Request-Headers": "x-debug"},
			want{status: 204}},
		{"no extra header allowed by default", strict, "OPTIONS", map[string]string{"Origin": app, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"},
			want{status: 204}},
		{"any header under star", anyOrigin, "OPTIONS", map[string]string{"Origin": other, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type,x-anything"},
			want{status: 204, allowOrigin: "*", allowMethods: "POST", allowHeaders: "content-type,x-anything"}},
		{"no max age by default", strict, "OPTIONS", map[string]string{"Origin": app, "Access-Control-Request-Method": "GET"},
			want{status: 204, allowOrigin: app, allowMethods: "GET"}},
		{"preflight without Origin is still answered here", strict, "OPTIONS", map[string]string{"Access-Control-Request-Method": "GET"},
			want{status: 204}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mw, err := New(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			var reached atomic.Int32
			srv := httptest.NewServer(mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				reached.Add(1)
				io.WriteString(w, "upstream")
			})))
			defer srv.Close()

			req, err := http.NewRequestWithContext(t.Context(), tt.method, srv.URL+"/orders", nil)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()

			if resp.StatusCode != tt.want.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.want.status)
			}
			if got := reached.Load() == 1; got != tt.want.reached {
				t.Errorf("next handler ran %d times; want reached: %t", reached.Load(), tt.want.reached)
			}
			if tt.want.reached != (string(body) == "upstream") {
				t.Errorf("body %q", body)
			}
			for name, w := range map[string]string{
				"Access-Control-Allow-Origin":      tt.want.allowOrigin,
				"Access-Control-Allow-Credentials": tt.want.credentials,
				"Access-Control-Allow-Methods":     tt.want.allowMethods,
				"Access-Control-Allow-Headers":     tt.want.allowHeaders,
				"Access-Control-Expose-Headers":    tt.want.exposeHeaders,
				"Access-Control-Max-Age":           tt.want.maxAge,
			} {
				if got := strings.Join(resp.Header.Values(name), " | "); got != w {
					t.Errorf("%s = %q, want %q", name, got, w)
				}
			}
			if tt.want.vary != "" && !contains(resp.Header.Values("Vary"), tt.want.vary) {
				t.Errorf("Vary = %q, want it to include %q", resp.Header.Values("Vary"), tt.want.vary)
			}
		})
	}
}

func contains(values []string, v string) bool {
	for _, x := range values {
		if x == v {
			return true
		}
	}
	return false
}

// The answer never pairs "*" with credentials, whatever the request.
func TestCredentialedAnswersEchoTheOrigin(t *testing.T) {
	mw, err := New(Config{AllowOrigins: []string{"https://*.example.com"}, AllowCredentials: true})
	if err != nil {
		t.Fatal(err)
	}
	h := mw(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	for _, origin := range []string{"https://a.example.com", "https://b.c.example.com"} {
		for _, preflight := range []bool{false, true} {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.Header.Set("Origin", origin)
			if preflight {
				r.Method = http.MethodOptions
				r.Header.Set("Access-Control-Request-Method", "GET")
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if got := w.Header().Get("Access-Control-Allow-Origin"); got != origin {
				t.Errorf("%s (preflight %t): Access-Control-Allow-Origin = %q", origin, preflight, got)
			}
			if got := w.Header().Get("Access-Control-Allow-Credentials"); got != "true" {
				t.Errorf("%s (preflight %t): Access-Control-Allow-Credentials = %q", origin, preflight, got)
			}
		}
	}
}
