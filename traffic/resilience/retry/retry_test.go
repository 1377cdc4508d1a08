package retry

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/traffic/resilience"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// script is a transport that answers each try from a list, and records
// what it saw.
type script struct {
	mu      sync.Mutex
	answers []func(*http.Request) (*http.Response, error)
	tries   []seen
	bodies  []string
	n       int
}

func (s *script) RoundTrip(req *http.Request) (*http.Response, error) {
	s.mu.Lock()
	i := s.n
	s.n++
	a := resilience.AttemptFrom(req.Context())
	s.tries = append(s.tries, seen{N: a.N, Failed: append([]string(nil), a.Failed...), Err: a.Err, Status: a.Status})
	if req.Body != nil {
		b, _ := io.ReadAll(req.Body)
		req.Body.Close()
		s.bodies = append(s.bodies, string(b))
	}
	a.Endpoint = "ep" + string(rune('A'+i)) // as the balancer stage would
	s.mu.Unlock()
	if i >= len(s.answers) {
		i = len(s.answers) - 1
	}
	return s.answers[i](req)
}

// seen is what a try's Attempt said.
type seen struct {
	N      int
	Failed []string
	Err    error
	Status int
}

func status(code int, hdr ...string) func(*http.Request) (*http.Response, error) {
	return func(req *http.Request) (*http.Response, error) {
		h := http.Header{}
		for i := 0; i+1 < len(hdr); i += 2 {
			h.Set(hdr[i], hdr[i+1])
		}
		return &http.Response{StatusCode: code, Header: h, Body: io.NopCloser(strings.NewReader("x")), Request: req}, nil
	}
}

func fail(err error) func(*http.Request) (*http.Response, error) {
	return func(*http.Request) (*http.Response, error) { return nil, err }
}

var dialErr = &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
var resetErr = &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}

// noSleep records the delays asked for instead of sleeping.
type noSleep struct {
	mu     sync.Mutex
	delays []time.Duration
}

func (n *noSleep) Sleep(ctx context.Context, d time.Duration) bool {
	n.mu.Lock()
	n.delays = append(n.delays, d)
	n.mu.Unlock()
	return ctx.Err() == nil
}

func newRT(t *testing.T, p Policy, b *Budget, next http.RoundTripper, sl *noSleep) http.RoundTripper {
	t.Helper()
	mw, err := New(p, b, Options{Sleep: sl.Sleep})
	if err != nil {
		t.Fatal(err)
	}
	return mw(next)
}

func TestWhatIsRetried(t *testing.T) {
	for name, tc := range map[string]struct {
		method string
		key    bool
		body   string // "" none; "replay" with GetBody; "once" without
		answer func(*http.Request) (*http.Response, error)
		tries  int
	}{
		"GET 503":                      {method: "GET", answer: status(503), tries: 3},
		"GET 500 is not in RetryOn":    {method: "GET", answer: status(500), tries: 1},
		"GET 404":                      {method: "GET", answer: status(404), tries: 1},
		"GET reset":                    {method: "GET", answer: fail(resetErr), tries: 3},
		"DELETE 502":                   {method: "DELETE", answer: status(502), tries: 3},
		"PUT with body 504":            {method: "PUT", body: "replay", answer: status(504), tries: 3},
		"PUT with one-shot body":       {method: "PUT", body: "once", answer: status(504), tries: 1},
		"POST 503":                     {method: "POST", body: "replay", answer: status(503), tries: 1},
		"POST reset":                   {method: "POST", body: "replay", answer: fail(resetErr), tries: 1},
		"POST dial error":              {method: "POST", body: "replay", answer: fail(dialErr), tries: 3},
		"POST with Idempotency-Key":    {method: "POST", key: true, body: "replay", answer: status(503), tries: 3},
		"PATCH with Idempotency-Key":   {method: "PATCH", key: true, body: "replay", answer: fail(resetErr), tries: 3},
		"a local rejection":            {method: "GET", answer: fail(&meridian.Error{Code: meridian.CodeUnavailable, Err: resilience.ErrRejected}), tries: 1},
		"one-shot body on dial errors": {method: "POST", body: "once", answer: fail(dialErr), tries: 1},
	} {
		t.Run(name, func(t *testing.T) {
			s := &script{answers: []func(*http.Request) (*http.Response, error){tc.answer}}
			rt := newRT(t, Policy{}, nil, s, &noSleep{})
			var body io.Reader
			if tc.body != "" {
				body = strings.NewReader("payload")
			}
			req, _ := http.NewRequest(tc.method, "http://up/x", body)
			if tc.body == "once" {
				req.GetBody = nil
			}
			if tc.key {
				req.Header.Set(IdempotencyKeyHeader, "k1")
			}
			resp, err := rt.RoundTrip(req)
			if err == nil {
				resp.Body.Close()
			}
			if s.n != tc.tries {
				t.Fatalf("%d tries, want %d", s.n, tc.tries)
			}
			for i, b := range s.bodies {
				if b != "payload" {
					t.Fatalf("try %d sent body %q", i+1, b)
				}
			}
		})
	}
}

