// Package controlplane is Meridian's control plane: the service registry
// with leases and active health checks, the config center, API tokens, and
// the HTTP/JSON API that serves them. All state lives in a store.Store
// (JetStream by default); a Server holds only caches of it, so several
// replicas can share one store.
package controlplane

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/controlplane/store"
	"github.com/meridian-platform/meridian/internal/problem"
)

// Config configures a Server. Zero values take the defaults named.
type Config struct {
	// Store keeps all state. Required.
	Store store.Store
	// ReplicaID names this replica among those sharing the store; default
	// host name plus a random suffix.
	ReplicaID string
	// NoAuth turns token checks off (every caller is an anonymous admin).
	// The command refuses it on a non-loopback listener.
	NoAuth bool
	// AdminTokenFile is where the first admin token's secret is written
	// (mode 0600) when this replica creates it; empty: not written.
	AdminTokenFile string
	// Logger; default discards.
	Logger *slog.Logger
	// Metrics registry the server's collectors join; default a new one,
	// served at /metrics either way.
	Metrics *prometheus.Registry
	// MaxConfigValue is the largest config value in bytes; default 512 KiB.
	MaxConfigValue int
	// ValidateConfig, when set, checks a config value against what its key
	// is for: the server wires a routing document's or a resiliency spec's
	// parser here for their keys. It is called on every put and every
	// rollback, after the value parsed in its format (format is never
	// empty: text by default) and before anything is written. An error
	// refuses the write: nothing is stored and the caller gets 400 (code
	// invalid) whatever the error's own code. The *meridian.Errors in it,
	// joined or not, keep their Field as a path inside the value: a put
	// answers field "value.<Field>" ("value" when Field is empty) and lists
	// every problem in the detail; a rollback answers field "revision" and
	// names the paths in the detail. Only the Field and Message of each are
	// shown, never the cause; any other error is shown by its text. It must
	// be safe for concurrent use and return nil for keys it does not
	// govern. Deletes are not checked. Nil: every value that parses is
	// accepted.
	ValidateConfig func(key string, format meridian.ConfigFormat, value string) error
	// HealthWorkers is how many health probes run at once; default 32.
	HealthWorkers int
	// MemberTTL is how long a replica that stopped refreshing its membership
	// still owns its share of health checks; default 5s.
	MemberTTL time.Duration
	// ShutdownTimeout bounds the graceful drain of in-flight requests;
	// default 10s.
	ShutdownTimeout time.Duration
	// Bus is the event bus behind the /v1/topics and /v1/subscriptions
	// endpoints (publish over HTTP, topic streams, dead letters, push
	// subscriptions); its owner closes it after Serve returns. Nil turns
	// those endpoints off (404).
	Bus Bus
	// MaxEventBody is the largest publish request body in bytes (one
	// event, or a batch); default 1 MiB, the NATS default message size.
	MaxEventBody int64
}

// Server is one control-plane replica.
type Server struct {
	cfg      Config
	log      *slog.Logger
	metrics  *prometheus.Registry
	tokens   *Tokens
	registry *Registry
	config   *ConfigCenter
	push     *pusher // nil without a bus
	handler  http.Handler
	secret   string // the admin secret, if this replica created it

	mu      sync.Mutex
	running bool
}

