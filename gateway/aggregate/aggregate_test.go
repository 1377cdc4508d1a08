package aggregate_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/gateway/aggregate"
	"github.com/meridian-platform/meridian/internal/logtest"
	"github.com/meridian-platform/meridian/internal/problem"
)

// within bounds every wait in these tests: a deadline for failing, never
// an expectation of how fast anything is.
const within = 10 * time.Second

// upstream starts a real server for h and returns its base URL.
func upstream(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close) // after the aggregate's requests: Close waits for handlers
	return s.URL
}

// answer is an upstream handler that answers status with body as JSON.
func answer(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

// hang is an upstream handler that answers nothing until its request's
// context ends, which only the aggregate's cancelling does.
func hang(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }

// serve sends r to the aggregate of cfg over http.DefaultTransport.
func serve(t *testing.T, cfg aggregate.Config, log *slog.Logger, r *http.Request) *httptest.ResponseRecorder {
	t.Helper()
	h, err := aggregate.New(cfg, http.DefaultTransport, log)
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func get(target string) *http.Request { return httptest.NewRequest(http.MethodGet, target, nil) }

// wantJSON checks a merged answer byte for byte: its key order is part of
// the contract.
func wantJSON(t *testing.T, w *httptest.ResponseRecorder, want string) {
	t.Helper()
	if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "application/json" || w.Body.String() != want {
		t.Fatalf("got %d %s\n%s\nwant 200 application/json\n%s", w.Code, w.Header().Get("Content-Type"), w.Body, want)
	}
	if cl := w.Header().Get("Content-Length"); cl != strconv.Itoa(len(want)) {
		t.Fatalf("Content-Length %s, want %d", cl, len(want))
	}
}

// wantProblem checks a problem answer byte for byte.
func wantProblem(t *testing.T, w *httptest.ResponseRecorder, status int, want string) {
	t.Helper()
	if w.Code != status || w.Header().Get("Content-Type") != problem.ContentType || w.Body.String() != want+"\n" {
		t.Fatalf("got %d %s\n%s\nwant %d %s\n%s", w.Code, w.Header().Get("Content-Type"), w.Body, status, problem.ContentType, want)
	}
}

func TestTwoBranchesMerged(t *testing.T) {
	orders := upstream(t, answer(200, `{"id":42,"total":"9.90"}`))
	profiles := upstream(t, answer(200, "\n  [\"gold\", \"early\"]\n"))
	w := serve(t, aggregate.Config{Branches: []aggregate.Branch{
		{Name: "order", URL: orders + "/v1/orders/42"},
		{Name: "badges", URL: profiles + "/v1/badges"},
	}}, nil, get("/orders/42"))
	// Bodies go in as they came, less surrounding space.
	wantJSON(t, w, `{"order":{"id":42,"total":"9.90"},"badges":["gold", "early"]}`)
}

// TestBranchesRunInParallel holds each upstream until both have been
// entered: called one after the other, the first would wait until the
// aggregation timed out.
func TestBranchesRunInParallel(t *testing.T) {
	var entered atomic.Int32
	both := make(chan struct{})
	barrier := func(body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if entered.Add(1) == 2 {
				close(both)
			}
			select {
			case <-both:
				answer(200, body)(w, r)
			case <-r.Context().Done():
			}
		}
	}
	a, b := upstream(t, barrier(`"a"`)), upstream(t, barrier(`"b"`))
	w := serve(t, aggregate.Config{Timeout: dur(within), Branches: []aggregate.Branch{
		{Name: "a", URL: a + "/"},
		{Name: "b", URL: b + "/"},
	}}, nil, get("/both"))
	wantJSON(t, w, `{"a":"a","b":"b"}`)
}

// TestSlowAndFailingBranch has one branch that succeeds, one that answers
// 500 and one that hangs until its 50ms timeout, under both policies.
func TestSlowAndFailingBranch(t *testing.T) {
	ok := upstream(t, answer(200, `{"id":1}`))
	fail := upstream(t, answer(500, `{"type":"about:blank","title":"secret stack trace"}`))
	slow := upstream(t, hang)
	cfg := func(onFailure string) aggregate.Config {
		return aggregate.Config{OnFailure: onFailure, Branches: []aggregate.Branch{
			{Name: "ok", URL: ok + "/"},
			// Optional, so that under "fail" the 500 decides the answer
			// whichever of the two fails first.
			{Name: "slow", URL: slow + "/", Timeout: dur(50 * time.Millisecond), Required: ptr(false)},
			{Name: "fail", URL: fail + "/"},
		}}
	}

	t.Run("fail", func(t *testing.T) {
		w := serve(t, cfg(aggregate.OnFailureFail), nil, get("/summary"))
		// The upstream's problem body is not passed on.
		wantProblem(t, w, http.StatusBadGateway, `{"type":"https://meridian.dev/problems/branch-failed","title":"Bad Gateway","status":502,`+
			`"detail":"branch \"fail\" failed: upstream answered 500","instance":"/summary","code":"unavailable","branch":"fail","upstream_status":500}`)
	})
	t.Run("partial", func(t *testing.T) {
		logs := logtest.NewCounter()
		w := serve(t, cfg(aggregate.OnFailurePartial), slog.New(logs), get("/summary"))
		wantJSON(t, w, `{"ok":{"id":1},"slow":null,"fail":null,"_errors":{`+
			`"slow":{"status":504,"detail":"timed out after 50ms"},`+
			`"fail":{"status":500,"detail":"upstream answered 500"}}}`)
		if n := logs.Count("aggregate branch failed"); n != 2 {
			t.Fatalf("%d failures logged, want 2", n)
		}
	})
}

// TestRequiredBranchTimesOut: under "fail", a required branch that times
// out answers 504, and the other branches' results are dropped.
func TestRequiredBranchTimesOut(t *testing.T) {
	ok := upstream(t, answer(200, `{}`))
	slow := upstream(t, hang)
	w := serve(t, aggregate.Config{Branches: []aggregate.Branch{
		{Name: "ok", URL: ok + "/"},
		{Name: "slow", URL: slow + "/", Timeout: dur(50 * time.Millisecond)},
	}}, nil, get("/x"))
	wantProblem(t, w, http.StatusGatewayTimeout, `{"type":"https://meridian.dev/problems/branch-failed","title":"Gateway Timeout","status":504,`+
		`"detail":"branch \"slow\" failed: timed out after 50ms","instance":"/x","code":"unavailable","branch":"slow"}`)
}

// TestRequiredFailureCancelsTheRest: under "fail", once a required branch
// has failed the others are cancelled rather than waited for; they are not
// failures of their own, so only the decisive one is logged.
func TestRequiredFailureCancelsTheRest(t *testing.T) {
	entered, sawDone := make(chan struct{}), make(chan struct{})
	slow := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-r.Context().Done()
		close(sawDone)
	})
	// Failing only once the slow request is in its upstream's hands, so
	// that there is a request to cancel.
	fail := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-entered:
			answer(503, `{}`)(w, r)
		case <-r.Context().Done():
		}
	})
	logs := logtest.NewCounter()
	w := serve(t, aggregate.Config{Timeout: dur(within), Branches: []aggregate.Branch{
		{Name: "slow", URL: slow + "/"},
		{Name: "fail", URL: fail + "/"},
	}}, slog.New(logs), get("/x"))
	wantProblem(t, w, http.StatusBadGateway, `{"type":"https://meridian.dev/problems/branch-failed","title":"Bad Gateway","status":502,`+
		`"detail":"branch \"fail\" failed: upstream answered 503","instance":"/x","code":"unavailable","branch":"fail","upstream_status":503}`)
	waitFor(t, sawDone, "the slow upstream to see its request's context end")
	if n := logs.Count("aggregate branch failed"); n != 1 {
		t.Fatalf("%d failures logged, want 1: the slow branch was waited for", n)
	}
}