func TestAttemptTellsTheBalancerWhatFailed(t *testing.T) {
	s := &script{answers: []func(*http.Request) (*http.Response, error){fail(dialErr), status(503), status(200)}}
	rt := newRT(t, Policy{}, nil, s, &noSleep{})
	req, _ := http.NewRequest("GET", "http://up/x", nil)
	resp, err := rt.RoundTrip(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("RoundTrip = %v, %v", resp, err)
	}
	resp.Body.Close()
	if len(s.tries) != 3 {
		t.Fatalf("%d tries", len(s.tries))
	}
	third := s.tries[2]
	if third.N != 3 || strings.Join(third.Failed, ",") != "epA,epB" || third.Status != 503 || third.Err != nil {
		t.Fatalf("third try's Attempt: %+v", third)
	}
	if second := s.tries[1]; !errors.Is(second.Err, dialErr) || second.N != 2 {
		t.Fatalf("second try's Attempt: %+v", second)
	}
}

func TestRetryAfterIsHonouredAndCapped(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for name, tc := range map[string]struct {
		value string
		want  time.Duration
	}{
		"seconds":   {"2", 2 * time.Second},
		"http date": {now.Add(3 * time.Second).Format(http.TimeFormat), 3 * time.Second},
		"capped":    {"3600", 5 * time.Second},
		"past date": {now.Add(-time.Hour).Format(http.TimeFormat), 0},
	} {
		t.Run(name, func(t *testing.T) {
			s := &script{answers: []func(*http.Request) (*http.Response, error){status(503, "Retry-After", tc.value), status(200)}}
			sl := &noSleep{}
			mw, err := New(Policy{MaxRetryAfter: meridian.Duration(5 * time.Second), BaseDelay: meridian.Duration(time.Millisecond), MaxDelay: meridian.Duration(time.Millisecond)},
				nil, Options{Sleep: sl.Sleep, Now: func() time.Time { return now }})
			if err != nil {
				t.Fatal(err)
			}
			req, _ := http.NewRequest("GET", "http://up/x", nil)
			resp, err := mw(s).RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if len(sl.delays) != 1 {
				t.Fatalf("delays %v", sl.delays)
			}
			// The delay is the longer of the jittered backoff (≤ 1ms) and
			// the capped Retry-After.
			if d := sl.delays[0]; d < tc.want || d > tc.want+time.Millisecond {
				t.Fatalf("delay %v, want %v", d, tc.want)
			}
		})
	}
}

