package gateway

import (
	"context"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/internal/problem"
	"github.com/meridian-platform/meridian/telemetry"
	"github.com/meridian-platform/meridian/traffic/discovery"
	"github.com/meridian-platform/meridian/traffic/fastclient"
	"github.com/meridian-platform/meridian/traffic/outbound"
	"github.com/meridian-platform/meridian/traffic/policy"
	resmetrics "github.com/meridian-platform/meridian/traffic/resilience/metrics"
)

// Options configure a Gateway. The zero value works: no control plane
// (upstreams by URL only), no metrics registry, no logs.
type Options struct {
	// Discovery finds services' instances. Nil: routes may only use urls
	// upstreams; service upstreams answer 503.
	Discovery *discovery.Cache
	// Logger receives reloads and upstream failures. Default: discard.
	Logger *slog.Logger
	// AccessLog receives one record per request. Nil: no access log.
	AccessLog *slog.Logger
	// Registerer takes the gateway's metrics and the data path's. Nil:
	// none are registered.
	Registerer prometheus.Registerer
	// Tracing starts a server span per request (at its sample ratio) and
	// passes the trace context upstream. Nil: no tracing, and a client's
	// traceparent passes through as any header.
	Tracing *telemetry.Tracing
	// Base, when set, sends every try to an instance (tests; a custom
	// dialer). Default: tuned HTTP/1.1 and h2c transports.
	Base, BaseH2C http.RoundTripper
}

// Gateway is the API gateway's request path: it matches each request to
// a route of the document in force and sends it through that route's
// compiled chain. Apply replaces the document atomically.
type Gateway struct {
	opts    Options
	log     *slog.Logger
	src     *source
	h1, h2  *outbound.Transport
	metrics *metrics
	misses  *routeMetrics

	cur atomic.Pointer[router]
	mu  sync.Mutex // serializes Apply; guards edge

	edge  *edge // the document in force's; its verifier and limiters outlive reloads that keep them
	rev   atomic.Uint64
	ready atomic.Bool

	ctx         context.Context // ends at Close: mirrors stop
	cancel      context.CancelFunc
	mirrors     sync.WaitGroup
	mirrorSlots chan struct{}
}

// New returns a Gateway with no routes (every request is 404 until
// Apply). Run must be running for service upstreams to follow discovery.
func New(opts Options) (*Gateway, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Base == nil {
		// HTTP/1.1 upstreams on the caller's goroutine (see package
		// fastclient); upgrades go through net/http's transport.
		opts.Base = fastclient.New(fastclient.Options{Fallback: newH1Transport()})
	}
	if opts.BaseH2C == nil {
		opts.BaseH2C = newH2CTransport()
	}
	g := &Gateway{
		opts:        opts,
		log:         opts.Logger,
		src:         newSource(opts.Discovery),
		metrics:     newMetrics(opts.Registerer),
		mirrorSlots: make(chan struct{}, mirrorInFlight),
	}
	var m *resmetrics.Metrics
	if opts.Registerer != nil {
		var err error
		if m, err = resmetrics.New(opts.Registerer, opts.Logger); err != nil {
			return nil, err
		}
	}
	g.h1 = outbound.New(g.src, outbound.Options{Base: opts.Base, Metrics: m, Logger: opts.Logger})
	g.h2 = outbound.New(g.src, outbound.Options{Base: opts.BaseH2C, Metrics: m, Logger: opts.Logger})
	g.misses = g.metrics.route("_unmatched")
	g.ctx, g.cancel = context.WithCancel(context.Background())
	g.cur.Store(&router{})
	return g, nil
}

func newH1Transport() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = 0 // no global cap: MaxIdleConnsPerHost bounds each upstream
	tr.MaxIdleConnsPerHost = 512
	tr.IdleConnTimeout = 90 * time.Second
	// A proxy passes Accept-Encoding through and must not ask for gzip
	// itself, or it would decompress what the client wanted compressed.
	tr.DisableCompression = true
	tr.ForceAttemptHTTP2 = true // over TLS; plain http stays HTTP/1.1
	return tr
}

func newH2CTransport() *http.Transport {
	tr := newH1Transport()
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	p.SetHTTP2(true)
	tr.Protocols = &p
	return tr
}

// Run keeps the upstreams' balancers following discovery and runs their
// outlier detectors until ctx ends.
func (g *Gateway) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { _ = g.h1.Run(ctx) })
	wg.Go(func() { _ = g.h2.Run(ctx) })
	wg.Wait()
	return nil
}

// Close stops mirrored requests in flight and waits for them, and closes
// idle upstream connections. Requests still being served are the HTTP
// server's to drain (Shutdown) before Close.
func (g *Gateway) Close() {
	g.cancel()
	g.mirrors.Wait()
	g.h1.CloseIdleConnections()
	g.h2.CloseIdleConnections()
}

