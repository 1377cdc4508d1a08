package metrics

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-platform/meridian/traffic/resilience/breaker"
	"github.com/meridian-platform/meridian/traffic/resilience/bulkhead"
	"github.com/meridian-platform/meridian/traffic/resilience/outlier"
)

func TestHooksFeedTheMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	var logs bytes.Buffer
	m, err := New(reg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(reg, nil); err == nil {
		t.Fatal("registering twice succeeded")
	}
	retry := m.RetryBudget("orders")
	retry(true)
	retry(true)
	retry(false)
	change := m.BreakerStateChange("orders")
	change(breaker.Transition{From: breaker.Closed, To: breaker.Open, At: time.Now(), OpenFor: time.Second, Reason: "consecutive failures"})
	m.BreakerRejected("orders")()
	m.BulkheadRejected("orders")(bulkhead.ErrQueueTimeout)
	oc := m.OutlierChange("orders")
	oc(outlier.Change{Endpoint: "i-1", Ejected: true, Reason: outlier.ReasonLatency})
	m.Shed()()

	got := gather(t, reg)
	for name, want := range map[string]float64{
		`meridian_resilience_breaker_state{state="closed",upstream="orders"}`:                      0,
		`meridian_resilience_breaker_state{state="half-open",upstream="orders"}`:                   0,
		`meridian_resilience_breaker_state{state="open",upstream="orders"}`:                        1,
		`meridian_resilience_breaker_transitions_total{from="closed",to="open",upstream="orders"}`: 1,
		`meridian_resilience_outlier_ejected{upstream="orders"}`:                                   1,
		`meridian_resilience_outlier_ejections_total{reason="latency",upstream="orders"}`:          1,
		`meridian_resilience_rejected_total{reason="breaker_open",upstream="orders"}`:              1,
		`meridian_resilience_rejected_total{reason="bulkhead_full",upstream="orders"}`:             0,
		`meridian_resilience_rejected_total{reason="bulkhead_queue_timeout",upstream="orders"}`:    1,
		`meridian_resilience_retries_total{decision="allowed",upstream="orders"}`:                  2,
		`meridian_resilience_retries_total{decision="denied",upstream="orders"}`:                   1,
		`meridian_resilience_shed_total`:                                                           1,
	} {
		if v, ok := got[name]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", name, v, ok, want)
		}
	}
	if !strings.Contains(logs.String(), "circuit breaker open") || !strings.Contains(logs.String(), "endpoint ejected") {
		t.Fatalf("logs:\n%s", logs.String())
	}
}

// gather flattens the registry into "name{label="v",...}" → value.
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+`="`+l.GetValue()+`"`)
			}
			name := mf.GetName()
			if len(labels) > 0 {
				name += "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case m.GetCounter() != nil:
				out[name] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[name] = m.GetGauge().GetValue()
			}
		}
	}
	return out
}