func TestNoRetryPastTheDeadline(t *testing.T) {
	s := &script{answers: []func(*http.Request) (*http.Response, error){status(503, "Retry-After", "5"), status(200)}}
	rt := newRT(t, Policy{}, nil, s, &noSleep{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://up/x", nil)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if s.n != 1 || resp.StatusCode != 503 {
		t.Fatalf("%d tries, status %d; want the 503 back after one try", s.n, resp.StatusCode)
	}
}

func TestPerTryTimeoutIsRetried(t *testing.T) {
	slow := func(req *http.Request) (*http.Response, error) {
		<-req.Context().Done()
		return nil, req.Context().Err()
	}
	s := &script{answers: []func(*http.Request) (*http.Response, error){slow, status(200)}}
	rt := newRT(t, Policy{PerTryTimeout: meridian.Duration(20 * time.Millisecond)}, nil, s, &noSleep{})
	req, _ := http.NewRequest("GET", "http://up/x", nil)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	// The per-try context lives until the body is closed.
	if _, err := io.ReadAll(resp.Body); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if s.n != 2 || resp.StatusCode != 200 {
		t.Fatalf("%d tries, status %d", s.n, resp.StatusCode)
	}
}

func TestCallerCancelIsNotRetried(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	s := &script{answers: []func(*http.Request) (*http.Response, error){func(*http.Request) (*http.Response, error) {
		cancel()
		return nil, context.Canceled
	}}}
	rt := newRT(t, Policy{}, nil, s, &noSleep{})
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://up/x", nil)
	if _, err := rt.RoundTrip(req); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if s.n != 1 {
		t.Fatalf("%d tries", s.n)
	}
}

func TestBudgetBoundsRetries(t *testing.T) {
	now := time.Unix(0, 0)
	var allowed, denied int
	b, err := NewBudget(BudgetConfig{Ratio: 0.2, MinPerSecond: -1, Window: meridian.Duration(10 * time.Second)},
		BudgetOptions{Now: func() time.Time { return now }, OnRetry: func(ok bool) {
			if ok {
				allowed++
			} else {
				denied++
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		b.Request()
	}
	got := 0
	for b.TryRetry() {
		got++
	}
	if got != 20 || allowed != 20 || denied != 1 {
		t.Fatalf("%d retries allowed (hooks: %d allowed, %d denied); want 20 of 100 requests", got, allowed, denied)
	}
	now = now.Add(11 * time.Second) // all forgotten
	if b.TryRetry() {
		t.Fatal("retry allowed with no requests in the window and no floor")
	}
	if st := b.Stats(); st.Requests != 100 || st.Allowed != 20 || st.Denied != 2 {
		t.Fatalf("Stats = %+v", st)
	}

	// The floor alone: 10/s over 10s.
	fb, _ := NewBudget(BudgetConfig{}, BudgetOptions{Now: func() time.Time { return now }})
	n := 0
	for fb.TryRetry() {
		n++
	}
	if n != 100 {
		t.Fatalf("floor allowed %d retries, want 100", n)
	}
}

func TestRetryAfterParse(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Duration{
		"0": 0, "7": 7 * time.Second, " 1 ": time.Second,
		"Wed, 01 Jan 2025 00:00:10 GMT": 10 * time.Second,
	} {
		if got, ok := retryAfter(in, now); !ok || got != want {
			t.Errorf("retryAfter(%q) = %v, %v; want %v", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "-1", "soon", "1.5"} {
		if _, ok := retryAfter(in, now); ok {
			t.Errorf("retryAfter(%q) parsed", in)
		}
	}
}

// Each try's request carries a URL of its own (Attempt.TryURL) that the
// layers below may rewrite in place; the caller's URL never changes.
func TestEachTryOwnsItsURL(t *testing.T) {
	var hosts []string
	next := resilience.RoundTripperFunc(func(req *http.Request) (*http.Response, error) {
		a := resilience.AttemptFrom(req.Context())
		if !a.OwnsURL(req.URL) {
			t.Errorf("try %d: the request's URL is not the try's own", a.N)
		}
		hosts = append(hosts, req.URL.Host)
		req.URL.Host = "10.0.0.9:8080" // as the balancer stage does
		if a.N == 1 {
			return status(503)(req)
		}
		return status(200)(req)
	})
	rt := newRT(t, Policy{}, nil, next, &noSleep{})
	req, _ := http.NewRequest("GET", "http://orders/x", nil)
	resp, err := rt.RoundTrip(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("RoundTrip = %v, %v", resp, err)
	}
	resp.Body.Close()
	if strings.Join(hosts, ",") != "orders,orders" || req.URL.Host != "orders" {
		t.Fatalf("tries saw hosts %v; the caller's URL host is now %q", hosts, req.URL.Host)
	}
}
