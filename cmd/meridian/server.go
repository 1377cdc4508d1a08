package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/meridian-platform/meridian"
	busjetstream "github.com/meridian-platform/meridian/bus/jetstream"
	"github.com/meridian-platform/meridian/controlplane"
	"github.com/meridian-platform/meridian/controlplane/store/jetstream"
	"github.com/meridian-platform/meridian/gateway"
	"github.com/meridian-platform/meridian/internal/natsembed"
	"github.com/meridian-platform/meridian/traffic/policy"
)

// serverFlags are the settings of `meridian server`; each also reads an
// environment variable, named in its help.
type serverFlags struct {
	listen       string
	nats         string
	natsReplicas int
	natsListen   string
	natsCreds    string
	noAuth       bool
	replicaID    string
	logLevel     string
	logFormat    string
}

func newServerCmd(e *env) *cobra.Command {
	var f serverFlags
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the control plane (registry, health checks, config center, event bus API)",
		Long: `Run the control plane.

With no --nats flag it runs an embedded NATS server with JetStream and keeps
its data under --data-dir: nothing else needs to be installed. With --nats it
uses that NATS cluster instead, so several replicas can share one store.

On first start it creates an admin token and writes it to
<data-dir>/admin.token (mode 0600), where the CLI on this machine finds it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dataDir, err := cmd.Flags().GetString("data-dir")
			if err != nil {
				return err
			}
			return runServer(cmd.Context(), e, dataDir, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.listen, "listen", envOr(e.getenv, "MERIDIAN_LISTEN", defaultAddr), "HTTP API address (env MERIDIAN_LISTEN)")
	fl.StringVar(&f.nats, "nats", e.getenv("MERIDIAN_NATS"), "NATS cluster URLs, comma-separated; empty runs an embedded server (env MERIDIAN_NATS)")
	fl.IntVar(&f.natsReplicas, "nats-replicas", envInt(e.getenv, "MERIDIAN_NATS_REPLICAS", 1), "JetStream replicas of each bucket on an external cluster: 3 in production (env MERIDIAN_NATS_REPLICAS)")
	fl.StringVar(&f.natsCreds, "nats-creds", e.getenv("MERIDIAN_NATS_CREDS"), "NATS credentials file for --nats (env MERIDIAN_NATS_CREDS)")
	fl.StringVar(&f.natsListen, "nats-listen", e.getenv("MERIDIAN_NATS_LISTEN"), "let other processes reach the embedded NATS server at host:port, e.g. 127.0.0.1:7422 (env MERIDIAN_NATS_LISTEN); default: in-process only")
	fl.BoolVar(&f.noAuth, "no-auth", envBool(e.getenv, "MERIDIAN_NO_AUTH"), "turn API tokens off; refused unless --listen is a loopback address (env MERIDIAN_NO_AUTH)")
	fl.StringVar(&f.replicaID, "replica-id", e.getenv("MERIDIAN_REPLICA_ID"), "name of this replica among those sharing a cluster; default host name plus a random suffix")
	fl.StringVar(&f.logLevel, "log-level", envOr(e.getenv, "MERIDIAN_LOG_LEVEL", "info"), "debug, info, warn or error (env MERIDIAN_LOG_LEVEL)")
	fl.StringVar(&f.logFormat, "log-format", envOr(e.getenv, "MERIDIAN_LOG_FORMAT", "json"), "json or text (env MERIDIAN_LOG_FORMAT)")
	return cmd
}

func runServer(ctx context.Context, e *env, dataDir string, f serverFlags) error {
	if err := checkServerEnv(e.getenv); err != nil {
		return err
	}
	log, err := newLogger(e, f.logLevel, f.logFormat)
	if err != nil {
		return err
	}
	host, _, err := net.SplitHostPort(f.listen)
	if err != nil {
		return fmt.Errorf("--listen %q is not host:port (for example %s)", f.listen, defaultAddr)
	}
	if f.noAuth && !isLoopback(host) {
		return fmt.Errorf("--no-auth with --listen %s would open the API to the network without tokens: listen on 127.0.0.1, or drop --no-auth", f.listen)
	}
	if f.natsReplicas < 1 || f.natsReplicas > 5 {
		return fmt.Errorf("--nats-replicas %d is out of range 1-5", f.natsReplicas)
	}
	if f.nats != "" && f.natsListen != "" {
		return errors.New("--nats-listen is for the embedded server; it cannot be combined with --nats")
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("data dir %s: %w (set --data-dir or MERIDIAN_DATA_DIR)", dataDir, err)
	}

	// Listen before anything else, so that a taken port fails at once.
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w (set --listen or MERIDIAN_LISTEN)", f.listen, err)
	}
	defer ln.Close()

	natsOpts := []nats.Option{
		nats.Name("meridian-server"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			log.Warn("nats", "err", err)
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: we closed it ourselves
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted()) }),
	}
	var nc *nats.Conn
	storeDesc := ""
	replicas := f.natsReplicas
	if f.nats == "" {
		ns, err := natsembed.Start(natsembed.Options{StoreDir: filepath.Join(dataDir, "jetstream"), Listen: f.natsListen})
		if err != nil {
			return fmt.Errorf("%w (is another 'meridian server' using %s?)", err, dataDir)
		}
		defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
		nc, err = nats.Connect("", append(natsOpts, nats.InProcessServer(ns))...)
		if err != nil {
			return fmt.Errorf("embedded nats: %w", err)
		}
		storeDesc = "embedded NATS JetStream in " + filepath.Join(dataDir, "jetstream")
		if f.natsListen != "" {
			storeDesc += ", reachable at nats://" + f.natsListen
		}
		replicas = 1
	} else {
		if f.natsCreds != "" {
			natsOpts = append(natsOpts, nats.UserCredentials(f.natsCreds))
		}
		nc, err = nats.Connect(f.nats, append(natsOpts, nats.RetryOnFailedConnect(false))...)
		if err != nil {
			return fmt.Errorf("cannot connect to NATS at %s: %w (check --nats or MERIDIAN_NATS)", f.nats, err)
		}
		storeDesc = fmt.Sprintf("NATS JetStream cluster %s (replicas %d)", nc.ConnectedUrlRedacted(), replicas)
	}
	defer nc.Close()
	st, err := jetstream.New(nc, jetstream.Config{Replicas: replicas})
	if err != nil {
		return err
	}
	// The event bus shares the connection: topics are streams next to the
	// store's buckets, in the same JetStream.
	eventBus, err := busjetstream.New(nc, busjetstream.Config{Replicas: replicas, Logger: log})
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := eventBus.Close(cctx); err != nil {
			log.Warn("event bus close", "err", err)
		}
	}()
	tokenFile := filepath.Join(dataDir, "admin.token")
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	srv, err := controlplane.Open(octx, controlplane.Config{
		Store: st, ReplicaID: f.replicaID, NoAuth: f.noAuth, AdminTokenFile: tokenFile, Logger: log, Bus: eventBus,
		ValidateConfig: validateConfig,
	})
	cancel()
	if err != nil {
		return err
	}
	url := "http://" + ln.Addr().String()
	log.Info("control plane listening", "url", url, "store", storeDesc, "replica", srv.ReplicaID(), "auth", !f.noAuth)
	fmt.Fprintf(e.stderr, "meridian control plane on %s (store: %s)\n", url, storeDesc)
	switch {
	case f.noAuth:
		fmt.Fprintln(e.stderr, "API tokens are OFF (--no-auth): every caller is an admin")
	case srv.AdminSecret() != "":
		fmt.Fprintf(e.stderr, "created the admin token in %s (mode 0600); the CLI on this machine reads it from there\n", tokenFile)
	default:
		fmt.Fprintf(e.stderr, "admin token: %s (or MERIDIAN_TOKEN)\n", tokenFile)
	}
	err = srv.Serve(ctx, ln)
	log.Info("control plane stopped")
	return err
}

// validateConfig is the control plane's Config.ValidateConfig: the config
// keys that Meridian's own components read must hold what those components
// accept, checked by the parser each of them uses, so that a bad revision
// is refused when it is written rather than logged and skipped by every
// gateway or service that follows the key.
//
//   - meridian/gateway/<name>/routes (under gateway.KeyPrefix, last
//     segment "routes"): a routing document, gateway.Parse;
//   - meridian/resiliency/<service> (one segment under policy.KeyPrefix):
//     a resiliency spec, policy.Parse.
//
// Both are yaml or json; a text value is refused as a whole.
func validateConfig(key string, format meridian.ConfigFormat, value string) error {
	var what string
	var parse func() error
	switch {
	case strings.HasPrefix(key, gateway.KeyPrefix) && path.Base(key) == "routes":
		what = "a routing document"
		parse = func() error { _, err := gateway.Parse(format, []byte(value)); return err }
	case strings.HasPrefix(key, policy.KeyPrefix) && !strings.Contains(key[len(policy.KeyPrefix):], "/"):
		what = "a resiliency spec"
		parse = func() error { _, err := policy.Parse(format, []byte(value)); return err }
	default:
		return nil
	}
	if format != meridian.FormatYAML && format != meridian.FormatJSON {
		return meridian.Errorf(meridian.CodeInvalid, "%s is yaml or json, not %s: write it with format yaml or json", what, format)
	}
	return parse()
}

func newLogger(e *env, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q is not one of debug, info, warn, error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(e.stderr, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(e.stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q is not json or text", format)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// envInt and envBool read a flag's default from the environment; a value
// that does not parse is reported by checkServerEnv before anything starts.
func envInt(getenv func(string) string, name string, def int) int {
	if n, err := strconv.Atoi(getenv(name)); err == nil {
		return n
	}
	return def
}

func envBool(getenv func(string) string, name string) bool {
	b, _ := strconv.ParseBool(getenv(name))
	return b
}

func checkServerEnv(getenv func(string) string) error {
	if v := getenv("MERIDIAN_NATS_REPLICAS"); v != "" {
		if _, err := strconv.Atoi(v); err != nil {
			return fmt.Errorf("MERIDIAN_NATS_REPLICAS=%q is not a number (1-5)", v)
		}
	}
	if v := getenv("MERIDIAN_NO_AUTH"); v != "" {
		if _, err := strconv.ParseBool(v); err != nil {
			return fmt.Errorf("MERIDIAN_NO_AUTH=%q is not true or false", v)
		}
	}
	return nil
}
