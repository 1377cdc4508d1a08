package resilience_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	cbackoff "github.com/cenkalti/backoff/v5"
	"github.com/sony/gobreaker/v2"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/traffic/discovery"
	"github.com/meridian-platform/meridian/traffic/outbound"
	"github.com/meridian-platform/meridian/traffic/policy"
	"github.com/meridian-platform/meridian/traffic/resilience"
	"github.com/meridian-platform/meridian/traffic/resilience/breaker"
	"github.com/meridian-platform/meridian/traffic/resilience/bulkhead"
	"github.com/meridian-platform/meridian/traffic/resilience/outlier"
	"github.com/meridian-platform/meridian/traffic/resilience/retry"
)

// Benchmarks of the fast path, each printed beside the usual peer in the
// same run (go test -bench . -benchmem ./traffic/resilience/):
//
//   - Breaker: Allow and done on a closed breaker, against gobreaker's
//     TwoStepCircuitBreaker (the same two-step shape).
//   - Chain: retry(budget) → breaker → bulkhead around a RoundTripper that
//     answers at once (no network), against gobreaker's Execute inside
//     cenkalti/backoff's Retry under a channel semaphore, assembled the
//     way a service would.

func BenchmarkBreaker(b *testing.B) {
	b.Run("meridian", func(b *testing.B) {
		br, _ := breaker.New(breaker.Config{}, breaker.Options{})
		b.ReportAllocs()
		for b.Loop() {
			done, err := br.Allow()
			if err != nil {
				b.Fatal(err)
			}
			done(true)
		}
	})
	b.Run("meridian-error-rate", func(b *testing.B) {
		br, _ := breaker.New(breaker.Config{Mode: breaker.ModeErrorRate}, breaker.Options{})
		b.ReportAllocs()
		for b.Loop() {
			done, err := br.Allow()
			if err != nil {
				b.Fatal(err)
			}
			done(true)
		}
	})
	b.Run("gobreaker", func(b *testing.B) {
		br := gobreaker.NewTwoStepCircuitBreaker[any](gobreaker.Settings{Name: "up"})
		b.ReportAllocs()
		for b.Loop() {
			done, err := br.Allow()
			if err != nil {
				b.Fatal(err)
			}
			done(nil)
		}
	})
	b.Run("meridian-parallel", func(b *testing.B) {
		br, _ := breaker.New(breaker.Config{}, breaker.Options{})
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				done, _ := br.Allow()
				done(true)
			}
		})
	})
	b.Run("gobreaker-parallel", func(b *testing.B) {
		br := gobreaker.NewTwoStepCircuitBreaker[any](gobreaker.Settings{Name: "up"})
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				done, _ := br.Allow()
				done(nil)
			}
		})
	})
}

// noop answers 200 at once with an empty body. It reuses one response, so
// the benchmark measures the chain, not the response; it is only safe on
// one goroutine.
type noop struct{ resp http.Response }

func (n *noop) RoundTrip(req *http.Request) (*http.Response, error) {
	n.resp = http.Response{StatusCode: 200, Body: http.NoBody, Request: req}
	return &n.resp, nil
}

func BenchmarkChain(b *testing.B) {
	req, _ := http.NewRequest("GET", "http://orders/v1/orders/42", nil)
	run := func(b *testing.B, rt http.RoundTripper) {
		b.ReportAllocs()
		for b.Loop() {
			resp, err := rt.RoundTrip(req)
			if err != nil {
				b.Fatal(err)
			}
			resp.Body.Close()
		}
	}
	b.Run("meridian", func(b *testing.B) {
		run(b, meridianChain(b, false))
	})
	b.Run("meridian+outlier", func(b *testing.B) {
		run(b, meridianChain(b, true))
	})
	b.Run("gobreaker+backoff", func(b *testing.B) {
		run(b, peerChain())
	})
}

