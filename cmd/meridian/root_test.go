package main

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string // the whole line main prints
	}{
		{[]string{"bogus"}, `meridian: unknown command "bogus" for "meridian"; see 'meridian --help'`},
		{[]string{"servics"}, `meridian: unknown command "servics" for "meridian" (did you mean "services"?); see 'meridian --help'`},
		{[]string{"config", "gte", "k"}, `meridian: unknown command "gte" for "meridian config" (did you mean "get"?); see 'meridian config --help'`},
		{[]string{"services", "--nope"}, `meridian: unknown flag: --nope; see 'meridian services --help'`},
		{[]string{"services", "extra"}, `meridian: meridian services takes no arguments, got ["extra"]; see 'meridian services --help'`},
		{[]string{"services", "-o", "yaml"}, `meridian: invalid argument "yaml" for "-o, --output" flag: want text or json; see 'meridian services --help'`},
		{[]string{"instances"}, `meridian: usage: meridian instances SERVICE; see 'meridian instances --help'`},
		{[]string{"deregister", "orders"}, `meridian: usage: meridian deregister SERVICE ID; see 'meridian deregister --help'`},
		{[]string{"register", "--port", "80"}, `meridian: required flag(s) "service" not set; see 'meridian register --help'`},
		{[]string{"register", "--service", "s", "--port", "80", "--meta", "team"}, `meridian: --meta "team": want key=value; see 'meridian register --help'`},
		{[]string{"register", "--service", "s", "--port", "80", "--heartbeat"}, `meridian: --heartbeat needs --ttl, the lease it renews; see 'meridian register --help'`},
		{[]string{"register", "--service", "s", "--port", "80", "--check-target", "/h"}, `meridian: --check-target needs --check http|tcp|grpc; see 'meridian register --help'`},
		{[]string{"register", "--service", "s", "--port", "x"}, `meridian: invalid argument "x" for "--port" flag: strconv.ParseInt: parsing "x": invalid syntax; see 'meridian register --help'`},
		{[]string{"config", "put", "k"}, `meridian: no value: give VALUE, - to read stdin, or --file FILE; see 'meridian config put --help'`},
		{[]string{"config", "put", "k", "v", "--file", "f"}, `meridian: give the value as VALUE or with --file, not both; see 'meridian config put --help'`},
		{[]string{"config", "get"}, `meridian: usage: meridian config get KEY; see 'meridian config get --help'`},
		{[]string{"config", "diff", "k", "one"}, `meridian: FROM: "one" is not a revision (a number from 'meridian config history'); see 'meridian config diff --help'`},
		{[]string{"config", "rollback", "k", "0"}, `meridian: REVISION: "0" is not a revision (a number from 'meridian config history'); see 'meridian config rollback --help'`},
		{[]string{"token", "create", "ci"}, `meridian: required flag(s) "role" not set; see 'meridian token create --help'`},
		{[]string{"--addr", "ftp://x", "services"}, `meridian: --addr: "ftp://x" is not a control-plane address: use host:port, http://host:port or https://host:port; see 'meridian services --help'`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			// A closed address: a usage error must not need the server.
			o := invocation{env: map[string]string{"MERIDIAN_ADDR": closedAddr(t), "MERIDIAN_TOKEN": "tok"}}.run(t, tt.args...)
			if o.code != 2 || o.line != tt.want {
				t.Errorf("exit %d, printed\n  %s\nwant exit 2 and\n  %s", o.code, o.line, tt.want)
			}
		})
	}
}

func TestHelpGoesToStdout(t *testing.T) {
	for _, args := range [][]string{nil, {"--help"}, {"config"}, {"token", "--help"}} {
		o := invocation{}.run(t, args...)
		wantOK(t, o)
		if !strings.Contains(o.stdout, "Usage:") {
			t.Errorf("%q printed no usage: %q", args, o.stdout)
		}
	}
}

func TestReportIsOneLine(t *testing.T) {
	var b strings.Builder
	code := report(&b, errors.New("first\nsecond\r\nthird"))
	if code != 1 || b.String() != "meridian: first second third\n" {
		t.Errorf("exit %d, printed %q", code, b.String())
	}
	b.Reset()
	if code := report(&b, nil); code != 0 || b.Len() != 0 {
		t.Errorf("nil error: exit %d, printed %q", code, b.String())
	}
}