// Open opens the server's buckets and creates the first admin token if
// there is none. It starts nothing; Serve does.
func Open(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("controlplane: Config.Store is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = prometheus.NewRegistry()
		cfg.Metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	if cfg.MaxConfigValue <= 0 {
		cfg.MaxConfigValue = meridian.DefaultMaxValueSize
	}
	if cfg.MemberTTL <= 0 {
		cfg.MemberTTL = 5 * time.Second
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	if cfg.MaxEventBody <= 0 {
		cfg.MaxEventBody = 1 << 20
	}
	if cfg.ReplicaID == "" {
		host, _ := os.Hostname()
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		cfg.ReplicaID = fmt.Sprintf("%s-%s", host, hex.EncodeToString(b))
	}
	s := &Server{cfg: cfg, log: cfg.Logger, metrics: cfg.Metrics}

	tokensB, err := cfg.Store.Bucket(ctx, "tokens", store.BucketConfig{History: 1})
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	regB, err := cfg.Store.Bucket(ctx, "registry", store.BucketConfig{History: 64})
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	leaseB, err := cfg.Store.Bucket(ctx, "leases", store.BucketConfig{History: 1, TTL: true})
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	memberB, err := cfg.Store.Bucket(ctx, "members", store.BucketConfig{History: 1, TTL: true})
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	// The config center keeps every revision: history, diff and rollback
	// are its point. 10,000 revisions a key is years of changes.
	configB, err := cfg.Store.Bucket(ctx, "config", store.BucketConfig{History: 10000, MaxValueSize: 2*cfg.MaxConfigValue + 4096}) // room for JSON escaping in the envelope
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}

	s.tokens = newTokens(tokensB, s.log)
	s.registry = newRegistry(registryConfig{
		reg: regB, leases: leaseB, members: memberB, self: cfg.ReplicaID, memberTTL: cfg.MemberTTL,
		workers: cfg.HealthWorkers, log: s.log, metrics: s.metrics,
	})
	s.config = newConfigCenter(configB, s.log, cfg.MaxConfigValue, cfg.ValidateConfig)
	if cfg.Bus != nil {
		subB, err := cfg.Store.Bucket(ctx, "subscriptions", store.BucketConfig{History: 1})
		if err != nil {
			return nil, fmt.Errorf("controlplane: %w", err)
		}
		s.push = newPusher(cfg.Bus, subB, s.registry, s.log)
	}

	if !cfg.NoAuth {
		secret, err := s.tokens.bootstrap(ctx)
		if err != nil {
			return nil, fmt.Errorf("controlplane: create the admin token: %w", err)
		}
		if secret != "" && cfg.AdminTokenFile != "" {
			if err := writeSecret(cfg.AdminTokenFile, secret); err != nil {
				return nil, fmt.Errorf("controlplane: %w", err)
			}
		}
		s.secret = secret
	}
	s.handler = s.routes()
	return s, nil
}

// AdminSecret is the first admin token's secret if this replica created
// it, else "".
func (s *Server) AdminSecret() string { return s.secret }

// ReplicaID names this replica.
func (s *Server) ReplicaID() string { return s.cfg.ReplicaID }

// Handler is the HTTP API.
func (s *Server) Handler() http.Handler { return s.handler }

// Serve runs the background work (watches, leases, health checks) and the
// HTTP API on ln until ctx ends, then drains in-flight requests and stops
// everything it started. It closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return errors.New("controlplane: Serve called twice")
	}
	s.running = true
	s.mu.Unlock()

	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	loops := []func(context.Context) error{s.tokens.mirror.run, s.config.run, s.registry.run}
	if s.push != nil {
		loops = append(loops, s.push.run)
	}
	for _, run := range loops {
		wg.Go(func() {
			if err := run(bg); err != nil {
				s.log.Error("background loop stopped", "err", err)
			}
		})
	}

	// Connections that never carried a request (a client's spare, pooled
	// one) count as idle for Shutdown only after 5 s; closing them at once
	// keeps a stop fast.
	var connMu sync.Mutex
	fresh := map[net.Conn]struct{}{}
	hs := &http.Server{
		ConnState: func(c net.Conn, st http.ConnState) {
			connMu.Lock()
			defer connMu.Unlock()
			if st == http.StateNew {
				fresh[c] = struct{}{}
			} else {
				delete(fresh, c)
			}
		},
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return bg },
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()

	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
		// Watch streams never finish on their own; stopping the background
		// context ends them once Shutdown has stopped new requests.
		go func() {
			select {
			case <-time.After(200 * time.Millisecond):
			case <-sctx.Done():
			}
			stopBG()
		}()
		shut := make(chan error, 1)
		go func() { shut <- hs.Shutdown(sctx) }()
		connMu.Lock()
		for c := range fresh {
			c.Close()
		}
		connMu.Unlock()
		if err = <-shut; err != nil {
			hs.Close() // out of time: cut what is left rather than leak it
		}
		cancel()
		<-errc
	}
	stopBG()
	wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

func (s *Server) ready() error {
	switch {
	case !s.tokens.mirror.ready():
		return errors.New("tokens not loaded")
	case !s.registry.ready():
		return errors.New("registry not loaded")
	case !s.config.ready():
		return errors.New("config not loaded")
	case s.push != nil && !s.push.mirror.ready():
		return errors.New("subscriptions not loaded")
	}
	return nil
}

// fail answers err as problem+json.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	problem.Write(w, r, s.log, err)
}

func writeSecret(path, secret string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(secret+"\n"), 0o600)
}

// storeError turns a store error into a domain error.
func storeError(err error) error {
	var ce *store.ConflictError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ce):
		return &meridian.Error{Code: meridian.CodeConflict, Message: fmt.Sprintf("revision conflict: the current revision is %d", ce.Current), Current: ce.Current}
	case errors.Is(err, store.ErrNotFound):
		return &meridian.Error{Code: meridian.CodeNotFound, Message: "not found", Err: err}
	case errors.Is(err, store.ErrTooLarge):
		return &meridian.Error{Code: meridian.CodeTooLarge, Message: "value too large for the store", Err: err}
	case errors.Is(err, store.ErrUnavailable), errors.Is(err, errSyncTimeout), errors.Is(err, context.DeadlineExceeded):
		return &meridian.Error{Code: meridian.CodeUnavailable, Message: "the store is unavailable; retry", Err: err}
	}
	var me *meridian.Error
	if errors.As(err, &me) {
		return err
	}
	return &meridian.Error{Code: meridian.CodeInternal, Err: err}
}