// TestAggregationTimeout: the aggregation's timeout bounds branches that
// have none of their own.
func TestAggregationTimeout(t *testing.T) {
	slow := upstream(t, hang)
	w := serve(t, aggregate.Config{Timeout: dur(50 * time.Millisecond), Branches: []aggregate.Branch{{Name: "slow", URL: slow + "/"}}},
		nil, get("/x"))
	wantProblem(t, w, http.StatusGatewayTimeout, `{"type":"https://meridian.dev/problems/branch-failed","title":"Gateway Timeout","status":504,`+
		`"detail":"branch \"slow\" failed: the aggregation timed out after 50ms","instance":"/x","code":"unavailable","branch":"slow"}`)
}

// TestCallerDeadline: a caller whose own deadline (as the deadline
// middleware sets it) passes first gets a 504.
func TestCallerDeadline(t *testing.T) {
	slow := upstream(t, hang)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	w := serve(t, aggregate.Config{Timeout: dur(within), Branches: []aggregate.Branch{{Name: "slow", URL: slow + "/"}}},
		nil, get("/x").WithContext(ctx))
	wantProblem(t, w, http.StatusGatewayTimeout, `{"type":"https://meridian.dev/problems/branch-failed","title":"Gateway Timeout","status":504,`+
		`"detail":"the request's deadline passed before every branch answered","instance":"/x","code":"unavailable"}`)
}

