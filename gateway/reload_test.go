package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/gateway"
	"github.com/meridian-platform/meridian/internal/loadtest"
	"github.com/meridian-platform/meridian/internal/testwait"
	"github.com/meridian-platform/meridian/traffic/policy"
	"github.com/meridian-platform/meridian/traffic/resilience/retry"
)

// These tests drive a real gateway: gateway.Serve on a loopback listener,
// real upstream servers, and clients on keep-alive connections that never
// pause while the routing document changes under them.

const (
	// loadClients is how many clients send requests back to back.
	loadClients = 16
	// waitLong bounds every wait for something that should happen in
	// milliseconds; it only ends a test that is stuck.
	waitLong = 20 * time.Second
)

// newUpstream starts a server that answers every request 200 with
// X-Upstream: name, and echoes the X-Gateway-Doc request header back as
// X-Seen-Doc, so a response tells which upstream served it and which
// document's request header ops reached it.
func newUpstream(t *testing.T, name string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Upstream", name)
		w.Header().Set("X-Seen-Doc", r.Header.Get("X-Gateway-Doc"))
		_, _ = io.WriteString(w, name)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// serveGateway serves gw on a loopback port until the test ends, runs it
// (gw.Run), and returns its base URL. The cleanup stops the server (a
// graceful drain that must succeed), then Run, then closes gw.
func serveGateway(t *testing.T, gw *gateway.Gateway) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	ran := make(chan struct{})
	go func() { served <- gateway.Serve(ctx, ln, gw, gateway.ServerConfig{}) }()
	go func() { _ = gw.Run(ctx); close(ran) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("gateway.Serve: %v", err)
		}
		<-ran
		gw.Close()
	})
	return "http://" + ln.Addr().String()
}

// newGateway is gateway.New that fails the test on error.
func newGateway(t *testing.T, opts gateway.Options) *gateway.Gateway {
	t.Helper()
	gw, err := gateway.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return gw
}

// keepAliveClient is a client whose connections are reused across
// requests, as a busy caller's are. Its timeout only turns a hung request
// into a counted failure.
func keepAliveClient(t *testing.T) *http.Client {
	t.Helper()
	tr := &http.Transport{MaxIdleConnsPerHost: loadClients, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: waitLong}
}

// tally counts the responses of a load run. expect says which upstream
// must have served a response stamped with a document (X-Doc); a response
// from another upstream, or whose request did not carry that document's
// request header (X-Seen-Doc), was served by parts of two documents.
type tally struct {
	expect func(doc string) (upstream string, ok bool)

	mu         sync.Mutex
	total      int
	transport  int // transport errors
	non2xx     int
	mixed      int            // upstream or request header not the document's
	byDoc      map[string]int // responses per document
	after      int            // responses to requests sent after final was set
	afterWrong int            // of those, served by another document than lastDoc
	failures   []string       // the first few failures, for the report

	final   atomic.Bool // set when the last Apply has returned
	lastDoc string      // the document every request sent after final must get
}

func newTally(expect func(doc string) (string, bool)) *tally {
	return &tally{expect: expect, byDoc: map[string]int{}}
}

// get sends one request and records its outcome.
func (ta *tally) get(c *http.Client, url string) {
	final := ta.final.Load()
	resp, err := c.Get(url)
	var body []byte
	if err == nil {
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	ta.mu.Lock()
	defer ta.mu.Unlock()
	ta.total++
	fail := func(format string, args ...any) {
		if len(ta.failures) < 10 {
			ta.failures = append(ta.failures, fmt.Sprintf(format, args...))
		}
	}
	if err != nil {
		ta.transport++
		fail("transport error: %v", err)
		return
	}
	doc, up := resp.Header.Get("X-Doc"), resp.Header.Get("X-Upstream")
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		ta.non2xx++
		fail("status %d (doc %q): %s", resp.StatusCode, doc, body)
		return
	}
	ta.byDoc[doc]++
	want, ok := ta.expect(doc)
	if !ok || up != want || resp.Header.Get("X-Seen-Doc") != doc {
		ta.mixed++
		fail("doc %q answered by upstream %q with request header %q; want upstream %q", doc, up, resp.Header.Get("X-Seen-Doc"), want)
	}
	if final {
		ta.after++
		if doc != ta.lastDoc {
			ta.afterWrong++
			fail("sent after the last Apply, answered under doc %q by %q; want doc %q", doc, up, ta.lastDoc)
		}
	}
}

func (ta *tally) count() int {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	return ta.total
}

