package telemetry

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Middleware starts a server span per request named by route (the route's
// name, which must have low cardinality: never a raw path), extracts the
// parent from traceparent and baggage, and puts the span in the request
// context, from which Inject writes the upstream call's traceparent.
//
// An unsampled request costs the extraction, the sampling decision and one
// request copy: its response writer is not wrapped. A sampled request gets
// the semantic-convention attributes and a writer that records the status
// code; the span is marked as an error for a 5xx or a panic (which is
// re-raised). The writer keeps http.ResponseController working (Flush,
// Hijack, deadlines, full duplex) through Unwrap and implements
// http.Flusher, and http.Hijacker when the wrapped writer can hijack, for
// code that asserts them.
//
// When propagation only (see the package doc) there is no span: the
// request context gets the caller's trace context and baggage, if it sent
// any, and nothing else happens.
func (t *Tracing) Middleware(route string, next http.Handler) http.Handler {
	if t.sdk == nil {
		return propagateOnly{prop: t.prop, next: next}
	}
	return &serverSpan{
		tracer: t.server,
		prop:   t.prop,
		route:  route,
		next:   next,
		start:  []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer)},
	}
}

type propagateOnly struct {
	prop propagation.TextMapPropagator
	next http.Handler
}

func (h propagateOnly) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Extract returns its argument when there is nothing to extract, and
	// then the request need not be copied.
	if ctx := h.prop.Extract(r.Context(), headerCarrier(r.Header)); ctx != r.Context() {
		r = r.WithContext(ctx)
	}
	h.next.ServeHTTP(w, r)
}

type serverSpan struct {
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
	route  string
	next   http.Handler
	start  []trace.SpanStartOption // built once, not per request
}

func (h *serverSpan) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := h.prop.Extract(r.Context(), headerCarrier(r.Header))
	ctx, span := h.tracer.Start(ctx, h.route, h.start...)
	r = r.WithContext(ctx)
	if !span.IsRecording() {
		h.next.ServeHTTP(w, r)
		span.End()
		return
	}
	h.serveSampled(w, r, span)
}

func (h *serverSpan) serveSampled(w http.ResponseWriter, r *http.Request, span trace.Span) {
	span.SetAttributes(requestAttributes(r)...)
	sw := &statusWriter{ResponseWriter: w}
	var ww http.ResponseWriter = sw
	if canHijack(w) {
		ww = hijackWriter{sw}
	}
	defer func() {
		if p := recover(); p != nil {
			span.SetAttributes(semconv.ErrorTypeKey.String(fmt.Sprintf("%T", p)))
			span.SetStatus(codes.Error, fmt.Sprint("panic: ", p))
			span.End()
			panic(p)
		}
	}()
	h.next.ServeHTTP(ww, r)

	code := sw.status
	if code == 0 && !sw.hijacked {
		code = http.StatusOK // what net/http sends for a handler that wrote nothing
	}
	switch {
	case code >= 500:
		span.SetAttributes(semconv.HTTPResponseStatusCode(code), semconv.ErrorTypeKey.String(strconv.Itoa(code)))
		span.SetStatus(codes.Error, "")
	case code != 0:
		span.SetAttributes(semconv.HTTPResponseStatusCode(code))
	}
	span.End()
}

