// Package grpctest starts a real gRPC server for tests: the Echo service of
// echo.proto, on a random loopback port, speaking plain HTTP/2 (h2c) as the
// services in the mesh do, stopped when the test ends.
//
// Echo is small on purpose but covers what a gateway must carry: a unary
// method with two HTTP bindings (a path variable and a JSON body), a
// server-streaming method, and a method that ends with any status code the
// caller names. Every response says which server answered (the name given to
// Start, so a test with several instances can tell them apart) and echoes the
// request metadata "x-meridian-subject", so a test sees which headers reached
// the upstream. Say and Fail send the header "x-echo-server"; Count ends with
// the trailer "x-echo-count".
//
// DescriptorSet is echo.proto compiled with its imports, as `buf build -o` or
// `protoc --include_imports --descriptor_set_out` produce it: what a gateway
// loads to transcode REST to the service without its generated Go code.
// echopb, echo.binpb and the .proto source are regenerated together by
// `go generate ./internal/grpctest` (see gen.go).
package grpctest

//go:generate go run gen.go

import (
	"context"
	_ "embed"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meridian-platform/meridian/internal/grpctest/echopb"
)

// DescriptorSet is the binary FileDescriptorSet of echo.proto and every file
// it imports (google/api/annotations.proto, google/api/http.proto,
// google/protobuf/descriptor.proto).
//
//go:embed echo.binpb
var DescriptorSet []byte

// ServiceName is the Echo service's fully-qualified name.
const ServiceName = "meridian.test.echo.v1.Echo"

// SubjectKey is the request metadata key the server echoes back as
// Reply.subject.
const SubjectKey = "x-meridian-subject"

// MaxCount is the most messages Count sends; more is InvalidArgument.
const MaxCount = 10000

// stopGrace bounds GracefulStop at cleanup: a test that leaves a stream
// open still ends, its RPCs cut off by Stop.
const stopGrace = 5 * time.Second

// Server is a running Echo server.
type Server struct {
	t    testing.TB
	name string
	addr string
}

// Start starts an Echo server named name on 127.0.0.1 at a random port. It
// is listening when Start returns and is stopped (GracefulStop, then Stop
// after a few seconds) when the test ends.
func Start(t testing.TB, name string) *Server {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	echopb.RegisterEchoServer(srv, &echo{name: name})
	served := make(chan struct{})
	go func() {
		defer close(served)
		// Serve returns nil after (Graceful)Stop; anything else is a
		// listener failure the test should hear about.
		if err := srv.Serve(lis); err != nil {
			t.Errorf("grpctest %s: serve: %v", name, err)
		}
	}()
	t.Cleanup(func() {
		stopped := make(chan struct{})
		go func() { srv.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(stopGrace):
			srv.Stop()
			<-stopped
		}
		<-served
	})
	return &Server{t: t, name: name, addr: lis.Addr().String()}
}

// Addr is the server's "127.0.0.1:port".
func (s *Server) Addr() string { return s.addr }

// Name is the name the server was started with; responses carry it.
func (s *Server) Name() string { return s.name }

// Client dials the server; the connection is closed when the test that
// started the server ends.
func (s *Server) Client() echopb.EchoClient { return Dial(s.t, s.addr) }

// Dial returns an Echo client for addr over plain HTTP/2, for calling the
// service through something in front of it (a gateway, a proxy). The
// connection is closed when the test ends.
func Dial(t testing.TB, addr string) echopb.EchoClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return echopb.NewEchoClient(conn)
}

// WriteDescriptorSet writes DescriptorSet to a file in the test's temp dir
// and returns its path, for code that loads a set from disk.
func WriteDescriptorSet(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "echo.binpb")
	if err := os.WriteFile(path, DescriptorSet, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// echo implements the service.
type echo struct {
	echopb.UnimplementedEchoServer
	name string
}

var _ echopb.EchoServer = (*echo)(nil)

func (e *echo) reply(ctx context.Context) *echopb.Reply {
	r := &echopb.Reply{Server: e.name}
	if v := metadata.ValueFromIncomingContext(ctx, SubjectKey); len(v) > 0 {
		r.Subject = v[0]
	}
	return r
}

func (e *echo) Say(ctx context.Context, req *echopb.SayRequest) (*echopb.SayResponse, error) {
	_ = grpc.SetHeader(ctx, metadata.Pairs("x-echo-server", e.name))
	return &echopb.SayResponse{Text: req.GetText(), Reply: e.reply(ctx)}, nil
}

func (e *echo) Count(req *echopb.CountRequest, stream grpc.ServerStreamingServer[echopb.CountResponse]) error {
	n := req.GetN()
	if n < 0 || n > MaxCount {
		return status.Errorf(codes.InvalidArgument, "n: %d is out of range 0-%d", n, MaxCount)
	}
	reply := e.reply(stream.Context())
	var sent int32
	// The trailer is set on every return, so a stream cut off midway still
	// tells the client how far it got.
	defer func() { stream.SetTrailer(metadata.Pairs("x-echo-count", strconv.Itoa(int(sent)))) }()
	for i := int32(1); i <= n; i++ {
		if err := stream.Send(&echopb.CountResponse{I: i, Reply: reply}); err != nil {
			return err
		}
		sent = i
	}
	return nil
}

func (e *echo) Fail(ctx context.Context, req *echopb.FailRequest) (*echopb.FailResponse, error) {
	_ = grpc.SetHeader(ctx, metadata.Pairs("x-echo-server", e.name))
	if c := req.GetCode(); c < 0 || c > int32(codes.Unauthenticated) {
		return nil, status.Errorf(codes.InvalidArgument, "code: %d is not a gRPC status code (0-16)", c)
	}
	code := codes.Code(req.GetCode())
	if code == codes.OK {
		return &echopb.FailResponse{Reply: e.reply(ctx)}, nil
	}
	msg := req.GetMessage()
	if msg == "" {
		msg = "failed as asked: " + code.String()
	}
	return nil, status.Error(code, msg)
}
