package gateway

import (
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

// TestRouting is the route-matching table: one document, many requests,
// the route each one lands on and the parameters it captured.
func TestRouting(t *testing.T) {
	doc := `
routes:
  - name: catch-all
    match: {path_prefix: /}
    upstream: {urls: ["http://127.0.0.1:1"]}
  - name: api
    match: {path_prefix: /api}
    upstream: {urls: ["http://127.0.0.1:1"]}
  - name: api-v2
    match: {path_prefix: /api/v2/}
    upstream: {urls: ["http://127.0.0.1:1"]}
  - name: order
    match: {path: "/api/orders/{id}", methods: [GET, HEAD]}
    upstream: {urls: ["http://127.0.0.1:1"]}
  - name: order-write
    match: {path: "/api/orders/{id}", methods: [PUT, DELETE]}
    upstream: {urls: ["http://127.0.0.1:1"]}
  - name: order-items
    match: {path: "/api/orders/{id}/items/{item}"}
    upstream: {urls: ["http://127.0.0.1:1"]}
  - name: orders-new
    match: {path: "/api/orders/new"}
    upstream: {urls: ["http://127.0.0.1:1"]}
  - name: files
    match: {path: "/files/{path...}"}
    upstream: {urls: ["http://127.0.0.1:1"]}
  - name: admin-host
    match: {hosts: [admin.example.com], path_prefix: /}
    upstream: {urls: ["http://127.0.0.1:1"]}
  - name: wild-host
    match: {hosts: ["*.example.com"], path_prefix: /api}
    upstream: {urls: ["http://127.0.0.1:1"]}
  - name: beta
    match: {path_prefix: /api, headers: {x-beta: "1"}}
    upstream: {urls: ["http://127.0.0.1:1"]}
  - name: debug
    match: {path_prefix: /api, query: {debug: "*"}}
    upstream: {urls: ["http://127.0.0.1:1"]}
`
	cfg, err := Parse("yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	g := newTestGateway(t)
	if err := g.Apply(cfg, 1); err != nil {
		t.Fatal(err)
	}
	rt := g.cur.Load()
	for _, tc := range []struct {
		name, method, host, target string
		header                     [2]string
		want                       string
		params                     []string
	}{
		{name: "root", target: "/", want: "catch-all"},
		{name: "prefix at a segment boundary", target: "/api/x", want: "api"},
		{name: "prefix itself", target: "/api", want: "api"},
		{name: "not a segment boundary", target: "/apix", want: "catch-all"},
		{name: "longer prefix wins", target: "/api/v2/things", want: "api-v2"},
		{name: "prefix with a trailing slash", target: "/api/v2", want: "api-v2"},
		{name: "template", target: "/api/orders/42", want: "order", params: []string{"42"}},
		{name: "template by method", method: "DELETE", target: "/api/orders/42", want: "order-write", params: []string{"42"}},
		{name: "method not listed falls through", method: "POST", target: "/api/orders/42", want: "api"},
		{name: "exact beats template", target: "/api/orders/new", want: "orders-new"},
		{name: "two parameters", target: "/api/orders/7/items/9", want: "order-items", params: []string{"7", "9"}},
		{name: "empty parameter does not match", target: "/api/orders//items/9", want: "api"},
		{name: "rest parameter", target: "/files/a/b/c.txt", want: "files", params: []string{"a/b/c.txt"}},
		{name: "rest parameter may be empty", target: "/files/", want: "files", params: []string{""}},
		{name: "exact host first", host: "admin.example.com", target: "/api/orders/1", want: "admin-host"},
		{name: "host match ignores case and port", host: "ADMIN.example.com:8443", target: "/x", want: "admin-host"},
		{name: "wildcard host", host: "shop.example.com", target: "/api/x", want: "wild-host"},
		{name: "wildcard takes several labels", host: "a.b.example.com", target: "/api/x", want: "wild-host"},
		{name: "wildcard is not the apex", host: "example.com", target: "/api/x", want: "api"},
		{name: "header condition", target: "/api/x", header: [2]string{"X-Beta", "1"}, want: "beta"},
		{name: "header with another value", target: "/api/x", header: [2]string{"X-Beta", "2"}, want: "api"},
		{name: "query present", target: "/api/x?debug", want: "debug"},
		{name: "query absent", target: "/api/x?other=1", want: "api"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = "GET"
			}
			r := httptest.NewRequest(method, tc.target, nil)
			if tc.host != "" {
				r.Host = tc.host
			} else {
				r.Host = "gw.local"
			}
			if tc.header[0] != "" {
				r.Header.Set(tc.header[0], tc.header[1])
			}
			ro, params := rt.match(r, nil)
			if ro == nil {
				t.Fatalf("no route; want %s", tc.want)
			}
			if ro.name != tc.want {
				t.Fatalf("route %s; want %s", ro.name, tc.want)
			}
			if !slices.Equal(params, tc.params) && (len(params) != 0 || len(tc.params) != 0) {
				t.Fatalf("params %q; want %q", params, tc.params)
			}
		})
	}
}

