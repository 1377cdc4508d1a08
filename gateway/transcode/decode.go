package transcode

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"connectrpc.com/connect"
	"connectrpc.com/vanguard"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Vanguard turns a request into gRPC lazily, as the handler it wraps reads
// the body. A request it cannot decode (malformed JSON, a path variable or
// query parameter of the wrong type, an unknown query parameter) therefore
// fails only once the upstream has been called, and vanguard reports it as
// UNKNOWN, a 500. The gateway needs both the other way round: a request
// that cannot be decoded never reaches the upstream (nor its circuit
// breaker), and it is the client's error, INVALID_ARGUMENT. Three pieces
// do that:
//
//   - gate, the handler vanguard calls, reads the first request message
//     before calling the upstream, for methods whose client sends one
//     message (unary and server-streaming), and stops there if it cannot
//     (it also turns an empty REST body into the empty message gRPC
//     expects, where vanguard would send no message at all);
//   - exchange, the ResponseWriter vanguard writes to, holds back a 500
//     written while gate is reading, so that a REST error body
//     {"code":2,...} becomes {"code":3,...} with 400;
//   - jsonCodec marks JSON that does not decode as INVALID_ARGUMENT at the
//     source, which also covers Connect clients sending JSON.

// gate is the handler vanguard calls with the gRPC request it made.
type gate struct {
	next http.Handler
	// single holds the RPC paths ("/pkg.Service/Method") of the methods
	// whose client sends exactly one message.
	single map[string]bool
}

func newGate(next http.Handler, services []protoreflect.ServiceDescriptor) *gate {
	g := &gate{next: next, single: map[string]bool{}}
	for _, sd := range services {
		for i := range sd.Methods().Len() {
			if md := sd.Methods().Get(i); !md.IsStreamingClient() {
				g.single["/"+string(sd.FullName())+"/"+string(md.Name())] = true
			}
		}
	}
	return g
}

func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !g.single[r.URL.Path] {
		// A client stream's first message may come much later than the
		// call; waiting for it here would change the call's meaning.
		g.next.ServeHTTP(w, r)
		return
	}
	ex := findExchange(w)
	if ex != nil {
		ex.decoding = true
	}
	frame, err := readFrame(r.Body)
	if ex != nil {
		ex.decoding = false
	}
	reported := ex != nil && ex.wroteHeader
	if err == io.EOF && !reported {
		// No message and no error: vanguard passes an empty REST body
		// (with body: "*") on as no message at all, where gRPC wants an
		// empty one. Send that, as grpc-gateway does.
		frame, err = make([]byte, 5), nil
	}
	if err != nil {
		// Vanguard has usually answered the client already (it reports a
		// decoding failure before the read returns); if not, answer as a
		// gRPC server would, for vanguard to translate.
		if !reported {
			writeGRPCError(w, connect.CodeInvalidArgument, "reading the request: "+err.Error())
		}
		return
	}
	r.Body = &replayBody{frame: frame, rest: r.Body}
	g.next.ServeHTTP(w, r)
}

// readFrame reads one length-prefixed gRPC message, envelope included. It
// returns io.EOF only when the body is empty.
func readFrame(body io.Reader) ([]byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(body, hdr[:]); err != nil {
		return nil, err // io.EOF: no message at all
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > MaxMessageBytes {
		return nil, fmt.Errorf("message of %d bytes is over the limit of %d", n, MaxMessageBytes)
	}
	frame := make([]byte, 5+int(n))
	copy(frame, hdr[:])
	if _, err := io.ReadFull(body, frame[5:]); err != nil {
		return nil, err
	}
	return frame, nil
}

// replayBody gives back the frame gate read, then the rest of the body.
type replayBody struct {
	frame []byte
	rest  io.ReadCloser
}

func (b *replayBody) Read(p []byte) (int, error) {
	if len(b.frame) > 0 {
		n := copy(p, b.frame)
		b.frame = b.frame[n:]
		return n, nil
	}
	return b.rest.Read(p)
}

func (b *replayBody) Close() error { return b.rest.Close() }

// writeGRPCError answers a "trailers-only" gRPC error.
func writeGRPCError(w http.ResponseWriter, code connect.Code, msg string) {
	h := w.Header()
	h.Set("Content-Type", "application/grpc")
	h.Set("Grpc-Status", strconv.Itoa(int(code)))
	h.Set("Grpc-Message", percentEncode(msg))
	w.WriteHeader(http.StatusOK)
}

// percentEncode encodes grpc-message as the gRPC spec asks: bytes outside
// printable ASCII, and '%', as %XX.
func percentEncode(s string) string {
	const hex = "0123456789ABCDEF"
	var b []byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c <= 0x7e && c != '%' {
			b = append(b, c)
			continue
		}
		b = append(b, '%', hex[c>>4], hex[c&15])
	}
	return string(b)
}

