package resilience_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/traffic/balance"
	"github.com/meridian-platform/meridian/traffic/discovery"
	"github.com/meridian-platform/meridian/traffic/outbound"
	"github.com/meridian-platform/meridian/traffic/resilience"
	"github.com/meridian-platform/meridian/traffic/resilience/breaker"
	"github.com/meridian-platform/meridian/traffic/resilience/bulkhead"
	"github.com/meridian-platform/meridian/traffic/resilience/deadline"
	"github.com/meridian-platform/meridian/traffic/resilience/metrics"
	"github.com/meridian-platform/meridian/traffic/resilience/outlier"
	"github.com/meridian-platform/meridian/traffic/resilience/retry"
)

// The chain for one upstream, in the documented order, with its metrics,
// assembled by hand (traffic/outbound assembles it from a resiliency
// spec). The balancer stage sends http://orders/ to the instance it picks.
func Example() {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "deadline header present: %v", r.Header.Get(deadline.Header) != "")
	}))
	defer up.Close()

	m, _ := metrics.New(prometheus.NewRegistry(), nil)
	const upstream = "orders"
	budget, _ := retry.NewBudget(retry.BudgetConfig{}, retry.BudgetOptions{OnRetry: m.RetryBudget(upstream)})
	retries, _ := retry.New(retry.Policy{MaxAttempts: 3, PerTryTimeout: meridian.Duration(time.Second)}, budget, retry.Options{})
	br, _ := breaker.New(breaker.Config{Mode: breaker.ModeErrorRate}, breaker.Options{
		OnStateChange: m.BreakerStateChange(upstream), OnReject: m.BreakerRejected(upstream)})
	bh, _ := bulkhead.New(bulkhead.Config{MaxConcurrent: 64, MaxQueue: 32}, bulkhead.Options{OnReject: m.BulkheadRejected(upstream)})
	lb, _ := balance.New(upstream, balance.Config{})
	addr := up.Listener.Addr().(*net.TCPAddr)
	lb.Update(&discovery.Snapshot{Service: upstream, Instances: []*meridian.Instance{
		{Service: upstream, ID: "orders-1", Address: addr.IP.String(), Port: addr.Port},
	}})
	od, _ := outlier.New(outlier.Config{}, outlier.Options{
		OnChange: m.OutlierChange(upstream),
		Eject: func(id string, ejected bool) {
			if e := lb.Endpoint(id); e != nil {
				e.SetEjected(ejected)
			}
		}})

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: resilience.Chain(tr,
		deadline.Timeout(5*time.Second),
		retries,
		breaker.RoundTripper(br, nil),
		bulkhead.RoundTripper(bh),
		outbound.Balance(lb, outbound.BalanceOptions{}),
		outlier.RoundTripper(od, nil, nil),
		deadline.Propagate,
	)}
	resp, err := client.Get("http://orders/")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	io.Copy(os.Stdout, resp.Body)
	// Output: deadline header present: true
}
