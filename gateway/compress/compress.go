package compress

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// New returns the compression middleware for cfg, or cfg's first invalid
// field as a *meridian.Error. The middleware is safe for concurrent use and
// shares its pooled encoders among all the handlers it wraps.
func New(cfg Config) (func(http.Handler) http.Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	m := &middleware{minSize: cfg.MinSize, types: cfg.ContentTypes}
	for _, name := range cfg.Encodings {
		c, _ := codingByName(name)
		m.prefs = append(m.prefs, c)
		m.encoders[c] = newEncoderPool(c, cfg.Level)
	}
	m.writers.New = func() any { return &responseWriter{m: m} }
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { m.serve(next, w, r) })
	}, nil
}

type middleware struct {
	prefs    []coding // offered codings, preferred first
	minSize  int
	types    []string // lowercase media type prefixes
	encoders [numCodings]*encoderPool
	writers  sync.Pool // *responseWriter
}

func (m *middleware) serve(next http.Handler, w http.ResponseWriter, r *http.Request) {
	// A tunnel (CONNECT), a protocol switch (Upgrade: websocket, h2c) and
	// gRPC carry no HTTP body of ours to compress, and libraries that take
	// them over type-assert the ResponseWriter (http.Hijacker, http.Flusher):
	// they get the server's own.
	if r.Method == http.MethodConnect || r.Header.Get("Upgrade") != "" || isGRPC(r.Header.Get("Content-Type")) {
		next.ServeHTTP(w, r)
		return
	}
	c := none
	if r.Method != http.MethodHead {
		c = negotiate(r.Header["Accept-Encoding"], m.prefs)
	}
	cw := m.writers.Get().(*responseWriter)
	cw.rw, cw.coding = w, c
	next.ServeHTTP(cw, r)
	// Not deferred: after a panic the response is abandoned (net/http
	// resets the stream), and the writer and its encoder are left to the
	// garbage collector rather than returned to the pools half-used.
	_ = cw.finish() // a write error here means the client has gone
	cw.release()
}

type state uint8

const (
	undecided   state = iota // status and body held back
	plain                    // writes go straight through
	compressing              // writes go through enc
)

// responseWriter holds the response back until it can decide whether to
// compress: when the status and headers rule compression out, when
// Content-Length or the bytes written reach MinSize, or when the handler
// flushes or returns. Until then WriteHeader's status is remembered and up
// to MinSize bytes are buffered.
type responseWriter struct {
	m      *middleware
	rw     http.ResponseWriter
	coding coding // negotiated; none: never compress, but still add Vary
	state  state
	code   int    // the status held back; 0 until WriteHeader
	buf    []byte // body held back; shorter than m.minSize
	enc    *pooledEncoder
}

var (
	_ http.ResponseWriter = (*responseWriter)(nil)
	_ http.Flusher        = (*responseWriter)(nil)
)

func (w *responseWriter) Header() http.Header { return w.rw.Header() }

// Unwrap lets http.ResponseController reach the server's ResponseWriter
// for Hijack, SetReadDeadline, SetWriteDeadline and EnableFullDuplex.
func (w *responseWriter) Unwrap() http.ResponseWriter { return w.rw }

func (w *responseWriter) WriteHeader(code int) {
	if w.state != undecided {
		w.rw.WriteHeader(code) // net/http reports a superfluous call
		return
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		w.rw.WriteHeader(code) // informational (103 Early Hints): sent at once
		return
	}
	if w.code != 0 {
		return // superfluous; the first status stands, as in net/http
	}
	w.code = code
	// A response that declares trailers streams: decide now, while the
	// headers are as the handler wrote them and before it sets the
	// trailers' values in the same map.
	_, trailers := w.rw.Header()["Trailer"]
	_ = w.decide(nil, trailers, false) // an error here shows on the next Write
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if w.state == undecided {
		if err := w.decide(p, false, false); err != nil {
			return 0, err
		}
		if w.state == undecided {
			if w.buf == nil {
				w.buf = make([]byte, 0, w.m.minSize)
			}
			w.buf = append(w.buf, p...) // decide left fewer than minSize bytes in all
			return len(p), nil
		}
	}
	if w.state == compressing {
		return w.enc.Write(p)
	}
	return w.rw.Write(p)
}

// FlushError decides, if still undecided, as if the response were long,
// flushes the encoder so that everything written so far can be decoded,
// then flushes the server's writer. http.ResponseController calls it.
func (w *responseWriter) FlushError() error {
	if w.state == undecided {
		if err := w.decide(nil, true, false); err != nil {
			return err
		}
	}
	if w.state == compressing {
		if err := w.enc.Flush(); err != nil {
			return err
		}
	}
	return http.NewResponseController(w.rw).Flush()
}

// Flush is FlushError for callers that type-assert http.Flusher.
func (w *responseWriter) Flush() { _ = w.FlushError() }

// finish completes the response after the handler returns.
func (w *responseWriter) finish() error {
	if w.state == undecided {
		if w.code == 0 && len(w.buf) == 0 {
			// Nothing written: leave the response to net/http, or to
			// whoever hijacked the connection through Unwrap.
			return nil
		}
		if err := w.decide(nil, false, true); err != nil {
			return err
		}
	}
	if w.state == compressing {
		return w.enc.Close()
	}
	return nil
}

func (w *responseWriter) release() {
	if w.enc != nil {
		w.m.encoders[w.coding].put(w.enc)
	}
	buf := w.buf[:0]
	*w = responseWriter{m: w.m, buf: buf}
	w.m.writers.Put(w)
}

