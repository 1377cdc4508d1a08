// Package fastclient is an http.RoundTripper for HTTP/1.1 upstreams that
// does the whole exchange on the caller's goroutine, for the proxies of the
// data path (the gateway today, the sidecar next).
//
// Why: profiled under load on one core, a net/http reverse proxy spends
// most of its time outside the proxy's logic. http.Transport hands every
// request to a per-connection write goroutine and reads the answer on a
// per-connection read goroutine, with channel selects and scheduler work at
// each hand-off. Measured on the same machine with the bench/gateway method,
// a net/http server in front of http.Transport costs 47–55 µs of CPU per
// proxied request; the same server writing and reading the upstream
// connection on the handler's goroutine, 21 µs.
//
// The HTTP/1.1 wire format is fasthttp's (its request writer and response
// parser, pooled and well tested); connections are this package's: a pool
// per upstream address with no background goroutine (idle connections
// expire when next looked at, and CloseIdleConnections closes them), which
// fasthttp's own client cannot offer (its cleaners are goroutines nobody can
// stop).
//
// What goes elsewhere: protocol upgrades (WebSocket), which need the
// connection handed over, go to Fallback, as does anything that is not
// http or https. HTTPS is HTTP/1.1 over TLS.
//
// Answers are streamed: the body is read from the connection as the caller
// reads it (SSE works), and its Close returns the connection to the pool
// when the body was read to its end, or closes it. The request's context
// bounds the exchange: its deadline is the connection's, and its
// cancellation interrupts a wait for the answer or for body bytes, as
// http.Transport's does.
package fastclient

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// Options configure a Transport. Zero fields take the defaults written on
// them.
type Options struct {
	// MaxIdleConnsPerHost bounds the idle connections kept per upstream
	// address. Default 512.
	MaxIdleConnsPerHost int
	// IdleConnTimeout closes connections idle this long. Default 90s.
	IdleConnTimeout time.Duration
	// DialTimeout bounds connecting (and the TLS handshake). Default 10s.
	DialTimeout time.Duration
	// TLSConfig is cloned for https upstreams; ServerName is set per
	// host. Nil: the system roots.
	TLSConfig *tls.Config
	// Fallback sends what this transport does not: upgrades and other
	// schemes. Default: a clone of http.DefaultTransport.
	Fallback http.RoundTripper
}

// Transport is the HTTP/1.1 RoundTripper. Safe for concurrent use.
type Transport struct {
	opts   Options
	dialer net.Dialer

	mu   sync.Mutex
	idle map[string][]*conn // by scheme://host:port, most recently used last
}

var _ http.RoundTripper = (*Transport)(nil)

// New returns a Transport. It starts nothing.
func New(opts Options) *Transport {
	if opts.MaxIdleConnsPerHost == 0 {
		opts.MaxIdleConnsPerHost = 512
	}
	if opts.IdleConnTimeout == 0 {
		opts.IdleConnTimeout = 90 * time.Second
	}
	if opts.DialTimeout == 0 {
		opts.DialTimeout = 10 * time.Second
	}
	if opts.Fallback == nil {
		opts.Fallback = http.DefaultTransport.(*http.Transport).Clone()
	}
	return &Transport{
		opts:   opts,
		dialer: net.Dialer{Timeout: opts.DialTimeout, KeepAlive: 30 * time.Second},
		idle:   map[string][]*conn{},
	}
}

// conn is one upstream connection with its buffers.
type conn struct {
	nc     net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	key    string
	used   time.Time // when it went idle
	reused bool      // it has carried an exchange before
}

// CloseIdleConnections closes the idle connections, and the fallback's.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = map[string][]*conn{}
	t.mu.Unlock()
	for _, cs := range idle {
		for _, c := range cs {
			c.nc.Close()
		}
	}
	if c, ok := t.opts.Fallback.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// writerGrace is how long Close waits for a request's writer that was still
// going when the answer came, before giving up on the connection.
const writerGrace = time.Second

// aLongTimeAgo is a deadline that makes a blocked read or write return at
// once: how a canceled request interrupts its exchange.
var aLongTimeAgo = time.Unix(1, 0)

// RoundTrip sends req over HTTP/1.1, or through Fallback (see the package
// doc).
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "http" && req.URL.Scheme != "https" || req.Header.Get("Upgrade") != "" {
		return t.opts.Fallback.RoundTrip(req)
	}
	ctx := req.Context()
	if err := ctx.Err(); err != nil {
		closeBody(req)
		return nil, err
	}
	freq := fasthttp.AcquireRequest()
	buildRequest(freq, req)
	hasBody := req.Body != nil && req.Body != http.NoBody
	addr := hostPort(req.URL)
	key := req.URL.Scheme + "://" + addr
	for attempt := 0; ; attempt++ {
		c, err := t.getConn(ctx, key, req.URL.Scheme, addr)
		if err != nil {
			fasthttp.ReleaseRequest(freq)
			closeBody(req)
			return nil, mapError(ctx, err)
		}
		// exchange gives freq back itself once the request is written,
		// which may be after it returns (an early answer).
		resp, err := t.exchange(ctx, c, freq, req)
		if err == nil {
			return resp, nil
		}
		// An idle connection the upstream closed is found out only by
		// using it. Try a fresh one, once, when nothing of the answer was
		// read and the body (there is none) can be sent again — as
		// http.Transport does.
		if c.reused && attempt == 0 && !hasBody && ctx.Err() == nil && isStale(err) {
			freq = fasthttp.AcquireRequest()
			buildRequest(freq, req)
			continue
		}
		closeBody(req)
		return nil, mapError(ctx, err)
	}
}

