package controlplane_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/controlplane"
	"github.com/meridian-platform/meridian/controlplane/store/jetstream"
	"github.com/meridian-platform/meridian/internal/natsembed"
	"github.com/meridian-platform/meridian/internal/natstest"
)

// The config center's tests drive the HTTP API with plain net/http against
// a real embedded JetStream, so that they check the wire contract of
// docs/api.md itself. Helpers carry a config prefix: other tests of this
// package have their own.

// configServer is one control-plane replica under test.
type configServer struct {
	URL    string
	secret string // the admin token's
	stop   func() // idempotent; also run at cleanup
}

// startConfigServer starts a replica on a fresh embedded JetStream.
func startConfigServer(t *testing.T) *configServer {
	t.Helper()
	return startConfigServerOn(t, natstest.Start(t).Connect(t), "")
}

// startConfigServerOn starts a replica on nc and waits until it is ready.
// The admin secret is the replica's own when it created the admin token,
// else adminSecret.
func startConfigServerOn(t *testing.T, nc *nats.Conn, adminSecret string) *configServer {
	t.Helper()
	st, err := jetstream.New(nc, jetstream.Config{})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := controlplane.Open(context.Background(), controlplane.Config{Store: st, ShutdownTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	c := &configServer{URL: "http://" + ln.Addr().String(), secret: adminSecret}
	if s := srv.AdminSecret(); s != "" {
		c.secret = s
	}
	stopped := false
	c.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}
	t.Cleanup(c.stop)

	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(c.URL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the replica was not ready after 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return c
}

// configAnswer is an HTTP answer.
type configAnswer struct {
	status int
	header http.Header
	body   []byte
}

// index is the answer's X-Meridian-Index.
func (a configAnswer) index(t *testing.T) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(a.header.Get("X-Meridian-Index"), 10, 64)
	if err != nil {
		t.Fatalf("X-Meridian-Index %q: %v", a.header.Get("X-Meridian-Index"), err)
	}
	return n
}

// configProblem is the part of a problem+json body the tests check.
type configProblem struct {
	Status          int    `json:"status"`
	Code            string `json:"code"`
	Field           string `json:"field"`
	Detail          string `json:"detail"`
	CurrentRevision uint64 `json:"current_revision"`
}

func (a configAnswer) problem(t *testing.T) configProblem {
	t.Helper()
	if ct := a.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type %q, want application/problem+json; body %s", ct, a.body)
	}
	var p configProblem
	if err := json.Unmarshal(a.body, &p); err != nil {
		t.Fatalf("problem %s: %v", a.body, err)
	}
	return p
}

// wantProblem asserts an error answer's status and field.
func (a configAnswer) wantProblem(t *testing.T, status int, field string) configProblem {
	t.Helper()
	if a.status != status {
		t.Fatalf("status %d, want %d; body %s", a.status, status, a.body)
	}
	p := a.problem(t)
	if p.Field != field {
		t.Fatalf("field %q, want %q; detail %q", p.Field, field, p.Detail)
	}
	return p
}

func (a configAnswer) entry(t *testing.T) meridian.ConfigEntry {
	t.Helper()
	if a.status != http.StatusOK {
		t.Fatalf("status %d, want 200; body %s", a.status, a.body)
	}
	var e meridian.ConfigEntry
	if err := json.Unmarshal(a.body, &e); err != nil {
		t.Fatalf("entry %s: %v", a.body, err)
	}
	return e
}

func (a configAnswer) entries(t *testing.T) []meridian.ConfigEntry {
	t.Helper()
	if a.status != http.StatusOK {
		t.Fatalf("status %d, want 200; body %s", a.status, a.body)
	}
	var out struct {
		Entries []meridian.ConfigEntry `json:"entries"`
	}
	if err := json.Unmarshal(a.body, &out); err != nil {
		t.Fatalf("entries %s: %v", a.body, err)
	}
	return out.Entries
}