func (ta *tally) served(doc string) int {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	return ta.byDoc[doc]
}

func (ta *tally) afterFinal() int {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	return ta.after
}

// finish sets the document every later request must be served by.
func (ta *tally) finish(doc string) {
	ta.mu.Lock()
	ta.lastDoc = doc
	ta.mu.Unlock()
	ta.final.Store(true)
}

// check fails t for every transport error, non-2xx answer, mixed answer
// and answer after the last Apply from another document.
func (ta *tally) check(t *testing.T) {
	t.Helper()
	ta.mu.Lock()
	defer ta.mu.Unlock()
	t.Logf("%d responses (%d after the last Apply) over %d documents", ta.total, ta.after, len(ta.byDoc))
	if ta.transport+ta.non2xx+ta.mixed+ta.afterWrong > 0 {
		t.Errorf("of %d responses: %d transport errors, %d non-2xx, %d served by parts of two documents, %d after the last Apply from an older document; first failures:\n%s",
			ta.total, ta.transport, ta.non2xx, ta.mixed, ta.afterWrong, strings.Join(ta.failures, "\n"))
	}
}

// startLoad runs loadClients clients, each sending GET url back to back
// on its own keep-alive connection, until the returned stop is called;
// stop returns once every request in flight has been answered.
func startLoad(t *testing.T, ta *tally, url string) (stop func()) {
	t.Helper()
	c := keepAliveClient(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		loadtest.Loop(ctx, loadClients, func() { ta.get(c, url) })
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

// reloadDoc is the k-th document of the reload test. Every one routes
// /work to one upstream and stamps its number on the response (X-Doc) and
// on the request (X-Gateway-Doc). Odd documents send /work to b, add a
// second route and give the main route a retry policy of its own; even
// ones send it to a, without either.
func reloadDoc(k int, a, b string) *gateway.Config {
	doc := strconv.Itoa(k)
	main := gateway.Route{
		Name:     "work",
		Match:    gateway.Match{PathPrefix: "/work"},
		Upstream: &gateway.Upstream{URLs: []string{a}},
		Headers: gateway.HeaderOps{
			Request:  gateway.HeaderOp{Set: map[string]string{"X-Gateway-Doc": doc}, Remove: []string{"X-Debug"}},
			Response: gateway.HeaderOp{Set: map[string]string{"X-Doc": doc}},
		},
	}
	cfg := &gateway.Config{}
	if k%2 == 1 {
		main.Upstream = &gateway.Upstream{URLs: []string{b}}
		main.Policies = policy.Target{Retry: "two"}
		cfg.Policies = policy.Policies{Retries: map[string]policy.Retry{"two": {Policy: retry.Policy{MaxAttempts: 2}}}}
		cfg.Routes = append(cfg.Routes, gateway.Route{
			Name:     "extra",
			Match:    gateway.Match{Path: "/extra/{id}", Methods: []string{http.MethodGet}},
			Upstream: &gateway.Upstream{URLs: []string{a}},
		})
	}
	cfg.Routes = append(cfg.Routes, main)
	return cfg
}

// TestHotReloadUnderLoadDropsNothing applies 50 documents, one after the
// other, while 16 keep-alive clients send requests without pause. Each
// document moves the route to the other upstream, adds or removes a
// second route, changes the header ops and the route's policies. Every
// request must be answered 2xx, entirely by one document (its upstream and
// its header ops), and every request sent after the last Apply returned
// must be served by the last document.
func TestHotReloadUnderLoadDropsNothing(t *testing.T) {
	a, b := newUpstream(t, "a"), newUpstream(t, "b")
	gw := newGateway(t, gateway.Options{})
	url := serveGateway(t, gw) + "/work"
	if err := gw.Apply(reloadDoc(0, a.URL, b.URL), 0); err != nil {
		t.Fatal(err)
	}

	ta := newTally(func(doc string) (string, bool) {
		k, err := strconv.Atoi(doc)
		if err != nil {
			return "", false
		}
		if k%2 == 1 {
			return "b", true
		}
		return "a", true
	})
	stop := startLoad(t, ta, url)
	testwait.Until(t, waitLong, "the first document to serve the load", func() bool { return ta.served("0") > 0 })

	const reloads = 50
	for k := 1; k <= reloads; k++ {
		if err := gw.Apply(reloadDoc(k, a.URL, b.URL), uint64(k)); err != nil {
			t.Fatalf("document %d: %v", k, err)
		}
		// Each document serves some of the load before the next replaces
		// it, so that every reload happens under requests in flight.
		doc := strconv.Itoa(k)
		testwait.Until(t, waitLong, "document "+doc+" to serve", func() bool { return ta.served(doc) >= loadClients })
	}
	ta.finish(strconv.Itoa(reloads))
	testwait.Until(t, waitLong, "requests sent after the last Apply", func() bool { return ta.afterFinal() >= 20*loadClients })
	stop()

	ta.check(t)
	if got := gw.Revision(); got != reloads {
		t.Errorf("Revision() = %d, want %d", got, reloads)
	}
}

// TestApplyRefusesInvalidDocumentAndKeepsServing offers documents that
// do not validate to a gateway under load: each Apply fails with an error
// that names the route and the field, and changes nothing. Requests keep
// going to the valid document's upstream, with no 404 or other failure in
// between, and a valid document is still applied afterwards.
func TestApplyRefusesInvalidDocumentAndKeepsServing(t *testing.T) {
	a, b := newUpstream(t, "a"), newUpstream(t, "b")
	gw := newGateway(t, gateway.Options{})
	url := serveGateway(t, gw) + "/work"
	route := func(name, prefix, upstream, doc string) gateway.Route {
		return gateway.Route{
			Name:     name,
			Match:    gateway.Match{PathPrefix: prefix},
			Upstream: &gateway.Upstream{URLs: []string{upstream}},
			Headers: gateway.HeaderOps{
				Request:  gateway.HeaderOp{Set: map[string]string{"X-Gateway-Doc": doc}},
				Response: gateway.HeaderOp{Set: map[string]string{"X-Doc": doc}},
			},
		}
	}
	if err := gw.Apply(&gateway.Config{Routes: []gateway.Route{route("work", "/work", a.URL, "good")}}, 1); err != nil {
		t.Fatal(err)
	}

	ta := newTally(func(doc string) (string, bool) {
		switch doc {
		case "good":
			return "a", true
		case "next":
			return "b", true
		}
		return "", false
	})
	stop := startLoad(t, ta, url)
	testwait.Until(t, waitLong, "the valid document to serve the load", func() bool { return ta.count() > 0 })

	// Every invalid document would send /work to b, stamped "bad": a
	// partial apply would show in the tally.
	tests := []struct {
		name   string
		routes []gateway.Route
		field  string // the field the error must name
		route  string // the route it must name
	}{
		{
			name:   "upstream URL with a scheme other than http(s)",
			routes: []gateway.Route{route("work", "/work", "ftp://"+strings.TrimPrefix(b.URL, "http://"), "bad")},
			field:  "routes[0].upstream.urls[0]",
			route:  "work",
		},
		{
			name:   "upstream URL with a path",
			routes: []gateway.Route{route("other", "/other", b.URL, "bad"), route("work", "/work", b.URL+"/v1", "bad")},
			field:  "routes[1].upstream.urls[0]",
			route:  "work",
		},
		{
			name:   "two routes of the same name",
			routes: []gateway.Route{route("work", "/work", b.URL, "bad"), route("work", "/work/x", b.URL, "bad")},
			field:  "routes[1].name",
			route:  "work",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := ta.count()
			err := gw.Apply(&gateway.Config{Routes: tt.routes}, 2)
			if err == nil {
				t.Fatal("Apply accepted an invalid document")
			}
			var me *meridian.Error
			if !errors.As(err, &me) || me.Code != meridian.CodeInvalid {
				t.Fatalf("Apply = %v (%T), want a *meridian.Error with code invalid", err, err)
			}
			if me.Field != tt.field || !strings.Contains(me.Message, strconv.Quote(tt.route)) {
				t.Errorf("Apply = field %q, message %q; want field %q and a message naming route %q", me.Field, me.Message, tt.field, tt.route)
			}
			if got := gw.Revision(); got != 1 {
				t.Errorf("Revision() = %d after a refused document, want 1", got)
			}
			// The load goes on across the refusal.
			testwait.Until(t, waitLong, "requests after the refusal", func() bool { return ta.count() >= before+4*loadClients })
		})
	}

	if err := gw.Apply(&gateway.Config{Routes: []gateway.Route{route("work", "/work", b.URL, "next")}}, 3); err != nil {
		t.Fatalf("a valid document after the refused ones: %v", err)
	}
	ta.finish("next")
	testwait.Until(t, waitLong, "requests sent after the valid document", func() bool { return ta.afterFinal() >= 4*loadClients })
	stop()
	ta.check(t)
}
