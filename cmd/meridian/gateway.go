package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/gateway"
	"github.com/meridian-platform/meridian/telemetry"
	"github.com/meridian-platform/meridian/traffic/discovery"
)

const (
	defaultGatewayAddr = "127.0.0.1:7401"
	defaultAdminAddr   = "127.0.0.1:7402"
)

// gatewayFlags are the settings of `meridian gateway`.
type gatewayFlags struct {
	listen, adminListen string
	name                string
	routesFile          string
	stateDir            string
	accessLog           bool
	traceSample         float64
	tlsCert, tlsKey     string
	logLevel, logFormat string
}

func newGatewayCmd(e *env, g *globals) *cobra.Command {
	var f gatewayFlags
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Run the API gateway: routes from the config center (or a file) to services found in the registry",
		Long: `Run the API gateway.

It serves the routing document stored in the config center under
meridian/gateway/<name>/routes (apply one with 'meridian routes apply -f'),
follows its changes without dropping requests, and keeps the last good
document in --state-dir so that it starts and serves through a control-plane
outage. With --routes-file it serves that file instead and needs a control
plane only for service upstreams.

Metrics (/metrics), /healthz, /readyz and /debug/pprof are on --admin-listen.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runGateway(cmd, e, g, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.listen, "listen", envOr(e.getenv, "MERIDIAN_GATEWAY_LISTEN", defaultGatewayAddr), "address the gateway serves (env MERIDIAN_GATEWAY_LISTEN)")
	fl.StringVar(&f.adminListen, "admin-listen", envOr(e.getenv, "MERIDIAN_GATEWAY_ADMIN_LISTEN", defaultAdminAddr), "address of /metrics, /healthz and /readyz (env MERIDIAN_GATEWAY_ADMIN_LISTEN)")
	fl.StringVar(&f.name, "name", envOr(e.getenv, "MERIDIAN_GATEWAY_NAME", "default"), "gateway name: its routes are the config key meridian/gateway/<name>/routes (env MERIDIAN_GATEWAY_NAME)")
	fl.StringVar(&f.routesFile, "routes-file", e.getenv("MERIDIAN_GATEWAY_ROUTES_FILE"), "serve this routing document (YAML or JSON) instead of the config center's (env MERIDIAN_GATEWAY_ROUTES_FILE)")
	fl.StringVar(&f.stateDir, "state-dir", e.getenv("MERIDIAN_GATEWAY_STATE_DIR"), "where the last good routing document and the instances its routes use are kept (default <data-dir>/gateway/<name>)")
	fl.BoolVar(&f.accessLog, "access-log", true, "write one JSON access log record per request to stderr")
	fl.Float64Var(&f.traceSample, "trace-sample", 0, "share of requests traced, 0-1 (OTLP endpoint from OTEL_EXPORTER_OTLP_ENDPOINT)")
	fl.StringVar(&f.tlsCert, "tls-cert", e.getenv("MERIDIAN_GATEWAY_TLS_CERT"), "PEM certificate: serve HTTPS with HTTP/2 (env MERIDIAN_GATEWAY_TLS_CERT)")
	fl.StringVar(&f.tlsKey, "tls-key", e.getenv("MERIDIAN_GATEWAY_TLS_KEY"), "PEM private key of --tls-cert (env MERIDIAN_GATEWAY_TLS_KEY)")
	fl.StringVar(&f.logLevel, "log-level", envOr(e.getenv, "MERIDIAN_LOG_LEVEL", "info"), "debug, info, warn or error (env MERIDIAN_LOG_LEVEL)")
	fl.StringVar(&f.logFormat, "log-format", envOr(e.getenv, "MERIDIAN_LOG_FORMAT", "json"), "json or text (env MERIDIAN_LOG_FORMAT)")
	return cmd
}

func runGateway(cmd *cobra.Command, e *env, g *globals, f gatewayFlags) error {
	ctx := cmd.Context()
	log, err := newLogger(e, f.logLevel, f.logFormat)
	if err != nil {
		return err
	}
	if (f.tlsCert == "") != (f.tlsKey == "") {
		return errors.New("--tls-cert and --tls-key go together: give both, or neither for plain HTTP")
	}
	if f.traceSample < 0 || f.traceSample > 1 {
		return fmt.Errorf("--trace-sample %v is out of range 0-1", f.traceSample)
	}
	if err := meridian.ValidateServiceName("name", f.name); err != nil {
		return fmt.Errorf("--name: %s", err.(*meridian.Error).Message)
	}
	var fileCfg *gateway.Config
	if f.routesFile != "" {
		// Read the file before listening: a bad file is the likeliest
		// mistake, and its error names the line or the route and field.
		if fileCfg, err = readRoutesFile(e, f.routesFile); err != nil {
			return err
		}
	}
	// Listen before anything else, so that a taken port fails at once.
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w (set --listen or MERIDIAN_GATEWAY_LISTEN)", f.listen, err)
	}
	defer ln.Close()
	aln, err := net.Listen("tcp", f.adminListen)
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w (set --admin-listen or MERIDIAN_GATEWAY_ADMIN_LISTEN)", f.adminListen, err)
	}
	defer aln.Close()

	// The control plane: needed to follow the config center, and for
	// service upstreams. A file-only gateway without a token runs without.
	c, cerr := g.client(cmd)
	if cerr != nil && fileCfg == nil {
		return cerr
	}
	var cache *discovery.Cache
	if c != nil {
		cache = discovery.New(c, discovery.WithLogger(log))
	} else {
		log.Warn("no control plane token: only upstreams given by urls are reachable", "reason", cerr)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	tracing, err := telemetry.NewTracing(ctx, telemetry.TracingConfig{ServiceName: "meridian-gateway", SampleRatio: f.traceSample})
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = tracing.Shutdown(sctx)
	}()
	opts := gateway.Options{Discovery: cache, Logger: log, Registerer: reg, Tracing: tracing}
	if f.accessLog {
		opts.AccessLog = slog.New(slog.NewJSONHandler(e.stderr, nil))
	}
	gw, err := gateway.New(opts)
	if err != nil {
		return err
	}
	defer gw.Close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel() // runs before wg.Wait: stops what the group runs
	if cache != nil {
		wg.Go(func() { _ = cache.Run(ctx) })
	}
	wg.Go(func() { _ = gw.Run(ctx) })

	stateDir := f.stateDir
	if stateDir == "" {
		stateDir = filepath.Join(g.dataDir, "gateway", f.name)
	}
	if cache != nil {
		// The instances kept from the last run serve until discovery
		// answers: a gateway restarted during a control-plane outage
		// still reaches its services.
		instFile := filepath.Join(stateDir, "instances.json")
		if n, err := gateway.SeedInstances(cache, instFile); err != nil {
			log.Warn("the kept instances cannot be used", "err", err)
		} else if n > 0 {
			log.Info("serving the kept instances until discovery answers", "file", instFile, "services", n)
		}
		wg.Go(func() { _ = gw.KeepInstances(ctx, instFile) })
	}

	source := ""
	if fileCfg != nil {
		if err := gw.Apply(fileCfg, 0); err != nil {
			return err
		}
		source = f.routesFile
	} else {
		stateFile := filepath.Join(stateDir, "routes.json")
		key := gateway.Key(f.name)
		rev, err := gw.Restore(stateFile)
		switch {
		case err != nil:
			log.Warn("the kept routing document cannot be used; waiting for the config center", "err", err)
		case rev != 0:
			log.Info("serving the kept routing document until the config center answers", "file", stateFile, "revision", rev)
		}
		wg.Go(func() { _ = gw.Follow(ctx, c, key, stateFile) })
		source = "config key " + key
	}

	wg.Go(func() { _ = serveAdmin(ctx, aln, gw, reg) })
	url := "http://"
	if f.tlsCert != "" {
		url = "https://"
	}
	fmt.Fprintf(e.stderr, "meridian gateway on %s%s (routes: %s; metrics on http://%s/metrics)\n", url, ln.Addr(), source, aln.Addr())
	err = gateway.Serve(ctx, ln, gw, gateway.ServerConfig{TLSCert: f.tlsCert, TLSKey: f.tlsKey, Logger: log})
	log.Info("gateway stopped")
	return err
}

// readRoutesFile parses a routing document from a file, or stdin for
// "-", YAML or JSON.
func readRoutesFile(e *env, path string) (*gateway.Config, error) {
	var value string
	var err error
	if path == "-" {
		value, err = readValue(e.stdin, "stdin")
	} else {
		value, err = readFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("routes file: %w", err)
	}
	cfg, err := gateway.Parse(formatOf(path), []byte(value))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// serveAdmin serves /metrics, /healthz, /readyz (ready once a routing
// document is in force) and /debug/pprof.
func serveAdmin(ctx context.Context, ln net.Listener, gw *gateway.Gateway, reg *prometheus.Registry) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	// Profiles, for finding where a request's CPU goes; the admin
	// listener is loopback unless an operator says otherwise.
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !gw.Ready() {
			http.Error(w, "no routing document applied yet", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	return gateway.Serve(ctx, ln, mux, gateway.ServerConfig{})
}
