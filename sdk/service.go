package sdk

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/client"
	"github.com/meridian-platform/meridian/internal/backoff"
	"github.com/meridian-platform/meridian/traffic/discovery"
	"github.com/meridian-platform/meridian/traffic/outbound"
)

// ControlPlane is what a Service uses of the control plane: registration,
// the registry watch behind its discovery cache, and config reads for
// BindConfig. *client.Client satisfies it.
type ControlPlane interface {
	Register(ctx context.Context, inst *meridian.Instance) (*meridian.Instance, error)
	Deregister(ctx context.Context, service, id string) error
	Heartbeat(ctx context.Context, service, id string) error
	discovery.Watcher
	ConfigSource
}

var _ ControlPlane = (*client.Client)(nil)

// Option configures a Service beyond its Config.
type Option func(*Service)

// WithControlPlane makes the Service use cp instead of a client of
// Config.ControlPlane with Config.Token.
func WithControlPlane(cp ControlPlane) Option { return func(s *Service) { s.cp = cp } }

// WithoutSignals stops Run from handling SIGTERM and SIGINT; only its
// context then stops it. For programs that handle signals themselves.
func WithoutSignals() Option { return func(s *Service) { s.noSignals = true } }

// WithListener makes Run serve on ln, a TCP listener the caller opened
// (socket activation, a test that wants to cut connections), instead of
// listening on Config.Listen. Run closes it.
func WithListener(ln net.Listener) Option { return func(s *Service) { s.ln = ln } }

// Service is one instance of a service: an HTTP server that registers
// itself with the control plane, keeps its lease, and drains gracefully.
type Service struct {
	cfg       Config
	log       *slog.Logger
	cp        ControlPlane
	cache     *discovery.Cache
	out       *outbound.Transport
	httpc     *http.Client
	noSignals bool
	ln        net.Listener

	running   atomic.Bool
	addr      atomic.Pointer[net.TCPAddr]
	listening chan struct{}
	ready     chan struct{} // closed at the first successful registration
	readyOnce sync.Once
	// serving is true from the first registration until draining starts:
	// what /readyz answers.
	serving atomic.Bool
}

// New validates cfg, applies its defaults and returns a Service. It makes
// no call and opens no socket: Run does.
func New(cfg Config, opts ...Option) (*Service, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("sdk: invalid config: %w", err)
	}
	s := &Service{
		cfg:       cfg,
		log:       cfg.Logger.With("service", cfg.Name),
		listening: make(chan struct{}),
		ready:     make(chan struct{}),
	}
	for _, o := range opts {
		o(s)
	}
	if s.cp == nil {
		c, err := client.New(cfg.ControlPlane, cfg.Token)
		if err != nil {
			var me *meridian.Error
			if errors.As(err, &me) && me.Field == "addr" {
				me.Field = "ControlPlane"
			} else if me != nil && me.Field == "token" {
				me.Field = "Token"
			}
			return nil, fmt.Errorf("sdk: invalid config: %w", err)
		}
		s.cp = c
	}
	s.cache = discovery.New(s.cp, discovery.WithLogger(cfg.Logger))
	s.out = outbound.New(s.cache, outbound.Options{Zone: cfg.Zone, Logger: cfg.Logger})
	s.httpc = &http.Client{Transport: s.out}
	return s, nil
}

// ControlPlane returns the client the Service talks to the control plane
// with, to share with BindConfig or other callers.
func (s *Service) ControlPlane() ControlPlane { return s.cp }

// Discovery returns the Service's discovery cache, which shares its
// control-plane client. Run runs it (from before the handler serves until
// after the last request has finished), so handlers may use it; a lookup
// before Run waits for Run to start it.
func (s *Service) Discovery() *discovery.Cache { return s.cache }

// Addr returns the address the server listens on, or nil before Run has
// opened its listener (see Listening).
func (s *Service) Addr() *net.TCPAddr { return s.addr.Load() }

// Listening is closed once Run has opened its listener; Addr is set then.
func (s *Service) Listening() <-chan struct{} { return s.listening }

// Ready is closed once the instance has first registered with the control
// plane; /readyz answers 200 from then until draining starts.
func (s *Service) Ready() <-chan struct{} { return s.ready }

