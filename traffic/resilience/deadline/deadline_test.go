package deadline

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meridian-platform/meridian"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestFormatAndParse(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		text string
		back time.Duration
	}{
		{0, "0n", 0},
		{-time.Second, "0n", 0},
		{1500 * time.Nanosecond, "1500n", 1500 * time.Nanosecond},
		{2500 * time.Millisecond, "2500000u", 2500 * time.Millisecond},
		{99_999_999, "99999999n", 99_999_999},
		{100 * time.Millisecond, "100000u", 100 * time.Millisecond},
		{3 * time.Minute, "180000m", 3 * time.Minute},
		{30 * time.Hour, "108000S", 30 * time.Hour},
		{1234567891 * time.Microsecond, "1234567m", 1234567 * time.Millisecond}, // rounded down
	} {
		if got := Format(tc.d); got != tc.text {
			t.Errorf("Format(%v) = %q, want %q", tc.d, got, tc.text)
		}
		if got, err := Parse(tc.text); err != nil || got != tc.back {
			t.Errorf("Parse(%q) = %v, %v; want %v", tc.text, got, err, tc.back)
		}
	}
	for _, bad := range []string{"", "5", "m", "5s", "1.5S", "123456789S", "-5m", "5 m"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) succeeded", bad)
		}
	}
	if d, _ := Parse("99999999H"); d != 1<<63-1 {
		t.Errorf("Parse of a huge value = %v, want the largest Duration", d)
	}
}

// A client's deadline crosses a real HTTP hop: Propagate writes the time
// left, Middleware turns it into the handler's context deadline, capped
// by the server's maximum.
func TestPropagationOverHTTP(t *testing.T) {
	got := make(chan time.Duration, 1)
	srv := httptest.NewServer(Middleware(MiddlewareConfig{Max: meridian.Duration(time.Minute)})(
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			dl, ok := r.Context().Deadline()
			if !ok {
				got <- -1
				return
			}
			got <- time.Until(dl)
		})))
	defer srv.Close()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: Propagate(tr)}

	call := func(ctx context.Context) time.Duration {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return <-got
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if left := call(ctx); left <= 0 || left > 3*time.Second {
		t.Fatalf("handler's deadline %v away, want within the caller's 3s", left)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), time.Hour)
	defer cancel2()
	if left := call(ctx2); left > time.Minute {
		t.Fatalf("handler's deadline %v away, want capped at the server's 1m", left)
	}
	if left := call(context.Background()); left <= 0 || left > time.Minute {
		t.Fatalf("no header: deadline %v away, want the server's 1m", left)
	}

	// The caller's request is left alone.
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL, nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	<-got
	if req.Header.Get(Header) != "" {
		t.Fatal("Propagate changed the caller's header")
	}
}

func TestExpiredRequestIsNotSent(t *testing.T) {
	sent := false
	rt := Propagate(roundTripperFunc(func(*http.Request) (*http.Response, error) { sent = true; return nil, nil }))
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://up/", nil)
	if _, err := rt.RoundTrip(req); !errors.Is(err, context.DeadlineExceeded) || sent {
		t.Fatalf("err %v, sent %v", err, sent)
	}
}

func TestMiddlewareIgnoresABadHeader(t *testing.T) {
	h := Middleware(MiddlewareConfig{})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := r.Context().Deadline(); ok {
			t.Error("a malformed header set a deadline")
		}
	}))
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set(Header, "soon")
	h.ServeHTTP(httptest.NewRecorder(), r)
}

func TestTimeoutBoundsTheRequest(t *testing.T) {
	var dl time.Time
	rt := Timeout(time.Second)(roundTripperFunc(func(r *http.Request) (*http.Response, error) {
		dl, _ = r.Context().Deadline()
		return &http.Response{StatusCode: 200, Body: http.NoBody}, nil
	}))
	req, _ := http.NewRequest("GET", "http://up/", nil)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if left := time.Until(dl); left <= 0 || left > time.Second {
		t.Fatalf("deadline %v away", left)
	}
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