// decide moves an undecided writer to plain or compressing if it can. p is
// about to be written (not yet in w.buf); force decides even though the
// length is unknown (a flush, or declared trailers); end says the handler
// has returned, so w.buf is the whole body. decide writes the status and
// w.buf out when it decides; the caller writes p.
func (w *responseWriter) decide(p []byte, force, end bool) error {
	h := w.rw.Header()
	code := w.code
	if code == 0 {
		code = http.StatusOK
	}
	if !bodyAllowed(code) || code == http.StatusPartialContent ||
		h.Get("Content-Encoding") != "" || h.Get("Content-Range") != "" || noTransform(h) {
		return w.startPlain()
	}
	written := len(w.buf) + len(p)
	var typ string
	switch ct, ok := h["Content-Type"]; {
	case ok && (len(ct) == 0 || ct[0] == ""):
		return w.startPlain() // the handler suppressed sniffing; so do we
	case ok:
		typ = ct[0]
	case w.coding == none || (written == 0 && (force || end)):
		// Sniffing here would decide a type from fewer bytes than net/http
		// sees; a client that takes no coding gets exactly what it would
		// without the middleware, Vary aside.
		return w.startPlain()
	case written < w.m.minSize && !force && !end:
		return nil // sniff once MinSize bytes are in
	default:
		typ = sniff(w.buf, p)
		h.Set("Content-Type", typ) // as net/http would on the first write
	}
	if !w.m.compressible(typ) {
		return w.startPlain()
	}
	// Some client could get this response compressed, so caches must key
	// it by Accept-Encoding whatever this client asked for.
	addVary(h)
	if w.coding == none {
		return w.startPlain()
	}
	if cl := h.Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil {
			if n < int64(w.m.minSize) {
				return w.startPlain()
			}
			return w.startCompressing()
		}
	}
	switch {
	case written >= w.m.minSize || force:
		return w.startCompressing()
	case end:
		return w.startPlain()
	}
	return nil
}

// sniffLen is how much of a body http.DetectContentType reads.
const sniffLen = 512

// sniff detects the body's type from its first bytes, held in buf and p.
func sniff(buf, p []byte) string {
	if len(buf) == 0 {
		return http.DetectContentType(p)
	}
	if len(buf) >= sniffLen || len(p) == 0 {
		return http.DetectContentType(buf)
	}
	var tmp [sniffLen]byte
	n := copy(tmp[:], buf)
	n += copy(tmp[n:], p)
	return http.DetectContentType(tmp[:n])
}

func (w *responseWriter) startPlain() error {
	w.state = plain
	if w.code != 0 {
		w.rw.WriteHeader(w.code)
	}
	if len(w.buf) == 0 {
		return nil
	}
	_, err := w.rw.Write(w.buf)
	w.buf = w.buf[:0]
	return err
}

// Header values shared by all responses; a header slice is only ever
// replaced or appended to (its len equals its cap), never written through.
var (
	contentEncodingValues [numCodings][]string
	varyValue             = []string{"Accept-Encoding"}
)

func init() {
	for c := zstdCoding; c < numCodings; c++ {
		contentEncodingValues[c] = []string{c.String()}
	}
}

func (w *responseWriter) startCompressing() error {
	h := w.rw.Header()
	h["Content-Encoding"] = contentEncodingValues[w.coding]
	// The length is the compressed one now, unknown until the end, and
	// ranges of the identity body no longer apply.
	delete(h, "Content-Length")
	delete(h, "Accept-Ranges")
	// A strong validator promises byte-identical bodies; the compressed
	// one differs, but means the same (RFC 9110 §8.8.1), as nginx marks it.
	if etag := h.Get("Etag"); etag != "" && !strings.HasPrefix(etag, "W/") {
		h.Set("Etag", "W/"+etag)
	}
	w.state = compressing
	if w.code != 0 {
		w.rw.WriteHeader(w.code)
	}
	w.enc = w.m.encoders[w.coding].get(w.rw)
	if len(w.buf) == 0 {
		return nil
	}
	_, err := w.enc.Write(w.buf)
	w.buf = w.buf[:0]
	return err
}

func (m *middleware) compressible(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	mt = strings.Trim(mt, " \t")
	if neverCompressed(mt) {
		return false
	}
	for _, t := range m.types {
		if hasPrefixFold(mt, t) {
			return true
		}
	}
	return false
}

// neverCompressed reports media types that pass through whatever the
// config says: server-sent events must reach the client event by event,
// and gRPC frames are compressed (or not) by gRPC itself.
func neverCompressed(mediaType string) bool {
	return hasPrefixFold(mediaType, "text/event-stream") || isGRPC(mediaType)
}

func isGRPC(contentType string) bool { return hasPrefixFold(contentType, "application/grpc") }

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// bodyAllowed reports whether a status may carry a body (RFC 9110 §6.4.1).
func bodyAllowed(code int) bool {
	return code >= 200 && code != http.StatusNoContent && code != http.StatusNotModified
}

// noTransform reports Cache-Control: no-transform (RFC 9111 §5.2.2.6),
// which forbids intermediaries to change the content coding.
func noTransform(h http.Header) bool {
	for _, v := range h["Cache-Control"] {
		for v != "" {
			var d string
			d, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(strings.Trim(d, " \t"), "no-transform") {
				return true
			}
		}
	}
	return false
}

// addVary adds Accept-Encoding to Vary unless it, or "*", is there.
func addVary(h http.Header) {
	vary, ok := h["Vary"]
	if !ok {
		h["Vary"] = varyValue
		return
	}
	for _, v := range vary {
		for v != "" {
			var f string
			f, v, _ = strings.Cut(v, ",")
			f = strings.Trim(f, " \t")
			if f == "*" || strings.EqualFold(f, "Accept-Encoding") {
				return
			}
		}
	}
	h["Vary"] = append(vary, varyValue[0])
}
