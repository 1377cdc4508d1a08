package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const entryAnswer = `{"key":"prod/orders/db_url","value":"postgres://db/orders","format":"text","revision":7,"author":"ci","message":"new primary","time":"2026-11-26T15:00:00Z"}`

func TestConfigGet(t *testing.T) {
	d := newDouble(t, map[string]http.HandlerFunc{"GET /v1/config/keys/{key...}": reply(200, entryAnswer)})

	o := d.cli(t, "config", "get", "prod/orders/db_url")
	wantOK(t, o)
	if o.stdout != "postgres://db/orders\n" {
		t.Errorf("text output = %q, want the value alone", o.stdout)
	}
	if r := d.last(t); r.Path != "/v1/config/keys/prod/orders/db_url" || r.Query != "" {
		t.Errorf("request = %+v", r)
	}

	o = d.cli(t, "config", "get", "prod/orders/db_url", "--revision", "7", "-o", "json")
	wantOK(t, o)
	var got map[string]any
	if err := json.Unmarshal([]byte(o.stdout), &got); err != nil {
		t.Fatalf("json output %q: %v", o.stdout, err)
	}
	if got["revision"] != 7.0 || got["author"] != "ci" || got["value"] != "postgres://db/orders" {
		t.Errorf("json output = %v", got)
	}
	if r := d.last(t); r.Query != "revision=7" {
		t.Errorf("query = %q", r.Query)
	}
}

