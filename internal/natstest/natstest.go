// Package natstest starts a real NATS server with JetStream for tests: in
// process, on a random loopback port, with its store in the test's temp dir.
package natstest

import (
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/meridian-platform/meridian/internal/natsembed"
)

// Server is a running test server.
type Server struct {
	*server.Server
	Dir string
}

// Start starts a server that listens on a random loopback port and is shut
// down when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	dir := t.TempDir()
	ns, err := natsembed.Start(natsembed.Options{StoreDir: dir, Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return &Server{Server: ns, Dir: dir}
}

// Connect opens a client connection closed when the test ends.
func (s *Server) Connect(t testing.TB) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}
