package controlplane_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/client"
)

func TestRegistryLifecycle(t *testing.T) {
	c, _ := startOne(t)
	ctx := context.Background()
	in, err := c.Admin.Register(ctx, &meridian.Instance{
		Service: "orders", ID: "orders-1", Address: "127.0.0.1", Port: 8080, Version: "1.2.0", Zone: "a",
		Tags: []string{"primary"}, Metadata: map[string]string{"team": "checkout"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if in.Protocol != meridian.ProtocolHTTP || in.Weight != meridian.DefaultWeight || in.Health.Status != meridian.StatusPassing || in.Revision == 0 {
		t.Fatalf("registered = %+v: want defaults filled, passing (no check), a revision", in)
	}
	list, idx, err := c.Admin.Instances(ctx, "orders", client.InstancesQuery{})
	if err != nil || len(list) != 1 || list[0].ID != "orders-1" || list[0].Metadata["team"] != "checkout" || idx < in.Revision {
		t.Fatalf("instances = %+v idx %d err %v", list, idx, err)
	}
	svcs, _, err := c.Admin.Services(ctx)
	if err != nil || len(svcs) != 1 || svcs[0].Name != "orders" || svcs[0].ByStatus["passing"] != 1 {
		t.Fatalf("services = %+v err %v", svcs, err)
	}
	if err := c.Admin.Deregister(ctx, "orders", "orders-1"); err != nil {
		t.Fatal(err)
	}
	list, _, _ = c.Admin.Instances(ctx, "orders", client.InstancesQuery{})
	if len(list) != 0 {
		t.Fatalf("after deregister: %+v", list)
	}
	if err := c.Admin.Deregister(ctx, "orders", "orders-1"); !meridian.IsCode(err, meridian.CodeNotFound) {
		t.Fatalf("deregister twice: err = %v, want not_found", err)
	}
}

func TestBadInputIsRejectedNamingTheFieldAndNothingIsStored(t *testing.T) {
	c, _ := startOne(t)
	cases := []struct {
		name, path, body string
		status           int
		field            string
	}{
		{"malformed json", "/v1/services/orders/instances/i1", `{"address": "127.0.0.1", "port": 80`, 400, "body"},
		{"unknown field", "/v1/services/orders/instances/i1", `{"address": "127.0.0.1", "port": 80, "prot": "http"}`, 400, "prot"},
		{"wrong type", "/v1/services/orders/instances/i1", `{"address": "127.0.0.1", "port": "80"}`, 400, "port"},
		{"port out of range", "/v1/services/orders/instances/i1", `{"address": "127.0.0.1", "port": 70000}`, 400, "port"},
		{"invalid service name", "/v1/services/Orders_Svc/instances/i1", `{"address": "127.0.0.1", "port": 80}`, 400, "service"},
		{"invalid check", "/v1/services/orders/instances/i1", `{"address": "127.0.0.1", "port": 80, "check": {"kind": "icmp"}}`, 400, "check.kind"},
		{"bad duration", "/v1/services/orders/instances/i1", `{"address": "127.0.0.1", "port": 80, "ttl": "ten seconds"}`, 400, "ttl"},
		{"bad nested duration", "/v1/services/orders/instances/i1", `{"address": "127.0.0.1", "port": 80, "check": {"kind": "http", "interval": "often"}}`, 400, "check.interval"},
		{"oversized body", "/v1/services/orders/instances/i1", `{"address": "127.0.0.1", "port": 80, "metadata": {"a": "` + strings.Repeat("x", 2<<20) + `"}}`, 413, "body"},
		{"path and body disagree", "/v1/services/orders/instances/i1", `{"service": "payments", "address": "127.0.0.1", "port": 80}`, 400, "service"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPut, c.URL+tc.path, strings.NewReader(tc.body))
			req.Header.Set("Authorization", "Bearer "+c.secret)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var p struct {
				Status int    `json:"status"`
				Field  string `json:"field"`
				Detail string `json:"detail"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&p)
			if resp.StatusCode != tc.status || resp.Header.Get("Content-Type") != "application/problem+json" {
				t.Fatalf("status %d %s, want %d problem+json (%+v)", resp.StatusCode, resp.Header.Get("Content-Type"), tc.status, p)
			}
			if tc.field != "" && p.Field != tc.field {
				t.Fatalf("field = %q (%s), want %q", p.Field, p.Detail, tc.field)
			}
			if p.Detail == "" {
				t.Fatal("no detail")
			}
		})
	}
	list, _, err := c.Admin.Instances(context.Background(), "orders", client.InstancesQuery{})
	if err != nil || len(list) != 0 {
		t.Fatalf("something was stored: %+v %v", list, err)
	}
}

func TestLeaseExpiresWithoutHeartbeatsAndHeartbeatsKeepItAlive(t *testing.T) {
	c, _ := startOne(t)
	ctx := context.Background()
	const ttl = 2 * time.Second
	for _, id := range []string{"often", "rarely", "silent"} {
		if _, err := c.Admin.Register(ctx, &meridian.Instance{Service: "cart", ID: id, Address: "127.0.0.1", Port: 9000, TTL: meridian.Duration(ttl)}); err != nil {
			t.Fatal(err)
		}
	}
	// "often" beats every TTL/4; "rarely" every 0.6 TTL, beyond the TTL/2
	// under which the registry skips rewriting a lease: both must live.
	stop := make(chan struct{})
	beat := make(chan error, 2)
	for id, every := range map[string]time.Duration{"often": ttl / 4, "rarely": ttl * 6 / 10} {
		go func() {
			tk := time.NewTicker(every)
			defer tk.Stop()
			for {
				select {
				case <-stop:
					beat <- nil
					return
				case <-tk.C:
					if err := c.Admin.Heartbeat(ctx, "cart", id); err != nil {
						beat <- fmt.Errorf("%s: %w", id, err)
						return
					}
				}
			}
		}()
	}
	ids := func() []string {
		list, _, _ := c.Admin.Instances(ctx, "cart", client.InstancesQuery{})
		var out []string
		for _, in := range list {
			out = append(out, in.ID)
		}
		return out
	}
	eventually(t, 20*time.Second, "the silent instance to expire", func() bool { return fmt.Sprint(ids()) == "[often rarely]" })
	// Several TTLs later the heartbeating ones are still there.
	time.Sleep(3 * ttl)
	close(stop)
	for range 2 {
		if err := <-beat; err != nil {
			t.Fatalf("heartbeat: %v", err)
		}
	}
	if got := fmt.Sprint(ids()); got != "[often rarely]" {
		t.Fatalf("instances = %s, want [often rarely]", got)
	}
	if err := c.Admin.Heartbeat(ctx, "cart", "silent"); !meridian.IsCode(err, meridian.CodeNotFound) {
		t.Fatalf("heartbeat of an expired instance: err = %v, want not_found (so the SDK re-registers)", err)
	}
}

// flipServer answers its health endpoint with the status in code.
func flipServer(t *testing.T) (*httptest.Server, *atomic.Int32) {
	var code atomic.Int32
	code.Store(200)
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(int(code.Load()))
	}))
	t.Cleanup(s.Close)
	return s, &code
}

func hostPort(t *testing.T, addr string) (string, int) {
	h, p, err := net.SplitHostPort(strings.TrimPrefix(addr, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return h, n
}

func healthOf(t *testing.T, c *cp, service, id string) meridian.Health {
	in, err := c.Admin.Instance(context.Background(), service, id)
	if err != nil {
		t.Fatal(err)
	}
	return in.Health
}

func healthyIDs(c *cp, service string) string {
	list, _, _ := c.Admin.Instances(context.Background(), service, client.InstancesQuery{Healthy: true})
	var ids []string
	for _, in := range list {
		ids = append(ids, in.ID)
	}
	return fmt.Sprint(ids)
}

func TestHTTPCheckThresholdsTakeAnInstanceOutOfDiscoveryAndBack(t *testing.T) {
	c, _ := startOne(t)
	up, code := flipServer(t)
	host, port := hostPort(t, up.URL)
	ctx := context.Background()
	_, err := c.Admin.Register(ctx, &meridian.Instance{Service: "web", ID: "w1", Address: host, Port: port,
		Check: &meridian.CheckSpec{Kind: meridian.CheckHTTP, Target: "/healthz", Interval: meridian.Duration(100 * time.Millisecond),
			Timeout: meridian.Duration(100 * time.Millisecond), SuccessesBeforePassing: 2, FailuresBeforeCritical: 3}})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "w1 to pass its first checks", func() bool { return healthOf(t, c, "web", "w1").Status == meridian.StatusPassing })
	if got := healthyIDs(c, "web"); got != "[w1]" {
		t.Fatalf("healthy = %s", got)
	}
	code.Store(503)
	eventually(t, 10*time.Second, "w1 to turn critical", func() bool { return healthOf(t, c, "web", "w1").Status == meridian.StatusCritical })
	h := healthOf(t, c, "web", "w1")
	if !strings.Contains(h.Output, "503") {
		t.Fatalf("critical output = %q, want the probe's answer", h.Output)
	}
	if got := healthyIDs(c, "web"); got != "[]" {
		t.Fatalf("a critical instance is still discovered: %s", got)
	}
	all, _, _ := c.Admin.Instances(ctx, "web", client.InstancesQuery{})
	if len(all) != 1 {
		t.Fatalf("a critical instance must stay listed with its reason: %+v", all)
	}
	code.Store(200)
	eventually(t, 10*time.Second, "w1 to come back", func() bool { return healthyIDs(c, "web") == "[w1]" })
}

func TestFlappingBelowThresholdsNeverGoesCritical(t *testing.T) {
	c, _ := startOne(t)
	var n atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%2 == 0 {
			w.WriteHeader(500)
		}
	}))
	defer up.Close()
	host, port := hostPort(t, up.URL)
	_, err := c.Admin.Register(context.Background(), &meridian.Instance{Service: "flappy", ID: "f1", Address: host, Port: port,
		Check: &meridian.CheckSpec{Kind: meridian.CheckHTTP, Interval: meridian.Duration(100 * time.Millisecond), FailuresBeforeCritical: 2, InitialStatus: meridian.StatusPassing}})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "20 probes", func() bool { return n.Load() >= 20 })
	if h := healthOf(t, c, "flappy", "f1"); h.Status == meridian.StatusCritical {
		t.Fatalf("alternating results with failures_before_critical=2 went critical: %+v", h)
	}
	if got := healthyIDs(c, "flappy"); got != "[f1]" {
		t.Fatalf("healthy = %s", got)
	}
}

func TestTCPAndGRPCChecks(t *testing.T) {
	c, _ := startOne(t)
	ctx := context.Background()
	fast := meridian.Duration(100 * time.Millisecond)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conn.Close()
		}
	}()
	host, port := hostPort(t, ln.Addr().String())
	if _, err := c.Admin.Register(ctx, &meridian.Instance{Service: "db", ID: "tcp1", Address: host, Port: port, Protocol: meridian.ProtocolTCP,
		Check: &meridian.CheckSpec{Kind: meridian.CheckTCP, Interval: fast, FailuresBeforeCritical: 1}}); err != nil {
		t.Fatal(err)
	}

	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	go func() { _ = gs.Serve(gl) }()
	defer gs.Stop()
	ghost, gport := hostPort(t, gl.Addr().String())
	if _, err := c.Admin.Register(ctx, &meridian.Instance{Service: "inventory", ID: "g1", Address: ghost, Port: gport, Protocol: meridian.ProtocolGRPC,
		Check: &meridian.CheckSpec{Kind: meridian.CheckGRPC, GRPCService: "inventory.v1.Inventory", Interval: fast, FailuresBeforeCritical: 1}}); err != nil {
		t.Fatal(err)
	}
	hs.SetServingStatus("inventory.v1.Inventory", healthpb.HealthCheckResponse_SERVING)
	eventually(t, 10*time.Second, "tcp and grpc instances to pass", func() bool {
		return healthyIDs(c, "db") == "[tcp1]" && healthyIDs(c, "inventory") == "[g1]"
	})

	ln.Close()
	hs.SetServingStatus("inventory.v1.Inventory", healthpb.HealthCheckResponse_NOT_SERVING)
	eventually(t, 10*time.Second, "both to turn critical", func() bool {
		return healthyIDs(c, "db") == "[]" && healthyIDs(c, "inventory") == "[]"
	})
	if h := healthOf(t, c, "inventory", "g1"); !strings.Contains(h.Output, "NOT_SERVING") {
		t.Fatalf("grpc output = %q", h.Output)
	}
}

func TestWatchResumesWithoutGapsOrRepeats(t *testing.T) {
	c, _ := startOne(t)
	ctx := context.Background()
	reg := func(id string) {
		if _, err := c.Admin.Register(ctx, &meridian.Instance{Service: "pay", ID: id, Address: "127.0.0.1", Port: 1000}); err != nil {
			t.Fatal(err)
		}
	}
	reg("p1")
	reg("p2")

	// A first watch: snapshot, sync, one live change.
	var got []string
	var last uint64
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	events := make(chan meridian.InstanceEvent, 100)
	go func() {
		done <- c.Admin.WatchRegistry(wctx, "pay", 0, func(ev meridian.InstanceEvent) error { events <- ev; return nil })
	}()
	recv := func() meridian.InstanceEvent {
		select {
		case ev := <-events:
			return ev
		case <-time.After(10 * time.Second):
			t.Fatal("no event")
		}
		return meridian.InstanceEvent{}
	}
	for ev := recv(); ev.Type != meridian.EventSync; ev = recv() {
		got = append(got, string(ev.Type)+":"+ev.ID)
	}
	reg("p3")
	ev := recv()
	got = append(got, string(ev.Type)+":"+ev.ID)
	last = ev.Index
	cancel()
	if err := <-done; !isCtx(err) {
		t.Fatalf("watch ended with %v", err)
	}
	if fmt.Sprint(got) != "[put:p1 put:p2 put:p3]" {
		t.Fatalf("first watch = %v", got)
	}

	// Changes while nobody watches, then resume from the last index.
	if err := c.Admin.Deregister(ctx, "pay", "p1"); err != nil {
		t.Fatal(err)
	}
	reg("p4")
	reg("p2") // re-registration is a change too
	if _, err := c.Admin.Register(ctx, &meridian.Instance{Service: "other", ID: "o1", Address: "127.0.0.1", Port: 1}); err != nil {
		t.Fatal(err)
	}
	got = nil
	wctx, cancel = context.WithCancel(ctx)
	defer cancel()
	go func() {
		done <- c.Admin.WatchRegistry(wctx, "pay", last, func(ev meridian.InstanceEvent) error { events <- ev; return nil })
	}()
	var prev uint64 = last
	for len(got) < 3 {
		ev := recv()
		if ev.Type == meridian.EventSync {
			continue
		}
		if ev.Index <= prev {
			t.Fatalf("index went from %d to %d", prev, ev.Index)
		}
		prev = ev.Index
		got = append(got, string(ev.Type)+":"+ev.ID)
	}
	if fmt.Sprint(got) != "[delete:p1 put:p4 put:p2]" {
		t.Fatalf("resumed = %v", got)
	}
	select {
	case ev := <-events:
		if ev.Type != meridian.EventSync {
			t.Fatalf("extra event after the backlog: %+v", ev)
		}
	case <-time.After(300 * time.Millisecond):
	}
	cancel()
	<-done
}

func TestBlockingQueryAnswersOnChange(t *testing.T) {
	c, _ := startOne(t)
	ctx := context.Background()
	in, err := c.Admin.Register(ctx, &meridian.Instance{Service: "q", ID: "q1", Address: "127.0.0.1", Port: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, idx, _ := c.Admin.Instances(ctx, "q", client.InstancesQuery{})
	if idx != in.Revision {
		t.Fatalf("index %d, want %d", idx, in.Revision)
	}
	type answer struct {
		n   int
		idx uint64
		err error
	}
	ch := make(chan answer, 1)
	go func() {
		list, idx, err := c.Admin.Instances(ctx, "q", client.InstancesQuery{Index: idx, Wait: 30 * time.Second})
		ch <- answer{len(list), idx, err}
	}()
	select {
	case a := <-ch:
		t.Fatalf("blocking query answered before any change: %+v", a)
	case <-time.After(300 * time.Millisecond):
	}
	if _, err := c.Admin.Register(ctx, &meridian.Instance{Service: "q", ID: "q2", Address: "127.0.0.1", Port: 2}); err != nil {
		t.Fatal(err)
	}
	a := <-ch
	if a.err != nil || a.n != 2 || a.idx <= idx {
		t.Fatalf("after change: %+v (index was %d)", a, idx)
	}
	// A wait that sees no change answers with the same index.
	_, same, err := c.Admin.Instances(ctx, "q", client.InstancesQuery{Index: a.idx, Wait: 100 * time.Millisecond})
	if err != nil || same != a.idx {
		t.Fatalf("idle wait: index %d err %v, want %d", same, err, a.idx)
	}
}

func TestAuthRefusalsPerRole(t *testing.T) {
	c, _ := startOne(t)
	ctx := context.Background()
	// No token, a wrong token.
	for _, tok := range []string{"", "mrd_not-a-real-token"} {
		_, _, err := c.client(t, tok).Services(ctx)
		if !meridian.IsCode(err, meridian.CodeUnauthorized) {
			t.Fatalf("token %q: err = %v, want unauthorized", tok, err)
		}
	}
	resp, err := http.Get(c.URL + "/v1/services")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") == "" {
		t.Fatalf("no token: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics", "/v1/openapi.yaml"} {
		resp, err := http.Get(c.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s without a token: %d, want 200", path, resp.StatusCode)
		}
	}

	mk := func(name string, role meridian.Role, svc string) *client.Client {
		secret, _, err := c.Admin.CreateToken(ctx, name, role, svc)
		if err != nil {
			t.Fatal(err)
		}
		return c.client(t, secret)
	}
	viewer := mk("dash", meridian.RoleViewer, "")
	operator := mk("ops", meridian.RoleOperator, "")
	orders := mk("orders-svc", meridian.RoleService, "orders")

	inst := func(svc string) *meridian.Instance {
		return &meridian.Instance{Service: svc, ID: svc + "-1", Address: "127.0.0.1", Port: 80}
	}
	if _, err := viewer.Register(ctx, inst("orders")); !meridian.IsCode(err, meridian.CodeForbidden) {
		t.Fatalf("viewer register: %v, want forbidden", err)
	}
	if _, err := viewer.PutConfig(ctx, "prod/orders/x", client.PutConfigRequest{Value: "1"}); !meridian.IsCode(err, meridian.CodeForbidden) {
		t.Fatalf("viewer config put: %v, want forbidden", err)
	}
	if _, _, err := viewer.Services(ctx); err != nil {
		t.Fatalf("viewer read: %v", err)
	}
	if _, err := orders.Register(ctx, inst("orders")); err != nil {
		t.Fatalf("service token, own service: %v", err)
	}
	if _, err := orders.Register(ctx, inst("payments")); !meridian.IsCode(err, meridian.CodeForbidden) {
		t.Fatalf("service token, other service: %v, want forbidden", err)
	}
	if _, err := operator.Register(ctx, inst("payments")); err != nil {
		t.Fatalf("operator register: %v", err)
	}
	if _, _, err := operator.CreateToken(ctx, "x", meridian.RoleAdmin, ""); !meridian.IsCode(err, meridian.CodeForbidden) {
		t.Fatalf("operator creating tokens: %v, want forbidden", err)
	}
	if err := c.Admin.RevokeToken(ctx, "dash"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the revoked token to be refused", func() bool {
		_, _, err := viewer.Services(ctx)
		return meridian.IsCode(err, meridian.CodeUnauthorized)
	})
	toks, err := c.Admin.Tokens(ctx)
	if err != nil || len(toks) != 3 {
		t.Fatalf("tokens = %+v, %v; want admin, ops, orders-svc", toks, err)
	}
}

func TestMetricsAndOpenAPIAreServed(t *testing.T) {
	c, _ := startOne(t)
	if _, _, err := c.Admin.Services(context.Background()); err != nil {
		t.Fatal(err)
	}
	body := get(t, c.URL+"/metrics")
	for _, want := range []string{`meridian_http_requests_total{code="200",method="GET",route="GET /v1/services"}`, "meridian_registry_instances"} {
		if !strings.Contains(body, want) {
			t.Fatalf("/metrics lacks %s", want)
		}
	}
	if spec := get(t, c.URL+"/v1/openapi.yaml"); !strings.Contains(spec, "/v1/services/{service}/instances") {
		t.Fatal("openapi document does not describe the registry")
	}
}

func get(t *testing.T, url string) string {
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestLeaseRunsTTLAfterTheLastHeartbeat checks the lease contract where the
// registry does not write every heartbeat: an instance that stops right
// after a heartbeat that was only noted still gets its full TTL from it.
func TestLeaseRunsTTLAfterTheLastHeartbeat(t *testing.T) {
	c, _ := startOne(t)
	ctx := context.Background()
	const ttl = 6 * time.Second
	if _, err := c.Admin.Register(ctx, &meridian.Instance{Service: "lease", ID: "l1", Address: "127.0.0.1", Port: 1, TTL: meridian.Duration(ttl)}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(ttl / 3)
	if err := c.Admin.Heartbeat(ctx, "lease", "l1"); err != nil { // 2/3 of the lease left: noted, not written
		t.Fatal(err)
	}
	last := time.Now()
	time.Sleep(time.Until(last.Add(ttl - time.Second)))
	if _, err := c.Admin.Instance(ctx, "lease", "l1"); err != nil {
		t.Fatalf("%s after its last heartbeat (TTL %s) the instance is gone: %v", time.Since(last).Round(time.Millisecond), ttl, err)
	}
	eventually(t, 10*time.Second, "the instance to expire", func() bool {
		_, err := c.Admin.Instance(ctx, "lease", "l1")
		return meridian.IsCode(err, meridian.CodeNotFound)
	})
	if gone := time.Since(last); gone < ttl {
		t.Fatalf("removed %s after its last heartbeat, before its TTL of %s", gone, ttl)
	}
}
