package gateway

import (
	"bufio"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the gateway's RED metrics: per route, and per route and
// upstream. Status is recorded by class (2xx…5xx) to keep the series few;
// the access log has the exact status.
type metrics struct {
	requests  *prometheus.CounterVec   // route, class
	duration  *prometheus.HistogramVec // route
	upstreams *prometheus.CounterVec   // route, upstream, class
	upDur     *prometheus.HistogramVec // route, upstream
	reloads   *prometheus.CounterVec   // result
	active    prometheus.Gauge         // config revision in force
}

func newMetrics(reg prometheus.Registerer) *metrics {
	buckets := []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_gateway_requests_total",
			Help: "Requests answered by the gateway, by route and status class.",
		}, []string{"route", "class"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "meridian_gateway_request_duration_seconds", Buckets: buckets,
			Help: "Time from the request's arrival to the end of its answer, by route.",
		}, []string{"route"}),
		upstreams: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_gateway_upstream_requests_total",
			Help: "Requests forwarded, by route, upstream and status class of the answer.",
		}, []string{"route", "upstream", "class"}),
		upDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "meridian_gateway_upstream_duration_seconds", Buckets: buckets,
			Help: "Time of forwarded requests, by route and upstream.",
		}, []string{"route", "upstream"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_gateway_config_reloads_total",
			Help: "Routing documents offered to the gateway, by result (applied, invalid).",
		}, []string{"result"}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meridian_gateway_config_revision",
			Help: "Config center revision of the routing document in force (0: from a file).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.upstreams, m.upDur, m.reloads, m.active)
	}
	return m
}

var classes = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

// routeMetrics are one route's series, resolved once when the route is
// compiled so a request touches no label map.
type routeMetrics struct {
	byClass  [5]prometheus.Counter
	duration prometheus.Observer
}

func (m *metrics) route(name string) *routeMetrics {
	rm := &routeMetrics{duration: m.duration.WithLabelValues(name)}
	for i, c := range classes {
		rm.byClass[i] = m.requests.WithLabelValues(name, c)
	}
	return rm
}

type upstreamMetrics struct {
	byClass  [5]prometheus.Counter
	duration prometheus.Observer
}

func (m *metrics) upstream(route, upstream string) *upstreamMetrics {
	um := &upstreamMetrics{duration: m.upDur.WithLabelValues(route, upstream)}
	for i, c := range classes {
		um.byClass[i] = m.upstreams.WithLabelValues(route, upstream, c)
	}
	return um
}

func classIndex(status int) int {
	i := status/100 - 1
	if i < 0 || i > 4 {
		return 4
	}
	return i
}

// recorder is the ResponseWriter every routed request is answered
// through: it notes status, size and the upstream for the metrics and the
// access log. Unwrap lets http.ResponseController reach the connection
// (flushes for SSE and gRPC, hijacking for WebSocket).
type recorder struct {
	http.ResponseWriter
	status   int
	bytes    int64
	upstream *backend
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 || r.status < 200 && code >= 200 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(p)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) Flush() {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	_ = http.NewResponseController(r.ResponseWriter).Flush()
}

func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if r.status == 0 || r.status < 200 {
		r.status = http.StatusSwitchingProtocols
	}
	return http.NewResponseController(r.ResponseWriter).Hijack()
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// noteUpstream tells the recorder under w which backend served.
func noteUpstream(w http.ResponseWriter, b *backend) {
	for {
		switch x := w.(type) {
		case *recorder:
			x.upstream = b
			return
		case interface{ Unwrap() http.ResponseWriter }:
			w = x.Unwrap()
		default:
			return
		}
	}
}

// observed wraps a route's chain with its metrics and access log.
type observed struct {
	name    string
	next    http.Handler
	metrics *routeMetrics
	access  *slog.Logger // nil: off
}

func (o *observed) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := recorder{ResponseWriter: w}
	o.next.ServeHTTP(&rec, r)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	d := time.Since(start)
	ci := classIndex(rec.status)
	o.metrics.byClass[ci].Inc()
	o.metrics.duration.Observe(d.Seconds())
	upstream := ""
	if b := rec.upstream; b != nil {
		b.metrics.byClass[ci].Inc()
		b.metrics.duration.Observe(d.Seconds())
		upstream = b.key
	}
	if o.access != nil {
		logAccess(o.access, r, o.name, upstream, rec.status, rec.bytes, d)
	}
}

// logAccess writes one access log record: slog JSON in production.
func logAccess(l *slog.Logger, r *http.Request, route, upstream string, status int, bytes int64, d time.Duration) {
	l.LogAttrs(r.Context(), slog.LevelInfo, "request",
		slog.String("request_id", r.Header.Get(requestIDHeader)),
		slog.String("route", route),
		slog.String("upstream", upstream),
		slog.String("method", r.Method),
		slog.String("host", r.Host),
		slog.String("path", r.URL.Path),
		slog.String("proto", r.Proto),
		slog.Int("status", status),
		slog.Int64("bytes", bytes),
		slog.String("duration", strconv.FormatFloat(d.Seconds()*1000, 'f', 3, 64)+"ms"),
		slog.String("remote", r.RemoteAddr),
	)
}
