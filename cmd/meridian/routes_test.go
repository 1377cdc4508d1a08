package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/client"
	"github.com/meridian-platform/meridian/controlplane"
	"github.com/meridian-platform/meridian/gateway"
	"github.com/meridian-platform/meridian/internal/cptest"
)

// Routing documents of the tests. routesV1 has two routes; routesV2
// changes orders, removes cart and adds search; routesBad has a route
// whose path does not start with /, and one without an upstream.
const (
	routesV1 = `policies:
  timeouts:
    fast: 2s
auth:
  api_keys:
    - {name: ci, hash: "sha256:` + sha256Hex + `"}
routes:
  - name: orders
    match:
      hosts: [api.example.com]
      methods: [GET, POST]
      path: /v1/orders/{id}
    upstream:
      service: orders
      subset: {version: "2"}
    policies: {timeout: fast}
    auth: {methods: [api_key], scopes: [orders.read, orders.write]}
  - name: cart
    match: {path_prefix: /cart/}
    split:
      - {service: cart, weight: 90}
      - {service: cart-next, weight: 10}
`
	routesV2 = `policies:
  timeouts:
    fast: 3s
routes:
  - name: orders
    match: {path: "/v1/orders/{id}"}
    upstream: {service: orders}
  - name: search
    match:
      path_prefix: /search
      headers: {x-beta: "*"}
    upstream: {urls: ["http://10.0.0.9:8080"]}
    rate_limit: per-ip
rate_limits:
  per-ip: {rate: 10, period: 1s}
`
	routesBad = `routes:
  - name: orders
    match: {path: /v1/orders}
    upstream: {service: orders}
  - name: cart
    match: {path: cart}
    upstream: {service: cart}
  - name: search
    match: {path: /search}
`
)

// sha256Hex is the form of an API key's hash.
const sha256Hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

// writeFiles writes name → content into a temp dir and returns the dir.
func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestRoutesValidate(t *testing.T) {
	v1JSON, err := yamlToJSON(routesV1)
	if err != nil {
		t.Fatal(err)
	}
	dir := writeFiles(t, map[string]string{
		"v1.yaml": routesV1, "v1.json": v1JSON, "bad.yaml": routesBad,
		"typo.yml":  "routes:\n  - name: a\n    match: {path: /a}\n    upstrem: {service: a}\n",
		"yaml.json": routesV1, // YAML in a .json file: read as JSON, it does not decode
	})
	f := func(name string) string { return filepath.Join(dir, name) }
	tests := []struct {
		name   string
		args   []string
		stdin  string
		code   int
		stdout string
		stderr []string // the lines on stderr
		line   string   // the error line main prints
	}{
		{name: "yaml", args: []string{"-f", f("v1.yaml")}, stdout: "ok: 2 routes\n"},
		{name: "json", args: []string{"-f", f("v1.json")}, stdout: "ok: 2 routes\n"},
		{name: "stdin", args: []string{"-f", "-"}, stdin: routesV1, stdout: "ok: 2 routes\n"},
		{name: "every problem, naming the route and the field", args: []string{"-f", f("bad.yaml")}, code: 1,
			stderr: []string{
				f("bad.yaml") + `: routes[1].match.path: route "cart": "cart" must start with /`,
				f("bad.yaml") + `: routes[2].upstream: route "search": is required: give upstream, split or aggregate`,
			},
			line: "meridian: " + f("bad.yaml") + " is not a valid routing document: 2 problems"},
		{name: "a decoding error names the line", args: []string{"-f", f("typo.yml")}, code: 1,
			stderr: []string{f("typo.yml") + `: line 4, column 5: unknown field "upstrem"`},
			line:   "meridian: " + f("typo.yml") + " is not a valid routing document: 1 problem"},
		{name: "the format follows the extension", args: []string{"-f", f("yaml.json")}, code: 1},
		{name: "--format overrides it", args: []string{"-f", f("yaml.json"), "--format", "yaml"}, stdout: "ok: 2 routes\n"},
		{name: "no file", args: nil, code: 2},
		{name: "a format that cannot be a document", args: []string{"-f", f("v1.yaml"), "--format", "text"}, code: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := invocation{stdin: tt.stdin}.run(t, append([]string{"routes", "validate"}, tt.args...)...)
			if o.code != tt.code {
				t.Fatalf("exit %d, want %d: %s\nstderr: %s", o.code, tt.code, o.line, o.stderr)
			}
			if o.stdout != tt.stdout {
				t.Errorf("stdout %q, want %q", o.stdout, tt.stdout)
			}
			if tt.stderr != nil && o.stderr != strings.Join(tt.stderr, "\n")+"\n" {
				t.Errorf("stderr\n%s\nwant\n%s", o.stderr, strings.Join(tt.stderr, "\n"))
			}
			if tt.line != "" && o.line != tt.line {
				t.Errorf("error %q, want %q", o.line, tt.line)
			}
		})
	}
}