// peerChain is the usual assembly of the peers: a channel semaphore as the
// bulkhead, cenkalti/backoff's Retry (3 tries) around gobreaker's Execute,
// retrying 502-504.
func peerChain() http.RoundTripper {
	next := &noop{}
	cb := gobreaker.NewCircuitBreaker[*http.Response](gobreaker.Settings{Name: "orders"})
	sem := make(chan struct{}, 100)
	errStatus := errors.New("retryable status")
	return resilience.RoundTripperFunc(func(req *http.Request) (*http.Response, error) {
		select {
		case sem <- struct{}{}:
		default:
			return nil, errors.New("bulkhead full")
		}
		defer func() { <-sem }()
		bo := cbackoff.NewExponentialBackOff()
		return cbackoff.Retry(req.Context(), func() (*http.Response, error) {
			return cb.Execute(func() (*http.Response, error) {
				resp, err := next.RoundTrip(req)
				if err == nil && resp.StatusCode >= 502 && resp.StatusCode <= 504 {
					resp.Body.Close()
					return nil, errStatus
				}
				return resp, err
			})
		}, cbackoff.WithBackOff(bo), cbackoff.WithMaxTries(3))
	})
}

func meridianChain(b *testing.B, withOutlier bool) http.RoundTripper {
	budget, _ := retry.NewBudget(retry.BudgetConfig{}, retry.BudgetOptions{})
	rt, err := retry.New(retry.Policy{}, budget, retry.Options{})
	if err != nil {
		b.Fatal(err)
	}
	br, _ := breaker.New(breaker.Config{}, breaker.Options{})
	bh, _ := bulkhead.New(bulkhead.Config{MaxConcurrent: 100}, bulkhead.Options{})
	mws := []resilience.Middleware{rt, breaker.RoundTripper(br, nil), bulkhead.RoundTripper(bh)}
	if withOutlier {
		d, _ := outlier.New(outlier.Config{}, outlier.Options{})
		d.SetEndpoints([]string{"orders"})
		mws = append(mws, outlier.RoundTripper(d, nil, nil))
	}
	return resilience.Chain(&noop{}, mws...)
}

// BenchmarkChainAssembled is the whole client chain as the SDK assembles
// it (package outbound): a request for http://orders/… through the
// Transport's dispatch, the retry layer and its budget, the breaker, the
// balancer stage (peak EWMA over 3 endpoints, rewriting the try's URL),
// the outlier recorder and deadline propagation, to the no-op transport;
// printed beside the peer of BenchmarkChain (gobreaker + backoff +
// semaphore, which neither balances nor records outliers).
//
//   - default: the built-in policies (retries, error-rate breaker,
//     outlier detection, peak EWMA);
//   - all-layers: every layer a spec can turn on: a timeout, the
//     throttle, a rate limit and a bulkhead as well.
func BenchmarkChainAssembled(b *testing.B) {
	req, _ := http.NewRequest("GET", "http://orders/v1/orders/42", nil)
	run := func(b *testing.B, rt http.RoundTripper) {
		b.ReportAllocs()
		for b.Loop() {
			resp, err := rt.RoundTrip(req)
			if err != nil {
				b.Fatal(err)
			}
			resp.Body.Close()
		}
	}
	b.Run("default", func(b *testing.B) {
		run(b, assembled(b, ""))
	})
	b.Run("all-layers", func(b *testing.B) {
		run(b, assembled(b, `policies:
  timeouts: {t: 10s}
  throttles: {t: {}}
  rate_limits: {l: {rate: 1000000, burst: 1000000}}
  bulkheads: {b: {max_concurrent: 100}}
default: {timeout: t, throttle: t, rate_limit: l, bulkhead: b}`))
	})
	b.Run("gobreaker+backoff", func(b *testing.B) {
		run(b, peerChain())
	})
}

// staticSource serves one fixed snapshot of orders.
type staticSource struct{ snap *discovery.Snapshot }

func (s staticSource) Wait(context.Context, string) (*discovery.Snapshot, error) { return s.snap, nil }

func assembled(b *testing.B, spec string) http.RoundTripper {
	src := staticSource{&discovery.Snapshot{Service: "orders", Instances: []*meridian.Instance{
		{Service: "orders", ID: "o1", Address: "10.0.0.1", Port: 8080},
		{Service: "orders", ID: "o2", Address: "10.0.0.2", Port: 8080},
		{Service: "orders", ID: "o3", Address: "10.0.0.3", Port: 8080},
	}}}
	tr := outbound.New(src, outbound.Options{Base: &noop{}})
	if spec != "" {
		s, err := policy.Parse(meridian.FormatYAML, []byte(spec))
		if err != nil {
			b.Fatal(err)
		}
		if err := tr.Apply(s); err != nil {
			b.Fatal(err)
		}
	}
	return tr
}
