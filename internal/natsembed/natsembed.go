// Package natsembed runs a NATS server with JetStream inside the Meridian
// process: the real engine, so that one binary needs nothing else installed.
package natsembed

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Options for an embedded server.
type Options struct {
	// StoreDir keeps JetStream's data; it is created if missing.
	StoreDir string
	// Listen is a host:port for other processes to connect to; empty means
	// no listener at all (in-process connections only).
	Listen string
	// Port, when Listen is "host:port" style is not wanted: -1 picks a free
	// port. Ignored when Listen is set.
	Port int
	// Host for Port. Default 127.0.0.1.
	Host string
	// ServerName names the server in JetStream; default "meridian".
	ServerName string
}

// Start starts the server and waits until it accepts connections.
// The caller owns it: Shutdown and WaitForShutdown stop it.
func Start(o Options) (*server.Server, error) {
	if o.StoreDir == "" {
		return nil, errors.New("embedded nats: a store directory is required")
	}
	if err := os.MkdirAll(o.StoreDir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	opts := &server.Options{
		ServerName: o.ServerName,
		JetStream:  true,
		StoreDir:   filepath.Clean(o.StoreDir),
		NoSigs:     true,
		NoLog:      true,
		Host:       o.Host,
		Port:       o.Port,
	}
	if opts.ServerName == "" {
		opts.ServerName = "meridian"
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	switch {
	case o.Listen != "":
		host, port, err := splitHostPort(o.Listen)
		if err != nil {
			return nil, fmt.Errorf("embedded nats: listen %q: %w", o.Listen, err)
		}
		opts.Host, opts.Port = host, port
	case o.Port == 0:
		opts.DontListen = true
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, errors.New("embedded nats: not ready after 10s")
	}
	return ns, nil
}

// Connect opens an in-process client connection to ns.
func Connect(ns *server.Server, name string) (*nats.Conn, error) {
	return nats.Connect("", nats.InProcessServer(ns), nats.Name(name), nats.MaxReconnects(-1))
}
