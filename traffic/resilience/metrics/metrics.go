// Package metrics turns the resilience layers' callbacks into Prometheus
// metrics and log lines. The layers themselves only call plain functions,
// so they stay free of any metrics library; this package makes those
// functions, per upstream, once when a chain is built.
//
// Metrics (all counters end in _total):
//
//	meridian_resilience_retries_total{upstream,decision="allowed"|"denied"}
//	    retries asked of the retry budget, by its answer
//	meridian_resilience_breaker_state{upstream,state="closed"|"open"|"half-open"}
//	    1 for the breaker's current state, 0 for the others
//	meridian_resilience_breaker_transitions_total{upstream,from,to}
//	meridian_resilience_rejected_total{upstream,reason="breaker_open"|"throttled"|"bulkhead_full"|"bulkhead_queue_timeout"}
//	    requests refused locally, never sent
//	meridian_resilience_outlier_ejections_total{upstream,reason}
//	meridian_resilience_outlier_ejected{upstream}
//	    endpoints ejected now
//	meridian_resilience_shed_total
//	    requests this server shed with 503
package metrics

import (
	"context"
	"errors"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-platform/meridian/traffic/resilience/breaker"
	"github.com/meridian-platform/meridian/traffic/resilience/bulkhead"
	"github.com/meridian-platform/meridian/traffic/resilience/outlier"
)

// Metrics holds the collectors, registered once per process.
type Metrics struct {
	retries     *prometheus.CounterVec
	state       *prometheus.GaugeVec
	transitions *prometheus.CounterVec
	rejected    *prometheus.CounterVec
	ejections   *prometheus.CounterVec
	ejected     *prometheus.GaugeVec
	shed        prometheus.Counter
	log         *slog.Logger
}

// New registers the collectors with reg. log (nil: slog.Default is not
// used; nothing is logged) receives breaker transitions and ejections.
func New(reg prometheus.Registerer, log *slog.Logger) (*Metrics, error) {
	m := &Metrics{
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_resilience_retries_total",
			Help: "Retries asked of the retry budget, by its decision.",
		}, []string{"upstream", "decision"}),
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meridian_resilience_breaker_state",
			Help: "1 for the circuit breaker's current state, 0 for the others.",
		}, []string{"upstream", "state"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_resilience_breaker_transitions_total",
			Help: "Circuit breaker state changes.",
		}, []string{"upstream", "from", "to"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_resilience_rejected_total",
			Help: "Requests refused locally by a resilience layer, by reason.",
		}, []string{"upstream", "reason"}),
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_resilience_outlier_ejections_total",
			Help: "Endpoints ejected by outlier detection, by rule.",
		}, []string{"upstream", "reason"}),
		ejected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meridian_resilience_outlier_ejected",
			Help: "Endpoints ejected now.",
		}, []string{"upstream"}),
		shed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_resilience_shed_total",
			Help: "Requests this server shed with 503 because it was overloaded.",
		}),
		log: log,
	}
	for _, c := range []prometheus.Collector{m.retries, m.state, m.transitions, m.rejected, m.ejections, m.ejected, m.shed} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// RetryBudget is retry.BudgetOptions.OnRetry for upstream.
func (m *Metrics) RetryBudget(upstream string) func(allowed bool) {
	allowed := m.retries.WithLabelValues(upstream, "allowed")
	denied := m.retries.WithLabelValues(upstream, "denied")
	return func(ok bool) {
		if ok {
			allowed.Inc()
		} else {
			denied.Inc()
		}
	}
}

// BreakerStateChange is breaker.Options.OnStateChange for upstream: it
// sets the state gauge, counts the transition and logs it (Warn on
// opening, Info otherwise). The gauge starts at closed.
func (m *Metrics) BreakerStateChange(upstream string) func(breaker.Transition) {
	states := []breaker.State{breaker.Closed, breaker.Open, breaker.HalfOpen}
	for _, s := range states {
		v := 0.0
		if s == breaker.Closed {
			v = 1
		}
		m.state.WithLabelValues(upstream, s.String()).Set(v)
	}
	return func(t breaker.Transition) {
		m.state.WithLabelValues(upstream, t.From.String()).Set(0)
		m.state.WithLabelValues(upstream, t.To.String()).Set(1)
		m.transitions.WithLabelValues(upstream, t.From.String(), t.To.String()).Inc()
		if m.log == nil {
			return
		}
		level := slog.LevelInfo
		if t.To == breaker.Open {
			level = slog.LevelWarn
		}
		m.log.Log(context.Background(), level, "circuit breaker "+t.To.String(),
			"upstream", upstream, "from", t.From.String(), "reason", t.Reason, "open_for", t.OpenFor)
	}
}

// BreakerRejected is breaker.Options.OnReject for upstream.
func (m *Metrics) BreakerRejected(upstream string) func() {
	return m.rejected.WithLabelValues(upstream, "breaker_open").Inc
}

// ThrottleRejected is breaker.ThrottleOptions.OnReject for upstream.
func (m *Metrics) ThrottleRejected(upstream string) func() {
	return m.rejected.WithLabelValues(upstream, "throttled").Inc
}

// BulkheadRejected is bulkhead.Options.OnReject for upstream.
func (m *Metrics) BulkheadRejected(upstream string) func(error) {
	full := m.rejected.WithLabelValues(upstream, "bulkhead_full")
	timeout := m.rejected.WithLabelValues(upstream, "bulkhead_queue_timeout")
	return func(err error) {
		if errors.Is(err, bulkhead.ErrQueueTimeout) {
			timeout.Inc()
		} else {
			full.Inc()
		}
	}
}

// OutlierChange is outlier.Options.OnChange for upstream.
func (m *Metrics) OutlierChange(upstream string) func(outlier.Change) {
	ejected := m.ejected.WithLabelValues(upstream)
	return func(c outlier.Change) {
		if c.Ejected {
			ejected.Inc()
			m.ejections.WithLabelValues(upstream, string(c.Reason)).Inc()
		} else {
			ejected.Dec()
		}
		if m.log != nil {
			msg := "endpoint returned to service"
			if c.Ejected {
				msg = "endpoint ejected"
			}
			m.log.Info(msg, "upstream", upstream, "endpoint", c.Endpoint, "reason", string(c.Reason),
				"ejections", c.Count, "until", c.Until)
		}
	}
}

// Shed is shed.Options.OnShed.
func (m *Metrics) Shed() func() { return m.shed.Inc }
