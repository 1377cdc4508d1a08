// Package cptest runs the real control plane inside a test: a NATS server
// with JetStream whose store lives in the test's temp dir, and a
// control-plane replica on a loopback port in front of it, with the event
// bus (the JetStream engine) on the same server. Tests of the
// SDK and of the data path drive it through its HTTP API, as their users
// do, and provoke outages by stopping and restarting the replica.
//
// Everything it starts is stopped when the test ends, in order (replicas,
// then NATS), and leaves no goroutine behind.
package cptest

import (
	"context"
	"errors"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	busjetstream "github.com/meridian-platform/meridian/bus/jetstream"
	"github.com/meridian-platform/meridian/client"
	"github.com/meridian-platform/meridian/controlplane"
	"github.com/meridian-platform/meridian/controlplane/store/jetstream"
	"github.com/meridian-platform/meridian/internal/natsembed"
)

// Option adjusts the configuration of every replica a CP starts.
type Option func(*controlplane.Config)

// WithMemberTTL sets how long a replica that stopped without leaving keeps
// its share of the health checks (controlplane.Config.MemberTTL). Default
// here 2s.
func WithMemberTTL(d time.Duration) Option {
	return func(c *controlplane.Config) { c.MemberTTL = d }
}

// WithConfig lets a test set any other field of the replicas' config; Store
// is set by Start and overrides whatever fn puts there.
func WithConfig(fn func(*controlplane.Config)) Option { return Option(fn) }

// readyTimeout bounds how long a replica may take to load its state and
// answer /readyz, and how long Restart retries binding its old port.
const readyTimeout = 10 * time.Second

// CP is one control-plane replica under test. Its methods must be called
// from the test's goroutine (they may call t.Fatal).
type CP struct {
	// URL is the replica's base URL ("http://127.0.0.1:port").
	URL string
	// Addr is its listen address, host:port; Restart listens on it again.
	Addr string
	// Secret is the admin token's secret, shared by every replica of the
	// store.
	Secret string
	// Server is the running replica, replaced by Restart.
	Server *controlplane.Server
	// Client is a client of URL with the admin token. It stays valid across
	// Stop and Restart: it answers CodeUnavailable while the replica is
	// stopped and works again once it is back.
	Client *client.Client

	t    testing.TB
	ns   *server.Server
	opts []Option
	stop func() // stops the running replica; nil while stopped
}

// Start starts a NATS server with JetStream in t.TempDir() and a replica on
// 127.0.0.1:0, and returns once the replica is ready (/readyz answers 200).
func Start(t testing.TB, opts ...Option) *CP {
	t.Helper()
	ns, err := natsembed.Start(natsembed.Options{StoreDir: t.TempDir(), Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	// Cleanups run last-registered first: every replica (registered below)
	// stops before the store it uses.
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	c := &CP{t: t, ns: ns, opts: opts}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.serve(ln)
	c.Secret = c.Server.AdminSecret()
	if c.Secret == "" {
		t.Fatal("cptest: a fresh store's first replica created no admin token")
	}
	c.Client = c.newClient()
	return c
}

// Peer starts another replica on the same NATS store, on its own loopback
// port, stopped when the test ends: a second member of the cluster. A test
// changes the registry or config through it while c is stopped, the way
// the rest of a cluster goes on while one replica is down.
func (c *CP) Peer() *CP {
	c.t.Helper()
	p := &CP{t: c.t, ns: c.ns, opts: c.opts, Secret: c.Secret}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.t.Fatal(err)
	}
	p.serve(ln)
	p.Client = p.newClient()
	return p
}

// Stop stops the replica and returns once it has: its listener is closed,
// its connections (watch streams included) are ended, its NATS connection
// is closed. Clients of URL then find it unreachable (connection refused).
// The store keeps running. Stopping a stopped replica does nothing.
func (c *CP) Stop() {
	if c.stop != nil {
		c.stop()
		c.stop = nil
	}
}

// Restart stops the replica if it runs, then starts a new one on the same
// address and the same store, and returns once it is ready. Clients of URL
// reach the new replica without any change; watches resume on it.
func (c *CP) Restart() {
	c.t.Helper()
	c.Stop()
	var ln net.Listener
	var err error
	// The port was just released; retry in case the kernel holds it for a
	// moment.
	deadline := time.Now().Add(readyTimeout)
	for {
		if ln, err = net.Listen("tcp", c.Addr); err == nil {
			break
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("cptest: cannot listen on %s again: %v", c.Addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.serve(ln)
}

// serve opens a replica on the NATS server, serves it on ln and waits until
// it is ready.
func (c *CP) serve(ln net.Listener) {
	t := c.t
	t.Helper()
	nc, err := nats.Connect(c.ns.ClientURL(), nats.Name("cptest"),
		nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	st, err := jetstream.New(nc, jetstream.Config{})
	if err != nil {
		nc.Close()
		ln.Close()
		t.Fatal(err)
	}
	// The event bus on the replica's connection, as `meridian server` has it.
	eb, err := busjetstream.New(nc, busjetstream.Config{})
	if err != nil {
		nc.Close()
		ln.Close()
		t.Fatal(err)
	}
	// ShutdownTimeout keeps its default (10s), longer than the 5s for which
	// net/http's Shutdown waits on a connection that has not sent a request
	// yet (Go's transport leaves such connections in its pool at times): a
	// shorter one makes Serve time out with such a connection still open.
	cfg := controlplane.Config{MemberTTL: 2 * time.Second, Bus: eb}
	for _, o := range c.opts {
		o(&cfg)
	}
	cfg.Store = st
	srv, err := controlplane.Open(context.Background(), cfg)
	if err != nil {
		nc.Close()
		ln.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("cptest: control plane at %s: %v", ln.Addr(), err)
		}
		cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := eb.Close(cctx); err != nil {
			t.Errorf("cptest: event bus of %s: %v", ln.Addr(), err)
		}
		ccancel()
		nc.Close()
	}
	t.Cleanup(stop)
	c.stop = stop
	c.Server = srv
	c.Addr = ln.Addr().String()
	c.URL = "http://" + c.Addr
	if err := waitReady(c.URL, done); err != nil {
		t.Fatalf("cptest: control plane at %s: %v", c.Addr, err)
	}
}

func (c *CP) newClient() *client.Client {
	c.t.Helper()
	cl, err := client.New(c.URL, c.Secret)
	if err != nil {
		c.t.Fatal(err)
	}
	return cl
}

// waitReady polls url's /readyz until it answers 200, Serve returns (done)
// or readyTimeout passes.
func waitReady(url string, done chan error) error {
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: time.Second}
	deadline := time.Now().Add(readyTimeout)
	for {
		resp, err := hc.Get(url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case err := <-done:
			done <- err // for the stop function
			return errors.Join(errors.New("stopped before it was ready"), err)
		default:
		}
		if time.Now().After(deadline) {
			return errors.New("not ready after " + readyTimeout.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