func TestTokenAndAddressSources(t *testing.T) {
	d := newDouble(t, map[string]http.HandlerFunc{"GET /v1/services": reply(200, `{"index":1,"services":[]}`)})
	dataDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dataDir, "admin.token"), []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"--token wins", map[string]string{"MERIDIAN_TOKEN": "from-env"}, []string{"--token", "from-flag", "--data-dir", dataDir}, "Bearer from-flag"},
		{"MERIDIAN_TOKEN before the file", map[string]string{"MERIDIAN_TOKEN": "from-env"}, []string{"--data-dir", dataDir}, "Bearer from-env"},
		{"--data-dir's admin.token", nil, []string{"--data-dir", dataDir}, "Bearer from-file"},
		{"MERIDIAN_DATA_DIR's admin.token", map[string]string{"MERIDIAN_DATA_DIR": dataDir}, nil, "Bearer from-file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"MERIDIAN_ADDR": d.addr()}
			for k, v := range tt.env {
				env[k] = v
			}
			wantOK(t, invocation{env: env}.run(t, append(tt.args, "services")...))
			if got := d.last(t).Auth; got != tt.want {
				t.Errorf("Authorization = %q, want %q", got, tt.want)
			}
		})
	}
	t.Run("--addr wins over MERIDIAN_ADDR", func(t *testing.T) {
		o := invocation{env: map[string]string{"MERIDIAN_ADDR": closedAddr(t), "MERIDIAN_TOKEN": "t"}}.run(t, "--addr", d.srv.URL, "services")
		wantOK(t, o)
	})
}

func TestMissingTokenSaysWhereItLooked(t *testing.T) {
	home := t.TempDir()
	o := invocation{env: map[string]string{"HOME": home, "MERIDIAN_ADDR": closedAddr(t)}}.run(t, "services")
	want := "meridian: no token: --token is not set, MERIDIAN_TOKEN is empty and " + filepath.Join(home, ".meridian", "admin.token") +
		" does not exist; set --token or MERIDIAN_TOKEN (an admin makes one with 'meridian token create'), or set --data-dir to the server's data directory"
	if o.code != 1 || o.line != want {
		t.Errorf("exit %d, printed\n  %s\nwant\n  %s", o.code, o.line, want)
	}
}

