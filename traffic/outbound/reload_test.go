package outbound_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const specA = `policies:
  retries: {std: {max_attempts: 3, base_delay: 1ms, max_delay: 5ms}}
  circuit_breakers: {a: {consecutive_failures: 50}}
  bulkheads: {wide: {max_concurrent: 64, max_queue: 64, queue_timeout: 1s}}
default: {retry: std, circuit_breaker: a, bulkhead: wide}`

const specB = `policies:
  timeouts: {t: 10s}
  retries: {std: {max_attempts: 3, base_delay: 1ms, max_delay: 5ms}}
  circuit_breakers: {b: {mode: error_rate, min_requests: 100}}
  bulkheads: {wide: {max_concurrent: 64, max_queue: 64, queue_timeout: 1s}}
  balancers: {lr: {policy: least_request}}
default: {timeout: t, retry: std, circuit_breaker: b, bulkhead: wide, balancer: lr}`

// Reloading the spec under load drops nothing: every request, GETs and
// POSTs with a body, is answered 200 while the spec flips between two
// versions fifty times.
func TestReloadUnderLoadDropsNothing(t *testing.T) {
	h := start(t, specA)
	a, b := h.instance("orders", "a"), h.instance("orders", "b")
	a.delay.Store(int64(time.Millisecond))
	b.delay.Store(int64(time.Millisecond))
	h.waitServed("orders", "a", "b")

	var sent, ok atomic.Int64
	var failures []string
	var mu sync.Mutex
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for ctx.Err() == nil {
				sent.Add(1)
				var resp *http.Response
				var err error
				if w%2 == 0 {
					resp, err = h.client.Get("http://orders/")
				} else {
					resp, err = h.client.Post("http://orders/", "text/plain", strings.NewReader("an order"))
				}
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode == 200 {
						ok.Add(1)
						continue
					}
				}
				mu.Lock()
				failures = append(failures, describe(resp, err))
				mu.Unlock()
			}
		})
	}
	for i := range 50 {
		time.Sleep(10 * time.Millisecond)
		if i%2 == 0 {
			h.apply(specB)
		} else {
			h.apply(specA)
		}
	}
	stop()
	wg.Wait()
	t.Logf("%d requests during 50 reloads, %d answered 200", sent.Load(), ok.Load())
	if len(failures) > 0 || sent.Load() != ok.Load() {
		t.Fatalf("%d of %d requests failed during reloads; first: %s", sent.Load()-ok.Load(), sent.Load(), failures[0])
	}
	if got := a.received.Load() + b.received.Load(); got < sent.Load() {
		t.Fatalf("the instances received %d requests of %d", got, sent.Load())
	}
}

func describe(resp *http.Response, err error) string {
	if err != nil {
		return err.Error()
	}
	return resp.Status
}

// A reload keeps the state of every layer whose policy did not change and
// replaces the others; the balancer (its endpoints and their statistics)
// always carries over. A request in flight finishes on the chain it
// started on.
func TestReloadKeepsUnchangedState(t *testing.T) {
	h := start(t, specA)
	in := h.instance("orders", "a")
	h.waitServed("orders", "a")
	before := h.upstream("orders")
	ep := before.Balancer().Endpoint("a")

	// Only the timeout changes.
	h.apply(strings.Replace(specA, "default: {", "  timeouts: {t: 30s}\ndefault: {timeout: t, ", 1))
	mid := h.upstream("orders")
	if mid == before || mid.Timeout() != 30*time.Second {
		t.Fatalf("the reload did not make a new Upstream with the timeout (%v)", mid.Timeout())
	}
	if mid.Breaker() != before.Breaker() || mid.Budget() != before.Budget() || mid.Bulkhead() != before.Bulkhead() ||
		mid.Detector() != before.Detector() || mid.Balancer() != before.Balancer() || mid.Balancer().Endpoint("a") != ep {
		t.Fatal("a layer whose policy did not change was replaced")
	}
	h.apply(specB)
	after := h.upstream("orders")
	if after.Breaker() == mid.Breaker() {
		t.Fatal("the breaker's policy changed but the breaker was kept")
	}
	if after.Budget() != mid.Budget() || after.Bulkhead() != mid.Bulkhead() || after.Balancer() != before.Balancer() {
		t.Fatal("the budget, bulkhead or balancer was replaced though its policy did not change")
	}

	// A request in flight on a chain without a timeout finishes on it
	// after a reload that sets a timeout shorter than the request.
	h.apply(specA)
	in.delay.Store(int64(300 * time.Millisecond))
	done := make(chan error, 1)
	go func() {
		code, err := h.get("orders")
		if err == nil && code != 200 {
			err = io.ErrUnexpectedEOF
		}
		done <- err
	}()
	eventually(t, "the request to reach the instance", func() bool { return in.received.Load() > 0 })
	h.apply(`policies: {timeouts: {short: 50ms}}
default: {timeout: short, retry: none}`)
	if _, err := h.get("orders"); err == nil {
		t.Fatal("a request started after the reload did not get the 50ms timeout")
	}
	if err := <-done; err != nil {
		t.Fatalf("the request in flight during the reload failed: %v", err)
	}
}