// Run serves h until ctx ends or the process receives SIGTERM or SIGINT,
// then shuts down gracefully; it returns nil after a graceful shutdown. It
// may be called once.
//
// In order, Run:
//
//  1. listens on Config.Listen, returning the error at once if it cannot;
//  2. serves h, except for two paths it answers itself: /healthz (200 while
//     the process runs) and /readyz (200 from the first registration until
//     draining starts, else 503). h runs behind deadline parsing (the
//     caller's Meridian-Timeout becomes the request context's deadline)
//     and adaptive load shedding (503 with Retry-After beyond capacity),
//     unless Config turns them off;
//  3. registers the instance (advertised address, listener's port) and
//     heartbeats every TTL/3, registering again when a heartbeat answers
//     not_found (the lease expired). While the control plane is unreachable
//     it logs, retries with backoff and goes on serving: an outage of the
//     control plane never stops a service;
//  4. runs the discovery cache and the outbound Transport behind
//     HTTPClient and GRPCClient, and follows the resiliency spec at
//     Config.ResiliencyKey.
//
// On shutdown it stops heartbeating and deregisters (so watchers drop the
// instance), turns /readyz to 503, waits DrainDelay for watchers to stop
// sending requests, then stops accepting connections and waits up to
// ShutdownTimeout for in-flight requests to finish (those still running
// are cut off and Run returns an error saying so), and finally stops the
// discovery cache, the Transport and the spec's binding.
func (s *Service) Run(ctx context.Context, h http.Handler) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("sdk: Service.Run called twice")
	}
	if h == nil {
		h = http.NotFoundHandler()
	}
	ln := s.ln
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", s.cfg.Listen); err != nil {
			return fmt.Errorf("sdk: %w", meridian.FieldError("Listen", "cannot listen on %s: %v", s.cfg.Listen, err))
		}
	}
	tcp, ok := ln.Addr().(*net.TCPAddr)
	if !ok {
		ln.Close()
		return fmt.Errorf("sdk: the listener's address %v is not TCP", ln.Addr())
	}
	inst, err := s.registration(tcp)
	if err != nil {
		ln.Close()
		return fmt.Errorf("sdk: %w", err)
	}
	s.addr.Store(tcp)
	close(s.listening)

	if !s.noSignals {
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
		defer stop()
	}
	// The lifecycle's parts outlive ctx: they stop one by one, in order,
	// after it ends.
	base := context.WithoutCancel(ctx)

	srv := &http.Server{
		Handler:           s.handler(s.serverMiddleware(h)),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	cacheCtx, stopCache := context.WithCancel(base)
	var dataPath sync.WaitGroup
	dataPath.Go(func() { _ = s.cache.Run(cacheCtx) })
	dataPath.Go(func() { _ = s.out.Run(cacheCtx) })
	if !s.cfg.NoResiliencySpec {
		dataPath.Go(func() { s.followResiliency(cacheCtx) })
	}

	regCtx, stopReg := context.WithCancel(base)
	regDone := make(chan struct{})
	go func() {
		defer close(regDone)
		s.keepRegistered(regCtx, inst)
	}()
	s.log.Info("serving", "addr", tcp.String(), "instance", inst.ID, "advertise", inst.HostPort())

	var runErr error
	select {
	case <-ctx.Done():
		s.log.Info("shutting down", "cause", context.Cause(ctx))
	case err := <-serveErr:
		serveErr <- err // for the wait below
		runErr = fmt.Errorf("sdk: serving: %w", err)
		s.log.Error("server failed; shutting down", "err", err)
	}

	// 1. Deregister, after the heartbeat loop has stopped so that nothing
	// registers the instance again.
	stopReg()
	<-regDone
	s.deregister(base, inst)
	// 2. Not ready any more.
	s.serving.Store(false)
	// 3. Let watchers catch up while requests are still served.
	if runErr == nil && s.cfg.DrainDelay > 0 {
		s.log.Info("draining", "delay", s.cfg.DrainDelay)
		time.Sleep(s.cfg.DrainDelay)
	}
	// 4. Finish in-flight requests.
	shCtx, cancel := context.WithTimeout(base, s.cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shCtx); err != nil {
		srv.Close()
		runErr = errors.Join(runErr, fmt.Errorf("sdk: in-flight requests did not finish within %s and were cut off: %w", s.cfg.ShutdownTimeout, err))
	}
	if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) && runErr == nil {
		runErr = fmt.Errorf("sdk: serving: %w", err)
	}
	// 5. Nothing uses discovery or the outbound Transport any more.
	stopCache()
	dataPath.Wait()
	s.httpc.CloseIdleConnections()
	s.log.Info("stopped")
	return runErr
}

// handler answers /healthz and /readyz and passes everything else to h.
func (s *Service) handler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz":
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			_, _ = w.Write([]byte("ok\n"))
		case "/readyz":
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("Cache-Control", "no-store")
			if !s.serving.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = w.Write([]byte("not ready\n"))
				return
			}
			_, _ = w.Write([]byte("ready\n"))
		default:
			h.ServeHTTP(w, r)
		}
	})
}

// registration builds the instance to register for the bound listener.
func (s *Service) registration(ln *net.TCPAddr) (*meridian.Instance, error) {
	host, port := "", ln.Port
	if a := s.cfg.AdvertiseAddr; a != "" {
		if h, p, err := net.SplitHostPort(a); err == nil {
			n, err := strconv.Atoi(p)
			if err != nil || n < 1 || n > 65535 {
				return nil, meridian.FieldError("AdvertiseAddr", "%q has no valid port", a)
			}
			host, port = h, n
		} else {
			host = a
		}
	} else if ln.IP != nil && !ln.IP.IsUnspecified() {
		host = ln.IP.String()
	} else {
		host = outboundIP(s.cfg.ControlPlane)
	}
	in := s.cfg.instance(host, port)
	if in.ID == "" {
		in.ID = defaultID(s.cfg.Name, host, port)
	}
	if err := in.Normalize(); err != nil {
		var me *meridian.Error
		if errors.As(err, &me) && me.Field != "" {
			c := *me
			c.Field = configField(me.Field)
			return nil, &c
		}
		return nil, err
	}
	return in, nil
}

