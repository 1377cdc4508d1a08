package grpctest_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strconv"
	"testing"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/meridian-platform/meridian/internal/grpctest"
	"github.com/meridian-platform/meridian/internal/grpctest/echopb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestSayAnswersWithNameAndSubject(t *testing.T) {
	a, b := grpctest.Start(t, "a"), grpctest.Start(t, "b")
	if a.Addr() == b.Addr() {
		t.Fatalf("both servers at %s", a.Addr())
	}
	for _, s := range []*grpctest.Server{a, b} {
		ctx := metadata.AppendToOutgoingContext(context.Background(), grpctest.SubjectKey, "user-7")
		var hdr metadata.MD
		resp, err := s.Client().Say(ctx, &echopb.SayRequest{Text: "hello"}, grpc.Header(&hdr))
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetText() != "hello" || resp.GetReply().GetServer() != s.Name() || resp.GetReply().GetSubject() != "user-7" {
			t.Errorf("%s: Say = %v", s.Name(), resp)
		}
		if got := hdr.Get("x-echo-server"); len(got) != 1 || got[0] != s.Name() {
			t.Errorf("%s: header x-echo-server = %q", s.Name(), got)
		}
	}
}

func TestSayWithoutSubject(t *testing.T) {
	s := grpctest.Start(t, "a")
	resp, err := s.Client().Say(context.Background(), &echopb.SayRequest{Text: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetReply().GetSubject() != "" {
		t.Errorf("subject = %q, want empty", resp.GetReply().GetSubject())
	}
}

func TestCountStreamsAndEndsWithTrailer(t *testing.T) {
	s := grpctest.Start(t, "a")
	for _, tc := range []struct {
		name string
		n    int32
	}{{"none", 0}, {"one", 1}, {"many", 50}} {
		t.Run(tc.name, func(t *testing.T) {
			stream, err := s.Client().Count(context.Background(), &echopb.CountRequest{N: tc.n})
			if err != nil {
				t.Fatal(err)
			}
			var got int32
			for {
				m, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				got++
				if m.GetI() != got || m.GetReply().GetServer() != "a" {
					t.Fatalf("message %d = %v", got, m)
				}
			}
			if got != tc.n {
				t.Errorf("received %d messages, want %d", got, tc.n)
			}
			if tr := stream.Trailer().Get("x-echo-count"); len(tr) != 1 || tr[0] != strconv.Itoa(int(tc.n)) {
				t.Errorf("trailer x-echo-count = %q, want %d", tr, tc.n)
			}
		})
	}
}

func TestCountRefusesOutOfRange(t *testing.T) {
	s := grpctest.Start(t, "a")
	for _, n := range []int32{-1, grpctest.MaxCount + 1} {
		stream, err := s.Client().Count(context.Background(), &echopb.CountRequest{N: n})
		if err == nil {
			_, err = stream.Recv()
		}
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("Count(%d) = %v, want InvalidArgument", n, err)
		}
	}
}

func TestFailEndsWithTheCodeAsked(t *testing.T) {
	s := grpctest.Start(t, "a")
	c := s.Client()
	for _, tc := range []struct {
		name string
		req  *echopb.FailRequest
		want codes.Code
		msg  string
	}{
		{"ok answers", &echopb.FailRequest{Code: 0}, codes.OK, ""},
		{"not found", &echopb.FailRequest{Code: int32(codes.NotFound)}, codes.NotFound, "failed as asked: NotFound"},
		{"own message", &echopb.FailRequest{Code: int32(codes.Unavailable), Message: "down"}, codes.Unavailable, "down"},
		{"last code", &echopb.FailRequest{Code: int32(codes.Unauthenticated)}, codes.Unauthenticated, "failed as asked: Unauthenticated"},
		{"not a code", &echopb.FailRequest{Code: 17}, codes.InvalidArgument, "code: 17 is not a gRPC status code (0-16)"},
		{"negative", &echopb.FailRequest{Code: -1}, codes.InvalidArgument, "code: -1 is not a gRPC status code (0-16)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := c.Fail(context.Background(), tc.req)
			st := status.Convert(err)
			if st.Code() != tc.want || st.Message() != tc.msg {
				t.Fatalf("Fail = %v, want %s %q", err, tc.want, tc.msg)
			}
			if tc.want == codes.OK && resp.GetReply().GetServer() != "a" {
				t.Errorf("Fail(OK) = %v", resp)
			}
		})
	}
}

// TestDescriptorSetMatchesGeneratedCode guards against echo.binpb and echopb
// drifting apart: both come from one `go generate`, and a set that lost its
// imports would be useless to a gateway.
func TestDescriptorSetMatchesGeneratedCode(t *testing.T) {
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(grpctest.DescriptorSet, &set); err != nil {
		t.Fatal(err)
	}
	files, err := protodesc.NewFiles(&set)
	if err != nil {
		t.Fatalf("the set does not stand alone: %v", err)
	}
	for _, path := range []string{
		"google/protobuf/descriptor.proto",
		"google/api/http.proto",
		"google/api/annotations.proto",
		"meridian/test/echo/v1/echo.proto",
	} {
		if _, err := files.FindFileByPath(path); err != nil {
			t.Errorf("%s: %v", path, err)
		}
	}
	d, err := files.FindDescriptorByName(grpctest.ServiceName)
	if err != nil {
		t.Fatal(err)
	}
	if n := d.(protoreflect.ServiceDescriptor).Methods().Len(); n != 3 {
		t.Errorf("%s has %d methods, want 3", grpctest.ServiceName, n)
	}

	inSet, _ := files.FindFileByPath("meridian/test/echo/v1/echo.proto")
	compiled := protodesc.ToFileDescriptorProto(echopb.File_meridian_test_echo_v1_echo_proto)
	if !proto.Equal(protodesc.ToFileDescriptorProto(inSet), compiled) {
		t.Error("echo.binpb and echopb differ: run go generate ./internal/grpctest")
	}
}

func TestWriteDescriptorSet(t *testing.T) {
	b, err := os.ReadFile(grpctest.WriteDescriptorSet(t))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, grpctest.DescriptorSet) {
		t.Error("the written file differs from DescriptorSet")
	}
}
