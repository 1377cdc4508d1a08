package gateway

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/internal/problem"
)

// forward is the terminal handler of a route with an upstream or a split:
// it picks a backend and hands the request to that backend's reverse
// proxy, whose transport is the shared data path (traffic/outbound).
type forward struct {
	backends []*backend
	total    int  // sum of the weights
	h2       bool // the route's upstreams speak HTTP/2 without TLS (h2c, grpc)
	mirror   *mirror
}

// backend is one upstream of a route, with a reverse proxy for each
// protocol the gateway may speak to it.
type backend struct {
	key     string // upstream key: the URL host the outbound Transport resolves
	weight  int
	when    *Condition
	h1, h2  *httputil.ReverseProxy
	metrics *upstreamMetrics
}

func (f *forward) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b := f.pick(r)
	noteUpstream(w, b)
	if f.mirror != nil {
		f.mirror.send(r)
	}
	if f.h2 || isGRPC(r) {
		b.h2.ServeHTTP(w, r)
		return
	}
	b.h1.ServeHTTP(w, r)
}

// pick is the backend for r: the first whose When matches, else one at
// random by weight.
func (f *forward) pick(r *http.Request) *backend {
	if len(f.backends) == 1 {
		return f.backends[0]
	}
	for _, b := range f.backends {
		if b.when != nil && b.when.matches(r) {
			return b
		}
	}
	if f.total > 0 {
		n := rand.IntN(f.total)
		for _, b := range f.backends {
			if n < b.weight {
				return b
			}
			n -= b.weight
		}
	}
	return f.backends[0]
}

func (c *Condition) matches(r *http.Request) bool {
	for k, v := range c.Headers {
		if r.Header.Get(k) != v {
			return false
		}
	}
	for k, v := range c.Cookies {
		ck, err := r.Cookie(k)
		if err != nil || ck.Value != v {
			return false
		}
	}
	return true
}

func isGRPC(r *http.Request) bool {
	return r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc")
}

// newProxy is the reverse proxy of one backend of rt over tr.
func (g *Gateway) newProxy(rt *Route, b *backend, scheme string, tr http.RoundTripper) *httputil.ReverseProxy {
	reqOps := compileHeaderOp(rt.Headers.Request)
	respOps := compileHeaderOp(rt.Headers.Response)
	rw := rt.Rewrite
	var pathTmpl *template
	if rw != nil && rw.Path != "" {
		pathTmpl = compileTemplate(rw.Path)
	}
	prefix := strings.TrimSuffix(rt.Match.PathPrefix, "/")
	p := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			out := pr.Out
			out.URL.Scheme = scheme
			out.URL.Host = b.key
			if rw != nil {
				switch {
				case pathTmpl != nil:
					out.URL.Path = pathTmpl.expand(pr.In)
					out.URL.RawPath = ""
				case rw.StripPrefix:
					out.URL.Path = strings.TrimPrefix(out.URL.Path, prefix)
					out.URL.RawPath = ""
				}
				if rw.AddPrefix != "" {
					out.URL.Path = rw.AddPrefix + out.URL.Path
					out.URL.RawPath = ""
				}
				if out.URL.Path == "" {
					out.URL.Path = "/"
				}
				if rw.Host != "" {
					out.Host = rw.Host
				}
			}
			pr.SetXForwarded()
			if t := g.opts.Tracing; t != nil {
				t.Inject(pr.In.Context(), out.Header)
			}
			reqOps.apply(out.Header)
		},
		Transport:    tr,
		BufferPool:   bufferPool{},
		ErrorHandler: g.proxyError,
		ErrorLog:     slog.NewLogLogger(g.log.Handler(), slog.LevelDebug),
	}
	if !respOps.empty() {
		p.ModifyResponse = func(resp *http.Response) error {
			respOps.apply(resp.Header)
			return nil
		}
	}
	return p
}

// proxyError answers a request the upstream did not: the data path's
// refusals keep their meaning (503 with Retry-After for an open breaker or
// no instance, 429 for a client-side limit), a timeout is 504, and any
// other failure to reach the upstream is 502.
func (g *Gateway) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		// The client went away; nobody reads the answer.
		w.WriteHeader(statusClientClosed)
		return
	}
	var me *meridian.Error
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		problem.Write(w, r, nil, tooLarge(mbe.Limit))
	case errors.As(err, &me) && me.Code != meridian.CodeInternal:
		// The data path's refusal keeps its code and Retry-After, but its
		// text stays in the log: it names internal addresses and causes
		// that are not the gateway's clients' business.
		g.log.LogAttrs(r.Context(), slog.LevelWarn, "upstream refused", slog.String("path", r.URL.Path), slog.Any("err", err))
		problem.Write(w, r, nil, &meridian.Error{Code: me.Code, RetryAfter: me.RetryAfter, Message: publicMessage(me.Code)})
	case errors.Is(err, context.DeadlineExceeded):
		g.log.LogAttrs(r.Context(), slog.LevelWarn, "upstream timed out", slog.String("path", r.URL.Path), slog.Any("err", err))
		problem.WriteStatus(w, r, http.StatusGatewayTimeout, &meridian.Error{Code: meridian.CodeUnavailable,
			Message: "the upstream did not answer in time"})
	default:
		g.log.LogAttrs(r.Context(), slog.LevelWarn, "upstream failed", slog.String("path", r.URL.Path), slog.Any("err", err))
		problem.WriteStatus(w, r, http.StatusBadGateway, &meridian.Error{Code: meridian.CodeUnavailable,
			Message: "the upstream could not be reached or failed to answer"})
	}
}