// configDo sends a request with token (the admin's when empty) and a raw
// JSON body ("" for none).
func (c *configServer) do(t *testing.T, token, method, path, body string) configAnswer {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, c.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token == "" {
		token = c.secret
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return configAnswer{status: resp.StatusCode, header: resp.Header, body: b}
}

// put writes a key as the admin and returns the new entry.
func (c *configServer) put(t *testing.T, key string, body any) meridian.ConfigEntry {
	t.Helper()
	b, _ := json.Marshal(body)
	return c.do(t, "", http.MethodPut, "/v1/config/keys/"+key, string(b)).entry(t)
}

// token creates a token and returns its secret once this replica accepts
// it (tokens reach the authenticating mirror through a watch).
func (c *configServer) token(t *testing.T, name string, role meridian.Role, service string) string {
	t.Helper()
	b, _ := json.Marshal(map[string]string{"name": name, "role": string(role), "service": service})
	a := c.do(t, "", http.MethodPost, "/v1/tokens", string(b))
	if a.status != http.StatusCreated {
		t.Fatalf("create token: %d %s", a.status, a.body)
	}
	var out struct{ Secret string }
	if err := json.Unmarshal(a.body, &out); err != nil || out.Secret == "" {
		t.Fatalf("create token: %s %v", a.body, err)
	}
	for deadline := time.Now().Add(10 * time.Second); c.do(t, out.Secret, http.MethodGet, "/v1/whoami", "").status != http.StatusOK; {
		if time.Now().After(deadline) {
			t.Fatalf("token %s was not accepted after 10s", name)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return out.Secret
}

func configKeys(es []meridian.ConfigEntry) string {
	keys := make([]string, len(es))
	for i, e := range es {
		keys[i] = e.Key
	}
	return strings.Join(keys, " ")
}

func TestConfigPutGetAndCompareAndSet(t *testing.T) {
	c := startConfigServer(t)
	const key = "prod/orders/db_url"
	path := "/v1/config/keys/" + key

	first := c.put(t, key, map[string]any{"value": "postgres://db-1/orders", "message": "first"})
	if first.Key != key || first.Value != "postgres://db-1/orders" || first.Format != meridian.FormatText ||
		first.Author != "admin" || first.Message != "first" || first.Revision == 0 || first.Time.IsZero() || first.Deleted {
		t.Fatalf("put answered %+v", first)
	}
	got := c.do(t, "", http.MethodGet, path, "")
	if e := got.entry(t); e != first {
		t.Fatalf("get = %+v, want %+v", e, first)
	}
	if got.index(t) < first.Revision {
		t.Fatalf("X-Meridian-Index %d is before the write at %d", got.index(t), first.Revision)
	}

	// Create-only on an existing key.
	p := c.do(t, "", http.MethodPut, path, `{"value": "x", "expect_revision": 0}`).wantProblem(t, http.StatusConflict, "")
	if p.Code != "conflict" || p.CurrentRevision != first.Revision {
		t.Fatalf("create-only on an existing key: %+v, want conflict with current_revision %d", p, first.Revision)
	}
	// The right revision wins; the same one again is stale.
	second := c.put(t, key, map[string]any{"value": "postgres://db-2/orders", "expect_revision": first.Revision})
	if second.Revision <= first.Revision {
		t.Fatalf("revision went from %d to %d", first.Revision, second.Revision)
	}
	stale := c.do(t, "", http.MethodPut, path, `{"value": "stale", "expect_revision": `+fmt.Sprint(first.Revision)+`}`)
	if p := stale.wantProblem(t, http.StatusConflict, ""); p.CurrentRevision != second.Revision {
		t.Fatalf("stale write: current_revision %d, want %d", p.CurrentRevision, second.Revision)
	}
	// Create-only on a new key.
	if e := c.put(t, "prod/orders/new", map[string]any{"value": "1", "expect_revision": 0}); e.Revision <= second.Revision {
		t.Fatalf("create-only on a new key: %+v", e)
	}
	if e := c.do(t, "", http.MethodGet, path, "").entry(t); e.Value != "postgres://db-2/orders" {
		t.Fatalf("latest after the lost races = %+v", e)
	}

	// A past revision, and revisions that are not this key's.
	old := c.do(t, "", http.MethodGet, path+"?revision="+fmt.Sprint(first.Revision), "")
	if e := old.entry(t); e != first || old.index(t) != first.Revision {
		t.Fatalf("revision %d = %+v (index %d)", first.Revision, e, old.index(t))
	}
	other := c.put(t, "prod/payments/db_url", map[string]any{"value": "p"})
	for _, rev := range []uint64{other.Revision, 9999} {
		p := c.do(t, "", http.MethodGet, path+"?revision="+fmt.Sprint(rev), "").wantProblem(t, http.StatusNotFound, "revision")
		if !strings.Contains(p.Detail, "not a revision of config key") {
			t.Fatalf("revision %d of another key: %q", rev, p.Detail)
		}
	}
	c.do(t, "", http.MethodGet, path+"?revision=x", "").wantProblem(t, http.StatusBadRequest, "revision")
	c.do(t, "", http.MethodGet, "/v1/config/keys/prod/orders/missing", "").wantProblem(t, http.StatusNotFound, "")

	// Keys are validated, naming the field.
	for _, bad := range []string{"prod/orders/", "prod/bad%20key", "prod/caf%C3%A9", "prod/" + strings.Repeat("k", 512)} {
		c.do(t, "", http.MethodGet, "/v1/config/keys/"+bad, "").wantProblem(t, http.StatusBadRequest, "key")
		c.do(t, "", http.MethodPut, "/v1/config/keys/"+bad, `{"value": "1"}`).wantProblem(t, http.StatusBadRequest, "key")
	}
}

func TestConfigBadWritesAreRefusedNamingTheFieldAndNothingIsStored(t *testing.T) {
	c := startConfigServer(t)
	path := "/v1/config/keys/prod/orders/settings"
	for _, tc := range []struct {
		name, body string
		status     int
		field      string
		detail     string // a part of the detail
	}{
		{"json that does not parse", `{"value": "{\"a\": 1,\n \"b\": }", "format": "json"}`, 400, "value", "line 2, column 7"},
		{"json with trailing data", `{"value": "{} {}", "format": "json"}`, 400, "value", "is not valid JSON"},
		{"empty json", `{"value": "", "format": "json"}`, 400, "value", "is not valid JSON"},
		{"yaml that does not parse", `{"value": "a: 1\nb: [1, 2\n", "format": "yaml"}`, 400, "value", "line 2, column 4"},
		{"yaml with a duplicate key", `{"value": "a: 1\na: 2\n", "format": "yaml"}`, 400, "value", "already defined"},
		{"unknown format", `{"value": "1", "format": "toml"}`, 400, "format", `"toml" is not one of json, yaml, text`},
		{"unknown body field", `{"value": "1", "comment": "typo"}`, 400, "comment", "not a known field"},
		{"value missing", `{"format": "text"}`, 400, "value", "is required"},
		{"value not a string", `{"value": 5}`, 400, "value", "must be a string"},
		{"expect_revision negative", `{"value": "1", "expect_revision": -1}`, 400, "expect_revision", ""},
		{"message too long", `{"value": "1", "message": "` + strings.Repeat("m", 1025) + `"}`, 400, "message", "1025 bytes; the limit is 1024"},
		{"value too large", `{"value": "` + strings.Repeat("v", meridian.DefaultMaxValueSize+1) + `"}`, 413, "value",
			fmt.Sprintf("is %d bytes; the limit is %d bytes", meridian.DefaultMaxValueSize+1, meridian.DefaultMaxValueSize)},
		{"malformed body", `{"value": `, 400, "body", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := c.do(t, "", http.MethodPut, path, tc.body).wantProblem(t, tc.status, tc.field)
			if !strings.Contains(p.Detail, tc.detail) {
				t.Fatalf("detail %q does not say %q", p.Detail, tc.detail)
			}
		})
	}
	c.do(t, "", http.MethodGet, path, "").wantProblem(t, http.StatusNotFound, "")
	if a := c.do(t, "", http.MethodGet, "/v1/config/history/prod/orders/settings", ""); a.status != http.StatusNotFound {
		t.Fatalf("history after refused writes: %d %s", a.status, a.body)
	}

	// Values that parse are stored with their format; one at the limit fits.
	for _, tc := range []struct{ format, value string }{
		{"json", `{"pool": 10, "hosts": ["a", "b"]}`},
		{"yaml", "pool: 10\nhosts:\n  - a\n  - b\n"},
		{"text", "<anything & everything>"},
		{"text", strings.Repeat("v", meridian.DefaultMaxValueSize)},
	} {
		e := c.put(t, "prod/orders/"+tc.format, map[string]any{"value": tc.value, "format": tc.format})
		got := c.do(t, "", http.MethodGet, "/v1/config/keys/prod/orders/"+tc.format, "").entry(t)
		if got.Value != tc.value || string(got.Format) != tc.format || got.Revision != e.Revision {
			t.Fatalf("%s value stored as %q (%s, revision %d)", tc.format, got.Value, got.Format, got.Revision)
		}
	}
}

func TestConfigHistoryDiffAndRollback(t *testing.T) {
	c := startConfigServer(t)
	ops := c.token(t, "ops", meridian.RoleOperator, "")
	const key = "prod/orders/db"
	v1 := "host: db-1\npool: 10\nuser: app\n"
	v2 := "host: db-1\npool: 20\nuser: app\n"
	r1 := c.put(t, key, map[string]any{"value": v1, "format": "yaml", "message": "initial"})
	a := c.do(t, ops, http.MethodPut, "/v1/config/keys/"+key, `{"value": "host: db-1\npool: 20\nuser: app\n", "format": "yaml", "message": "raise the pool for Black Friday"}`)
	r2 := a.entry(t)
	if r2.Author != "ops" {
		t.Fatalf("author = %q, want the operator token's name", r2.Author)
	}

	hist := c.do(t, "", http.MethodGet, "/v1/config/history/"+key, "")
	if es := hist.entries(t); len(es) != 2 || es[0] != r1 || es[1] != r2 {
		t.Fatalf("history = %+v, want [%+v %+v]", es, r1, r2)
	}
	if hist.index(t) != r2.Revision {
		t.Fatalf("history index %d, want %d", hist.index(t), r2.Revision)
	}

	wantDiff := fmt.Sprintf(`--- prod/orders/db@%d
+++ prod/orders/db@%d
@@ -1,3 +1,3 @@
 host: db-1
-pool: 10
+pool: 20
 user: app
`, r1.Revision, r2.Revision)
	for _, q := range []string{
		fmt.Sprintf("?from=%d&to=%d", r1.Revision, r2.Revision),
		fmt.Sprintf("?from=%d", r1.Revision), // to defaults to the latest
	} {
		a := c.do(t, "", http.MethodGet, "/v1/config/diff/"+key+q, "")
		var d struct {
			From, To uint64
			Diff     string
		}
		if err := json.Unmarshal(a.body, &d); err != nil || a.status != 200 {
			t.Fatalf("diff%s: %d %s", q, a.status, a.body)
		}
		if d.From != r1.Revision || d.To != r2.Revision || d.Diff != wantDiff {
			t.Fatalf("diff%s = %d..%d\n%s\nwant\n%s", q, d.From, d.To, d.Diff, wantDiff)
		}
	}
	other := c.put(t, "prod/other", map[string]any{"value": "x"})
	c.do(t, "", http.MethodGet, fmt.Sprintf("/v1/config/diff/%s?from=%d", key, other.Revision), "").wantProblem(t, http.StatusNotFound, "from")
	c.do(t, "", http.MethodGet, fmt.Sprintf("/v1/config/diff/%s?from=%d&to=%d", key, r1.Revision, other.Revision), "").wantProblem(t, http.StatusNotFound, "to")
	c.do(t, "", http.MethodGet, "/v1/config/diff/"+key, "").wantProblem(t, http.StatusBadRequest, "from")

	// A rollback is a new revision with the old value, by whoever rolled back.
	rb := c.do(t, "", http.MethodPost, "/v1/config/rollback/"+key, fmt.Sprintf(`{"revision": %d}`, r1.Revision)).entry(t)
	if rb.Revision <= other.Revision || rb.Value != v1 || rb.Format != meridian.FormatYAML || rb.Author != "admin" ||
		rb.Message != fmt.Sprintf("rollback to revision %d", r1.Revision) {
		t.Fatalf("rollback = %+v", rb)
	}
	if e := c.do(t, "", http.MethodGet, "/v1/config/keys/"+key, "").entry(t); e != rb {
		t.Fatalf("latest after rollback = %+v, want %+v", e, rb)
	}
	rb2 := c.do(t, ops, http.MethodPost, "/v1/config/rollback/"+key, fmt.Sprintf(`{"revision": %d, "message": "undo the rollback"}`, r2.Revision)).entry(t)
	if rb2.Value != v2 || rb2.Message != "undo the rollback" || rb2.Author != "ops" {
		t.Fatalf("second rollback = %+v", rb2)
	}
	if es := c.do(t, "", http.MethodGet, "/v1/config/history/"+key, "").entries(t); len(es) != 4 || es[2] != rb || es[3] != rb2 {
		t.Fatalf("history after rollbacks = %+v", es)
	}

	for _, tc := range []struct {
		body   string
		status int
		field  string
	}{
		{`{}`, 400, "revision"},
		{`{"revision": 0}`, 400, "revision"},
		{`{"revision": 1, "reason": "typo"}`, 400, "reason"},
		{fmt.Sprintf(`{"revision": %d}`, other.Revision), 404, "revision"},
		{fmt.Sprintf(`{"revision": %d, "message": "%s"}`, r1.Revision, strings.Repeat("m", 2000)), 400, "message"},
	} {
		c.do(t, "", http.MethodPost, "/v1/config/rollback/"+key, tc.body).wantProblem(t, tc.status, tc.field)
	}
	viewer := c.token(t, "dash", meridian.RoleViewer, "")
	c.do(t, viewer, http.MethodPost, "/v1/config/rollback/"+key, fmt.Sprintf(`{"revision": %d}`, r1.Revision)).wantProblem(t, http.StatusForbidden, "")
	if es := c.do(t, "", http.MethodGet, "/v1/config/history/"+key, "").entries(t); len(es) != 4 {
		t.Fatalf("refused rollbacks wrote revisions: %+v", es)
	}
}

func TestConfigDeleteKeepsHistory(t *testing.T) {
	c := startConfigServer(t)
	const key = "prod/orders/flag"
	path := "/v1/config/keys/" + key
	r1 := c.put(t, key, map[string]any{"value": "on"})
	r2 := c.put(t, key, map[string]any{"value": "off"})

	p := c.do(t, "", http.MethodDelete, path+"?expect_revision="+fmt.Sprint(r1.Revision), "").wantProblem(t, http.StatusConflict, "")
	if p.CurrentRevision != r2.Revision {
		t.Fatalf("stale delete: current_revision %d, want %d", p.CurrentRevision, r2.Revision)
	}
	c.do(t, "", http.MethodDelete, path+"?expect_revision=0", "").wantProblem(t, http.StatusBadRequest, "expect_revision")
	del := c.do(t, "", http.MethodDelete, path+"?expect_revision="+fmt.Sprint(r2.Revision), "")
	if del.status != http.StatusNoContent || del.index(t) <= r2.Revision {
		t.Fatalf("delete: %d index %s %s", del.status, del.header.Get("X-Meridian-Index"), del.body)
	}
	c.do(t, "", http.MethodGet, path, "").wantProblem(t, http.StatusNotFound, "")
	c.do(t, "", http.MethodDelete, path, "").wantProblem(t, http.StatusNotFound, "")
	if es := c.do(t, "", http.MethodGet, "/v1/config/keys?prefix=prod/", "").entries(t); len(es) != 0 {
		t.Fatalf("a deleted key is listed: %+v", es)
	}

	hist := c.do(t, "", http.MethodGet, "/v1/config/history/"+key, "").entries(t)
	if len(hist) != 3 || hist[0] != r1 || hist[1] != r2 || !hist[2].Deleted || hist[2].Key != key ||
		hist[2].Value != "" || hist[2].Revision <= r2.Revision || hist[2].Time.IsZero() {
		t.Fatalf("history after delete = %+v", hist)
	}
	dr := hist[2].Revision
	if e := c.do(t, "", http.MethodGet, path+"?revision="+fmt.Sprint(r1.Revision), "").entry(t); e != r1 {
		t.Fatalf("a revision before the delete = %+v", e)
	}
	if p := c.do(t, "", http.MethodGet, path+"?revision="+fmt.Sprint(dr), "").wantProblem(t, http.StatusNotFound, "revision"); !strings.Contains(p.Detail, "deleted") {
		t.Fatalf("the delete revision: %q", p.Detail)
	}
	a := c.do(t, "", http.MethodGet, fmt.Sprintf("/v1/config/diff/%s?from=%d&to=%d", key, r2.Revision, dr), "")
	if a.status != 200 || !strings.Contains(string(a.body), `-off`) {
		t.Fatalf("diff to the delete: %d %s", a.status, a.body)
	}
	c.do(t, "", http.MethodGet, fmt.Sprintf("/v1/config/diff/%s?from=%d", key, r1.Revision), "").wantProblem(t, http.StatusNotFound, "to")

	// A delete revision has no value to roll back to; an earlier one has.
	if p := c.do(t, "", http.MethodPost, "/v1/config/rollback/"+key, fmt.Sprintf(`{"revision": %d}`, dr)).wantProblem(t, http.StatusBadRequest, "revision"); !strings.Contains(p.Detail, "deletion") {
		t.Fatalf("rollback to the delete: %q", p.Detail)
	}
	back := c.do(t, "", http.MethodPost, "/v1/config/rollback/"+key, fmt.Sprintf(`{"revision": %d}`, r1.Revision)).entry(t)
	if back.Value != "on" || back.Revision <= dr {
		t.Fatalf("rollback after delete = %+v", back)
	}
	if e := c.do(t, "", http.MethodGet, path, "").entry(t); e != back {
		t.Fatalf("latest = %+v, want %+v", e, back)
	}
	// Create-only succeeds on a deleted key.
	c.do(t, "", http.MethodDelete, path, "")
	if e := c.put(t, key, map[string]any{"value": "again", "expect_revision": 0}); e.Value != "again" {
		t.Fatalf("create after delete = %+v", e)
	}
	if es := c.do(t, "", http.MethodGet, "/v1/config/history/"+key, "").entries(t); len(es) != 6 {
		t.Fatalf("history has %d revisions, want 6: %+v", len(es), es)
	}
}

func TestConfigListByPrefix(t *testing.T) {
	c := startConfigServer(t)
	var last uint64
	for _, k := range []string{"prod/payments/a", "prod/orders/b", "staging/orders/a", "prod/orders/a", "prod/orders-v2/a", "prod/orders"} {
		last = c.put(t, k, map[string]any{"value": k}).Revision
	}
	for _, tc := range []struct{ prefix, want string }{
		{"", "prod/orders prod/orders-v2/a prod/orders/a prod/orders/b prod/payments/a staging/orders/a"},
		{"prod/", "prod/orders prod/orders-v2/a prod/orders/a prod/orders/b prod/payments/a"},
		{"prod/orders/", "prod/orders/a prod/orders/b"},
		{"prod/orders", "prod/orders prod/orders-v2/a prod/orders/a prod/orders/b"},
		{"prod/pay", "prod/payments/a"},
		{"dev/", ""},
	} {
		a := c.do(t, "", http.MethodGet, "/v1/config/keys?prefix="+tc.prefix, "")
		var out struct {
			Index   uint64                 `json:"index"`
			Entries []meridian.ConfigEntry `json:"entries"`
		}
		if err := json.Unmarshal(a.body, &out); err != nil || a.status != 200 || out.Entries == nil {
			t.Fatalf("list %q: %d %s", tc.prefix, a.status, a.body)
		}
		if got := configKeys(out.Entries); got != tc.want {
			t.Fatalf("list %q = %q, want %q", tc.prefix, got, tc.want)
		}
		for _, e := range out.Entries {
			if e.Value != e.Key || e.Author != "admin" || e.Revision == 0 {
				t.Fatalf("listed %+v", e)
			}
		}
		if out.Index < last || a.index(t) != out.Index {
			t.Fatalf("list %q: index %d (header %d), want at least %d", tc.prefix, out.Index, a.index(t), last)
		}
	}
	c.do(t, "", http.MethodGet, "/v1/config/keys?prefix=prod//", "").wantProblem(t, http.StatusBadRequest, "prefix")
	c.do(t, "", http.MethodGet, "/v1/config/keys?prefix=prod/orders&stale=maybe", "").wantProblem(t, http.StatusBadRequest, "stale")
	if a := c.do(t, "", http.MethodGet, "/v1/config/keys?prefix=prod/&stale=true", ""); a.status != 200 {
		t.Fatalf("stale list: %d %s", a.status, a.body)
	}
}

func TestConfigServiceTokensReadOnlyTheirKeys(t *testing.T) {
	c := startConfigServer(t)
	for _, k := range []string{"prod/orders/db", "prod/orders-v2/db", "prod/payments/db", "orders"} {
		c.put(t, k, map[string]any{"value": k})
	}
	orders := c.token(t, "orders-app", meridian.RoleService, "orders")
	for _, tc := range []struct {
		method, path string
		status       int
		keys         string // for a 200 list
	}{
		{"GET", "/v1/config/keys/prod/orders/db", 200, ""},
		{"GET", "/v1/config/keys/orders", 200, ""},
		{"GET", "/v1/config/history/prod/orders/db", 200, ""},
		{"GET", "/v1/config/keys/prod/payments/db", 403, ""},
		{"GET", "/v1/config/keys/prod/orders-v2/db", 403, ""},
		{"GET", "/v1/config/history/prod/payments/db", 403, ""},
		{"GET", "/v1/config/diff/prod/payments/db?from=1", 403, ""},
		{"GET", "/v1/config/keys?prefix=prod/", 403, ""},
		{"GET", "/v1/config/keys", 403, ""},
		{"GET", "/v1/config/watch?prefix=prod/", 403, ""},
		{"GET", "/v1/config/keys?prefix=prod/orders/", 200, "prod/orders/db"},
		// "orders" ends the prefix, which also covers orders-v2: those keys are left out.
		{"GET", "/v1/config/keys?prefix=prod/orders", 200, "prod/orders/db"},
		{"PUT", "/v1/config/keys/prod/orders/db", 403, ""},
		{"DELETE", "/v1/config/keys/prod/orders/db", 403, ""},
	} {
		body := ""
		if tc.method == "PUT" {
			body = `{"value": "mine"}`
		}
		a := c.do(t, orders, tc.method, tc.path, body)
		if tc.status != 200 {
			a.wantProblem(t, tc.status, "")
			continue
		}
		if a.status != 200 {
			t.Fatalf("%s %s: %d %s", tc.method, tc.path, a.status, a.body)
		}
		if tc.keys != "" {
			if got := configKeys(a.entries(t)); got != tc.keys {
				t.Fatalf("%s %s listed %q, want %q", tc.method, tc.path, got, tc.keys)
			}
		}
	}

	// A watch is filtered the same way.
	w := openConfigWatch(t, c, orders, "?prefix=prod/orders", "")
	var got []string
	for ev := w.next(t); ev.name != "sync"; ev = w.next(t) {
		got = append(got, ev.event(t).Entry.Key)
	}
	c.put(t, "prod/orders-v2/db", map[string]any{"value": "hidden"})
	c.put(t, "prod/orders/db", map[string]any{"value": "seen"})
	ev := w.next(t).event(t)
	got = append(got, ev.Entry.Key+"="+ev.Entry.Value)
	if fmt.Sprint(got) != "[prod/orders/db prod/orders/db=seen]" {
		t.Fatalf("service watch saw %v", got)
	}
}

// configSSE is one server-sent event.
type configSSE struct {
	name, id string
	data     []byte
}

func (e configSSE) event(t *testing.T) meridian.ConfigEvent {
	t.Helper()
	var ev meridian.ConfigEvent
	if err := json.Unmarshal(e.data, &ev); err != nil {
		t.Fatalf("event %s %s: %v", e.name, e.data, err)
	}
	if string(ev.Type) != e.name || strconv.FormatUint(ev.Index, 10) != e.id {
		t.Fatalf("event %s id %s carries type %s index %d", e.name, e.id, ev.Type, ev.Index)
	}
	return ev
}

// configWatchStream reads a watch's events until it is closed.
type configWatchStream struct {
	body   io.Closer
	events chan configSSE
	done   chan struct{}
}

func openConfigWatch(t *testing.T, c *configServer, token, query, lastEventID string) *configWatchStream {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, c.URL+"/v1/config/watch"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token == "" {
		token = c.secret
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("watch%s: %d %s", query, resp.StatusCode, b)
	}
	w := &configWatchStream{body: resp.Body, events: make(chan configSSE, 256), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		sc := bufio.NewScanner(resp.Body)
		var ev configSSE
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.name != "" {
					w.events <- ev
				}
				ev = configSSE{}
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "id: "):
				ev.id = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "data: "):
				ev.data = []byte(strings.TrimPrefix(line, "data: "))
			}
		}
	}()
	t.Cleanup(w.close)
	return w
}

