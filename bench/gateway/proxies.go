package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/meridian-platform/meridian/bench/internal/benchenv"
)

// The systems under test, in the order a round runs them (each round
// starts one further along, so that none always runs first).
const (
	direct        = "direct"
	nginxName     = "nginx"
	haproxyName   = "haproxy"
	caddyName     = "caddy"
	meridianPlain = "meridian-plain"
	meridianFull  = "meridian-full"
)

var allSystems = []string{direct, nginxName, haproxyName, caddyName, meridianPlain, meridianFull}

// selectSystems turns -only's list into systems in the standard order;
// "meridian" stands for both of Meridian's.
func selectSystems(only string) ([]string, error) {
	if only == "" {
		return allSystems, nil
	}
	want := map[string]bool{}
	for _, n := range strings.Split(only, ",") {
		switch n = strings.TrimSpace(n); n {
		case "":
		case "meridian":
			want[meridianPlain], want[meridianFull] = true, true
		default:
			found := false
			for _, s := range allSystems {
				found = found || s == n
			}
			if !found {
				return nil, fmt.Errorf("-only: unknown system %q (want some of %s, or meridian)", n, strings.Join(allSystems, ","))
			}
			want[n] = true
		}
	}
	var out []string
	for _, s := range allSystems {
		if want[s] {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("-only selects nothing")
	}
	return out, nil
}

// authed reports whether the system's requests carry the bearer token.
func authed(system string) bool { return system == meridianFull }

// bins are the programs the benchmark runs.
type bins struct {
	wrk, nginx, haproxy, caddy, meridian, upstream, loadgen string
	// meridianMissing says why Meridian's runs cannot happen ("" when
	// they can): no binary, or no gateway command in it yet.
	meridianMissing string
}

// target is a system started and answering, ready to be measured.
type target struct {
	system string
	port   int
	proc   *benchenv.Child // nil for direct: its figures are the upstream's
}

// stop ends the system's processes, if any.
func (t *target) stop() error {
	if t.proc == nil {
		return nil
	}
	return t.proc.Stop(10 * time.Second)
}

// startSystem writes the system's config into dir, starts it pinned to
// cpu on a free port, waits until it proxies a request to the upstream,
// and checks that the answer is the upstream's.
func (b *bench) startSystem(ctx context.Context, system, dir string) (*target, error) {
	if system == direct {
		return &target{system: system, port: b.upstreamPort}, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ports, err := benchenv.FreePorts(2)
	if err != nil {
		return nil, err
	}
	port, admin := ports[0], ports[1]
	var (
		argv []string
		env  []string
	)
	switch system {
	case nginxName:
		conf := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(conf, []byte(nginxConf(dir, port, b.upstreamPort, b.nofile)), 0o644); err != nil {
			return nil, err
		}
		argv = []string{b.bins.nginx, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", conf}
	case haproxyName:
		conf := filepath.Join(dir, "haproxy.cfg")
		if err := os.WriteFile(conf, []byte(haproxyConf(port, b.upstreamPort, b.nofile)), 0o644); err != nil {
			return nil, err
		}
		argv = []string{b.bins.haproxy, "-db", "-f", conf}
	case caddyName:
		conf := filepath.Join(dir, "caddy.json")
		if err := os.WriteFile(conf, caddyConf(port, b.upstreamPort), 0o644); err != nil {
			return nil, err
		}
		argv = []string{b.bins.caddy, "run", "--config", conf}
		// Caddy keeps certificates and autosaved config under these; keep
		// them out of the home directory.
		env = []string{"GOMAXPROCS=1", "HOME=" + dir, "XDG_DATA_HOME=" + dir, "XDG_CONFIG_HOME=" + dir}
	case meridianPlain, meridianFull:
		if b.bins.meridianMissing != "" {
			return nil, fmt.Errorf("meridian gateway not available: %s", b.bins.meridianMissing)
		}
		routes := filepath.Join(dir, "routes.yaml")
		body, sample := meridianPlainRoutes(b.upstreamPort), "0"
		if system == meridianFull {
			body, sample = meridianFullRoutes(b.upstreamPort), "0.01"
		}
		if err := os.WriteFile(routes, []byte(body), 0o644); err != nil {
			return nil, err
		}
		argv = []string{b.bins.meridian, "gateway",
			"--listen", fmt.Sprintf("127.0.0.1:%d", port), "--routes-file", routes,
			"--admin-listen", fmt.Sprintf("127.0.0.1:%d", admin), "--access-log=false",
			"--trace-sample", sample, "--state-dir", filepath.Join(dir, "state")}
		env = []string{"GOMAXPROCS=1"}
		if system == meridianFull {
			// Without an exporter the gateway creates no span at all; the
			// upstream takes the exports and drops them.
			env = append(env, fmt.Sprintf("OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:%d", b.upstreamPort),
				"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf")
		}
	default:
		return nil, fmt.Errorf("unknown system %q", system)
	}
	c, err := benchenv.StartChild(benchenv.ChildSpec{
		Name: system, CPU: b.cpuProxy, Dir: dir, Env: env, PIDsFile: b.pidsFile, Argv: argv,
	})
	if err != nil {
		return nil, err
	}
	t := &target{system: system, port: port, proc: c}
	if err := b.checkProxies(ctx, t); err != nil {
		_ = t.stop()
		return nil, err
	}
	return t, nil
}

// checkProxies waits (up to 30 s) until t answers a request with the
// upstream's body, and, for the full chain, that a request without the
// token is refused, so that nobody measures a gateway that answers 401 to
// everything, or checks nothing.
func (b *bench) checkProxies(ctx context.Context, t *target) error {
	url := fmt.Sprintf("http://127.0.0.1:%d/bench", t.port)
	auth := ""
	if authed(t.system) {
		auth = "Bearer " + b.token
	}
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for {
		if err := t.proc.Alive(); err != nil {
			return err
		}
		status, body, err := get(ctx, url, auth)
		switch {
		case err != nil:
			last = err.Error()
		case status != http.StatusOK:
			last = fmt.Sprintf("status %d: %.200s", status, body)
		case body != b.upstreamBody:
			return fmt.Errorf("%s: the body is not the upstream's: %.200q", t.system, body)
		default:
			if !authed(t.system) {
				return nil
			}
			status, body, err := get(ctx, url, "")
			if err != nil {
				return fmt.Errorf("%s: a request without the token: %w", t.system, err)
			}
			if status != http.StatusUnauthorized && status != http.StatusForbidden {
				return fmt.Errorf("%s: a request without the token got %d (want 401): %.200s; JWT verification is not on", t.system, status, body)
			}
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s did not proxy %s within 30s (last: %s); its log: %s\n%s", t.system, url, last, t.proc.LogPath(), t.proc.LogTail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var checkClient = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func get(ctx context.Context, url, auth string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := checkClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, string(body), err
}

// nginxConf: one worker, no access log, keep-alive to the upstream (an
// upstream block with keepalive, HTTP/1.1 and the Connection header
// cleared), and neither side's connections closed after N requests or a
// short idle time during a run. Connections up to the open-files limit
// nofile. The worker runs as root so that it can use the temp dirs under
// dir.
func nginxConf(dir string, port, upstream, nofile int) string {
	return fmt.Sprintf(`user root;
worker_processes 1;
worker_rlimit_nofile %[4]d;
daemon off;
master_process on;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log error;
events {
    worker_connections %[5]d;
}
http {
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    upstream up {
        server 127.0.0.1:%[3]d;
        keepalive 128;
        keepalive_requests 100000000;
        keepalive_timeout 300s;
    }
    server {
        listen 127.0.0.1:%[2]d;
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
`, dir, port, upstream, nofile, nofile-100)
}

// haproxyConf: one thread, no log section (so no logging), keep-alive on
// both sides with idle server connections shared between client
// connections (http-reuse always). HAProxy refuses to start unless the
// open-files limit holds two sockets per connection (client and server
// side), so its maxconn is haproxyMaxConn(nofile).
func haproxyConf(port, upstream, nofile int) string {
	return fmt.Sprintf(`global
    nbthread 1
    maxconn %[3]d

defaults
    mode http
    maxconn %[3]d
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
    http-reuse always

frontend fe
    bind 127.0.0.1:%[1]d
    default_backend be

backend be
    server up 127.0.0.1:%[2]d
`, port, upstream, haproxyMaxConn(nofile))
}

// haproxyMaxConn is the most connections HAProxy accepts within nofile
// open files: it reserves two per connection and a few of its own.
func haproxyMaxConn(nofile int) int { return (nofile - 100) / 2 }

// caddyConf is Caddy's native JSON config: a server on the port with one
// route, reverse_proxy with keep-alive to the upstream; the admin API and
// automatic HTTPS off, and the default logger discarding (access logs are
// off unless a server asks for them). A 1 s grace period, so that SIGTERM
// does not wait for idle client connections to go.
func caddyConf(port, upstream int) []byte {
	cfg := map[string]any{
		"admin":   map[string]any{"disabled": true},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"writer": map[string]any{"output": "discard"}}}},
		"apps": map[string]any{"http": map[string]any{"grace_period": int64(time.Second), "servers": map[string]any{"bench": map[string]any{
			"listen":          []string{fmt.Sprintf("127.0.0.1:%d", port)},
			"automatic_https": map[string]any{"disable": true},
			"routes": []any{map[string]any{"handle": []any{map[string]any{
				"handler":   "reverse_proxy",
				"upstreams": []any{map[string]any{"dial": fmt.Sprintf("127.0.0.1:%d", upstream)}},
				"transport": map[string]any{"protocol": "http", "keep_alive": map[string]any{
					"idle_timeout": int64(300 * time.Second), "max_idle_conns": 256, "max_idle_conns_per_host": 128}},
			}}}},
		}}}},
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	return b
}

func meridianPlainRoutes(upstream int) string {
	return fmt.Sprintf(`routes:
  - name: plain
    match: {path_prefix: /}
    upstream: {urls: ["http://127.0.0.1:%d"]}
`, upstream)
}

func meridianFullRoutes(upstream int) string {
	return fmt.Sprintf(`auth:
  jwt:
    - name: bench
      issuer: https://bench.local
      audiences: [bench]
      jwks_url: http://127.0.0.1:%[1]d/jwks.json
rate_limits:
  per-subject: {rate: 1000000, burst: 1000000, key: subject}
routes:
  - name: full
    match: {path_prefix: /, methods: [GET]}
    upstream: {urls: ["http://127.0.0.1:%[1]d"]}
    auth: {methods: [jwt]}
    rate_limit: per-subject
`, upstream)
}
