package controlplane

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meridian-platform/meridian/docs"
)

// routes is the whole HTTP surface in one table.
func (s *Server) routes() http.Handler {
	api := http.NewServeMux()
	// Registry.
	api.HandleFunc("GET /v1/services", s.handleServices)
	api.HandleFunc("GET /v1/services/{service}/instances", s.handleInstances)
	api.HandleFunc("GET /v1/services/{service}/instances/{id}", s.handleInstance)
	api.HandleFunc("PUT /v1/services/{service}/instances/{id}", s.handleRegister)
	api.HandleFunc("DELETE /v1/services/{service}/instances/{id}", s.handleDeregister)
	api.HandleFunc("PUT /v1/services/{service}/instances/{id}/heartbeat", s.handleHeartbeat)
	api.HandleFunc("GET /v1/registry/watch", s.handleRegistryWatch)
	// Config center.
	api.HandleFunc("GET /v1/config/keys", s.handleConfigList)
	api.HandleFunc("GET /v1/config/keys/{key...}", s.handleConfigGet)
	api.HandleFunc("PUT /v1/config/keys/{key...}", s.handleConfigPut)
	api.HandleFunc("DELETE /v1/config/keys/{key...}", s.handleConfigDelete)
	api.HandleFunc("GET /v1/config/history/{key...}", s.handleConfigHistory)
	api.HandleFunc("GET /v1/config/diff/{key...}", s.handleConfigDiff)
	api.HandleFunc("POST /v1/config/rollback/{key...}", s.handleConfigRollback)
	api.HandleFunc("GET /v1/config/watch", s.handleConfigWatch)
	// Tokens.
	api.HandleFunc("POST /v1/tokens", s.handleTokenCreate)
	api.HandleFunc("GET /v1/tokens", s.handleTokenList)
	api.HandleFunc("DELETE /v1/tokens/{name}", s.handleTokenRevoke)
	api.HandleFunc("GET /v1/whoami", s.handleWhoAmI)
	// Event bus.
	api.HandleFunc("GET /v1/topics", s.handleTopics)
	api.HandleFunc("GET /v1/topics/{topic}", s.handleTopic)
	api.HandleFunc("POST /v1/topics/{topic}/events", s.handlePublish)
	api.HandleFunc("GET /v1/topics/{topic}/events/stream", s.handleTopicStream)
	api.HandleFunc("GET /v1/topics/{topic}/dlq", s.handleDeadLetters)
	api.HandleFunc("GET /v1/topics/{topic}/dlq/{seq}", s.handleDeadLetter)
	api.HandleFunc("POST /v1/topics/{topic}/dlq/replay", s.handleReplay)
	api.HandleFunc("POST /v1/subscriptions", s.handleSubscriptionCreate)
	api.HandleFunc("GET /v1/subscriptions", s.handleSubscriptions)
	api.HandleFunc("GET /v1/subscriptions/{name}", s.handleSubscription)
	api.HandleFunc("DELETE /v1/subscriptions/{name}", s.handleSubscriptionDelete)
	api.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, notFound("no such endpoint: %s %s (see /v1/openapi.yaml)", r.Method, r.URL.Path))
	})

	mux := http.NewServeMux()
	mux.Handle("/v1/", s.authenticate(api))
	mux.HandleFunc("GET /v1/openapi.yaml", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		_, _ = w.Write(docs.OpenAPI)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := s.ready(); err != nil {
			w.Header().Set("Retry-After", "1")
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready", "replica": s.cfg.ReplicaID})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics, promhttp.HandlerOpts{Registry: s.metrics}))
	return s.instrument(mux)
}

// instrument records RED metrics per route pattern (never per raw path, so
// label cardinality stays bounded).
func (s *Server) instrument(next http.Handler) http.Handler {
	reqs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meridian_http_requests_total", Help: "HTTP requests served by the control plane.",
	}, []string{"route", "method", "code"})
	dur := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "meridian_http_request_duration_seconds", Help: "Control-plane HTTP request latency (watch streams excluded).",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
	}, []string{"route", "method"})
	s.metrics.MustRegister(reqs, dur)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		route := rec.route
		if route == "" {
			route = r.Pattern
		}
		if route == "" {
			route = "unmatched"
		}
		reqs.WithLabelValues(route, r.Method, strconv.Itoa(rec.status)).Inc()
		if !strings.HasSuffix(route, "/watch") && !strings.HasSuffix(route, "/stream") {
			dur.WithLabelValues(route, r.Method).Observe(time.Since(start).Seconds())
		}
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
	route  string // the matched pattern, when an inner mux matched it
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach Flush on the real writer.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func setIndex(w http.ResponseWriter, index uint64) {
	w.Header().Set("X-Meridian-Index", strconv.FormatUint(index, 10))
}

func sortBy[T any](xs []T, key func(T) string) {
	slices.SortFunc(xs, func(a, b T) int { return strings.Compare(key(a), key(b)) })
}
