package ratelimit

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/internal/problem"
)

// limiterFunc adapts a function to Limiter, for stand-in engines.
type limiterFunc func(ctx context.Context, key string, n int) (Decision, error)

func (f limiterFunc) Allow(ctx context.Context, key string, n int) (Decision, error) {
	return f(ctx, key, n)
}

var ok = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) })

func serve(h http.Handler, remote string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, "/orders", nil)
	r.RemoteAddr = remote
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestMiddleware(t *testing.T) {
	var clock fakeClock
	l := newLocal(t, LocalConfig{Limit: PerSecond(1, 2), Now: clock.Now}) // T = 1s, Burst·T = 2s
	h := Middleware(l, RemoteIP, WithPolicyName("per-ip"))(ok)

	for _, tc := range []struct {
		status        int
		limit, policy string
		retryAfter    string
	}{
		{200, `"per-ip";r=1;t=1`, `"per-ip";q=2;w=2`, ""},
		{200, `"per-ip";r=0;t=2`, `"per-ip";q=2;w=2`, ""},
		{429, `"per-ip";r=0;t=2`, `"per-ip";q=2;w=2`, "1"},
	} {
		w := serve(h, "203.0.113.7:51000")
		if w.Code != tc.status || w.Header().Get("RateLimit") != tc.limit || w.Header().Get("RateLimit-Policy") != tc.policy || w.Header().Get("Retry-After") != tc.retryAfter {
			t.Fatalf("got %d RateLimit %q RateLimit-Policy %q Retry-After %q; want %d %q %q %q", w.Code,
				w.Header().Get("RateLimit"), w.Header().Get("RateLimit-Policy"), w.Header().Get("Retry-After"),
				tc.status, tc.limit, tc.policy, tc.retryAfter)
		}
		if w.Code == 429 {
			if ct := w.Header().Get("Content-Type"); ct != problem.ContentType {
				t.Fatalf("429 Content-Type %q", ct)
			}
			var body struct {
				problem.Details
				ViolatedPolicies []string `json:"violated-policies"`
			}
			if err := json.NewDecoder(w.Body).Decode(&body); err != nil {
				t.Fatal(err)
			}
			if body.Type != QuotaExceededType || body.Status != 429 || body.Code != "unavailable" || len(body.ViolatedPolicies) != 1 || body.ViolatedPolicies[0] != "per-ip" || body.Instance != "/orders" {
				t.Fatalf("429 body %+v", body)
			}
		}
	}
	// Another client has its own key.
	if w := serve(h, "198.51.100.1:40000"); w.Code != 200 {
		t.Fatalf("another client: %d", w.Code)
	}
	// Half a second later the first client still waits; Retry-After rounds up.
	clock.Advance(500 * time.Millisecond)
	if w := serve(h, "203.0.113.7:51000"); w.Code != 429 || w.Header().Get("Retry-After") != "1" {
		t.Fatalf("after 0.5s: %d Retry-After %q; want 429, 1", w.Code, w.Header().Get("Retry-After"))
	}
	clock.Advance(500 * time.Millisecond)
	if w := serve(h, "203.0.113.7:51000"); w.Code != 200 {
		t.Fatalf("after 1s: %d; want 200", w.Code)
	}
}

func TestMiddlewareStoreFailures(t *testing.T) {
	cause := errors.New("dial tcp 10.0.0.9:6379: connect: connection refused")
	for _, tc := range []struct {
		name   string
		policy FailPolicy
		status int
	}{
		{"fail open passes without RateLimit fields", FailOpen, 200},
		{"fail closed answers 503 without the cause", FailClosed, 503},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := limiterFunc(func(context.Context, string, int) (Decision, error) {
				return tc.policy.Apply(PerSecond(1, 1), cause)
			})
			w := serve(Middleware(l, RemoteIP)(ok), "203.0.113.7:1")
			if w.Code != tc.status || w.Header().Get("RateLimit") != "" || w.Header().Get("RateLimit-Policy") != "" {
				t.Fatalf("%d %v; want %d and no RateLimit fields", w.Code, w.Header(), tc.status)
			}
			if tc.status == 503 {
				if w.Header().Get("Retry-After") == "" || strings.Contains(w.Body.String(), "10.0.0.9") || !strings.Contains(w.Body.String(), "rate limiter unavailable") {
					t.Fatalf("503 Retry-After %q body %s", w.Header().Get("Retry-After"), w.Body)
				}
			}
		})
	}
}

func TestMiddlewareCost(t *testing.T) {
	l := newLocal(t, LocalConfig{Limit: PerMinute(10, 10)})
	cost := func(r *http.Request) int { return len(r.URL.Query()["id"]) }
	h := Middleware(l, RemoteIP, WithCost(cost))(ok)
	do := func(ids int) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, "/orders?"+strings.Repeat("id=1&", ids), nil)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	if w := do(7); w.Code != 200 || w.Header().Get("RateLimit") != `"default";r=3;t=42` {
		t.Fatalf("7 of 10: %d %q", w.Code, w.Header().Get("RateLimit"))
	}
	if w := do(4); w.Code != 429 {
		t.Fatalf("4 of the 3 left: %d, want 429", w.Code)
	}
	if w := do(11); w.Code != 400 || !strings.Contains(w.Body.String(), "more than the burst") {
		t.Fatalf("11 of a burst of 10: %d %s, want 400 naming the burst", w.Code, w.Body)
	}
}

func TestMiddlewareRejectsABadPolicyName(t *testing.T) {
	for _, name := range []string{`a"b`, `a\b`, "tab\there", "é"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("policy name %q accepted", name)
				}
			}()
			Middleware(limiterFunc(nil), RemoteIP, WithPolicyName(name))
		}()
	}
}

func TestRemoteIP(t *testing.T) {
	for remote, want := range map[string]string{
		"203.0.113.7:51000": "203.0.113.7",
		"[2001:db8::1]:443": "2001:db8::1",
		"@unix-socket":      "@unix-socket",
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = remote
		if got := RemoteIP(r); got != want {
			t.Errorf("RemoteIP(%q) = %q, want %q", remote, got, want)
		}
	}
}

func TestFailPolicy(t *testing.T) {
	cause := context.DeadlineExceeded
	d, err := FailOpen.Apply(PerSecond(1, 1), cause)
	if !d.Allowed || err != nil || d.StoreErr != cause {
		t.Fatalf("FailOpen: %+v, %v", d, err)
	}
	d, err = FailClosed.Apply(PerSecond(1, 1), cause)
	if d.Allowed || d.StoreErr != cause || !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) || meridian.ErrorCode(err) != meridian.CodeUnavailable {
		t.Fatalf("FailClosed: %+v, %v", d, err)
	}
	for p, ok := range map[FailPolicy]bool{FailOpen: true, FailClosed: true, "": false, "maybe": false} {
		if err := p.Validate("fail_policy"); (err == nil) != ok || !ok && !strings.HasPrefix(err.Error(), "fail_policy: ") {
			t.Errorf("Validate(%q) = %v", p, err)
		}
	}
}