// TestOptionalBranchUnderFail: under "fail" an optional branch that fails
// is null and listed, and the answer is still 200.
func TestOptionalBranchUnderFail(t *testing.T) {
	ok := upstream(t, answer(200, `{"id":7}`))
	down := upstream(t, answer(503, `upstream down`))
	w := serve(t, aggregate.Config{Branches: []aggregate.Branch{
		{Name: "order", URL: ok + "/"},
		{Name: "reviews", URL: down + "/", Required: ptr(false)},
	}}, nil, get("/x"))
	wantJSON(t, w, `{"order":{"id":7},"reviews":null,"_errors":{"reviews":{"status":503,"detail":"upstream answered 503"}}}`)
}

func TestEveryBranchFailed(t *testing.T) {
	fail := upstream(t, answer(500, `{}`))
	slow := upstream(t, hang)
	t.Run("partial", func(t *testing.T) {
		w := serve(t, aggregate.Config{OnFailure: aggregate.OnFailurePartial, Branches: []aggregate.Branch{
			{Name: "fail", URL: fail + "/"},
			{URL: slow + "/", Timeout: dur(50 * time.Millisecond)},
		}}, nil, get("/x"))
		wantProblem(t, w, http.StatusBadGateway, `{"type":"https://meridian.dev/problems/branch-failed","title":"Bad Gateway","status":502,`+
			`"detail":"every branch failed","instance":"/x","code":"unavailable","errors":{`+
			`"fail":{"status":500,"detail":"upstream answered 500"},`+
			`"branches[1]":{"status":504,"detail":"timed out after 50ms"}}}`)
	})
	t.Run("every one timed out", func(t *testing.T) {
		w := serve(t, aggregate.Config{OnFailure: aggregate.OnFailurePartial, Branches: []aggregate.Branch{
			{Name: "slow", URL: slow + "/", Timeout: dur(50 * time.Millisecond)},
		}}, nil, get("/x"))
		wantProblem(t, w, http.StatusGatewayTimeout, `{"type":"https://meridian.dev/problems/branch-failed","title":"Gateway Timeout","status":504,`+
			`"detail":"every branch failed","instance":"/x","code":"unavailable","errors":{`+
			`"slow":{"status":504,"detail":"timed out after 50ms"}}}`)
	})
	t.Run("optional only, under fail", func(t *testing.T) {
		w := serve(t, aggregate.Config{Branches: []aggregate.Branch{
			{Name: "fail", URL: fail + "/", Required: ptr(false)},
		}}, nil, get("/x"))
		if w.Code != http.StatusBadGateway {
			t.Fatalf("got %d %s, want 502", w.Code, w.Body)
		}
	})
}

// TestRootMerge: unnamed branches' members go to the root; later branches
// win, keys keep their first position, and an upstream's "_errors" is not
// taken for the gateway's.
func TestRootMerge(t *testing.T) {
	user := upstream(t, answer(200, `{"name":"ada","tier":"gold","_errors":"not ours","note":{"a":[1,2]}}`))
	tier := upstream(t, answer(200, `"platinum"`))
	prefs := upstream(t, answer(200, `{"name":"Ada \u003cL\u003e","lang":"en"}`))
	list := upstream(t, answer(200, `[1,2]`))
	down := upstream(t, answer(502, ``))

	w := serve(t, aggregate.Config{OnFailure: aggregate.OnFailurePartial, Branches: []aggregate.Branch{
		{URL: user + "/"},
		{Name: "tier", URL: tier + "/"},
		{URL: prefs + "/"},
		{URL: list + "/"}, // not an object: fails
		{URL: down + "/"},
	}}, nil, get("/me"))
	wantJSON(t, w, `{"name":"Ada \u003cL\u003e","tier":"platinum","note":{"a":[1,2]},"lang":"en","_errors":{`+
		`"branches[3]":{"status":502,"detail":"response is not a JSON object, which a branch without a name must answer"},`+
		`"branches[4]":{"status":502,"detail":"upstream answered 502"}}}`)
}