func (w *configWatchStream) next(t *testing.T) configSSE {
	t.Helper()
	select {
	case ev := <-w.events:
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no watch event in 10s")
	}
	return configSSE{}
}

// quiet asserts that no event arrives for a while.
func (w *configWatchStream) quiet(t *testing.T) {
	t.Helper()
	select {
	case ev := <-w.events:
		t.Fatalf("unexpected event %s %s %s", ev.name, ev.id, ev.data)
	case <-time.After(300 * time.Millisecond):
	}
}

func (w *configWatchStream) close() {
	w.body.Close()
	<-w.done
}

func TestConfigWatchResumesWithoutGapsOrRepeats(t *testing.T) {
	c := startConfigServer(t)
	a1 := c.put(t, "prod/orders/a", map[string]any{"value": "1"})
	c.put(t, "prod/orders/gone", map[string]any{"value": "x"})
	c.do(t, "", http.MethodDelete, "/v1/config/keys/prod/orders/gone", "")
	c.put(t, "staging/orders/a", map[string]any{"value": "elsewhere"})

	// Without an index: the live keys, then sync, then live changes.
	w := openConfigWatch(t, c, "", "?prefix=prod/", "")
	ev := w.next(t)
	if e := ev.event(t); ev.name != "put" || e.Entry != a1 {
		t.Fatalf("snapshot event %s %+v, want put %+v", ev.name, e.Entry, a1)
	}
	sync := w.next(t)
	if sync.name != "sync" || strings.Contains(string(sync.data), "entry") {
		t.Fatalf("after the snapshot: %s %s, want a sync event without an entry", sync.name, sync.data)
	}
	if e := sync.event(t); e.Index < a1.Revision {
		t.Fatalf("sync index %d is before %d", e.Index, a1.Revision)
	}
	a2 := c.put(t, "prod/orders/a", map[string]any{"value": "2", "message": "live"})
	ev = w.next(t)
	if e := ev.event(t); ev.name != "put" || e.Entry != a2 {
		t.Fatalf("live event %s %+v, want put %+v", ev.name, e.Entry, a2)
	}
	c.do(t, "", http.MethodDelete, "/v1/config/keys/prod/orders/a", "")
	ev = w.next(t)
	del := ev.event(t)
	if ev.name != "delete" || del.Type != meridian.EventDelete || !del.Entry.Deleted || del.Entry.Key != "prod/orders/a" || del.Index <= a2.Revision {
		t.Fatalf("delete event %s %+v", ev.name, del)
	}
	w.quiet(t)
	w.close()

	// Changes while nobody watches; resuming after the last id delivers each
	// of them once, in order, then sync, then live changes.
	var missed []meridian.ConfigEntry
	for i, k := range []string{"prod/orders/a", "prod/orders/b", "prod/orders/a"} {
		missed = append(missed, c.put(t, k, map[string]any{"value": fmt.Sprint(i)}))
		c.put(t, "staging/orders/a", map[string]any{"value": fmt.Sprint(i)}) // outside the prefix
	}
	for _, resume := range []struct{ query, lastEventID string }{
		{fmt.Sprintf("?prefix=prod/&index=%d", del.Index), ""},
		{"?prefix=prod/", fmt.Sprint(del.Index)}, // as an EventSource reconnects
	} {
		w := openConfigWatch(t, c, "", resume.query, resume.lastEventID)
		for _, want := range missed {
			ev := w.next(t)
			if e := ev.event(t); ev.name != "put" || e.Entry != want {
				t.Fatalf("resumed (%+v): %s %+v, want put %+v", resume, ev.name, e.Entry, want)
			}
		}
		if ev := w.next(t); ev.name != "sync" {
			t.Fatalf("resumed (%+v): %s %s after the backlog, want sync", resume, ev.name, ev.data)
		}
		w.quiet(t)
		w.close()
	}
	if a := c.do(t, "", http.MethodGet, "/v1/config/watch?index=x", ""); a.status != 400 || a.problem(t).Field != "index" {
		t.Fatalf("bad index: %d %s", a.status, a.body)
	}
}

