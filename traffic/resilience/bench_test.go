package resilience_test

import (
	"errors"
	"net/http"
	"testing"

	cbackoff "github.com/cenkalti/backoff/v5"
	"github.com/sony/gobreaker/v2"

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
		next := &noop{}
		cb := gobreaker.NewCircuitBreaker[*http.Response](gobreaker.Settings{Name: "orders"})
		sem := make(chan struct{}, 100)
		errStatus := errors.New("retryable status")
		rt := resilience.RoundTripperFunc(func(req *http.Request) (*http.Response, error) {
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
		run(b, rt)
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