func TestRoutingNoMatchIs404Problem(t *testing.T) {
	g := newTestGateway(t)
	cfg := mustParse(t, `routes: [{name: a, match: {path: /a}, upstream: {urls: ["http://127.0.0.1:1"]}}]`)
	if err := g.Apply(cfg, 1); err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	g.ServeHTTP(w, httptest.NewRequest("GET", "/b", nil))
	if w.Code != 404 || w.Header().Get("Content-Type") != "application/problem+json" || w.Header().Get("X-Request-Id") == "" {
		t.Fatalf("got %d %q id %q", w.Code, w.Header().Get("Content-Type"), w.Header().Get("X-Request-Id"))
	}
	if !strings.Contains(w.Body.String(), "no route matches GET") {
		t.Fatalf("body %s", w.Body)
	}
}

// TestValidationNamesRouteAndField: every problem of a document is
// reported at once, each naming the route and the field.
func TestValidationNamesRouteAndField(t *testing.T) {
	doc := `
policies:
  timeouts: {fast: 2s}
rate_limits:
  per-ip: {rate: 10}
routes:
  - name: ok
    match: {path: /ok}
    upstream: {service: orders}
  - name: ok
    match: {path: "/v1/{id"}
    upstream: {urls: ["ftp://x"]}
  - name: Bad_Name
    match: {path: /a, path_prefix: /b}
    upstream: {service: orders, urls: ["http://x"]}
  - name: nothing
    match: {methods: [get]}
  - name: refs
    match: {path_prefix: /r}
    upstream: {service: orders}
    policies: {timeout: slow}
    rate_limit: per-user
    rewrite: {path: "/x/{id}"}
    split: [{service: a, weight: 1}]
    headers: {request: {set: {Connection: close}}}
`
	_, err := Parse("yaml", []byte(doc))
	if err == nil {
		t.Fatal("invalid document accepted")
	}
	for _, want := range []string{
		`routes[1].name: route "ok": "ok" is also the name of routes[0]`,
		`routes[1].match.path: route "ok": "/v1/{id"`,
		`routes[1].upstream.urls[0]: route "ok": "ftp://x": the scheme must be http or https`,
		`routes[2].name: route "Bad_Name"`,
		`routes[2].match.path: route "Bad_Name": give path or path_prefix, not both`,
		`routes[2].upstream.service: route "Bad_Name": give service or urls, not both`,
		`routes[3].match.methods[0]: route "nothing": "get" is not an HTTP method`,
		`routes[3].upstream: route "nothing": is required`,
		`routes[4].policies.timeout`,
		`routes[4].rate_limit: route "refs": "per-user" is not defined in rate_limits`,
		`routes[4].rewrite.path: route "refs": {id} is not a parameter of match.path`,
		`routes[4].upstream: route "refs": give only one of upstream, split and aggregate`,
		`routes[4].headers.request.set.Connection: route "refs": Connection is a hop-by-hop header`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("errors lack %q", want)
		}
	}
	if t.Failed() {
		t.Logf("errors:\n%v", err)
	}
}

func TestSyntaxErrorsNameTheLine(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"routes:\n  - name: a\n    match:\n      pathx: /\n", `line 4, column 7: unknown field "pathx"`},
		{"routes: [\n", "line 1"},
		{`{"routes": [{"name": "a", "match": {"methods": "GET"}}]}`, "line 1"},
	} {
		_, err := Parse("yaml", []byte(tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v; want %q", tc.doc, err, tc.want)
		}
	}
}

func mustParse(t *testing.T, doc string) *Config {
	t.Helper()
	cfg, err := Parse("yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func newTestGateway(t *testing.T) *Gateway {
	t.Helper()
	g, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	return g
}
