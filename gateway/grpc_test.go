package gateway

import (
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meridian-platform/meridian/internal/grpctest"
	"github.com/meridian-platform/meridian/internal/grpctest/echopb"
)

// TestGRPCThroughGateway: gRPC unary and server-streaming calls go
// through a gateway route over h2c to a real gRPC server, with status
// codes and trailers intact.
func TestGRPCThroughGateway(t *testing.T) {
	srv := grpctest.Start(t, "echo-1")
	base, _ := startGateway(t, `
routes:
  - name: echo
    match: {path_prefix: /meridian.test.echo.v1.Echo/}
    upstream: {urls: ["http://UPSTREAM1"], protocol: grpc}
`, srv.Addr())
	c := grpctest.Dial(t, strings.TrimPrefix(base, "http://"))
	ctx := context.Background()

	resp, err := c.Say(ctx, &echopb.SayRequest{Text: "hello"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Text != "hello" || resp.Reply.GetServer() != "echo-1" {
		t.Fatalf("unary: %v", resp)
	}

	var trailer metadata.MD
	st, err := c.Count(ctx, &echopb.CountRequest{N: 100})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		m, err := st.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after %d messages: %v", n, err)
		}
		n++
		if int(m.I) != n {
			t.Fatalf("message %d numbered %d", n, m.I)
		}
	}
	trailer = st.Trailer()
	if n != 100 || len(trailer.Get("x-echo-count")) == 0 {
		t.Fatalf("stream: %d messages, trailer %v", n, trailer)
	}

	_, err = c.Fail(ctx, &echopb.FailRequest{Code: int32(codes.NotFound)})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("Fail(NotFound) = %v", err)
	}
}

// TestTranscodingThroughGateway: a REST call is transcoded to gRPC by the
// route and answered as JSON; the same route also passes plain gRPC.
func TestTranscodingThroughGateway(t *testing.T) {
	srv := grpctest.Start(t, "echo-2")
	set := grpctest.WriteDescriptorSet(t)
	base, _ := startGateway(t, `
routes:
  - name: echo-rest
    match: {path_prefix: /}
    upstream: {urls: ["http://UPSTREAM1"], protocol: grpc}
    transcode: {descriptor_set: "UPSTREAM2"}
`, srv.Addr(), set)
	resp, body := get(t, base+"/v1/echo/bonjour")
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	var got struct {
		Text  string
		Reply struct{ Server string }
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil || got.Text != "bonjour" || got.Reply.Server != "echo-2" {
		t.Fatalf("%s (%v)", body, err)
	}
	c := grpctest.Dial(t, strings.TrimPrefix(base, "http://"))
	if r, err := c.Say(context.Background(), &echopb.SayRequest{Text: "plain"}); err != nil || r.Text != "plain" {
		t.Fatalf("gRPC through a transcoding route: %v %v", r, err)
	}
}