// requestAttributes are the HTTP server span attributes known at the start
// of a request (semconv v1.43.0).
func requestAttributes(r *http.Request) []attribute.KeyValue {
	attrs := make([]attribute.KeyValue, 0, 12)
	attrs = append(attrs, method(r.Method))
	if m := attrs[0]; m == semconv.HTTPRequestMethodOther {
		attrs = append(attrs, semconv.HTTPRequestMethodOriginal(r.Method))
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	attrs = append(attrs, semconv.URLScheme(scheme), semconv.URLPath(r.URL.Path))
	if r.Pattern != "" {
		attrs = append(attrs, semconv.HTTPRoute(routeOf(r.Pattern)))
	}
	if host, port := splitHostPort(r.Host); host != "" {
		attrs = append(attrs, semconv.ServerAddress(host))
		if port > 0 {
			attrs = append(attrs, semconv.ServerPort(port))
		}
	}
	attrs = append(attrs, semconv.NetworkProtocolVersion(protoVersion(r)))
	if host, port := splitHostPort(r.RemoteAddr); host != "" {
		// The gateway is the edge: its peer is the client. Forwarded
		// headers are not trusted here.
		attrs = append(attrs, semconv.ClientAddress(host), semconv.NetworkPeerAddress(host))
		if port > 0 {
			attrs = append(attrs, semconv.NetworkPeerPort(port))
		}
	}
	if ua := r.UserAgent(); ua != "" {
		attrs = append(attrs, semconv.UserAgentOriginal(ua))
	}
	return attrs
}

// method maps a request method to http.request.method, whose values are
// the registered methods and "_OTHER", so that a client cannot make the
// attribute's cardinality unbounded.
func method(m string) attribute.KeyValue {
	switch m {
	case http.MethodGet:
		return semconv.HTTPRequestMethodGet
	case http.MethodPost:
		return semconv.HTTPRequestMethodPost
	case http.MethodPut:
		return semconv.HTTPRequestMethodPut
	case http.MethodDelete:
		return semconv.HTTPRequestMethodDelete
	case http.MethodPatch:
		return semconv.HTTPRequestMethodPatch
	case http.MethodHead:
		return semconv.HTTPRequestMethodHead
	case http.MethodOptions:
		return semconv.HTTPRequestMethodOptions
	case http.MethodConnect:
		return semconv.HTTPRequestMethodConnect
	case http.MethodTrace:
		return semconv.HTTPRequestMethodTrace
	case "QUERY":
		return semconv.HTTPRequestMethodQuery
	}
	return semconv.HTTPRequestMethodOther
}

// routeOf drops the method and host of a ServeMux pattern
// ("GET example.com/orders/{id}"), leaving the path template http.route
// wants.
func routeOf(pattern string) string {
	if i := strings.IndexByte(pattern, '/'); i >= 0 {
		return pattern[i:]
	}
	return pattern
}

// splitHostPort splits "host:port", "[v6]:port", "host" or "[v6]"; port is
// 0 when absent or not a number.
func splitHostPort(hp string) (string, int) {
	host, p, err := net.SplitHostPort(hp)
	if err != nil {
		return strings.TrimSuffix(strings.TrimPrefix(hp, "["), "]"), 0
	}
	port, _ := strconv.Atoi(p)
	return host, port
}

func protoVersion(r *http.Request) string {
	switch {
	case r.ProtoMajor == 1 && r.ProtoMinor == 1:
		return "1.1"
	case r.ProtoMajor == 1 && r.ProtoMinor == 0:
		return "1.0"
	case r.ProtoMajor == 2:
		return "2"
	case r.ProtoMajor == 3:
		return "3"
	}
	return strconv.Itoa(r.ProtoMajor) + "." + strconv.Itoa(r.ProtoMinor)
}

// statusWriter records the final status code of a sampled response.
type statusWriter struct {
	http.ResponseWriter
	status   int  // 0 until the header is sent
	hijacked bool // the connection was taken over: no status to record
}

var (
	_ http.Flusher   = (*statusWriter)(nil)
	_ io.ReaderFrom  = (*statusWriter)(nil)
	_ http.Hijacker  = hijackWriter{}
	_ rwUnwrapper    = (*statusWriter)(nil)
	_ rwFlushErrorer = (*statusWriter)(nil)
)

// The interfaces http.ResponseController looks for.
type (
	rwUnwrapper    interface{ Unwrap() http.ResponseWriter }
	rwFlushErrorer interface{ FlushError() error }
)

func (w *statusWriter) WriteHeader(code int) {
	// 1xx other than 101 are informational: the final status follows.
	if w.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// ReadFrom keeps the wrapped writer's io.ReaderFrom (sendfile for files)
// in use behind io.Copy.
func (w *statusWriter) ReadFrom(src io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return io.Copy(w.ResponseWriter, src)
}

// Unwrap lets http.ResponseController reach the wrapped writer's
// deadlines and full-duplex switch.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// FlushError is what http.ResponseController.Flush calls: it reports,
// unlike Flush, a writer that cannot flush.
func (w *statusWriter) FlushError() error {
	if err := http.NewResponseController(w.ResponseWriter).Flush(); err != nil {
		return err
	}
	if w.status == 0 {
		w.status = http.StatusOK // flushing sends the header
	}
	return nil
}

func (w *statusWriter) Flush() { _ = w.FlushError() }

// hijackWriter is a statusWriter over a writer that can hijack, so that a
// writer that cannot (HTTP/2) is not made to claim it can.
type hijackWriter struct{ *statusWriter }

func (w hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil {
		w.hijacked = true
	}
	return c, rw, err
}

// canHijack reports whether w, or a writer it unwraps to, is an
// http.Hijacker.
func canHijack(w http.ResponseWriter) bool {
	for {
		switch x := w.(type) {
		case http.Hijacker:
			return true
		case rwUnwrapper:
			w = x.Unwrap()
		default:
			return false
		}
	}
}