// TestPathPlaceholders: placeholders take the incoming request's path
// values, escaped for the path or the query, and forward_query appends the
// incoming query.
func TestPathPlaceholders(t *testing.T) {
	var got atomic.Pointer[string]
	orders := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		uri := r.RequestURI
		got.Store(&uri)
		answer(200, `{}`)(w, r)
	})
	cfg := func(forward bool) aggregate.Config {
		return aggregate.Config{Branches: []aggregate.Branch{
			{Name: "o", URL: orders + "/v1/orders/{id}/lines/{line}?expand={what}", ForwardQuery: forward},
		}}
	}
	r := func(target string, values ...string) *http.Request {
		r := get(target)
		for i := 0; i < len(values); i += 2 {
			r.SetPathValue(values[i], values[i+1])
		}
		return r
	}

	for _, tc := range []struct {
		name    string
		forward bool
		r       *http.Request
		want    string
	}{
		{"filled", false, r("/o/42/7?page=2", "id", "42", "line", "7", "what", "items"), "/v1/orders/42/lines/7?expand=items"},
		{"escaped", false, r("/o", "id", "a b/c", "line", "7", "what", "x&y=z"), "/v1/orders/a%20b%2Fc/lines/7?expand=x%26y%3Dz"},
		{"query forwarded", true, r("/o/42/7?page=2&sort=-date", "id", "42", "line", "7", "what", "items"), "/v1/orders/42/lines/7?expand=items&page=2&sort=-date"},
		{"no query to forward", true, r("/o/42/7", "id", "42", "line", "7", "what", "items"), "/v1/orders/42/lines/7?expand=items"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got.Store(nil)
			w := serve(t, cfg(tc.forward), nil, tc.r)
			if w.Code != 200 {
				t.Fatalf("%d %s", w.Code, w.Body)
			}
			if p := got.Load(); p == nil || *p != tc.want {
				t.Fatalf("upstream got %v, want %s", p, tc.want)
			}
		})
	}

	// A missing value, or one that would move up the upstream's path, is
	// the client's error, answered before any branch is called.
	for _, tc := range []struct {
		name string
		r    *http.Request
	}{
		{"missing", r("/o", "id", "42", "what", "items")},
		{"dot dot", r("/o", "id", "..", "line", "7", "what", "items")},
		{"dot", r("/o", "id", "42", "line", ".", "what", "items")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got.Store(nil)
			w := serve(t, cfg(false), nil, tc.r)
			var p problem.Details
			if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || w.Code != 400 || p.Field != "path" {
				t.Fatalf("got %d %s, want 400 naming path", w.Code, w.Body)
			}
			if got.Load() != nil {
				t.Fatal("the upstream was called")
			}
		})
	}
	// ".." in the query is only a value.
	w := serve(t, cfg(false), nil, r("/o", "id", "42", "line", "7", "what", ".."))
	if p := got.Load(); w.Code != 200 || p == nil || *p != "/v1/orders/42/lines/7?expand=.." {
		t.Fatalf("got %d, upstream %v", w.Code, p)
	}
}

// TestClientCancelCancelsBranches: a client that goes away ends the
// branch requests, which their upstreams see as their context ending.
func TestClientCancelCancelsBranches(t *testing.T) {
	entered, sawDone := make(chan struct{}), make(chan struct{})
	orders := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-r.Context().Done()
		close(sawDone)
	})
	h, err := aggregate.New(aggregate.Config{Timeout: dur(within), Branches: []aggregate.Branch{
		{Name: "order", URL: orders + "/"},
	}}, http.DefaultTransport, nil)
	if err != nil {
		t.Fatal(err)
	}
	returned := make(chan struct{})
	gateway := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(returned)
		h.ServeHTTP(w, r)
	}))
	defer gateway.Close()

	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, gateway.URL+"/orders/1", nil)
	done := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()

	waitFor(t, entered, "the upstream to be called")
	cancel()
	waitFor(t, sawDone, "the upstream to see its request's context end")
	waitFor(t, returned, "the aggregate handler to return")
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("client: %v, want context.Canceled", err)
	}
}

