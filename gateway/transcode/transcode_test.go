package transcode_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/gateway/transcode"
	"github.com/meridian-platform/meridian/internal/grpctest"
	"github.com/meridian-platform/meridian/internal/grpctest/echopb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder stands where the gateway's proxy stands and records what
// reached it before forwarding.
type recorder struct {
	next  http.Handler
	calls atomic.Int64
	mu    sync.Mutex
	last  *http.Request // a clone, without the body
	seen  *http.Request // the request itself, to check pass-through
}

func (u *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.calls.Add(1)
	u.mu.Lock()
	u.last, u.seen = r.Clone(context.Background()), r
	u.mu.Unlock()
	u.next.ServeHTTP(w, r)
}

func (u *recorder) lastRequest(t *testing.T) *http.Request {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.last == nil {
		t.Fatal("nothing reached the upstream")
	}
	return u.last
}

// h2cProxy is what the gateway's proxy does for a gRPC route: forward over
// HTTP/2 without TLS to addr, through a real network hop.
func h2cProxy(t testing.TB, addr string) *httputil.ReverseProxy {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &p}
	t.Cleanup(tr.CloseIdleConnections)
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = addr
		},
		Transport: tr,
		ErrorLog:  log.New(io.Discard, "", 0),
	}
}

// fixture is a gateway in miniature: a front server that speaks HTTP/1.1
// and h2c, transcode.New's handler, a recording h2c proxy, and a real Echo
// server behind it.
type fixture struct {
	echo  *grpctest.Server
	up    *recorder
	h     http.Handler
	front *httptest.Server
}

func start(t testing.TB, cfg transcode.Config) *fixture {
	t.Helper()
	f := &fixture{echo: grpctest.Start(t, "echo-1")}
	f.up = &recorder{next: h2cProxy(t, f.echo.Addr())}
	if cfg.DescriptorSet == "" {
		cfg.DescriptorSet = grpctest.WriteDescriptorSet(t)
	}
	h, err := transcode.New(cfg, f.up)
	if err != nil {
		t.Fatal(err)
	}
	f.h = h
	f.front = httptest.NewUnstartedServer(h)
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	f.front.Config.Protocols = &p
	f.front.Start()
	t.Cleanup(f.front.Close)
	return f
}