var idUnsafe = regexp.MustCompile(`[^A-Za-z0-9._:@-]+`)

// defaultID is "<name>-<host>-<port>" with characters an id may not hold
// replaced by '-'.
func defaultID(name, host string, port int) string {
	id := idUnsafe.ReplaceAllString(name+"-"+host+"-"+strconv.Itoa(port), "-")
	if len(id) > 128 {
		id = id[len(id)-128:]
	}
	return id
}

// outboundIP is the local IP this host uses to reach the control plane
// (found by routing a UDP socket, which sends nothing), else the first
// non-loopback address, else 127.0.0.1.
func outboundIP(controlPlane string) string {
	hostport := controlPlane
	if u, err := url.Parse(controlPlane); err == nil && u.Host != "" {
		hostport = u.Host
		if u.Port() == "" {
			hostport = net.JoinHostPort(u.Hostname(), map[string]string{"https": "443"}[u.Scheme]+map[string]string{"http": "80"}[u.Scheme])
		}
	}
	d := net.Dialer{Timeout: 2 * time.Second}
	if c, err := d.Dial("udp", hostport); err == nil {
		defer c.Close()
		if a, ok := c.LocalAddr().(*net.UDPAddr); ok && !a.IP.IsUnspecified() {
			return a.IP.String()
		}
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.IsGlobalUnicast() {
				return n.IP.String()
			}
		}
	}
	return "127.0.0.1"
}

// keepRegistered registers inst and keeps its lease until ctx ends.
func (s *Service) keepRegistered(ctx context.Context, inst *meridian.Instance) {
	interval := s.cfg.TTL / 3
	// One call may take at most one heartbeat interval, so a hung
	// connection cannot let the lease run out unnoticed.
	callTimeout := max(interval, time.Second)
	bo := backoff.Backoff{Base: 100 * time.Millisecond, Max: max(interval, time.Second)}
	for {
		// Register (again), retrying until it succeeds.
		for {
			c := *inst
			cctx, cancel := context.WithTimeout(ctx, callTimeout)
			stored, err := s.cp.Register(cctx, &c)
			cancel()
			if ctx.Err() != nil {
				return
			}
			if err == nil {
				bo.Reset()
				s.log.Info("registered", "instance", inst.ID, "addr", inst.HostPort(), "health", stored.Health.Status)
				break
			}
			d := bo.Next()
			level := slog.LevelWarn
			switch meridian.ErrorCode(err) {
			case meridian.CodeInvalid, meridian.CodeUnauthorized, meridian.CodeForbidden:
				// Retrying helps only once someone fixes the token or the
				// registration, so say it louder; the service still runs.
				level = slog.LevelError
			}
			s.log.Log(ctx, level, "cannot register with the control plane; serving anyway and retrying",
				"instance", inst.ID, "retry_in", d, "err", err)
			if !backoff.Sleep(ctx, d) {
				return
			}
		}
		s.readyOnce.Do(func() {
			s.serving.Store(true)
			close(s.ready)
		})
		// Heartbeat until the lease is reported lost.
		next := interval
		for {
			if !backoff.Sleep(ctx, next) {
				return
			}
			cctx, cancel := context.WithTimeout(ctx, callTimeout)
			err := s.cp.Heartbeat(cctx, inst.Service, inst.ID)
			cancel()
			if ctx.Err() != nil {
				return
			}
			if err == nil {
				bo.Reset()
				next = interval
				continue
			}
			if meridian.IsCode(err, meridian.CodeNotFound) {
				s.log.Warn("lease lost (the control plane no longer knows the instance); registering again", "instance", inst.ID)
				break
			}
			// Retry sooner than the next beat, so that a short outage does
			// not cost the lease.
			next = min(bo.Next(), interval)
			s.log.Warn("heartbeat failed; retrying", "instance", inst.ID, "retry_in", next, "err", err)
		}
	}
}

// deregister removes the instance, bounded in time so that an unreachable
// control plane delays shutdown little (the lease expires on its own).
func (s *Service) deregister(ctx context.Context, inst *meridian.Instance) {
	ctx, cancel := context.WithTimeout(ctx, min(5*time.Second, s.cfg.ShutdownTimeout))
	defer cancel()
	switch err := s.cp.Deregister(ctx, inst.Service, inst.ID); {
	case err == nil:
		s.log.Info("deregistered", "instance", inst.ID)
	case meridian.IsCode(err, meridian.CodeNotFound):
	default:
		s.log.Warn("cannot deregister; the control plane drops the instance when its lease expires",
			"instance", inst.ID, "ttl", s.cfg.TTL, "err", err)
	}
}