func TestConfigPut(t *testing.T) {
	d := newDouble(t, map[string]http.HandlerFunc{"PUT /v1/config/keys/{key...}": reply(200, entryAnswer)})
	dir := t.TempDir()
	yamlFile := filepath.Join(dir, "limits.yaml")
	os.WriteFile(yamlFile, []byte("rps: 10\n"), 0o600)

	tests := []struct {
		name  string
		args  []string
		stdin string
		body  string
	}{
		{"value argument", []string{"prod/x", "on", "-m", "turn it on"}, "", `{"value":"on","message":"turn it on"}`},
		{"stdin", []string{"prod/x", "-", "--format", "json"}, `{"a":1}`, `{"value":"{\"a\":1}","format":"json"}`},
		{"--file - is stdin too", []string{"prod/x", "--file", "-"}, "line\n", `{"value":"line\n"}`},
		{"file with its format", []string{"prod/x", "--file", yamlFile}, "", `{"value":"rps: 10\n","format":"yaml"}`},
		{"--format beats the extension", []string{"prod/x", "--file", yamlFile, "--format", "text"}, "", `{"value":"rps: 10\n","format":"text"}`},
		{"must not exist", []string{"prod/x", "v", "--expect-revision", "0"}, "", `{"value":"v","expect_revision":0}`},
		{"compare-and-set", []string{"prod/x", "v", "--expect-revision", "6"}, "", `{"value":"v","expect_revision":6}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := invocation{env: d.env(), stdin: tt.stdin}.run(t, append([]string{"config", "put"}, tt.args...)...)
			wantOK(t, o)
			r := d.last(t)
			if r.Path != "/v1/config/keys/prod/x" || r.Body != tt.body {
				t.Errorf("sent %s %s\n got %s\nwant %s", r.Method, r.Path, r.Body, tt.body)
			}
			if o.stdout != "wrote prod/orders/db_url revision 7\n" {
				t.Errorf("printed %q", o.stdout)
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		o := d.cli(t, "config", "put", "prod/x", "--file", filepath.Join(dir, "nope"))
		if o.code != 1 || !strings.Contains(o.line, "cannot read the value: open ") {
			t.Errorf("exit %d: %s", o.code, o.line)
		}
	})
	t.Run("value too large", func(t *testing.T) {
		o := invocation{env: d.env(), stdin: strings.Repeat("x", 1<<20+1)}.run(t, "config", "put", "prod/x", "-")
		if o.code != 1 || o.line != "meridian: the value in stdin is larger than 1 MiB, more than the API accepts" {
			t.Errorf("exit %d: %s", o.code, o.line)
		}
	})
}

func TestConfigDel(t *testing.T) {
	d := newDouble(t, map[string]http.HandlerFunc{"DELETE /v1/config/keys/{key...}": reply(http.StatusNoContent, "")})
	o := d.cli(t, "config", "del", "prod/x", "--expect-revision", "3")
	wantOK(t, o)
	if r := d.last(t); r.Path != "/v1/config/keys/prod/x" || r.Query != "expect_revision=3" || o.stdout != "deleted prod/x\n" {
		t.Errorf("sent %+v, printed %q", r, o.stdout)
	}
}

func TestConfigLsAndHistory(t *testing.T) {
	d := newDouble(t, map[string]http.HandlerFunc{
		"GET /v1/config/keys": reply(200, `{"index":9,"entries":[`+entryAnswer+`,
			{"key":"prod/orders/limits","value":"rps: 10","format":"yaml","revision":9,"author":"alice","time":"2026-11-27T08:30:00Z"}]}`),
		"GET /v1/config/history/{key...}": reply(200, `{"entries":[
			{"key":"prod/x","value":"a","format":"text","revision":3,"author":"ci","message":"first\tone","time":"2026-11-26T15:00:00Z"},
			{"key":"prod/x","format":"text","revision":5,"deleted":true,"author":"alice","time":"2026-11-26T16:00:00Z"}]}`),
	})

	o := d.cli(t, "config", "ls", "prod/")
	wantOK(t, o)
	want := "" +
		"KEY                 REVISION  FORMAT  AUTHOR  UPDATED\n" +
		"prod/orders/db_url  7         text    ci      2026-11-26T15:00:00Z\n" +
		"prod/orders/limits  9         yaml    alice   2026-11-27T08:30:00Z\n"
	if o.stdout != want {
		t.Errorf("ls output\n%s\nwant\n%s", o.stdout, want)
	}
	if r := d.last(t); r.Query != "prefix=prod%2F" {
		t.Errorf("query = %q", r.Query)
	}

	o = d.cli(t, "config", "history", "prod/x")
	wantOK(t, o)
	want = "" +
		"REVISION  CHANGE  TIME                  AUTHOR  FORMAT  MESSAGE\n" +
		"3         put     2026-11-26T15:00:00Z  ci      text    first one\n" +
		"5         delete  2026-11-26T16:00:00Z  alice   -       -\n"
	if o.stdout != want {
		t.Errorf("history output\n%s\nwant\n%s", o.stdout, want)
	}
}

func TestConfigDiffAndRollback(t *testing.T) {
	d := newDouble(t, map[string]http.HandlerFunc{
		"GET /v1/config/diff/{key...}":      reply(200, `{"from":3,"to":5,"diff":"--- prod/x@3\n+++ prod/x@5\n-a\n+b\n"}`),
		"POST /v1/config/rollback/{key...}": reply(200, `{"key":"prod/x","value":"a","format":"text","revision":11,"author":"ci"}`),
	})
	o := d.cli(t, "config", "diff", "prod/x", "3", "5")
	wantOK(t, o)
	if o.stdout != "--- prod/x@3\n+++ prod/x@5\n-a\n+b\n" {
		t.Errorf("diff output %q", o.stdout)
	}
	if r := d.last(t); r.Query != "from=3&to=5" {
		t.Errorf("query = %q", r.Query)
	}
	o = d.cli(t, "config", "diff", "prod/x", "3", "-o", "json")
	wantOK(t, o)
	if r := d.last(t); r.Query != "from=3" || !strings.Contains(o.stdout, `"diff": "--- prod/x@3`) {
		t.Errorf("query %q, output %q", r.Query, o.stdout)
	}

	o = d.cli(t, "config", "rollback", "prod/x", "3", "-m", "bad deploy")
	wantOK(t, o)
	if r := d.last(t); r.Path != "/v1/config/rollback/prod/x" || r.Body != `{"revision":3,"message":"bad deploy"}` {
		t.Errorf("sent %s %s", r.Path, r.Body)
	}
	if o.stdout != "rolled prod/x back to revision 3's value: now revision 11\n" {
		t.Errorf("printed %q", o.stdout)
	}
}

// watchDouble serves config watch streams: the first connection gets a
// snapshot, a sync and one change, then breaks; later ones get one more
// change and stay open.
func watchDouble(t *testing.T) *double {
	var conns atomic.Int32
	return newDouble(t, map[string]http.HandlerFunc{
		"GET /v1/config/watch": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			event := func(typ string, index uint64, key string) {
				fmt.Fprintf(w, "event: %s\nid: %d\ndata: {\"type\":%q,\"index\":%d,\"entry\":{\"key\":%q,\"value\":\"v\",\"format\":\"text\",\"revision\":%d,\"author\":\"ci\",\"time\":\"0001-01-01T00:00:00Z\"}}\n\n",
					typ, index, typ, index, key, index)
			}
			if conns.Add(1) == 1 {
				event("put", 3, "prod/a")
				io.WriteString(w, "event: sync\nid: 5\ndata: {\"type\":\"sync\",\"index\":5}\n\n")
				event("put", 6, "prod/b")
				return // the stream breaks
			}
			event("delete", 8, "prod/a")
			http.NewResponseController(w).Flush()
			<-r.Context().Done()
		},
	})
}