func TestConfigHistoryAndValuesSurviveARestart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nats")
	start := func(secret string) (*configServer, func()) {
		ns, err := natsembed.Start(natsembed.Options{StoreDir: dir, Port: -1})
		if err != nil {
			t.Fatal(err)
		}
		nc, err := nats.Connect(ns.ClientURL())
		if err != nil {
			ns.Shutdown()
			t.Fatal(err)
		}
		c := startConfigServerOn(t, nc, secret)
		stopped := false
		return c, func() {
			if stopped {
				return
			}
			stopped = true
			c.stop()
			nc.Close()
			ns.Shutdown()
			ns.WaitForShutdown()
		}
	}
	c, stop := start("")
	t.Cleanup(stop)
	secret := c.secret
	const key = "prod/orders/db"
	r1 := c.put(t, key, map[string]any{"value": "a: 1\n", "format": "yaml", "message": "one"})
	r2 := c.put(t, key, map[string]any{"value": "a: 2\n", "format": "yaml", "message": "two"})
	c.put(t, "prod/orders/tmp", map[string]any{"value": "x"})
	c.do(t, "", http.MethodDelete, "/v1/config/keys/prod/orders/tmp", "")
	before := c.do(t, "", http.MethodGet, "/v1/config/history/"+key, "").entries(t)
	stop()

	c, stop = start(secret)
	t.Cleanup(stop)
	if c.secret != secret {
		t.Fatal("the restart created another admin token")
	}
	if e := c.do(t, "", http.MethodGet, "/v1/config/keys/"+key, "").entry(t); e != r2 {
		t.Fatalf("latest after restart = %+v, want %+v", e, r2)
	}
	after := c.do(t, "", http.MethodGet, "/v1/config/history/"+key, "").entries(t)
	if fmt.Sprint(after) != fmt.Sprint(before) || len(after) != 2 {
		t.Fatalf("history after restart = %+v, want %+v", after, before)
	}
	if es := c.do(t, "", http.MethodGet, "/v1/config/keys?prefix=prod/", "").entries(t); configKeys(es) != key {
		t.Fatalf("listed after restart: %q", configKeys(es))
	}
	if hist := c.do(t, "", http.MethodGet, "/v1/config/history/prod/orders/tmp", "").entries(t); len(hist) != 2 || !hist[1].Deleted {
		t.Fatalf("deleted key's history after restart = %+v", hist)
	}
	rb := c.do(t, "", http.MethodPost, "/v1/config/rollback/"+key, fmt.Sprintf(`{"revision": %d}`, r1.Revision)).entry(t)
	if rb.Value != "a: 1\n" || rb.Revision <= r2.Revision {
		t.Fatalf("rollback after restart = %+v", rb)
	}
}
