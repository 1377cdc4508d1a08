package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestServerAndCLIEndToEnd runs what the README tells a new user to do:
// `meridian server` on an empty data dir, then the client commands against
// it, all through run() in this process.
func TestServerAndCLIEndToEnd(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	getenv := func(k string) string {
		return map[string]string{"MERIDIAN_DATA_DIR": dir, "MERIDIAN_ADDR": addr, "HOME": dir}[k]
	}
	stop := startServer(t, addr, getenv, "--log-format", "text")
	waitUp(t, "http://"+addr+"/readyz")

	info, err := os.Stat(filepath.Join(dir, "admin.token"))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("admin.token: %v %v, want a 0600 file", info, err)
	}

	cli := func(args ...string) (string, error) {
		var out, errb bytes.Buffer
		err := run(context.Background(), args, getenv, strings.NewReader(""), &out, &errb)
		return out.String(), err
	}
	mustCLI := func(args ...string) string {
		out, err := cli(args...)
		if err != nil {
			t.Fatalf("meridian %s: %v", strings.Join(args, " "), err)
		}
		return out
	}

	mustCLI("register", "--service", "orders", "--id", "o1", "--port", "8080", "--version", "1.0.0")
	var list struct {
		Instances []struct {
			ID     string `json:"id"`
			Health struct {
				Status string `json:"status"`
			} `json:"health"`
		} `json:"instances"`
	}
	if err := json.Unmarshal([]byte(mustCLI("instances", "orders", "-o", "json")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Instances) != 1 || list.Instances[0].ID != "o1" || list.Instances[0].Health.Status != "passing" {
		t.Fatalf("instances = %+v", list)
	}
	if out := mustCLI("services"); !strings.Contains(out, "orders") {
		t.Fatalf("services:\n%s", out)
	}

	mustCLI("config", "put", "prod/orders/limits", `{"rps": 10}`, "--format", "json", "-m", "first")
	mustCLI("config", "put", "prod/orders/limits", `{"rps": 20}`, "--format", "json", "-m", "raise")
	if out := mustCLI("config", "history", "prod/orders/limits"); !strings.Contains(out, "first") || !strings.Contains(out, "raise") {
		t.Fatalf("history:\n%s", out)
	}
	var hist struct {
		Entries []struct {
			Revision uint64 `json:"revision"`
		} `json:"entries"`
	}
	if err := json.Unmarshal([]byte(mustCLI("config", "history", "prod/orders/limits", "-o", "json")), &hist); err != nil || len(hist.Entries) != 2 {
		t.Fatalf("history json: %+v %v", hist, err)
	}
	first := hist.Entries[0].Revision
	if out := mustCLI("config", "diff", "prod/orders/limits", u(first), u(hist.Entries[1].Revision)); !strings.Contains(out, `-{"rps": 10}`) || !strings.Contains(out, `+{"rps": 20}`) {
		t.Fatalf("diff:\n%s", out)
	}
	mustCLI("config", "rollback", "prod/orders/limits", u(first))
	if out := mustCLI("config", "get", "prod/orders/limits"); strings.TrimSpace(out) != `{"rps": 10}` {
		t.Fatalf("after rollback: %q", out)
	}

	// A viewer cannot write; a bad token is refused; bad input names the field.
	secret := strings.TrimSpace(mustCLI("token", "create", "dash", "--role", "viewer"))
	if _, err := cli("--token", secret, "config", "put", "prod/orders/x", "1"); err == nil || !strings.Contains(err.Error(), "may not") {
		t.Fatalf("viewer write: %v", err)
	}
	if _, err := cli("--token", "mrd_bogus", "services"); err == nil || !strings.Contains(err.Error(), "token rejected") {
		t.Fatalf("bad token: %v", err)
	}
	if _, err := cli("register", "--service", "orders", "--id", "o2", "--port", "70000"); err == nil || !strings.Contains(err.Error(), "port") {
		t.Fatalf("bad port: %v", err)
	}

	// Everything survives a restart on the same data dir.
	stop()
	startServer(t, addr, getenv)
	waitUp(t, "http://"+addr+"/readyz")
	if out := mustCLI("instances", "orders"); !strings.Contains(out, "o1") {
		t.Fatalf("after restart:\n%s", out)
	}
	if out := mustCLI("config", "get", "prod/orders/limits"); strings.TrimSpace(out) != `{"rps": 10}` {
		t.Fatalf("config after restart: %q", out)
	}
}

func u(n uint64) string { return strconv.FormatUint(n, 10) }

// startServer runs `meridian server` on addr until the returned stop (or
// the end of the test).
func startServer(t *testing.T, addr string, getenv func(string) string, flags ...string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	args := append([]string{"server", "--listen", addr, "--log-level", "warn"}, flags...)
	go func() { done <- run(ctx, args, getenv, nil, &syncBuffer{}, &syncBuffer{}) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("server: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitUp(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after 20s", url)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