// publicMessage is what a client is told when the data path refused its
// request.
func publicMessage(c meridian.Code) string {
	switch c {
	case meridian.CodeRateLimited:
		return "too many requests to the upstream; try again later"
	case meridian.CodeUnavailable:
		return "the upstream is unavailable; try again later"
	}
	return "the upstream refused the request"
}

// statusClientClosed is nginx's 499, recorded in logs and metrics when the
// client closed the connection before the answer.
const statusClientClosed = 499

// bufferPool lends the reverse proxy its copy buffers.
type bufferPool struct{}

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *copyBuffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { copyBuffers.Put(&b) }

// headerOp is a compiled HeaderOp with canonical names.
type headerOp struct {
	remove   []string
	set, add [][2]string
}

func compileHeaderOp(op HeaderOp) headerOp {
	var c headerOp
	for _, h := range op.Remove {
		c.remove = append(c.remove, http.CanonicalHeaderKey(h))
	}
	for _, k := range sortedKeys(op.Set) {
		c.set = append(c.set, [2]string{http.CanonicalHeaderKey(k), op.Set[k]})
	}
	for _, k := range sortedKeys(op.Add) {
		c.add = append(c.add, [2]string{http.CanonicalHeaderKey(k), op.Add[k]})
	}
	return c
}

func (c headerOp) empty() bool { return len(c.remove)+len(c.set)+len(c.add) == 0 }

func (c headerOp) apply(h http.Header) {
	for _, k := range c.remove {
		delete(h, k)
	}
	for _, kv := range c.set {
		h[kv[0]] = []string{kv[1]}
	}
	for _, kv := range c.add {
		h[kv[0]] = append(h[kv[0]], kv[1])
	}
}

// template is a path with {param} references to the match's parameters.
type template struct {
	lits   []string // len(params)+1
	params []string
}

func compileTemplate(s string) *template {
	t := &template{}
	for {
		i := strings.IndexByte(s, '{')
		j := strings.IndexByte(s, '}')
		if i < 0 || j < i {
			t.lits = append(t.lits, s)
			return t
		}
		t.lits = append(t.lits, s[:i])
		t.params = append(t.params, strings.TrimSuffix(s[i+1:j], "..."))
		s = s[j+1:]
	}
}

func (t *template) expand(r *http.Request) string {
	var b strings.Builder
	for i, p := range t.params {
		b.WriteString(t.lits[i])
		b.WriteString(r.PathValue(p))
	}
	b.WriteString(t.lits[len(t.lits)-1])
	return b.String()
}

// mirror sends copies of requests to a shadow upstream, never waiting
// for them: at most mirrorInFlight at a time (more are dropped), each
// bounded by mirrorTimeout, all owned by the gateway, which waits for them
// on Close.
type mirror struct {
	g       *Gateway
	key     string
	scheme  string
	percent float64
	tr      http.RoundTripper
}

const (
	mirrorMaxBody  = 64 << 10
	mirrorInFlight = 64
	mirrorTimeout  = 10 * time.Second
)

func (m *mirror) send(r *http.Request) {
	if m.percent < 100 && rand.Float64()*100 >= m.percent {
		return
	}
	if r.ContentLength > mirrorMaxBody || r.ContentLength < 0 && r.Body != nil && r.Body != http.NoBody {
		return
	}
	var body []byte
	if r.Body != nil && r.Body != http.NoBody {
		var err error
		body, err = io.ReadAll(io.LimitReader(r.Body, mirrorMaxBody+1))
		if err != nil || len(body) > mirrorMaxBody {
			// Give the upstream what was read and the rest.
			r.Body = readCloser{io.MultiReader(bytes.NewReader(body), r.Body), r.Body}
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	select {
	case m.g.mirrorSlots <- struct{}{}:
	default:
		return // shadow traffic never queues up behind itself
	}
	out := r.Clone(m.g.ctx)
	out.URL.Scheme, out.URL.Host = m.scheme, m.key
	out.RequestURI = ""
	if body != nil {
		out.Body = io.NopCloser(bytes.NewReader(body))
	} else {
		out.Body = http.NoBody
	}
	out.Header.Set("X-Meridian-Mirror", "1")
	m.g.mirrors.Go(func() {
		defer func() { <-m.g.mirrorSlots }()
		ctx, cancel := context.WithTimeout(m.g.ctx, mirrorTimeout)
		defer cancel()
		resp, err := m.tr.RoundTrip(out.WithContext(ctx))
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
	})
}

type readCloser struct {
	io.Reader
	io.Closer
}