// exchange is the ResponseWriter handed to vanguard for a transcoded
// request. It passes everything on, except a 500 written while gate reads
// the request, which it holds until the transcoder returns (see finish).
type exchange struct {
	http.ResponseWriter
	decoding    bool // gate is reading the first request message
	wroteHeader bool
	held        bool // a 500 from decoding, kept in status and body
	body        []byte
}

func (e *exchange) WriteHeader(code int) {
	if e.wroteHeader {
		return
	}
	e.wroteHeader = true
	if e.decoding && code == http.StatusInternalServerError {
		e.held = true
		return
	}
	e.ResponseWriter.WriteHeader(code)
}

func (e *exchange) Write(p []byte) (int, error) {
	if !e.wroteHeader {
		e.WriteHeader(http.StatusOK)
	}
	if e.held {
		e.body = append(e.body, p...)
		return len(p), nil
	}
	return e.ResponseWriter.Write(p)
}

// Flush flushes the writer underneath, unless a response is held.
func (e *exchange) Flush() {
	if e.held {
		return
	}
	for w := e.ResponseWriter; ; {
		switch f := w.(type) {
		case http.Flusher:
			f.Flush()
			return
		case interface{ Unwrap() http.ResponseWriter }:
			w = f.Unwrap()
		default:
			return
		}
	}
}

// Unwrap lets http.ResponseController reach the writer underneath.
func (e *exchange) Unwrap() http.ResponseWriter { return e.ResponseWriter }

// finish writes a held response: a REST error reporting UNKNOWN, written
// while the request was being decoded, is a request vanguard could not
// decode, so it is sent as INVALID_ARGUMENT, 400. Anything else held (a
// Connect error, whose code is a string) is sent as it was.
func (e *exchange) finish() {
	if !e.held {
		return
	}
	status, body := http.StatusInternalServerError, e.body
	var st struct {
		Code    int               `json:"code"`
		Message string            `json:"message"`
		Details []json.RawMessage `json:"details"`
	}
	if json.Unmarshal(e.body, &st) == nil && st.Code == int(connect.CodeUnknown) {
		st.Code = int(connect.CodeInvalidArgument)
		if st.Details == nil {
			st.Details = []json.RawMessage{}
		}
		if b, err := json.Marshal(st); err == nil {
			status, body = http.StatusBadRequest, b
		}
	}
	e.ResponseWriter.Header().Del("Content-Length")
	e.ResponseWriter.WriteHeader(status)
	_, _ = e.ResponseWriter.Write(body)
}

// findExchange finds the exchange under the writers vanguard wrapped it in.
func findExchange(w http.ResponseWriter) *exchange {
	for {
		switch t := w.(type) {
		case *exchange:
			return t
		case interface{ Unwrap() http.ResponseWriter }:
			w = t.Unwrap()
		default:
			return nil
		}
	}
}

// jsonCodec is vanguard's JSON codec with decoding failures marked as the
// client's: the transcoder decodes JSON only from clients (the upstream
// speaks the binary codec), so such a failure is always a bad request.
type jsonCodec struct {
	*vanguard.JSONCodec
}

var _ vanguard.RESTCodec = jsonCodec{}

func newJSONCodec(res vanguard.TypeResolver) vanguard.Codec {
	return jsonCodec{vanguard.NewJSONCodec(res)}
}

func (c jsonCodec) Unmarshal(b []byte, msg proto.Message) error {
	if err := c.JSONCodec.Unmarshal(b, msg); err != nil {
		return connect.NewError(connect.CodeInvalidArgument, err)
	}
	return nil
}

func (c jsonCodec) UnmarshalField(b []byte, msg proto.Message, field protoreflect.FieldDescriptor) error {
	if err := c.JSONCodec.UnmarshalField(b, msg, field); err != nil {
		return connect.NewError(connect.CodeInvalidArgument, err)
	}
	return nil
}