func (f *fixture) do(t testing.TB, method, path, contentType, body string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, f.front.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := f.front.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// jsonEq compares JSON documents by value.
func jsonEq(t *testing.T, got []byte, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("body %q is not JSON: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatal(err)
	}
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	if !bytes.Equal(gb, wb) {
		t.Errorf("body = %s, want %s", gb, wb)
	}
}

func TestRESTGetCallsUpstreamWithGRPC(t *testing.T) {
	f := start(t, transcode.Config{})
	resp, body := f.do(t, "GET", "/v1/echo/hello", "", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("content-type %q", ct)
	}
	jsonEq(t, body, `{"text":"hello","reply":{"server":"echo-1","subject":""}}`)

	// What the proxy was handed is a gRPC call, whatever the client spoke.
	up := f.up.lastRequest(t)
	if up.Method != "POST" || up.URL.Path != "/meridian.test.echo.v1.Echo/Say" {
		t.Errorf("upstream got %s %s, want POST /meridian.test.echo.v1.Echo/Say", up.Method, up.URL.Path)
	}
	if ct := up.Header.Get("Content-Type"); ct != "application/grpc" && ct != "application/grpc+proto" {
		t.Errorf("upstream content-type %q, want application/grpc", ct)
	}
	if te := up.Header.Get("Te"); te != "trailers" {
		t.Errorf("upstream te %q, want trailers", te)
	}
	// Response metadata comes back as headers.
	if got := resp.Header.Get("X-Echo-Server"); got != "echo-1" {
		t.Errorf("header x-echo-server = %q", got)
	}
}

func TestRESTBindings(t *testing.T) {
	f := start(t, transcode.Config{})
	for _, tc := range []struct {
		name, method, path, body string
		want                     string
	}{
		{"path variable", "GET", "/v1/echo/hello", "", `{"text":"hello","reply":{"server":"echo-1","subject":""}}`},
		{"escaped path variable", "GET", "/v1/echo/a%20b", "", `{"text":"a b","reply":{"server":"echo-1","subject":""}}`},
		{"body binding", "POST", "/v1/echo", `{"text":"from the body"}`, `{"text":"from the body","reply":{"server":"echo-1","subject":""}}`},
		{"query parameter", "POST", "/v1/echo?text=q", `{}`, `{"text":"q","reply":{"server":"echo-1","subject":""}}`},
		{"empty message", "POST", "/v1/fail", `{}`, `{"reply":{"server":"echo-1","subject":""}}`},
		{"no body is an empty message", "POST", "/v1/fail", "", `{"reply":{"server":"echo-1","subject":""}}`},
		// protojson with DiscardUnknown, vanguard's default: a client may
		// send fields a newer version of the API knows.
		{"unknown field ignored", "POST", "/v1/echo", `{"text":"t","later":1}`, `{"text":"t","reply":{"server":"echo-1","subject":""}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ct := ""
			if strings.HasPrefix(tc.body, "{") {
				ct = "application/json"
			}
			resp, body := f.do(t, tc.method, tc.path, ct, tc.body)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			jsonEq(t, body, tc.want)
		})
	}
}

func TestBadRequestsDoNotReachUpstream(t *testing.T) {
	f := start(t, transcode.Config{})
	for _, tc := range []struct {
		name, method, path, ct, body string
		status                       int
	}{
		{"unknown path", "GET", "/v1/nothing/here", "", "", http.StatusNotFound},
		{"unknown method path", "GET", "/meridian.test.echo.v1.Echo/Nope", "", "", http.StatusNotFound},
		{"wrong verb", "DELETE", "/v1/echo/x", "", "", http.StatusMethodNotAllowed},
		{"not JSON", "POST", "/v1/echo", "application/json", "{", http.StatusBadRequest},
		{"field of the wrong type", "POST", "/v1/fail", "application/json", `{"code":"five"}`, http.StatusBadRequest},
		{"unknown query parameter", "GET", "/v1/echo/x?nope=1", "", "", http.StatusBadRequest},
		{"body where none is bound", "GET", "/v1/echo/x", "application/json", `{"text":"y"}`, http.StatusBadRequest},
		{"not JSON content", "POST", "/v1/echo", "text/plain", "hi", http.StatusUnsupportedMediaType},
		{"over MaxMessageBytes", "POST", "/v1/echo", "application/json", `{"text":"` + strings.Repeat("x", transcode.MaxMessageBytes) + `"}`, http.StatusTooManyRequests},
		// An RPC protocol's framing error, which vanguard leaves to the
		// handler to find.
		{"truncated gRPC-Web frame", "POST", "/meridian.test.echo.v1.Echo/Say", "application/grpc-web+proto", "\x00\x00\x00\x00\x09ab", http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := f.up.calls.Load()
			resp, body := f.do(t, tc.method, tc.path, tc.ct, tc.body)
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			switch tc.status {
			case http.StatusBadRequest, http.StatusTooManyRequests:
				var st struct{ Code codes.Code }
				want := map[int]codes.Code{400: codes.InvalidArgument, 429: codes.ResourceExhausted}[tc.status]
				if err := json.Unmarshal(body, &st); err != nil || st.Code != want {
					t.Errorf("body %.200s, want a google.rpc.Status with code %d", body, want)
				}
			case http.StatusOK: // gRPC-Web: the status is in the headers
				if got := resp.Header.Get("Grpc-Status"); got != "3" {
					t.Errorf("grpc-status %q, want 3 (InvalidArgument)", got)
				}
			}
			if n := f.up.calls.Load() - before; n != 0 {
				t.Errorf("upstream called %d times", n)
			}
		})
	}
}

// TestRESTServerStreaming pins what a REST client sees for a
// server-streaming method: vanguard refuses it (415) before calling the
// upstream, as it streams over REST only google.api.HttpBody responses.
// The same method is served over Connect streaming; see
// TestConnectServerStreaming.
func TestRESTServerStreaming(t *testing.T) {
	f := start(t, transcode.Config{})
	resp, body := f.do(t, "GET", "/v1/count/3", "", "")
	if resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("status %d, want 415: %s", resp.StatusCode, body)
	}
	if !strings.Contains(string(body), "stream type server not supported with REST protocol") {
		t.Errorf("body %q", body)
	}
	if n := f.up.calls.Load(); n != 0 {
		t.Errorf("upstream called %d times", n)
	}
}

func TestRESTErrorsMapToHTTPStatus(t *testing.T) {
	f := start(t, transcode.Config{})
	for _, tc := range []struct {
		code codes.Code
		http int
	}{
		{codes.Canceled, 499},
		{codes.Unknown, http.StatusInternalServerError},
		{codes.InvalidArgument, http.StatusBadRequest},
		{codes.DeadlineExceeded, http.StatusGatewayTimeout},
		{codes.NotFound, http.StatusNotFound},
		{codes.AlreadyExists, http.StatusConflict},
		{codes.PermissionDenied, http.StatusForbidden},
		{codes.ResourceExhausted, http.StatusTooManyRequests},
		{codes.FailedPrecondition, http.StatusBadRequest},
		{codes.Aborted, http.StatusConflict},
		{codes.OutOfRange, http.StatusBadRequest},
		{codes.Unimplemented, http.StatusNotImplemented},
		{codes.Internal, http.StatusInternalServerError},
		{codes.Unavailable, http.StatusServiceUnavailable},
		{codes.DataLoss, http.StatusInternalServerError},
		{codes.Unauthenticated, http.StatusUnauthorized},
	} {
		t.Run(tc.code.String(), func(t *testing.T) {
			req, _ := json.Marshal(map[string]any{"code": int(tc.code), "message": "no " + tc.code.String()})
			resp, body := f.do(t, "POST", "/v1/fail", "application/json", string(req))
			if resp.StatusCode != tc.http {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.http)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("content-type %q", ct)
			}
			var st struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			}
			if err := json.Unmarshal(body, &st); err != nil {
				t.Fatalf("error body %q: %v", body, err)
			}
			if st.Code != int(tc.code) || st.Message != "no "+tc.code.String() {
				t.Errorf("error body %s", body)
			}
		})
	}
}

func TestSubjectReachesUpstreamAsMetadata(t *testing.T) {
	f := start(t, transcode.Config{})
	resp, body := f.do(t, "GET", "/v1/echo/hi", "", "", "X-Meridian-Subject", "user-42")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	jsonEq(t, body, `{"text":"hi","reply":{"server":"echo-1","subject":"user-42"}}`)

	ctx := metadata.AppendToOutgoingContext(context.Background(), grpctest.SubjectKey, "user-43")
	r, err := grpctest.Dial(t, f.front.Listener.Addr().String()).Say(ctx, &echopb.SayRequest{Text: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.GetReply().GetSubject(); got != "user-43" {
		t.Errorf("gRPC subject = %q, want user-43", got)
	}
}

// TestGRPCPassesThrough calls through the handler with a gRPC client over
// h2c: unary, streaming, errors, headers and trailers arrive as the server
// sent them.
func TestGRPCPassesThrough(t *testing.T) {
	f := start(t, transcode.Config{})
	c := grpctest.Dial(t, f.front.Listener.Addr().String())
	ctx := context.Background()

	var hdr metadata.MD
	r, err := c.Say(ctx, &echopb.SayRequest{Text: "direct"}, grpc.Header(&hdr))
	if err != nil {
		t.Fatal(err)
	}
	if r.GetText() != "direct" || r.GetReply().GetServer() != "echo-1" {
		t.Errorf("Say = %v", r)
	}
	if got := hdr.Get("x-echo-server"); len(got) != 1 || got[0] != "echo-1" {
		t.Errorf("header x-echo-server = %q", got)
	}
	up := f.up.lastRequest(t)
	if up.URL.Path != "/meridian.test.echo.v1.Echo/Say" || up.Header.Get("Content-Type") != "application/grpc" {
		t.Errorf("upstream got %s with %q", up.URL.Path, up.Header.Get("Content-Type"))
	}

	stream, err := c.Count(ctx, &echopb.CountRequest{N: 100})
	if err != nil {
		t.Fatal(err)
	}
	var n int32
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if n++; m.GetI() != n {
			t.Fatalf("message %d has i=%d", n, m.GetI())
		}
	}
	if n != 100 {
		t.Errorf("received %d messages, want 100", n)
	}
	if got := stream.Trailer().Get("x-echo-count"); len(got) != 1 || got[0] != "100" {
		t.Errorf("trailer x-echo-count = %q, want 100", got)
	}

	_, err = c.Fail(ctx, &echopb.FailRequest{Code: int32(codes.NotFound), Message: "gone"})
	if st := status.Convert(err); st.Code() != codes.NotFound || st.Message() != "gone" {
		t.Errorf("Fail = %v, want NotFound gone", err)
	}
}

// TestGRPCRequestIsHandedOverUntouched checks the contract the gateway
// relies on: a gRPC request reaches upstream as the very request that
// arrived, for any service, listed or not.
func TestGRPCRequestIsHandedOverUntouched(t *testing.T) {
	up := &recorder{next: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Grpc-Status", "0")
	})}
	h, err := transcode.New(transcode.Config{DescriptorSet: grpctest.WriteDescriptorSet(t)}, up)
	if err != nil {
		t.Fatal(err)
	}
	for _, ct := range []string{"application/grpc", "application/grpc+proto", "Application/GRPC;charset=utf-8"} {
		for _, path := range []string{"/meridian.test.echo.v1.Echo/Say", "/some.other.v1.Service/Method"} {
			req := httptest.NewRequest("POST", path, strings.NewReader("\x00\x00\x00\x00\x00"))
			req.Header.Set("Content-Type", ct)
			req.Header.Set("Te", "trailers")
			h.ServeHTTP(httptest.NewRecorder(), req)
			up.mu.Lock()
			seen := up.seen
			up.mu.Unlock()
			if seen != req {
				t.Errorf("%s %s: upstream got another request", ct, path)
			}
		}
	}
	// gRPC-Web is transcoded, not passed through.
	calls := up.calls.Load()
	req := httptest.NewRequest("POST", "/some.other.v1.Service/Method", strings.NewReader(""))
	req.Header.Set("Content-Type", "application/grpc-web+proto")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if up.calls.Load() != calls || w.Code != http.StatusNotFound {
		t.Errorf("gRPC-Web for an unknown service: status %d, upstream called %d times", w.Code, up.calls.Load()-calls)
	}
}

// envelope frames a message as Connect streaming and gRPC-Web do: a flags
// byte, a big-endian length, the bytes.
func envelope(flags byte, msg []byte) []byte {
	b := make([]byte, 5, 5+len(msg))
	b[0] = flags
	binary.BigEndian.PutUint32(b[1:], uint32(len(msg)))
	return append(b, msg...)
}

// frames splits a body into envelopes.
func frames(t *testing.T, body []byte) (flags []byte, msgs [][]byte) {
	t.Helper()
	for len(body) > 0 {
		if len(body) < 5 {
			t.Fatalf("truncated frame header %q", body)
		}
		n := binary.BigEndian.Uint32(body[1:5])
		if uint32(len(body)-5) < n {
			t.Fatalf("truncated frame of %d bytes", n)
		}
		flags = append(flags, body[0])
		msgs = append(msgs, body[5:5+n])
		body = body[5+n:]
	}
	return flags, msgs
}

// TestConnectServerStreaming is how a client without gRPC gets the stream
// REST refuses: Connect's streaming protocol with JSON, on the RPC path.
func TestConnectServerStreaming(t *testing.T) {
	f := start(t, transcode.Config{})
	resp, body := f.do(t, "POST", "/meridian.test.echo.v1.Echo/Count", "application/connect+json",
		string(envelope(0, []byte(`{"n":3}`))), "X-Meridian-Subject", "user-1")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	flags, msgs := frames(t, body)
	if len(msgs) != 4 || !bytes.Equal(flags, []byte{0, 0, 0, 2}) {
		t.Fatalf("frames %v: %q", flags, msgs)
	}
	for i, m := range msgs[:3] {
		jsonEq(t, m, `{"i":`+string(rune('1'+i))+`,"reply":{"server":"echo-1","subject":"user-1"}}`)
	}
	// The end-of-stream frame carries the trailers.
	jsonEq(t, msgs[3], `{"metadata":{"X-Echo-Count":["3"]}}`)
}

func TestConnectAndGRPCWebUnary(t *testing.T) {
	f := start(t, transcode.Config{})
	t.Run("connect", func(t *testing.T) {
		resp, body := f.do(t, "POST", "/meridian.test.echo.v1.Echo/Say", "application/json", `{"text":"c"}`, "Connect-Protocol-Version", "1")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		jsonEq(t, body, `{"text":"c","reply":{"server":"echo-1","subject":""}}`)
	})
	t.Run("connect bad JSON", func(t *testing.T) {
		calls := f.up.calls.Load()
		resp, body := f.do(t, "POST", "/meridian.test.echo.v1.Echo/Say", "application/json", `{"text":`, "Connect-Protocol-Version", "1")
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `"code":"invalid_argument"`) {
			t.Errorf("status %d: %s, want 400 invalid_argument", resp.StatusCode, body)
		}
		if f.up.calls.Load() != calls {
			t.Error("the upstream was called")
		}
	})
	t.Run("grpc-web", func(t *testing.T) {
		req, _ := proto.Marshal(&echopb.SayRequest{Text: "w"})
		resp, body := f.do(t, "POST", "/meridian.test.echo.v1.Echo/Say", "application/grpc-web+proto", string(envelope(0, req)))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		flags, msgs := frames(t, body)
		if len(msgs) != 2 || flags[0] != 0 || flags[1] != 0x80 {
			t.Fatalf("frames %v: %q", flags, msgs)
		}
		var got echopb.SayResponse
		if err := proto.Unmarshal(msgs[0], &got); err != nil {
			t.Fatal(err)
		}
		if got.GetText() != "w" || got.GetReply().GetServer() != "echo-1" {
			t.Errorf("response %v", &got)
		}
		if !strings.Contains(strings.ToLower(string(msgs[1])), "grpc-status: 0") {
			t.Errorf("trailer frame %q", msgs[1])
		}
	})
}

func TestUpstreamDownIsUnavailable(t *testing.T) {
	h, err := transcode.New(transcode.Config{DescriptorSet: grpctest.WriteDescriptorSet(t)},
		h2cProxy(t, "127.0.0.1:1")) // nothing listens on port 1
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/v1/echo/x", nil))
	if w.Code != http.StatusServiceUnavailable {
		t.Errorf("status %d, want 503: %s", w.Code, w.Body)
	}
}

// twoServiceSet is Echo's set plus a file with two more services: Other,
// with one method, and Empty, with none.
func twoServiceSet(t *testing.T) string {
	t.Helper()
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(grpctest.DescriptorSet, &set); err != nil {
		t.Fatal(err)
	}
	set.File = append(set.File, otherFile("/v1/ping"))
	return writeSet(t, &set)
}

func otherFile(pingPath string) *descriptorpb.FileDescriptorProto {
	opts := &descriptorpb.MethodOptions{}
	proto.SetExtension(opts, annotations.E_Http, &annotations.HttpRule{Pattern: &annotations.HttpRule_Get{Get: pingPath}})
	return &descriptorpb.FileDescriptorProto{
		Name:       proto.String("meridian/test/other/v1/other.proto"),
		Package:    proto.String("meridian.test.other.v1"),
		Dependency: []string{"google/api/annotations.proto"},
		Syntax:     proto.String("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{
			{Name: proto.String("PingRequest")},
			{Name: proto.String("PingResponse")},
		},
		Service: []*descriptorpb.ServiceDescriptorProto{
			{Name: proto.String("Other"), Method: []*descriptorpb.MethodDescriptorProto{{
				Name:       proto.String("Ping"),
				InputType:  proto.String(".meridian.test.other.v1.PingRequest"),
				OutputType: proto.String(".meridian.test.other.v1.PingResponse"),
				Options:    opts,
			}}},
			{Name: proto.String("Empty")},
		},
	}
}

func writeSet(t *testing.T, set *descriptorpb.FileDescriptorSet) string {
	t.Helper()
	b, err := proto.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, b)
}

func writeFile(t *testing.T, b []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "set.binpb")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestServicesSelectWhatIsExposed(t *testing.T) {
	set := twoServiceSet(t)
	for _, tc := range []struct {
		name     string
		services []string
		ping     int // the status of GET /v1/ping
	}{
		// Echo's server does not implement Other: the call reaches it.
		{"empty exposes every service with methods", nil, http.StatusNotImplemented},
		{"listed", []string{"meridian.test.echo.v1.Echo", "meridian.test.other.v1.Other"}, http.StatusNotImplemented},
		{"not listed", []string{"meridian.test.echo.v1.Echo"}, http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := start(t, transcode.Config{DescriptorSet: set, Services: tc.services})
			if resp, body := f.do(t, "GET", "/v1/echo/x", "", ""); resp.StatusCode != http.StatusOK {
				t.Errorf("echo: status %d: %s", resp.StatusCode, body)
			}
			if resp, body := f.do(t, "GET", "/v1/ping", "", ""); resp.StatusCode != tc.ping {
				t.Errorf("ping: status %d, want %d: %s", resp.StatusCode, tc.ping, body)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   transcode.Config
		field string // "" for valid
		msg   string
	}{
		{"valid", transcode.Config{DescriptorSet: "api.binpb"}, "", ""},
		{"valid with services", transcode.Config{DescriptorSet: "api.binpb", Services: []string{"a.v1.A", "B"}}, "", ""},
		{"no descriptor set", transcode.Config{}, "descriptor_set", "is required"},
		{"empty service", transcode.Config{DescriptorSet: "x", Services: []string{"a.A", ""}}, "services[1]", `"" is not a fully-qualified service name`},
		{"path as service", transcode.Config{DescriptorSet: "x", Services: []string{"/a.A/Method"}}, "services[0]", "is not a fully-qualified service name"},
		{"duplicate", transcode.Config{DescriptorSet: "x", Services: []string{"a.A", "b.B", "a.A"}}, "services[2]", `"a.A" is also services[0]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkFieldError(t, tc.cfg.Validate(), tc.field, tc.msg)
		})
	}
}

func checkFieldError(t *testing.T, err error, field, msg string) {
	t.Helper()
	if field == "" {
		if err != nil {
			t.Fatalf("err = %v, want nil", err)
		}
		return
	}
	var e *meridian.Error
	if !errors.As(err, &e) {
		t.Fatalf("err = %v (%T), want a *meridian.Error", err, err)
	}
	if e.Code != meridian.CodeInvalid || e.Field != field || !strings.Contains(e.Message, msg) {
		t.Errorf("err = %s %q: %q, want %s %q containing %q", e.Code, e.Field, e.Message, meridian.CodeInvalid, field, msg)
	}
}

func TestNewRejectsBadSchemas(t *testing.T) {
	echoOnly := func(t *testing.T) string {
		var set descriptorpb.FileDescriptorSet
		if err := proto.Unmarshal(grpctest.DescriptorSet, &set); err != nil {
			t.Fatal(err)
		}
		for _, f := range set.File {
			if f.GetName() == "meridian/test/echo/v1/echo.proto" {
				return writeSet(t, &descriptorpb.FileDescriptorSet{File: []*descriptorpb.FileDescriptorProto{f}})
			}
		}
		t.Fatal("echo.proto is not in the set")
		return ""
	}
	withFile := func(f *descriptorpb.FileDescriptorProto) func(t *testing.T) string {
		return func(t *testing.T) string {
			var set descriptorpb.FileDescriptorSet
			if err := proto.Unmarshal(grpctest.DescriptorSet, &set); err != nil {
				t.Fatal(err)
			}
			set.File = append(set.File, f)
			return writeSet(t, &set)
		}
	}
	echoSet := func(t *testing.T) string { return grpctest.WriteDescriptorSet(t) }
	for _, tc := range []struct {
		name     string
		set      func(t *testing.T) string
		services []string
		field    string
		msg      string
		notExist bool
	}{
		{"missing file", func(t *testing.T) string { return filepath.Join(t.TempDir(), "nope.binpb") }, nil,
			"descriptor_set", "does not exist", true},
		{"not a descriptor set", func(t *testing.T) string { return writeFile(t, []byte("syntax = \"proto3\";\n")) }, nil,
			"descriptor_set", "is not a binary FileDescriptorSet", false},
		{"empty file", func(t *testing.T) string { return writeFile(t, nil) }, nil,
			"descriptor_set", "holds no files", false},
		{"built without imports", echoOnly, nil,
			"descriptor_set", "meridian/test/echo/v1/echo.proto imports google/api/annotations.proto, which the set lacks", false},
		{"inconsistent", withFile(&descriptorpb.FileDescriptorProto{
			Name: proto.String("bad.proto"), Package: proto.String("bad"), Syntax: proto.String("proto3"),
			MessageType: []*descriptorpb.DescriptorProto{{Name: proto.String("M"), Field: []*descriptorpb.FieldDescriptorProto{{
				Name: proto.String("f"), Number: proto.Int32(1), Type: descriptorpb.FieldDescriptorProto_TYPE_MESSAGE.Enum(),
				TypeName: proto.String(".bad.Missing"), Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(),
			}}}},
		}), nil, "descriptor_set", "is not a consistent set of files", false},
		{"no services", func(t *testing.T) string {
			var set descriptorpb.FileDescriptorSet
			_ = proto.Unmarshal(grpctest.DescriptorSet, &set)
			set.File = set.File[:len(set.File)-1] // the imports, without echo.proto
			return writeSet(t, &set)
		}, nil, "descriptor_set", "has no service with methods", false},
		{"bad http rule", withFile(otherFile("v1/no-leading-slash")), nil,
			"descriptor_set", "cannot be transcoded", false},
		{"service not in set", echoSet, []string{"meridian.test.echo.v1.Echo", "acme.orders.v1.Orders"},
			"services[1]", `"acme.orders.v1.Orders" is not in`, false},
		{"a message, not a service", echoSet, []string{"meridian.test.echo.v1.SayRequest"},
			"services[0]", "is not a service in", false},
		{"service without methods", withFile(otherFile("/v1/ping")), []string{"meridian.test.other.v1.Empty"},
			"services[0]", "has no methods", false},
		{"invalid config", echoSet, []string{"a..b"}, "services[0]", "is not a fully-qualified service name", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := transcode.New(transcode.Config{DescriptorSet: tc.set(t), Services: tc.services}, http.NotFoundHandler())
			if h != nil {
				t.Error("a handler came with the error")
			}
			checkFieldError(t, err, tc.field, tc.msg)
			if tc.notExist && !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("err = %v, want one that is fs.ErrNotExist", err)
			}
		})
	}
}

