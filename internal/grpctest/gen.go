//go:build ignore

// gen regenerates echopb and echo.binpb from the .proto source:
//
//	go generate ./internal/grpctest
//
// It needs protoc, protoc-gen-go and protoc-gen-go-grpc on PATH; building and
// testing need none of them, since the output is committed. The imports
// google/api/{annotations,http}.proto and google/protobuf/descriptor.proto are
// not read from disk: they are the descriptors compiled into the Go packages
// this module already depends on, handed to protoc with --descriptor_set_in,
// so the set always matches the Go types that decode it.
package main

import (
	"log"
	"os"
	"os/exec"
	"path/filepath"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/types/descriptorpb"
)

const module = "github.com/meridian-platform/meridian"

func main() {
	log.SetFlags(0)
	tmp, err := os.MkdirTemp("", "grpctest-gen")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(tmp)

	deps := &descriptorpb.FileDescriptorSet{File: []*descriptorpb.FileDescriptorProto{
		protodesc.ToFileDescriptorProto(descriptorpb.File_google_protobuf_descriptor_proto),
		protodesc.ToFileDescriptorProto(annotations.File_google_api_http_proto),
		protodesc.ToFileDescriptorProto(annotations.File_google_api_annotations_proto),
	}}
	b, err := proto.Marshal(deps)
	if err != nil {
		log.Fatal(err)
	}
	depsPath := filepath.Join(tmp, "deps.binpb")
	if err := os.WriteFile(depsPath, b, 0o644); err != nil {
		log.Fatal(err)
	}

	// go generate runs in the package directory; protoc writes by Go import
	// path under the module root, two levels up.
	root, err := filepath.Abs("../..")
	if err != nil {
		log.Fatal(err)
	}
	cmd := exec.Command("protoc",
		"--descriptor_set_in="+depsPath,
		"-I", "internal/grpctest/proto",
		"--go_out=.", "--go_opt=module="+module,
		"--go-grpc_out=.", "--go-grpc_opt=module="+module,
		"--include_imports", "--descriptor_set_out=internal/grpctest/echo.binpb",
		"meridian/test/echo/v1/echo.proto",
	)
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		log.Fatalf("protoc: %v", err)
	}
}