// Apply validates cfg and, when valid, makes it the document in force:
// every route's chain is built first, then all replace the old ones at
// once; requests already routed finish on the chain they started on. An
// invalid cfg changes nothing. revision is the config center revision it
// came from (0 for a file), for metrics and logs.
func (g *Gateway) Apply(cfg *Config, revision uint64) error {
	if err := cfg.Validate(); err != nil {
		g.metrics.reloads.WithLabelValues("invalid").Inc()
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	rt, spec, keys, e, err := g.compile(cfg)
	if err == nil {
		g.src.add(keys)
		if err = g.h1.Apply(spec); err == nil {
			err = g.h2.Apply(spec)
		}
	}
	if err != nil {
		g.metrics.reloads.WithLabelValues("invalid").Inc()
		return err
	}
	g.cur.Store(rt)
	g.edge = e
	g.ready.Store(true)
	g.rev.Store(revision)
	g.metrics.active.Set(float64(revision))
	g.metrics.reloads.WithLabelValues("applied").Inc()
	g.log.Info("routes applied", "revision", revision, "routes", len(cfg.Routes))
	return nil
}

// Ready reports whether a routing document is in force.
func (g *Gateway) Ready() bool { return g.ready.Load() }

// Revision is the config center revision of the document in force.
func (g *Gateway) Revision() uint64 { return g.rev.Load() }

const requestIDHeader = "X-Request-Id"

// ServeHTTP routes r. Every response carries X-Request-Id: the client's
// when it sent one of sane length, else a new one, which also goes
// upstream.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get(requestIDHeader)
	if id == "" || len(id) > 128 {
		id = nuid.Next()
		r.Header.Set(requestIDHeader, id)
	}
	w.Header().Set(requestIDHeader, id)
	rt := g.cur.Load()
	var buf [maxParams]string // on the stack: matching allocates nothing
	route, params := rt.match(r, buf[:0])
	if route == nil {
		start := time.Now()
		problem.Write(w, r, nil, meridian.Errorf(meridian.CodeNotFound, "no route matches %s %s%s", r.Method, r.Host, r.URL.Path))
		g.misses.byClass[3].Inc()
		g.misses.duration.Observe(time.Since(start).Seconds())
		if g.opts.AccessLog != nil {
			logAccess(g.opts.AccessLog, r, "", "", http.StatusNotFound, 0, time.Since(start))
		}
		return
	}
	for i, name := range route.params {
		r.SetPathValue(name, params[i])
	}
	route.handler.ServeHTTP(w, r)
}

// router is one compiled document: its routes, most specific first.
type router struct {
	routes   []*route
	services []string // the registry services the routes use
}

type route struct {
	name    string
	m       *matcher
	params  []string // the path template's parameter names
	handler http.Handler
}

// maxParams bounds the parameters captured without allocating.
const maxParams = 8

// match returns the route r takes and the path parameters it captured,
// appended to params.
func (rt *router) match(r *http.Request, params []string) (*route, []string) {
	host := requestHost(r)
	for _, ro := range rt.routes {
		if got, ok := ro.m.match(r, host, params); ok {
			return ro, got
		}
	}
	return nil, nil
}

// compile builds the router of cfg, the resiliency spec of its upstream
// keys, and the keys' targets. It starts nothing and changes nothing.
func (g *Gateway) compile(cfg *Config) (*router, *policy.Spec, map[string]*target, *edge, error) {
	spec := &policy.Spec{Policies: cfg.Policies, Default: cfg.Default, Targets: map[string]policy.Target{}}
	keys := map[string]*target{}
	e, err := g.newEdge(cfg)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	rt := &router{services: usedServices(cfg)}
	type ordered struct {
		r    *route
		spec specificity
	}
	var all []ordered
	for i := range cfg.Routes {
		rc := &cfg.Routes[i]
		m, err := compileMatch(&rc.Match)
		if err != nil {
			return nil, nil, nil, nil, err
		}
		scope := ""
		if rc.Policies != (policy.Target{}) {
			scope = rc.Name
		}
		key := func(u *Upstream) string {
			k := upstreamKey(u, scope)
			if t := targetOf(k, u); t != nil {
				keys[k] = t
			}
			if scope != "" {
				spec.Targets[k] = rc.Policies
			}
			return k
		}
		h, err := g.terminal(rc, key)
		if err != nil {
			return nil, nil, nil, nil, err
		}
		h, err = e.wrap(rc, h)
		if err != nil {
			return nil, nil, nil, nil, err
		}
		ro := &route{name: rc.Name, m: m, handler: &observed{name: rc.Name, next: h, metrics: g.metrics.route(rc.Name), access: g.opts.AccessLog}}
		if m.path != nil {
			ro.params = m.path.names()
		}
		all = append(all, ordered{ro, m.specificity()})
	}
	slices.SortStableFunc(all, func(a, b ordered) int { return compareSpecificity(a.spec, b.spec) })
	for _, o := range all {
		rt.routes = append(rt.routes, o.r)
	}
	return rt, spec, keys, e, nil
}

// terminal is the innermost handler of a route: forward, aggregate or
// transcode.
func (g *Gateway) terminal(rc *Route, key func(*Upstream) string) (http.Handler, error) {
	if rc.Aggregate != nil {
		return g.aggregate(rc)
	}
	f := &forward{}
	ups := []Backend{}
	if rc.Upstream != nil {
		ups = append(ups, Backend{Upstream: *rc.Upstream, Weight: 1})
	}
	ups = append(ups, rc.Split...)
	for i := range ups {
		u := &ups[i]
		if u.overH2C() {
			f.h2 = true
		}
		b := &backend{key: key(&u.Upstream), weight: u.Weight, when: u.When}
		b.metrics = g.metrics.upstream(rc.Name, b.key)
		scheme := schemeOf(&u.Upstream)
		b.h1 = g.newProxy(rc, b, scheme, g.h1)
		b.h2 = g.newProxy(rc, b, scheme, g.h2)
		f.total += b.weight
		f.backends = append(f.backends, b)
	}
	if mr := rc.Mirror; mr != nil {
		pct := mr.Percent
		if pct == 0 {
			pct = 100
		}
		var tr http.RoundTripper = g.h1
		if mr.overH2C() {
			tr = g.h2
		}
		f.mirror = &mirror{g: g, key: key(&mr.Upstream), scheme: schemeOf(&mr.Upstream), percent: pct, tr: tr}
	}
	if rc.Transcode != nil {
		return g.transcode(rc, f)
	}
	return f, nil
}
