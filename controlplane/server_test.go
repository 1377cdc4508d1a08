package controlplane_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	busjetstream "github.com/meridian-platform/meridian/bus/jetstream"
	"github.com/meridian-platform/meridian/client"
	"github.com/meridian-platform/meridian/controlplane"
	"github.com/meridian-platform/meridian/controlplane/store/jetstream"
	"github.com/meridian-platform/meridian/internal/natsembed"
	"github.com/meridian-platform/meridian/internal/testwait"
)

// cp is a control-plane replica under test, on a real JetStream.
type cp struct {
	*controlplane.Server
	URL    string
	Admin  *client.Client
	secret string
	stop   func()
	// kill cuts the replica off the store first, as a crash or a partition
	// would (it cannot leave the membership), then stops it.
	kill func()
}

// natsServer starts a NATS server with JetStream in dir on a random port,
// standing in for an external cluster; stop it to take the store away.
func natsServer(t testing.TB, dir string) *server.Server {
	t.Helper()
	ns, err := natsembed.Start(natsembed.Options{StoreDir: dir, Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns
}

type cpOption func(*controlplane.Config)

// startCP starts a replica on the NATS server at url. The admin secret is
// taken from the replica that created it (or from adminSecret when given).
func startCP(t testing.TB, url, adminSecret string, opts ...cpOption) *cp {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})) // outage tests provoke these on purpose
	if err != nil {
		t.Fatal(err)
	}
	st, err := jetstream.New(nc, jetstream.Config{})
	if err != nil {
		t.Fatal(err)
	}
	eb, err := busjetstream.New(nc, busjetstream.Config{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := controlplane.Config{Store: st, MemberTTL: 2 * time.Second, ShutdownTimeout: 2 * time.Second, Bus: eb}
	for _, o := range opts {
		o(&cfg)
	}
	ctx := context.Background()
	srv, err := controlplane.Open(ctx, cfg)
	if err != nil {
		nc.Close()
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx, ln) }()
	c := &cp{Server: srv, URL: "http://" + ln.Addr().String(), secret: adminSecret}
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
		cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := eb.Close(cctx); err != nil {
			t.Errorf("bus close: %v", err)
		}
		ccancel()
		nc.Close()
	}
	c.kill = func() {
		nc.Close()
		c.stop()
	}
	t.Cleanup(c.stop)
	c.Admin = c.client(t, c.secret)
	waitReady(t, c.URL)
	return c
}

// startOne starts a NATS server and one replica on it.
func startOne(t *testing.T, opts ...cpOption) (*cp, *server.Server) {
	t.Helper()
	ns := natsServer(t, t.TempDir())
	return startCP(t, ns.ClientURL(), "", opts...), ns
}

func (c *cp) client(t testing.TB, token string) *client.Client {
	t.Helper()
	cl, err := client.New(c.URL, token)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

func waitReady(t testing.TB, url string) {
	t.Helper()
	eventually(t, 10*time.Second, "the replica to be ready", func() bool {
		resp, err := http.Get(url + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// eventually polls cond until it holds or the (generous) deadline passes.
// It asserts that something happens, never how fast.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	testwait.Until(t, within, what, cond)
}

func readFile(t *testing.T, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func isCtx(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

type controlplaneConfig = controlplane.Config

func stringsReader(s string) io.Reader { return strings.NewReader(s) }

// restartNATS starts a NATS server again on the same directory and address.
func restartNATS(t *testing.T, dir, addr string) *server.Server {
	t.Helper()
	var ns *server.Server
	var err error
	// The old listener's port may take a moment to be free again.
	eventually(t, 10*time.Second, "the NATS port to be free", func() bool {
		ns, err = natsembed.Start(natsembed.Options{StoreDir: dir, Listen: addr})
		return err == nil
	})
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns
}