func TestErrorMessages(t *testing.T) {
	whoami := reply(200, `{"name":"ci","role":"viewer"}`)
	tests := []struct {
		name   string
		routes map[string]http.HandlerFunc
		args   []string
		want   string // after "meridian: "; ADDR is the double's address
	}{
		{
			name:   "token rejected",
			routes: map[string]http.HandlerFunc{"GET /v1/services": problem(401, "unauthorized", "", "unknown token", 0)},
			args:   []string{"--data-dir", "/srv/meridian", "services"},
			want:   "token rejected by ADDR: set --token or MERIDIAN_TOKEN, or run on the server's machine where /srv/meridian/admin.token is read",
		},
		{
			name: "role too weak",
			routes: map[string]http.HandlerFunc{
				"PUT /v1/config/keys/{key...}": problem(403, "forbidden", "", "viewer tokens only read", 0),
				"GET /v1/whoami":               whoami,
			},
			args: []string{"config", "put", "prod/x", "1"},
			want: `token "ci" (role viewer) may not write config key "prod/x"`,
		},
		{
			name: "role too weak, and whoami fails too",
			routes: map[string]http.HandlerFunc{
				"GET /v1/tokens": problem(403, "forbidden", "", "admin only", 0),
				"GET /v1/whoami": problem(500, "internal", "", "internal error", 0),
			},
			args: []string{"token", "ls"},
			want: `this token may not list tokens`,
		},
		{
			name:   "config key not found",
			routes: map[string]http.HandlerFunc{"GET /v1/config/keys/{key...}": problem(404, "not_found", "", "no such key", 0)},
			args:   []string{"config", "get", "prod/x"},
			want:   `config key "prod/x" not found`,
		},
		{
			name:   "config revision not found",
			routes: map[string]http.HandlerFunc{"GET /v1/config/keys/{key...}": problem(404, "not_found", "", "no such revision", 0)},
			args:   []string{"config", "get", "prod/x", "--revision", "4"},
			want:   `config key "prod/x" has no revision 4 (see 'meridian config history prod/x')`,
		},
		{
			name:   "revision conflict",
			routes: map[string]http.HandlerFunc{"PUT /v1/config/keys/{key...}": problem(409, "conflict", "", "revision conflict", 12)},
			args:   []string{"config", "put", "prod/x", "v", "--expect-revision", "11"},
			want:   "revision conflict on prod/x: the current revision is 12 (re-read and retry with --expect-revision 12)",
		},
		{
			name:   "conflict on a key that does not exist",
			routes: map[string]http.HandlerFunc{"DELETE /v1/config/keys/{key...}": problem(409, "conflict", "", "revision conflict", 0)},
			args:   []string{"config", "del", "prod/x", "--expect-revision", "3"},
			want:   "revision conflict on prod/x: the key does not exist (retry with --expect-revision 0 to create it)",
		},
		{
			name:   "invalid input shows the server's field message",
			routes: map[string]http.HandlerFunc{"PUT /v1/services/{s}/instances/{id}": problem(400, "invalid", "port", "70000 is out of range 1-65535", 0)},
			args:   []string{"register", "--service", "orders", "--id", "o-1", "--port", "70000"},
			want:   "port: 70000 is out of range 1-65535",
		},
		{
			name:   "invalid input caught before sending",
			routes: nil,
			args:   []string{"instances", "Orders"},
			want:   `service: "Orders" is not a valid service name: use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit (DNS label rules)`,
		},
		{
			name:   "store down",
			routes: map[string]http.HandlerFunc{"GET /v1/services": problem(503, "unavailable", "", "store unavailable", 0)},
			args:   []string{"services"},
			want:   "the control plane at ADDR is unavailable: store unavailable; try again shortly",
		},
		{
			name:   "instance not registered",
			routes: map[string]http.HandlerFunc{"PUT /v1/services/{s}/instances/{id}/heartbeat": problem(404, "not_found", "", "not registered", 0)},
			args:   []string{"heartbeat", "orders", "o-1"},
			want:   `instance "o-1" of service "orders" is not registered (its lease expired, or it never was): register it again`,
		},
		{
			name:   "token already exists",
			routes: map[string]http.HandlerFunc{"POST /v1/tokens": problem(409, "conflict", "name", `"ci" exists`, 0)},
			args:   []string{"token", "create", "ci", "--role", "viewer"},
			want:   `token "ci" already exists (revoke it first with 'meridian token revoke ci')`,
		},
		{
			name:   "unknown token",
			routes: map[string]http.HandlerFunc{"DELETE /v1/tokens/{name}": problem(404, "not_found", "", "no such token", 0)},
			args:   []string{"token", "revoke", "ci"},
			want:   `token "ci" not found (see 'meridian token ls')`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDouble(t, tt.routes)
			o := d.cli(t, tt.args...)
			want := "meridian: " + strings.ReplaceAll(tt.want, "ADDR", d.addr())
			if o.code != 1 || o.line != want {
				t.Errorf("exit %d, printed\n  %s\nwant exit 1 and\n  %s", o.code, o.line, want)
			}
		})
	}
}

func TestUnreachable(t *testing.T) {
	addr := closedAddr(t)
	for _, args := range [][]string{{"services"}, {"config", "get", "k"}, {"config", "watch"}} {
		o := invocation{env: map[string]string{"MERIDIAN_ADDR": addr, "MERIDIAN_TOKEN": "t"}}.run(t, args...)
		want := "meridian: cannot reach the control plane at " + addr + ": is 'meridian server' running? (set --addr or MERIDIAN_ADDR)"
		if o.code != 1 || o.line != want {
			t.Errorf("%q: exit %d, printed\n  %s\nwant\n  %s", args, o.code, o.line, want)
		}
	}
}

func TestVersion(t *testing.T) {
	o := invocation{}.run(t, "version")
	wantOK(t, o)
	if !strings.HasPrefix(o.stdout, "meridian dev (commit ") {
		t.Errorf("version printed %q", o.stdout)
	}
}
