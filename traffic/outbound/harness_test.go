package outbound_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/internal/cptest"
	"github.com/meridian-platform/meridian/internal/testwait"
	"github.com/meridian-platform/meridian/traffic/discovery"
	"github.com/meridian-platform/meridian/traffic/outbound"
	"github.com/meridian-platform/meridian/traffic/policy"
	"github.com/meridian-platform/meridian/traffic/resilience/breaker"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The tests run the Transport as a service runs it: instances are real
// HTTP servers on loopback, registered with the real control plane
// (package cptest), found through a real discovery cache. Faults are
// injected at the instances: slowness, 503s, a listener closed and its
// connections cut.

// harness is a control plane, a discovery cache and a Transport, all
// running until the test ends.
type harness struct {
	t      *testing.T
	cp     *cptest.CP
	cache  *discovery.Cache
	tr     *outbound.Transport
	client *http.Client
}

func start(t *testing.T, spec string, opts ...func(*outbound.Options)) *harness {
	t.Helper()
	h := &harness{t: t, cp: cptest.Start(t)}
	h.cache = discovery.New(h.cp.Client, discovery.WithBackoff(10*time.Millisecond, 100*time.Millisecond))
	o := outbound.Options{}
	for _, f := range opts {
		f(&o)
	}
	h.tr = outbound.New(h.cache, o)
	if spec != "" {
		h.apply(spec)
	}
	h.client = &http.Client{Transport: h.tr}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = h.cache.Run(ctx) })
	wg.Go(func() { _ = h.tr.Run(ctx) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		h.client.CloseIdleConnections()
	})
	return h
}

func (h *harness) apply(spec string) {
	h.t.Helper()
	s, err := policy.Parse(meridian.FormatYAML, []byte(spec))
	if err != nil {
		h.t.Fatal(err)
	}
	if err := h.tr.Apply(s); err != nil {
		h.t.Fatal(err)
	}
}

// upstream returns the Transport's Upstream of service.
func (h *harness) upstream(service string) *outbound.Upstream {
	h.t.Helper()
	u, err := h.tr.Upstream(service)
	if err != nil {
		h.t.Fatal(err)
	}
	return u
}

// get sends GET http://<service>/ and returns the status, or the error.
func (h *harness) get(service string) (int, error) { return h.getURL("http://" + service + "/") }

// getURL sends GET url, bounded by a generous timeout, and returns the
// status, or the error.
func (h *harness) getURL(url string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := h.client.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// waitServed waits until the Transport's balancer of service has exactly
// the instances ids.
func (h *harness) waitServed(service string, ids ...string) {
	h.t.Helper()
	b := h.upstream(service).Balancer()
	eventually(h.t, "the balancer of "+service+" to have "+strconv.Itoa(len(ids))+" endpoints", func() bool {
		eps := b.Endpoints()
		if len(eps) != len(ids) {
			return false
		}
		for i, e := range eps {
			if e.ID() != ids[i] {
				return false
			}
		}
		return true
	})
}

// instance is a real HTTP server on loopback, registered as an instance of
// a service. Its behaviour is switched by the test; it counts what it
// receives. It can be killed (listener closed, connections cut) and
// started again on the same address.
type instance struct {
	t        *testing.T
	service  string
	id       string
	addr     string
	delay    atomic.Int64 // per request, ns
	failing  atomic.Bool  // answer 503
	after    atomic.Value // Retry-After of the 503s, "" for none
	received atomic.Int64

	mu  sync.Mutex
	srv *http.Server
	ln  net.Listener
	wg  sync.WaitGroup
}

func (h *harness) instance(service, id string) *instance {
	h.t.Helper()
	in := &instance{t: h.t, service: service, id: id}
	in.after.Store("")
	in.start("127.0.0.1:0")
	h.t.Cleanup(in.kill)
	host, port, _ := net.SplitHostPort(in.addr)
	p, _ := strconv.Atoi(port)
	if _, err := h.cp.Client.Register(context.Background(), &meridian.Instance{Service: service, ID: id, Address: host, Port: p}); err != nil {
		h.t.Fatalf("register %s: %v", id, err)
	}
	return in
}

func (in *instance) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	in.received.Add(1)
	if d := time.Duration(in.delay.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
	}
	if in.failing.Load() {
		if v := in.after.Load().(string); v != "" {
			w.Header().Set("Retry-After", v)
		}
		http.Error(w, "unavailable", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("X-Instance", in.id)
	io.WriteString(w, in.id)
}

func (in *instance) start(addr string) {
	var ln net.Listener
	var err error
	for range 100 { // the port was just released: the kernel may hold it a moment
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		in.t.Fatalf("listen %s: %v", addr, err)
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	in.addr = ln.Addr().String()
	in.ln = ln
	in.srv = &http.Server{Handler: in}
	srv := in.srv
	in.wg.Go(func() { _ = srv.Serve(ln) })
}

// kill closes the listener and cuts every connection at once, as a
// crashed process would; the registry is not told.
func (in *instance) kill() {
	in.mu.Lock()
	srv := in.srv
	in.srv = nil
	in.mu.Unlock()
	if srv != nil {
		srv.Close()
		in.wg.Wait()
	}
}

func (in *instance) restart() { in.start(in.addr) }

// eventually polls cond until it holds or a generous deadline passes: it
// asserts that something happens, never how fast.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testwait.Until(t, 20*time.Second, what, cond)
}

// isOpen reports whether err is a fast failure of an open breaker.
func isOpen(err error) bool {
	return err != nil && errors.Is(err, breaker.ErrOpen)
}
