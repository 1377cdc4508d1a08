// Package loadtest drives load at a server for tests and benchmarks and
// sums up what came back. OpenLoop sends at a fixed rate whatever the
// answers (arrivals do not wait for responses, as real traffic does not,
// so an overloaded server meets more requests, not fewer); Loop keeps a
// fixed number of callers busy (closed loop).
package loadtest

import (
	"context"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"
)

// Result is one request's outcome.
type Result struct {
	// At is when the request was sent, from the start of the run.
	At time.Duration
	// Latency is the time to the answer (or the error).
	Latency time.Duration
	// Status is the answer's status, 0 when Err is set.
	Status int
	// RetryAfter is the answer's Retry-After header.
	RetryAfter string
	Err        error
}

// Get is a request function for a URL: GET it with c, read and close the
// body.
func Get(c *http.Client, url string) func() (status int, retryAfter string, err error) {
	return func() (int, string, error) {
		resp, err := c.Get(url)
		if err != nil {
			return 0, "", err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("Retry-After"), err
	}
}

// OpenLoop calls do rate times a second for length, each call on its own
// goroutine, waits for every call to return, and returns the results in
// the order they finished, and the run's length until the last answer.
func OpenLoop(rate float64, length time.Duration, do func() (int, string, error)) ([]Result, time.Duration) {
	var (
		mu      sync.Mutex
		results []Result
		wg      sync.WaitGroup
	)
	start := time.Now()
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	for time.Since(start) < length {
		<-tick.C
		wg.Go(func() {
			t0 := time.Now()
			status, ra, err := do()
			r := Result{At: t0.Sub(start), Latency: time.Since(t0), Status: status, RetryAfter: ra, Err: err}
			mu.Lock()
			results = append(results, r)
			mu.Unlock()
		})
	}
	wg.Wait()
	return results, time.Since(start)
}

// Loop runs do on n goroutines, each calling it again as soon as it
// returns, until ctx ends; then it waits for them.
func Loop(ctx context.Context, n int, do func()) {
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for ctx.Err() == nil {
				do()
			}
		})
	}
	wg.Wait()
}

// Summary sums up a run.
type Summary struct {
	Sent int
	// OK, Shed and Other count 200, 503 and every other outcome (errors
	// included).
	OK, Shed, Other int
	// Throughput is OK per second over the run.
	Throughput float64
	// P50 and P99 are the latency quantiles of the OK answers sent after
	// the warm-up.
	P50, P99 time.Duration
	// NoRetryAfter counts the 503s without a Retry-After.
	NoRetryAfter int
}

// Summarize sums up results of a run that lasted elapsed, leaving the
// answers to requests sent in the first warmup out of the latencies.
func Summarize(results []Result, elapsed, warmup time.Duration) Summary {
	s := Summary{Sent: len(results)}
	var lat []time.Duration
	for _, r := range results {
		switch {
		case r.Err == nil && r.Status == http.StatusOK:
			s.OK++
			if r.At >= warmup {
				lat = append(lat, r.Latency)
			}
		case r.Err == nil && r.Status == http.StatusServiceUnavailable:
			s.Shed++
			if r.RetryAfter == "" {
				s.NoRetryAfter++
			}
		default:
			s.Other++
		}
	}
	s.Throughput = float64(s.OK) / elapsed.Seconds()
	s.P50, s.P99 = Quantile(lat, 0.50), Quantile(lat, 0.99)
	return s
}

// Quantile is the q-quantile of ds (sorted in place), 0 for none.
func Quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[min(int(float64(len(ds))*q), len(ds)-1)]
}

// Capacity is a handler of fixed capacity: it serves c requests at a time,
// each taking d, and the others wait for a slot (or for their context to
// end). Its capacity is c/d requests per second; past it, a server without
// shedding queues without bound.
func Capacity(c int, d time.Duration) http.Handler {
	sem := make(chan struct{}, c)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case sem <- struct{}{}:
		case <-r.Context().Done():
			return
		}
		time.Sleep(d)
		<-sem
		_, _ = io.WriteString(w, "ok")
	})
}
