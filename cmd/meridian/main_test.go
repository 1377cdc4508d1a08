package main

// These tests run the whole CLI in process through run(), against a test
// double of the control plane: an httptest.Server that answers as
// docs/api.md documents. The real server (controlplane/) is being written
// at the same time; end-to-end tests against it will join these once it
// exists.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// request is what the double received.
type request struct {
	Method, Path, Query, Body, Auth string
}

// double is a control plane double; each test routes the requests it
// expects, with http.ServeMux patterns. Anything else is a 404 problem.
type double struct {
	srv  *httptest.Server
	mu   sync.Mutex
	reqs []request
}

func newDouble(t *testing.T, routes map[string]http.HandlerFunc) *double {
	t.Helper()
	mux := http.NewServeMux()
	for pattern, h := range routes {
		mux.HandleFunc(pattern, h)
	}
	mux.HandleFunc("/", problem(404, "not_found", "", "no such endpoint", 0))
	d := &double{}
	d.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		d.mu.Lock()
		d.reqs = append(d.reqs, request{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, string(body), r.Header.Get("Authorization")})
		d.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(d.srv.Close)
	return d
}

func (d *double) addr() string { return strings.TrimPrefix(d.srv.URL, "http://") }

func (d *double) requests() []request {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]request(nil), d.reqs...)
}

// last is the last request that is not a whoami (which error reporting
// may add).
func (d *double) last(t *testing.T) request {
	t.Helper()
	rs := d.requests()
	for i := len(rs) - 1; i >= 0; i-- {
		if rs[i].Path != "/v1/whoami" {
			return rs[i]
		}
	}
	t.Fatal("no request reached the control plane")
	return request{}
}

// reply answers with a JSON body.
func reply(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

// problem answers with an RFC 9457 problem, as the server does: the detail
// starts with the field.
func problem(status int, code, field, detail string, current uint64) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if field != "" {
			detail = field + ": " + detail
		}
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"type":"https://meridian.dev/problems/%s","title":%q,"status":%d,"detail":%q,"field":%q,"code":%q,"current_revision":%d}`,
			code, http.StatusText(status), status, detail, field, code, current)
	}
}

// syncBuffer is a bytes.Buffer safe to read while a command writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// outcome is what a run of the CLI produced.
type outcome struct {
	stdout, stderr string
	line           string // what main prints for the error, without "\n"
	code           int    // main's exit status
	err            error
}

// invocation is one run of the CLI.
type invocation struct {
	env   map[string]string
	stdin string
	ctx   context.Context
	// stdout, when set, receives the output while the command runs.
	stdout *syncBuffer
	stderr *syncBuffer
}

func (inv invocation) run(t *testing.T, args ...string) outcome {
	t.Helper()
	if inv.ctx == nil {
		inv.ctx = context.Background()
	}
	if inv.stdout == nil {
		inv.stdout = &syncBuffer{}
	}
	if inv.stderr == nil {
		inv.stderr = &syncBuffer{}
	}
	env := map[string]string{"HOME": t.TempDir()}
	for k, v := range inv.env {
		env[k] = v
	}
	getenv := func(k string) string { return env[k] }
	err := run(inv.ctx, args, getenv, strings.NewReader(inv.stdin), inv.stdout, inv.stderr)
	var line bytes.Buffer
	code := report(&line, err)
	return outcome{stdout: inv.stdout.String(), stderr: inv.stderr.String(),
		line: strings.TrimSuffix(line.String(), "\n"), code: code, err: err}
}

// cli runs the CLI against d with a token in the environment.
func (d *double) cli(t *testing.T, args ...string) outcome {
	t.Helper()
	return invocation{env: d.env()}.run(t, args...)
}

func (d *double) env() map[string]string {
	return map[string]string{"MERIDIAN_ADDR": d.addr(), "MERIDIAN_TOKEN": "tok"}
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// wantOK fails the test unless the run succeeded.
func wantOK(t *testing.T, o outcome) {
	t.Helper()
	if o.err != nil {
		t.Fatalf("run failed (exit %d): %s\nstderr: %s", o.code, o.line, o.stderr)
	}
}