// BenchmarkSay compares one Say call made four ways, all to the same real
// server over loopback. The figures include the server's and the proxy's
// work, since all of it runs in this process. BenchmarkTranscodeOnly
// isolates the transcoder's own share.
func BenchmarkSay(b *testing.B) {
	f := start(b, transcode.Config{})
	ctx := context.Background()
	b.Run("grpc-direct", func(b *testing.B) {
		c := f.echo.Client()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Say(ctx, &echopb.SayRequest{Text: "hello"}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("grpc-through-handler", func(b *testing.B) {
		c := grpctest.Dial(b, f.front.Listener.Addr().String())
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Say(ctx, &echopb.SayRequest{Text: "hello"}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("rest-get-transcoded", func(b *testing.B) {
		client := f.front.Client()
		b.ReportAllocs()
		for b.Loop() {
			resp, err := client.Get(f.front.URL + "/v1/echo/hello")
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
	})
	b.Run("rest-post-transcoded", func(b *testing.B) {
		client := f.front.Client()
		b.ReportAllocs()
		for b.Loop() {
			resp, err := client.Post(f.front.URL+"/v1/echo", "application/json", strings.NewReader(`{"text":"hello"}`))
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
	})
}

// BenchmarkTranscodeOnly is the handler alone, in process: a REST GET in,
// a canned gRPC answer from the upstream, JSON out. It is the cost
// transcoding adds to a proxied call.
func BenchmarkTranscodeOnly(b *testing.B) {
	msg, err := proto.Marshal(&echopb.SayResponse{Text: "hello", Reply: &echopb.Reply{Server: "canned"}})
	if err != nil {
		b.Fatal(err)
	}
	frame := envelope(0, msg)
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/grpc")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(frame)
		w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
	})
	h, err := transcode.New(transcode.Config{DescriptorSet: grpctest.WriteDescriptorSet(b)}, upstream)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", "/v1/echo/hello", nil))
		if w.Code != http.StatusOK {
			b.Fatalf("status %d: %s", w.Code, w.Body)
		}
	}
}
