// Command etcdpeer runs one embedded etcd member (go.etcd.io/etcd/server/v3
// embed) as its own process, so that bench/registry can pin it to a core and
// read its RSS and CPU time from /proc exactly as it does for `meridian
// server`. It is the peer of the registry benchmark: the registry that
// go-zero, Kratos and go-micro use.
//
// It serves the etcd v3 API (and /metrics, /health) on -client-url until it
// gets SIGINT or SIGTERM, then closes the member once (embed.Etcd.Close
// panics when called twice) and exits 0.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/meridian-platform/meridian/bench/internal/benchenv"
)

func main() { benchenv.Main("etcdpeer", run) }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("etcdpeer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", "", "member data directory (required)")
	clientURL := fs.String("client-url", "http://127.0.0.1:23790", "client URL to listen on and advertise")
	peerURL := fs.String("peer-url", "http://127.0.0.1:23800", "peer URL to listen on and advertise")
	noFsync := fs.Bool("unsafe-no-fsync", false, "disable fsync (etcd's --unsafe-no-fsync); off by default, as etcd is deployed")
	logLevel := fs.String("log-level", "error", "etcd log level: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dataDir == "" {
		return errors.New("-data-dir is required")
	}
	cu, err := url.Parse(*clientURL)
	if err != nil {
		return fmt.Errorf("-client-url: %w", err)
	}
	pu, err := url.Parse(*peerURL)
	if err != nil {
		return fmt.Errorf("-peer-url: %w", err)
	}

	cfg := embed.NewConfig()
	cfg.Name = "bench"
	cfg.Dir = *dataDir
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.EnableDistributedTracing = false // no collector here
	cfg.UnsafeNoFsync = *noFsync
	cfg.LogLevel = *logLevel
	cfg.LogOutputs = []string{"stderr"}

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}
	// Close exactly once, on every path from here.
	defer e.Close()

	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		return errors.New("etcd not ready after 30s")
	case <-ctx.Done():
		return nil
	}
	fmt.Fprintf(stdout, "etcdpeer ready on %s\n", cu)

	select {
	case <-ctx.Done():
		return nil
	case err := <-e.Err():
		return fmt.Errorf("etcd: %w", err)
	}
}
