package health

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/meridian-platform/meridian"
)

const (
	// maxBody is how much of an HTTP check's body is read. Reading (rather
	// than just closing) lets the server finish writing a small response
	// cleanly; the cap keeps a misbehaving endpoint from streaming forever.
	maxBody = 4 << 10
	// maxOutput caps Result.Output, which is persisted with the instance:
	// an error that embeds a long URL must not bloat every registry record.
	maxOutput = 1 << 10
	// defaultHTTPPath is probed when an http check names no target.
	defaultHTTPPath = "/healthz"
	userAgent       = "meridian-health-check/1"
)

// Probe runs inst's check once and reports the result. It dispatches on
// inst.Check.Kind:
//
//   - http: GET Target, a path on http://address:port ("/healthz" when
//     empty) or a full http(s) URL; a 2xx status passes.
//   - tcp: connect to Target or address:port; a completed connect passes.
//   - grpc: grpc.health.v1.Health/Check for Check.GRPCService against
//     Target or address:port, without TLS; SERVING passes.
//
// The probe is bounded by Check.Timeout (and by ctx). client is used for
// http checks; nil means http.DefaultClient. Probe never panics on a bad
// instance: a missing check or unknown kind is a failed Result.
func Probe(ctx context.Context, inst *meridian.Instance, client *http.Client) Result {
	if inst == nil || inst.Check == nil {
		return Result{Output: "no health check configured"}
	}
	spec := inst.Check
	timeout := spec.Timeout.D()
	if timeout <= 0 {
		timeout = meridian.DefaultCheckTimeout
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	var r Result
	switch spec.Kind {
	case meridian.CheckHTTP:
		r = probeHTTP(pctx, inst, client)
	case meridian.CheckTCP:
		r = probeTCP(pctx, dialTarget(inst))
	case meridian.CheckGRPC:
		r = probeGRPC(pctx, dialTarget(inst), spec.GRPCService)
	default:
		return Result{Output: fmt.Sprintf("unknown check kind %q", spec.Kind)}
	}
	// Errors from an expired deadline read differently per transport
	// ("context deadline exceeded", "code = DeadlineExceeded", "i/o
	// timeout"); one wording is easier on the people reading Output.
	if !r.OK && ctx.Err() == nil && pctx.Err() == context.DeadlineExceeded {
		r.Output = "timed out after " + timeout.String()
	}
	r.Output = truncate(r.Output, maxOutput)
	return r
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// dialTarget is the host:port a tcp or grpc check connects to.
func dialTarget(inst *meridian.Instance) string {
	if inst.Check.Target != "" {
		return inst.Check.Target
	}
	return inst.HostPort()
}

// httpURL is the URL an http check GETs.
func httpURL(inst *meridian.Instance) string {
	t := inst.Check.Target
	if strings.HasPrefix(t, "http://") || strings.HasPrefix(t, "https://") {
		return t
	}
	if t == "" {
		t = defaultHTTPPath
	} else if !strings.HasPrefix(t, "/") {
		t = "/" + t
	}
	return "http://" + inst.HostPort() + t
}

func probeHTTP(ctx context.Context, inst *meridian.Instance, client *http.Client) Result {
	if client == nil {
		client = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, httpURL(inst), nil)
	if err != nil {
		return Result{Output: err.Error()}
	}
	req.Header.Set("User-Agent", userAgent)
	resp, err := client.Do(req)
	if err != nil {
		return Result{Output: err.Error()}
	}
	_, _ = io.CopyN(io.Discard, resp.Body, maxBody)
	_ = resp.Body.Close()

	status := resp.Status
	if status == "" { // a RoundTripper that does not fill it in
		status = fmt.Sprintf("%d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	return Result{
		OK:     resp.StatusCode >= 200 && resp.StatusCode < 300,
		Output: "HTTP " + status,
	}
}

func probeTCP(ctx context.Context, addr string) Result {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return Result{Output: err.Error()}
	}
	_ = conn.Close()
	return Result{OK: true, Output: "connected"}
}

func probeGRPC(ctx context.Context, addr, service string) Result {
	// A connection per probe, closed right after: keeping one open per
	// instance would cost a connection and its goroutines for each of
	// thousands of instances, and a fresh connect also proves the server
	// still accepts.
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUserAgent(userAgent),
	)
	if err != nil {
		return Result{Output: err.Error()}
	}
	defer func() { _ = conn.Close() }()

	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return Result{Output: err.Error()}
	}
	st := resp.GetStatus()
	return Result{OK: st == healthpb.HealthCheckResponse_SERVING, Output: st.String()}
}

// newHTTPClient is the client a Runner uses when none is given.
func newHTTPClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			// Health checks go straight to the instance, never through an
			// HTTP_PROXY meant for outbound traffic.
			Proxy:       nil,
			DialContext: (&net.Dialer{KeepAlive: -1}).DialContext,
			// One connection per probe, as Consul does: thousands of idle
			// keep-alive connections would cost more than the handshakes
			// they save, and reusing a connection would not prove that the
			// instance still accepts new ones.
			DisableKeepAlives: true,
			// No transport timeouts: Probe's context bounds the whole
			// exchange by the check's Timeout.
		},
		// Redirects are followed (up to 10, the net/http default), so a
		// health endpoint may redirect to its canonical path.
	}
}
