package bulkhead

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/traffic/resilience"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestLimitQueueAndOverflow(t *testing.T) {
	var rejected []error
	b, err := New(Config{MaxConcurrent: 2, MaxQueue: 2, QueueTimeout: meridian.Duration(5 * time.Second)},
		Options{OnReject: func(err error) { rejected = append(rejected, err) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	r1, _ := b.Acquire(ctx)
	r2, _ := b.Acquire(ctx)

	// Two wait in order; a fifth fails fast.
	order := make(chan int, 2)
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() {
			rel, err := b.Acquire(ctx)
			if err != nil {
				t.Errorf("waiter %d: %v", i, err)
				return
			}
			order <- i
			rel()
		})
		for b.Queued() != i+1 { // queue them in a known order
			time.Sleep(time.Millisecond)
		}
	}
	if _, err := b.Acquire(ctx); !errors.Is(err, ErrFull) || !errors.Is(err, resilience.ErrRejected) || !meridian.IsCode(err, meridian.CodeUnavailable) {
		t.Fatalf("overflow: %v", err)
	}
	r1()
	if first := <-order; first != 0 {
		t.Fatalf("waiter %d got the first free slot, want 0 (FIFO)", first)
	}
	r2()
	wg.Wait()
	if second := <-order; second != 1 {
		t.Fatalf("second waiter %d", second)
	}
	if b.InFlight() != 0 || b.Queued() != 0 {
		t.Fatalf("in flight %d, queued %d after all released", b.InFlight(), b.Queued())
	}
	if len(rejected) != 1 || rejected[0] != ErrFull {
		t.Fatalf("OnReject saw %v", rejected)
	}
}

func TestQueueTimeoutAndCancel(t *testing.T) {
	b, _ := New(Config{MaxConcurrent: 1, MaxQueue: 5, QueueTimeout: meridian.Duration(30 * time.Millisecond)}, Options{})
	rel, _ := b.Acquire(context.Background())
	if _, err := b.Acquire(context.Background()); !errors.Is(err, ErrQueueTimeout) {
		t.Fatalf("queued past the timeout: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for b.Queued() == 0 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	if _, err := b.Acquire(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled wait: %v", err)
	}
	if b.Queued() != 0 {
		t.Fatalf("%d left in the queue", b.Queued())
	}
	rel()
	if b.InFlight() != 0 {
		t.Fatalf("in flight %d", b.InFlight())
	}
}

// Under load the limit holds: never more than MaxConcurrent at once, and
// every slot is returned.
func TestLimitHoldsUnderContention(t *testing.T) {
	b, _ := New(Config{MaxConcurrent: 3, MaxQueue: 100, QueueTimeout: meridian.Duration(10 * time.Second)}, Options{})
	var cur, peak atomic.Int64
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			for range 20 {
				rel, err := b.Acquire(context.Background())
				if err != nil {
					t.Error(err)
					return
				}
				n := cur.Add(1)
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
				}
				time.Sleep(50 * time.Microsecond)
				cur.Add(-1)
				rel()
			}
		})
	}
	wg.Wait()
	if peak.Load() > 3 {
		t.Fatalf("peak %d in flight, limit 3", peak.Load())
	}
	if b.InFlight() != 0 {
		t.Fatalf("in flight %d after all done", b.InFlight())
	}
}

// The slot is held until the response body is closed, with or without a
// retry layer's Attempt.
func TestRoundTripperHoldsUntilBodyClose(t *testing.T) {
	b, _ := New(Config{MaxConcurrent: 1}, Options{})
	next := resilience.RoundTripperFunc(func(r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader("x")), Request: r}, nil
	})
	rt := RoundTripper(b)(next)
	for _, withAttempt := range []bool{false, true} {
		ctx := context.Background()
		var a *resilience.Attempt
		if withAttempt {
			ctx, a = resilience.NewAttempt(ctx)
		}
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://up/", nil)
		resp, err := rt.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		if a != nil {
			a.HandOff(resp) // as the retry layer does with the final response
		}
		if _, err := rt.RoundTrip(req); !errors.Is(err, ErrFull) {
			t.Fatalf("attempt=%v: second request while the body is open: %v", withAttempt, err)
		}
		resp.Body.Close()
		resp.Body.Close() // twice is harmless
		if b.InFlight() != 0 {
			t.Fatalf("attempt=%v: in flight %d after Close", withAttempt, b.InFlight())
		}
	}
}