func waitFor(t *testing.T, c <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(within):
		t.Fatalf("timed out after %s waiting for %s", within, what)
	}
}

func TestNotJSON(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    http.HandlerFunc
	}{
		{"html", answer(200, `<html>oops</html>`)},
		{"two values", answer(200, `{} {}`)},
		{"empty", answer(200, ``)},
		{"no content", answer(204, ``)}, // 2xx, but nothing to merge
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := upstream(t, tc.h)
			w := serve(t, aggregate.Config{Branches: []aggregate.Branch{{Name: "a", URL: u + "/"}}}, nil, get("/x"))
			wantProblem(t, w, http.StatusBadGateway, `{"type":"https://meridian.dev/problems/branch-failed","title":"Bad Gateway","status":502,`+
				`"detail":"branch \"a\" failed: response is not JSON","instance":"/x","code":"unavailable","branch":"a"}`)
		})
	}
}

func TestOversizedBranch(t *testing.T) {
	const limit = 16
	body := func(n int) string { return `{"a":"` + strings.Repeat("x", n-8) + `"}` } // n bytes
	withLength := func(b string) http.HandlerFunc { return answer(200, b) }
	chunked := func(b string) http.HandlerFunc { // no Content-Length: the limit is found by reading
		return func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(200)
			w.(http.Flusher).Flush()
			_, _ = io.WriteString(w, b)
		}
	}
	tooLarge := `{"type":"https://meridian.dev/problems/branch-failed","title":"Bad Gateway","status":502,` +
		`"detail":"branch \"a\" failed: response is larger than the limit of 16 bytes","instance":"/x","code":"unavailable","branch":"a"}`
	for _, tc := range []struct {
		name string
		h    http.HandlerFunc
		ok   bool
	}{
		{"at the limit", withLength(body(limit)), true},
		{"at the limit, chunked", chunked(body(limit)), true},
		{"one byte over", withLength(body(limit + 1)), false},
		{"one byte over, chunked", chunked(body(limit + 1)), false},
		{"far over, chunked", chunked(body(1 << 20)), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := upstream(t, tc.h)
			w := serve(t, aggregate.Config{MaxBranchBody: limit, Branches: []aggregate.Branch{{Name: "a", URL: u + "/"}}}, nil, get("/x"))
			if tc.ok {
				wantJSON(t, w, `{"a":`+body(limit)+`}`)
			} else {
				wantProblem(t, w, http.StatusBadGateway, tooLarge)
			}
		})
	}
}

// TestEncodedBranch: an upstream that compresses although asked for
// identity fails its branch rather than feed compressed bytes to the merge.
func TestEncodedBranch(t *testing.T) {
	u := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Encoding", "gzip")
		answer(200, `{}`)(w, r)
	})
	w := serve(t, aggregate.Config{OnFailure: aggregate.OnFailurePartial, Branches: []aggregate.Branch{
		{Name: "a", URL: u + "/"},
		{Name: "b", URL: upstream(t, answer(200, `{}`)) + "/"},
	}}, nil, get("/x"))
	wantJSON(t, w, `{"a":null,"b":{},"_errors":{"a":{"status":502,"detail":"response has Content-Encoding \"gzip\"; the gateway asked for identity"}}}`)
}

