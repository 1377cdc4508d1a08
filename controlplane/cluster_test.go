package controlplane_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/client"
)

func TestRestartKeepsRegistryConfigAndTokens(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "admin.token")
	withFile := func(cfg *controlplaneConfig) { cfg.AdminTokenFile = tokenFile }
	ns := natsServer(t, filepath.Join(dir, "nats"))
	c := startCP(t, ns.ClientURL(), "", withFile)
	ctx := context.Background()
	if info, err := os.Stat(tokenFile); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("admin token file: %v %v, want mode 0600", info, err)
	}
	secret := readFile(t, dir, "admin.token")
	if _, err := c.Admin.Register(ctx, &meridian.Instance{Service: "orders", ID: "o1", Address: "127.0.0.1", Port: 80}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Admin.PutConfig(ctx, "prod/orders/limit", client.PutConfigRequest{Value: "10"}); err != nil {
		t.Fatal(err)
	}
	c.stop()
	ns.Shutdown()
	ns.WaitForShutdown()

	ns = natsServer(t, filepath.Join(dir, "nats"))
	c = startCP(t, ns.ClientURL(), secret, withFile)
	if c.AdminSecret() != "" {
		t.Fatal("a restart created a second admin token")
	}
	if got := readFile(t, dir, "admin.token"); got != secret {
		t.Fatal("the admin token file was rewritten")
	}
	list, _, err := c.Admin.Instances(ctx, "orders", client.InstancesQuery{})
	if err != nil || len(list) != 1 {
		t.Fatalf("after restart: %+v %v", list, err)
	}
	e, err := c.Admin.GetConfig(ctx, "prod/orders/limit", 0)
	if err != nil || e.Value != "10" {
		t.Fatalf("config after restart: %+v %v", e, err)
	}
}

func TestTwoReplicasOnOneClusterServeConsistentReadsAndShareChecks(t *testing.T) {
	ns := natsServer(t, t.TempDir())
	a := startCP(t, ns.ClientURL(), "", func(c *controlplaneConfig) { c.ReplicaID = "replica-a" })
	b := startCP(t, ns.ClientURL(), a.secret, func(c *controlplaneConfig) { c.ReplicaID = "replica-b" })
	if b.AdminSecret() != "" {
		t.Fatal("the second replica created another admin token")
	}
	ctx := context.Background()

	// Read-your-writes across replicas: every write on A is visible to the
	// very next read on B.
	for i := range 20 {
		id := "i" + strconv.Itoa(i)
		if _, err := a.Admin.Register(ctx, &meridian.Instance{Service: "svc", ID: id, Address: "127.0.0.1", Port: 1000 + i}); err != nil {
			t.Fatal(err)
		}
		list, _, err := b.Admin.Instances(ctx, "svc", client.InstancesQuery{})
		if err != nil || len(list) != i+1 {
			t.Fatalf("after %d writes on A, B lists %d (%v)", i+1, len(list), err)
		}
		if _, err := b.Admin.PutConfig(ctx, "prod/svc/n", client.PutConfigRequest{Value: id}); err != nil {
			t.Fatal(err)
		}
		if e, err := a.Admin.GetConfig(ctx, "prod/svc/n", 0); err != nil || e.Value != id {
			t.Fatalf("config written on B, read on A: %+v %v", e, err)
		}
	}

	// Health checks are shared, not repeated: the owned counts add up to
	// the number of checked instances.
	up, _ := flipServer(t)
	host, port := hostPort(t, up.URL)
	const checked = 30
	for i := range checked {
		if _, err := a.Admin.Register(ctx, &meridian.Instance{Service: "web", ID: "w" + strconv.Itoa(i), Address: host, Port: port,
			Check: &meridian.CheckSpec{Kind: meridian.CheckHTTP, Interval: meridian.Duration(200 * time.Millisecond)}}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "both replicas to own a share of the checks", func() bool {
		na, nb := owned(t, a), owned(t, b)
		return na+nb == checked && na > 0 && nb > 0
	})
	eventually(t, 10*time.Second, "every checked instance to pass", func() bool {
		list, _, _ := b.Admin.Instances(ctx, "web", client.InstancesQuery{Healthy: true})
		return len(list) == checked
	})

	// A replica that goes away hands its share to the other.
	a.stop()
	eventually(t, 10*time.Second, "B to own every check", func() bool { return owned(t, b) == checked })
}

var ownedRe = regexp.MustCompile(`(?m)^meridian_health_checks_owned (\d+)`)

func owned(t *testing.T, c *cp) int {
	m := ownedRe.FindStringSubmatch(get(t, c.URL+"/metrics"))
	if m == nil {
		t.Fatal("no meridian_health_checks_owned metric")
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func TestStoreOutageAnswers503WithRetryAfterAndRecovers(t *testing.T) {
	dir := t.TempDir()
	ns := natsServer(t, dir)
	c := startCP(t, ns.ClientURL(), "")
	ctx := context.Background()
	if _, err := c.Admin.Register(ctx, &meridian.Instance{Service: "s", ID: "before", Address: "127.0.0.1", Port: 1}); err != nil {
		t.Fatal(err)
	}
	addr := ns.Addr().String()
	ns.Shutdown()
	ns.WaitForShutdown()

	req, _ := http.NewRequest(http.MethodPut, c.URL+"/v1/services/s/instances/during", stringsReader(`{"address":"127.0.0.1","port":2}`))
	req.Header.Set("Authorization", "Bearer "+c.secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("register during an outage: %d Retry-After %q, want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}

	// The same store comes back on the same port: nothing accepted is lost.
	restartNATS(t, dir, addr)
	eventually(t, 20*time.Second, "writes to work again", func() bool {
		_, err := c.Admin.Register(ctx, &meridian.Instance{Service: "s", ID: "after", Address: "127.0.0.1", Port: 3})
		return err == nil
	})
	list, _, err := c.Admin.Instances(ctx, "s", client.InstancesQuery{})
	if err != nil || len(list) != 2 || list[0].ID != "after" || list[1].ID != "before" {
		t.Fatalf("after the outage: %+v %v", list, err)
	}
}