// exchange writes freq on c and reads the answer's header; it releases
// freq when the request has been written. On error c is closed.
//
// A request with a body is written by a goroutine of the exchange's while
// the answer is read, as http.Transport does, so that an upstream that
// answers before reading the whole body (a 413, a 401 to an upload) is
// heard instead of failing the write: the answer is returned, and the
// connection, which still carries the rest of the body, is closed with
// the answer's body, after the writer has stopped.
func (t *Transport) exchange(ctx context.Context, c *conn, freq *fasthttp.Request, req *http.Request) (*http.Response, error) {
	stop := context.AfterFunc(ctx, func() { _ = c.nc.SetDeadline(aLongTimeAgo) })
	deadline, _ := ctx.Deadline() // zero: none (clears a previous one)
	_ = c.nc.SetDeadline(deadline)
	fresp := fasthttp.AcquireResponse()
	fresp.StreamBody = true
	fresp.SkipBody = req.Method == http.MethodHead
	var err error
	var written chan error                // nil: the request is written
	src, _ := freq.BodyStream().(*source) // nil: no body
	if src != nil {
		written = make(chan error, 1)
		go func() {
			err := freq.Write(c.bw)
			if err == nil {
				err = c.bw.Flush()
			}
			if err != nil && src.err != nil {
				// The body's source failed (the client went away, or
				// passed the body limit): the upstream, still waiting for
				// the rest, will never answer. Closing ends the read.
				c.nc.Close()
			}
			written <- err
		}()
	} else {
		err = freq.Write(c.bw)
		if err == nil {
			err = c.bw.Flush()
		}
		fasthttp.ReleaseRequest(freq)
	}
	if err == nil {
		err = fresp.Read(c.br)
	}
	early := false   // the answer came though the body did not all go
	pending := false // the writer had not finished when the answer came
	if written != nil {
		if err != nil {
			// No answer: stop the writer and keep its error, the cause
			// more likely to explain.
			c.nc.Close()
			if werr := <-written; src.err != nil {
				err = src.err // the client's side failed: a 413, a cancel
			} else if werr != nil && !isStale(werr) {
				err = werr
			}
			fasthttp.ReleaseRequest(freq)
		} else {
			select {
			case werr := <-written:
				fasthttp.ReleaseRequest(freq)
				early = werr != nil
			default:
				// Usually the writer is about to report success; Close
				// finds out (see body.Close).
				pending = true
			}
		}
	}
	if err != nil {
		stop()
		c.nc.Close()
		fasthttp.ReleaseResponse(fresp)
		return nil, err
	}
	resp := &http.Response{
		Status:     strconv.Itoa(fresp.StatusCode()) + " " + http.StatusText(fresp.StatusCode()),
		StatusCode: fresp.StatusCode(),
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     make(http.Header, fresp.Header.Len()),
		Request:    req,
	}
	fresp.Header.VisitAll(func(k, v []byte) {
		key := string(k)
		resp.Header[key] = append(resp.Header[key], string(v))
	})
	// fasthttp keeps the length apart from the other fields.
	cl := fresp.Header.ContentLength()
	resp.ContentLength = int64(cl)
	if cl < 0 {
		resp.ContentLength = -1
	} else {
		resp.Header["Content-Length"] = []string{strconv.Itoa(cl)}
	}
	delete(resp.Header, "Transfer-Encoding")
	st := fresp.StatusCode()
	noBody := fresp.SkipBody || st < 200 || st == http.StatusNoContent || st == http.StatusNotModified
	// A body that ends when the connection does (no length, not chunked)
	// leaves nothing to reuse. fasthttp counts an answer to HEAD without
	// a length as one, and so closes that connection, as its own client
	// does.
	reusable := !fresp.ConnectionClose() && !early
	b := &body{t: t, c: c, resp: fresp, stop: stop, reusable: reusable}
	if pending {
		b.writer, b.freq = written, freq
	}
	if s := fresp.BodyStream(); s != nil && !noBody {
		b.r = s
		resp.Body = b
		return resp, nil
	}
	// No body (HEAD, 204, 304): the connection is free now.
	b.eof = true
	b.Close()
	resp.Body = http.NoBody
	return resp, nil
}