func yamlToJSON(y string) (string, error) {
	cfg, err := gateway.Parse(meridian.FormatYAML, []byte(y))
	if err != nil {
		return "", err
	}
	b, err := json.Marshal(cfg)
	return string(b), err
}

// routesEntry is the double's answer for the document at revision 7.
func routesEntry(t *testing.T, key, value string) string {
	t.Helper()
	b, err := json.Marshal(meridian.ConfigEntry{Key: key, Value: value, Format: meridian.FormatYAML, Revision: 7,
		Author: "ci", Message: "orders v2", Time: time.Date(2026, 11, 26, 15, 0, 0, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestRoutesLsAndGet(t *testing.T) {
	key := gateway.Key("default")
	d := newDouble(t, map[string]http.HandlerFunc{
		"GET /v1/config/keys/" + key:                 reply(200, routesEntry(t, key, routesV1)),
		"GET /v1/config/keys/" + gateway.Key("edge"): reply(200, routesEntry(t, gateway.Key("edge"), routesV2)),
	})

	o := d.cli(t, "routes", "ls")
	wantOK(t, o)
	want := `revision 7 of gateway "default"'s routes, by ci at 2026-11-26T15:00:00Z: orders v2
NAME    MATCH                                    UPSTREAM              AUTH                                             POLICIES
orders  GET,POST api.example.com/v1/orders/{id}  orders[version=2]     methods=api_key,scopes=orders.read|orders.write  timeout=fast
cart    /cart/*                                  cart:90,cart-next:10  -                                                -
`
	if o.stdout != want {
		t.Errorf("ls\n%s\nwant\n%s", o.stdout, want)
	}
	// --gateway, or MERIDIAN_GATEWAY_NAME, chooses the document.
	env := d.env()
	env["MERIDIAN_GATEWAY_NAME"] = "edge"
	want = `revision 7 of gateway "edge"'s routes, by ci at 2026-11-26T15:00:00Z: orders v2
NAME    MATCH                    UPSTREAM              AUTH  POLICIES
orders  /v1/orders/{id}          orders                -     -
search  /search/* header:x-beta  http://10.0.0.9:8080  -     edge_rate_limit=per-ip
`
	for _, o := range []outcome{d.cli(t, "routes", "ls", "--gateway", "edge"), invocation{env: env}.run(t, "routes", "ls")} {
		wantOK(t, o)
		if o.stdout != want {
			t.Errorf("ls of edge\n%s\nwant\n%s", o.stdout, want)
		}
	}

	o = d.cli(t, "routes", "ls", "-o", "json")
	wantOK(t, o)
	var doc struct {
		Gateway, Key string
		Revision     uint64
		Routes       []gateway.Route
	}
	if err := json.Unmarshal([]byte(o.stdout), &doc); err != nil {
		t.Fatalf("ls -o json %q: %v", o.stdout, err)
	}
	if doc.Gateway != "default" || doc.Key != key || doc.Revision != 7 || len(doc.Routes) != 2 || doc.Routes[1].Split[1].Weight != 10 {
		t.Errorf("ls -o json = %+v", doc)
	}

	o = d.cli(t, "routes", "get", "orders")
	wantOK(t, o)
	want = `name: orders
match:
  hosts:
  - api.example.com
  path: /v1/orders/{id}
  methods:
  - GET
  - POST
upstream:
  service: orders
  subset:
    version: "2"
policies:
  timeout: fast
auth:
  methods:
  - api_key
  scopes:
  - orders.read
  - orders.write
`
	if o.stdout != want {
		t.Errorf("get orders\n%s\nwant\n%s", o.stdout, want)
	}
	o = d.cli(t, "routes", "get", "cart", "-o", "json")
	wantOK(t, o)
	var r gateway.Route
	if err := json.Unmarshal([]byte(o.stdout), &r); err != nil || r.Name != "cart" || r.Match.PathPrefix != "/cart/" {
		t.Errorf("get cart -o json: %+v %v", r, err)
	}
	o = d.cli(t, "routes", "get")
	wantOK(t, o)
	if o.stdout != routesV1 {
		t.Errorf("get without a name printed\n%s\nwant the document as stored", o.stdout)
	}
	o = d.cli(t, "routes", "get", "-o", "json")
	wantOK(t, o)
	var en meridian.ConfigEntry
	if err := json.Unmarshal([]byte(o.stdout), &en); err != nil || en.Revision != 7 || en.Value != routesV1 {
		t.Errorf("get -o json: %+v %v", en, err)
	}

	o = d.cli(t, "routes", "get", "nope")
	if o.code != 1 || o.line != `meridian: gateway "default" has no route "nope" in revision 7 (see 'meridian routes ls')` {
		t.Errorf("unknown route: exit %d %s", o.code, o.line)
	}
}

func TestRoutesMissingDocumentSaysHowToCreateOne(t *testing.T) {
	d := newDouble(t, map[string]http.HandlerFunc{
		"GET /v1/config/keys/{key...}":    problem(404, "not_found", "", "config key does not exist", 0),
		"GET /v1/config/history/{key...}": problem(404, "not_found", "", "config key has never been written", 0),
	})
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"routes", "ls"}, `meridian: no routing document for gateway "default" yet: apply one with 'meridian routes apply -f routes.yaml'`},
		{[]string{"routes", "get", "orders"}, `meridian: no routing document for gateway "default" yet: apply one with 'meridian routes apply -f routes.yaml'`},
		{[]string{"routes", "history"}, `meridian: no routing document for gateway "default" yet: apply one with 'meridian routes apply -f routes.yaml'`},
		{[]string{"routes", "ls", "--gateway", "edge"}, `meridian: no routing document for gateway "edge" yet: apply one with 'meridian routes apply --gateway edge -f routes.yaml'`},
		{[]string{"routes", "rollback", "3"}, `meridian: revision 3 is not a routing document of gateway "default" (see 'meridian routes history')`},
	} {
		o := d.cli(t, tc.args...)
		if o.code != 1 || o.line != tc.want {
			t.Errorf("%v: exit %d %s\nwant %s", tc.args, o.code, o.line, tc.want)
		}
	}
	o := d.cli(t, "routes", "ls", "--gateway", "Not_A_Name")
	if o.code != 2 || !strings.Contains(o.line, "--gateway: ") {
		t.Errorf("bad --gateway: exit %d %s", o.code, o.line)
	}
	o = d.cli(t, "routes", "rollback", "x")
	if o.code != 2 || o.line != `meridian: REV: "x" is not a revision (a number from 'meridian routes history'); see 'meridian routes rollback --help'` {
		t.Errorf("bad REV: exit %d %s", o.code, o.line)
	}
}

func TestRoutesApplyOfAnInvalidDocumentSendsNothing(t *testing.T) {
	d := newDouble(t, nil)
	dir := writeFiles(t, map[string]string{"bad.yaml": routesBad})
	o := d.cli(t, "routes", "apply", "-f", filepath.Join(dir, "bad.yaml"))
	if o.code != 1 || !strings.Contains(o.stderr, `routes[1].match.path: route "cart"`) {
		t.Fatalf("exit %d: %s\nstderr: %s", o.code, o.line, o.stderr)
	}
	if rs := d.requests(); len(rs) != 0 {
		t.Fatalf("an invalid document reached the control plane: %+v", rs)
	}
}

func TestRoutesChanges(t *testing.T) {
	tgt := &routesTarget{name: "default"}
	entry := func(doc string) *meridian.ConfigEntry {
		return &meridian.ConfigEntry{Value: doc, Format: meridian.FormatYAML, Revision: 7}
	}
	parse := func(doc string) *gateway.Config {
		cfg, err := gateway.Parse(meridian.FormatYAML, []byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	a := "routes:\n- {name: a, match: {path: /a}, upstream: {service: a}}\n"
	b := "- {name: b, match: {path: /b}, upstream: {service: b}}\n"
	c := "- {name: c, match: {path: /c}, upstream: {service: c}}\n"
	for _, tc := range []struct {
		name       string
		prev, next string
		want       string
	}{
		{"first document", "", a + b, `first document of gateway "default": 2 routes: a, b`},
		{"same document", a + b, a + b, "since revision 7: no change"},
		{"added and removed", a + b, a + c, "since revision 7: added c; removed b; 1 unchanged"},
		{"changed", a + b, a + strings.Replace(b, "service: b", "service: b2", 1), "since revision 7: changed b; 1 unchanged"},
		{"reordered", a + b + c, "routes:\n" + c + strings.TrimPrefix(a, "routes:\n") + b, "since revision 7: routes reordered; 3 unchanged"},
		{"settings", a, "default: {timeout: t}\npolicies: {timeouts: {t: 1s}}\n" + a,
			"since revision 7: default, policies changed; 1 unchanged"},
		{"the replaced revision did not validate", "routes: []\n", a, "replaces revision 7, which was not a valid document: 1 route"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var prev *meridian.ConfigEntry
			if tc.prev != "" {
				prev = entry(tc.prev)
			}
			if got := tgt.changes(prev, parse(tc.next)); got != tc.want {
				t.Errorf("changes = %q\nwant      %q", got, tc.want)
			}
		})
	}
}

func TestCompactJSON(t *testing.T) {
	for _, tc := range []struct {
		in   any
		want string
	}{
		{struct{}{}, ""},
		{map[string]any{}, ""},
		{struct {
			B string   `json:"b"`
			A []string `json:"a"`
			N struct {
				X int  `json:"x"`
				Y bool `json:"y"`
			} `json:"n"`
		}{B: "two", A: []string{"p", "q"}}, "b=two,a=p|q,n=(x=0,y=false)"},
	} {
		if got := compactJSON(tc.in); got != tc.want {
			t.Errorf("compactJSON(%+v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestRoutesEndToEnd runs the routes commands, and a raw config put,
// against a real control plane with the validation 'meridian server' gives
// it.
func TestRoutesEndToEnd(t *testing.T) {
	// bypass lets the test store a document that does not validate now, as
	// one written before the hook or under an older gateway would be.
	var bypass atomic.Bool
	cp := cptest.Start(t, cptest.WithConfig(func(c *controlplane.Config) {
		c.ValidateConfig = func(key string, format meridian.ConfigFormat, value string) error {
			if bypass.Load() {
				return nil
			}
			return validateConfig(key, format, value)
		}
	}))
	env := map[string]string{"MERIDIAN_ADDR": cp.Addr, "MERIDIAN_TOKEN": cp.Secret}
	cli := func(args ...string) outcome { return invocation{env: env}.run(t, args...) }
	mustCLI := func(args ...string) string {
		t.Helper()
		o := cli(args...)
		wantOK(t, o)
		return o.stdout
	}
	dir := writeFiles(t, map[string]string{"v1.yaml": routesV1, "v2.yaml": routesV2, "bad.yaml": routesBad,
		"spec.yaml": "policies:\n  retries:\n    fast: {max_attempts: 11}\n"})
	file := func(name string) string { return filepath.Join(dir, name) }
	key := gateway.Key("default")
	ctx := context.Background()
	stored := func() []meridian.ConfigEntry {
		t.Helper()
		es, err := cp.Client.ConfigHistory(ctx, key)
		if meridian.IsCode(err, meridian.CodeNotFound) {
			return nil
		}
		if err != nil {
			t.Fatal(err)
		}
		return es
	}

	// An invalid document: every problem named, nothing stored.
	o := cli("routes", "apply", "-f", file("bad.yaml"))
	if o.code != 1 || !strings.Contains(o.stderr, `routes[1].match.path: route "cart": "cart" must start with /`) ||
		!strings.Contains(o.stderr, `routes[2].upstream: route "search"`) {
		t.Fatalf("apply of an invalid document: exit %d %s\nstderr: %s", o.code, o.line, o.stderr)
	}
	if es := stored(); len(es) != 0 {
		t.Fatalf("an invalid document was stored: %+v", es)
	}
	if o := cli("routes", "ls"); o.code != 1 || !strings.Contains(o.line, "no routing document for gateway \"default\" yet") {
		t.Fatalf("ls without a document: exit %d %s", o.code, o.line)
	}

	// Apply, then change: the summary names what changed.
	out := mustCLI("routes", "apply", "-f", file("v1.yaml"), "-m", "first", "--expect-revision", "0")
	r1 := stored()[0].Revision
	want := fmt.Sprintf("applied revision %d of gateway \"default\"'s routes (%s)\nfirst document of gateway \"default\": 2 routes: orders, cart\n", r1, key)
	if out != want {
		t.Fatalf("apply v1:\n%s\nwant\n%s", out, want)
	}
	if o := cli("routes", "apply", "-f", file("v2.yaml"), "--expect-revision", "0"); o.code != 1 ||
		o.line != fmt.Sprintf("meridian: revision conflict on %s: the current revision is %d (re-read and retry with --expect-revision %d)", key, r1, r1) {
		t.Fatalf("apply with a stale --expect-revision: exit %d %s", o.code, o.line)
	}
	out = mustCLI("routes", "apply", "-f", file("v2.yaml"), "-m", "search", "--expect-revision", u(r1))
	r2 := stored()[1].Revision
	want = fmt.Sprintf("applied revision %d of gateway \"default\"'s routes (%s)\nsince revision %d: added search; changed orders; removed cart; auth, policies, rate_limits changed\n", r2, key, r1)
	if out != want {
		t.Fatalf("apply v2:\n%s\nwant\n%s", out, want)
	}
	if en, err := cp.Client.GetConfig(ctx, key, 0); err != nil || en.Format != meridian.FormatYAML || en.Value != routesV2 || en.Message != "search" {
		t.Fatalf("stored after apply: %+v %v", en, err)
	}

	out = mustCLI("routes", "ls")
	if !strings.Contains(out, fmt.Sprintf("revision %d of gateway \"default\"'s routes, by admin at ", r2)) ||
		!strings.Contains(out, "orders  /v1/orders/{id}") || !strings.Contains(out, "http://10.0.0.9:8080") || strings.Contains(out, "cart") {
		t.Fatalf("ls:\n%s", out)
	}
	if out := mustCLI("routes", "get", "search"); !strings.Contains(out, "name: search\n") || !strings.Contains(out, "rate_limit: per-ip\n") {
		t.Fatalf("get search:\n%s", out)
	}

	// A raw config put is refused by the server, naming route and field.
	o = cli("config", "put", key, "--file", file("bad.yaml"))
	if o.code != 1 || !strings.Contains(o.line, `value.routes[1].match.path: route "cart": "cart" must start with /`) ||
		!strings.Contains(o.line, `value.routes[2].upstream: route "search"`) {
		t.Fatalf("raw put of an invalid document: exit %d %s", o.code, o.line)
	}
	if o := cli("config", "put", key, "routes: []", "--format", "text"); o.code != 1 || !strings.Contains(o.line, "a routing document is yaml or json, not text") {
		t.Fatalf("raw put as text: exit %d %s", o.code, o.line)
	}
	if o := cli("config", "put", "meridian/resiliency/checkout", "--file", file("spec.yaml")); o.code != 1 ||
		!strings.Contains(o.line, "value.policies.retries.fast.max_attempts: 11 is out of range 1-10") {
		t.Fatalf("raw put of an invalid resiliency spec: exit %d %s", o.code, o.line)
	}
	mustCLI("config", "put", "meridian/gateway/notes", "anything goes") // not a routing document's key
	if es := stored(); len(es) != 2 {
		t.Fatalf("refused puts stored revisions: %+v", es)
	}

	// A revision that does not validate now: history says so, ls refuses
	// it, and neither the CLI nor the server rolls back to it.
	bypass.Store(true)
	bad, err := cp.Client.PutConfig(ctx, key, client.PutConfigRequest{Value: routesBad, Format: meridian.FormatYAML, Message: "old rules"})
	bypass.Store(false)
	if err != nil {
		t.Fatal(err)
	}
	if o := cli("routes", "ls"); o.code != 1 || !strings.Contains(o.line, fmt.Sprintf("revision %d of gateway \"default\"'s routing document is not valid", bad.Revision)) ||
		!strings.Contains(o.line, `routes[1].match.path: route "cart"`) {
		t.Fatalf("ls of an invalid revision: exit %d %s", o.code, o.line)
	}
	out = mustCLI("routes", "history")
	for _, row := range []string{u(r1) + " ", "first", "search", "old rules", "invalid"} {
		if !strings.Contains(out, row) {
			t.Fatalf("history lacks %q:\n%s", row, out)
		}
	}
	var hist routesHistory
	if err := json.Unmarshal([]byte(mustCLI("routes", "history", "-o", "json")), &hist); err != nil {
		t.Fatal(err)
	}
	if len(hist.Revisions) != 3 || hist.Revisions[0].Routes != 2 || !hist.Revisions[0].Valid || hist.Revisions[2].Valid {
		t.Fatalf("history -o json = %+v", hist)
	}
	o = cli("routes", "rollback", u(bad.Revision))
	if o.code != 1 || !strings.Contains(o.stderr, fmt.Sprintf(`revision %d: routes[1].match.path: route "cart"`, bad.Revision)) {
		t.Fatalf("rollback to an invalid revision: exit %d %s\nstderr: %s", o.code, o.line, o.stderr)
	}
	_, err = cp.Client.RollbackConfig(ctx, key, bad.Revision, "")
	var me *meridian.Error
	if !errors.As(err, &me) || me.Code != meridian.CodeInvalid || me.Field != "revision" || !strings.Contains(me.Message, `routes[1].match.path: route "cart"`) {
		t.Fatalf("the server's rollback to an invalid revision: %v", err)
	}
	if es := stored(); len(es) != 3 {
		t.Fatalf("refused rollbacks stored revisions: %+v", es)
	}

	// Rollback to a valid revision.
	out = mustCLI("routes", "rollback", u(r1), "-m", "back to v1")
	r4 := stored()[3]
	want = fmt.Sprintf("rolled gateway \"default\"'s routes back to revision %d: now revision %d\nreplaces revision %d, which was not a valid document: 2 routes\n", r1, r4.Revision, bad.Revision)
	if out != want || r4.Value != routesV1 || r4.Message != "back to v1" {
		t.Fatalf("rollback:\n%s\nwant\n%s\nstored %+v", out, want, r4)
	}
	if out := mustCLI("routes", "ls"); !strings.Contains(out, "cart:90,cart-next:10") {
		t.Fatalf("ls after the rollback:\n%s", out)
	}
}