// runUntil runs the CLI until its stdout has n lines, then interrupts it.
func runUntil(t *testing.T, d *double, lines int, args ...string) outcome {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdout := &syncBuffer{}
	done := make(chan outcome, 1)
	go func() { done <- invocation{env: d.env(), ctx: ctx, stdout: stdout}.run(t, args...) }()
	deadline := time.After(10 * time.Second)
	for strings.Count(stdout.String(), "\n") < lines {
		select {
		case o := <-done:
			t.Fatalf("ended early: %s\nstdout: %s", o.line, o.stdout)
		case <-deadline:
			t.Fatalf("timed out; stdout: %s", stdout.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	cancel()
	return <-done
}

func TestConfigWatchResumes(t *testing.T) {
	d := watchDouble(t)
	o := runUntil(t, d, 3, "config", "watch", "prod/")
	wantOK(t, o)
	want := "put prod/a revision=3 author=ci\nput prod/b revision=6 author=ci\ndelete prod/a revision=8 author=ci\n"
	if o.stdout != want {
		t.Errorf("stdout\n%s\nwant\n%s", o.stdout, want)
	}
	if !strings.Contains(o.stderr, "synced at index 5") || !strings.Contains(o.stderr, "resuming after index 6") {
		t.Errorf("stderr = %q", o.stderr)
	}
	var queries []string
	for _, r := range d.requests() {
		queries = append(queries, r.Query)
	}
	if len(queries) != 2 || queries[0] != "prefix=prod%2F" || queries[1] != "index=6&prefix=prod%2F" {
		t.Errorf("queries = %q, want the second to resume after 6", queries)
	}
}

func TestConfigWatchJSONLines(t *testing.T) {
	d := watchDouble(t)
	o := runUntil(t, d, 4, "config", "watch", "--index", "2", "-o", "json")
	wantOK(t, o)
	lines := strings.Split(strings.TrimSpace(o.stdout), "\n")
	var types []string
	for _, l := range lines {
		var ev struct {
			Type  string `json:"type"`
			Index uint64 `json:"index"`
		}
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("line %q is not one JSON event: %v", l, err)
		}
		types = append(types, fmt.Sprintf("%s@%d", ev.Type, ev.Index))
	}
	if strings.Join(types, " ") != "put@3 sync@5 put@6 delete@8" {
		t.Errorf("events = %v", types)
	}
	if lines[1] != `{"type":"sync","index":5}` {
		t.Errorf("sync line = %s, want only type and index", lines[1])
	}
	if r := d.requests()[0]; r.Query != "index=2" {
		t.Errorf("first query = %q", r.Query)
	}
}