// body streams an answer's body from its connection.
type body struct {
	t        *Transport
	c        *conn
	resp     *fasthttp.Response
	r        io.Reader
	stop     func() bool
	reusable bool

	// writer, when not nil, is the goroutine still writing freq; Close
	// closes the connection, waits for it and releases freq.
	writer <-chan error
	freq   *fasthttp.Request

	mu     sync.Mutex // Close from another goroutine than Read's
	eof    bool
	closed bool
}

func (b *body) Read(p []byte) (int, error) {
	if b.r == nil {
		return 0, io.EOF
	}
	n, err := b.r.Read(p)
	if err == io.EOF {
		b.mu.Lock()
		b.eof = true
		b.mu.Unlock()
	}
	return n, err
}

// Close gives the connection back when the body was read to its end (and
// the upstream keeps it alive), else closes it.
func (b *body) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	eof := b.eof
	b.mu.Unlock()
	// stop reports false when the context's cancellation already poisoned
	// the connection's deadline.
	keep := b.stop() && eof && b.reusable
	if b.writer != nil && keep {
		// The answer is all read while the request was still being
		// written when it began. An upstream that read the whole request
		// lets the writer finish at once; one that answered without
		// reading it leaves the writer stuck, and the connection is
		// useless.
		t := time.NewTimer(writerGrace)
		select {
		case werr := <-b.writer:
			b.writer = nil
			keep = werr == nil
		case <-t.C:
			keep = false
		}
		t.Stop()
	}
	if !keep {
		// Closing the connection first ends a Read blocked on it in
		// another goroutine before the stream is given back, and a
		// write still going on.
		b.c.nc.Close()
	}
	if b.writer != nil {
		<-b.writer
	}
	if b.freq != nil {
		fasthttp.ReleaseRequest(b.freq)
	}
	_ = b.resp.CloseBodyStream()
	fasthttp.ReleaseResponse(b.resp)
	if keep {
		b.t.putConn(b.c)
	}
	return nil
}

func buildRequest(freq *fasthttp.Request, req *http.Request) {
	freq.Header.DisableNormalizing()
	freq.URI().DisablePathNormalizing = true
	freq.Header.SetMethod(req.Method)
	freq.SetRequestURI(req.URL.RequestURI())
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	freq.Header.SetHost(host)
	freq.UseHostHeader = true
	for k, vs := range req.Header {
		if k == "Content-Length" || k == "Transfer-Encoding" {
			continue // from the body below
		}
		for _, v := range vs {
			freq.Header.Add(k, v)
		}
	}
	if req.Body != nil && req.Body != http.NoBody {
		n := int(req.ContentLength)
		if req.ContentLength <= 0 {
			n = -1 // chunked
		}
		freq.SetBodyStream(&source{r: req.Body}, n)
	}
}

// source is a request body as the writer reads it, noting whether reading
// it failed (as opposed to writing it to the upstream).
type source struct {
	r   io.Reader
	err error // the first read error other than io.EOF; the writer's only
}

func (s *source) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF && s.err == nil {
		s.err = err
	}
	return n, err
}

func (t *Transport) getConn(ctx context.Context, key, scheme, addr string) (*conn, error) {
	now := time.Now()
	t.mu.Lock()
	cs := t.idle[key]
	for len(cs) > 0 {
		c := cs[len(cs)-1]
		cs = cs[:len(cs)-1]
		if now.Sub(c.used) < t.opts.IdleConnTimeout {
			t.idle[key] = cs
			t.mu.Unlock()
			c.reused = true
			return c, nil
		}
		c.nc.Close() // expired; the older ones below it too, in turn
	}
	t.idle[key] = cs
	t.mu.Unlock()

	nc, err := t.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if scheme == "https" {
		cfg := &tls.Config{}
		if t.opts.TLSConfig != nil {
			cfg = t.opts.TLSConfig.Clone()
		}
		if cfg.ServerName == "" {
			cfg.ServerName, _, _ = net.SplitHostPort(addr)
		}
		cfg.NextProtos = []string{"http/1.1"}
		tc := tls.Client(nc, cfg)
		hctx, cancel := context.WithTimeout(ctx, t.opts.DialTimeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			nc.Close()
			return nil, err
		}
		nc = tc
	}
	return &conn{nc: nc, br: bufio.NewReaderSize(nc, 4<<10), bw: bufio.NewWriterSize(nc, 4<<10), key: key}, nil
}

func (t *Transport) putConn(c *conn) {
	c.used = time.Now()
	t.mu.Lock()
	if cs := t.idle[c.key]; len(cs) < t.opts.MaxIdleConnsPerHost {
		t.idle[c.key] = append(cs, c)
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()
	c.nc.Close()
}

// hostPort is the address to dial for u, with the scheme's default port.
func hostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// isStale reports whether err is what a write to or read from a kept
// connection the upstream had closed returns.
func isStale(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// mapError gives errors the meaning the data path reads: the context's
// own error when it ended (a deadline is a 504), else the cause.
func mapError(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%w (%w)", cerr, err)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, fasthttp.ErrTimeout) {
		return fmt.Errorf("%w (%w)", context.DeadlineExceeded, err)
	}
	return err
}