func TestHeaders(t *testing.T) {
	var got atomic.Pointer[http.Request]
	u := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		got.Store(r)
		answer(200, `{}`)(w, r)
	})
	r := get("/x")
	for k, v := range map[string]string{
		"Authorization":       "Bearer t",
		"Traceparent":         "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		"X-Custom":            "kept",
		"Connection":          "keep-alive, X-Per-Hop",
		"X-Per-Hop":           "dropped: listed in Connection",
		"Keep-Alive":          "timeout=5",
		"Proxy-Authorization": "Basic eDp5",
		"Te":                  "trailers",
		"Upgrade":             "websocket",
		"Accept":              "text/html",
		"Accept-Encoding":     "gzip, br",
		"Content-Type":        "application/json",
		"Content-Length":      "0",
		"If-None-Match":       `"v1"`,
		"If-Modified-Since":   "Wed, 21 Oct 2015 07:28:00 GMT",
		"Range":               "bytes=0-10",
		"Meridian-Timeout":    "2S",
	} {
		r.Header.Set(k, v)
	}
	if w := serve(t, aggregate.Config{Branches: []aggregate.Branch{{Name: "a", URL: u + "/"}}}, nil, r); w.Code != 200 {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	up := got.Load()
	for k, want := range map[string]string{
		"Authorization":   "Bearer t",
		"Traceparent":     "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		"X-Custom":        "kept",
		"Accept":          "application/json",
		"Accept-Encoding": "identity",
	} {
		if v := up.Header.Get(k); v != want {
			t.Errorf("%s: %q, want %q", k, v, want)
		}
	}
	for _, k := range []string{"X-Per-Hop", "Keep-Alive", "Proxy-Authorization", "Te", "Upgrade", "Content-Type",
		"If-None-Match", "If-Modified-Since", "Range", "Meridian-Timeout"} {
		if v, ok := up.Header[k]; ok {
			t.Errorf("%s forwarded: %q", k, v)
		}
	}
	if up.ContentLength != 0 || up.Method != http.MethodGet {
		t.Errorf("upstream got %s with Content-Length %d", up.Method, up.ContentLength)
	}
	// The caller's header is left as it was.
	if r.Header.Get("Accept") != "text/html" || r.Header.Get("X-Per-Hop") == "" {
		t.Errorf("incoming header changed: %v", r.Header)
	}
}

// TestTransportRefusal: a transport that refuses a call with a
// *meridian.Error (an open breaker, no instances) gives the branch that
// error's status and message.
func TestTransportRefusal(t *testing.T) {
	ok := upstream(t, answer(200, `{"id":42}`))
	rt := roundTripperFunc(func(r *http.Request) (*http.Response, error) {
		if r.URL.Host == "reviews" {
			return nil, &meridian.Error{Code: meridian.CodeUnavailable, Message: "circuit breaker is open", Err: errors.New("5 failures in a row")}
		}
		return http.DefaultTransport.RoundTrip(r)
	})
	h, err := aggregate.New(aggregate.Config{OnFailure: aggregate.OnFailurePartial, Branches: []aggregate.Branch{
		{Name: "order", URL: ok + "/"},
		{Name: "reviews", URL: "http://reviews/v1/reviews"},
	}}, rt, nil)
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, get("/x"))
	wantJSON(t, w, `{"order":{"id":42},"reviews":null,"_errors":{"reviews":{"status":503,"detail":"circuit breaker is open"}}}`)
}

// TestUnreachableBranch: a transport error's text stays in the log.
func TestUnreachableBranch(t *testing.T) {
	// The connection closes without an answer.
	gone := upstream(t, func(http.ResponseWriter, *http.Request) { panic(http.ErrAbortHandler) })
	ok := upstream(t, answer(200, `true`))
	w := serve(t, aggregate.Config{OnFailure: aggregate.OnFailurePartial, Branches: []aggregate.Branch{
		{Name: "ok", URL: ok + "/"},
		{Name: "gone", URL: gone + "/"},
	}}, nil, get("/x"))
	wantJSON(t, w, `{"ok":true,"gone":null,"_errors":{"gone":{"status":502,"detail":"the request failed; the gateway log has the details"}}}`)
}

func TestBranchMethod(t *testing.T) {
	var method atomic.Pointer[string]
	u := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		method.Store(&r.Method)
		answer(200, `{}`)(w, r)
	})
	w := serve(t, aggregate.Config{Branches: []aggregate.Branch{{Name: "a", Method: "QUERY", URL: u + "/"}}}, nil, get("/x"))
	if m := method.Load(); w.Code != 200 || m == nil || *m != "QUERY" {
		t.Fatalf("got %d, upstream method %v", w.Code, m)
	}
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
func TestNew(t *testing.T) {
	if _, err := aggregate.New(aggregate.Config{}, http.DefaultTransport, nil); !meridian.IsCode(err, meridian.CodeInvalid) {
		t.Fatalf("invalid config: %v", err)
	}
	if _, err := aggregate.New(one(nil), nil, nil); err == nil {
		t.Fatal("nil RoundTripper: no error")
	}
	if h, err := aggregate.New(one(nil), http.DefaultTransport, nil); err != nil || h == nil {
		t.Fatalf("valid config: %v, %v", h, err)
	}
}
