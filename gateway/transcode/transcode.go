// Package transcode serves REST/JSON, Connect and gRPC-Web from a gRPC
// upstream: a gateway route with transcoding wraps its proxy handler in
// New's handler, and clients that cannot speak gRPC call the service by the
// google.api.http rules of its .proto.
//
// # What was chosen and why
//
// The transcoding is connectrpc.com/vanguard's. It implements the
// google.api.http rules (path templates, body and response_body, query
// parameters, additional_bindings) and turns each request into a gRPC call
// on the handler it wraps, so the upstream sees an ordinary gRPC request:
// content-type application/grpc, the path /package.Service/Method, the
// message in a length-prefixed frame, the status in trailers. It works on
// http.Handler and takes schemas as descriptors, so it sits in front of a
// reverse proxy with no generated code, which grpc-gateway cannot (it
// generates a Go handler per service, compiled into the gateway).
//
// Schemas come from a binary FileDescriptorSet file, the one format every
// toolchain writes: `buf build -o api.binpb`, or `protoc --include_imports
// --descriptor_set_out=api.binpb`. The set must hold the imports too
// (google/api/annotations.proto and what it imports): buf includes them,
// protoc needs --include_imports. Messages are built with dynamicpb from
// the set alone, even when the gateway binary happens to link the
// service's generated types, so the set a route names is the schema it
// gets; a type inside a google.protobuf.Any that the set lacks is looked up
// among the types the binary links.
//
// # Plain gRPC passes through
//
// A request whose content-type is application/grpc (or application/grpc+…)
// is handed to upstream as it came: the same *http.Request, not decoded,
// not re-framed, whichever service it names. A route with transcoding
// therefore serves gRPC clients and REST clients alike on the same
// upstream, and the gateway combines them by making New's handler the
// route's whole handler:
//
//	proxy := /* the route's proxy to the gRPC upstream, over h2c */
//	h, err := transcode.New(route.Transcode, proxy)
//	// serve every request of the route with h
//
// For that, the proxy must reach the upstream over HTTP/2 (h2c in the
// mesh) whatever protocol the client used, pass response trailers on, and
// flush each frame of a stream as it arrives (httputil.ReverseProxy does
// both for a response without Content-Length); the gateway's listener must
// accept HTTP/2 (TLS, or h2c) for gRPC clients to reach it at all. Headers
// the gateway's filters set before this handler (such as the
// authenticated x-meridian-subject) reach the upstream as gRPC metadata.
//
// # What REST clients see
//
//   - A unary method: 200 and the response message as JSON (protojson,
//     lowerCamelCase names, zero values included), or the error below.
//     Request bodies may carry fields the schema does not know (they are
//     dropped, so clients can run ahead of the server); query parameters
//     may not. An empty body is the empty message.
//   - A request that does not decode (malformed JSON, a value of the wrong
//     type, an unknown query parameter, a body where the rule binds none):
//     400 with INVALID_ARGUMENT, without calling the upstream. Vanguard
//     alone would call the upstream and answer 500 UNKNOWN; decode.go
//     says how this package prevents both.
//   - A message over MaxMessageBytes: 429 with RESOURCE_EXHAUSTED, without
//     calling the upstream.
//   - An error: the HTTP status vanguard maps the gRPC code to (NOT_FOUND
//     404, INVALID_ARGUMENT, FAILED_PRECONDITION and OUT_OF_RANGE 400,
//     UNAUTHENTICATED 401, PERMISSION_DENIED 403, ALREADY_EXISTS and
//     ABORTED 409, RESOURCE_EXHAUSTED 429, CANCELLED 499, UNIMPLEMENTED
//     501, UNAVAILABLE 503, DEADLINE_EXCEEDED 504, the rest 500) with a
//     google.rpc.Status as JSON: {"code":5,"message":"…","details":[]}.
//   - A server-streaming method: 415 Unsupported Media Type, without
//     calling the upstream. Vanguard streams over REST only when the
//     response is google.api.HttpBody (the stream is then the body's
//     bytes); for a stream of messages a client uses the Connect protocol
//     (application/connect+json) or gRPC-Web on the method's RPC path,
//     which this handler serves too.
//   - A path no rule matches: 404, without calling the upstream.
//   - An upstream that cannot be reached: whatever the proxy answers,
//     mapped as an HTTP error (httputil.ReverseProxy's 502 becomes
//     UNAVAILABLE, so 503).
//
// # Not here
//
//   - Schemas from the upstream's server reflection: the set is a file the
//     route names, so what the gateway exposes is reviewed with the route,
//     not whatever the service happens to advertise.
//   - Reloading: a changed file takes effect when the gateway rebuilds
//     the route, as any route change does.
//   - Client and bidirectional streams over REST, and server streams of
//     messages over REST (vanguard's limits, above); Connect streaming
//     carries all three, gRPC-Web server streams.
//   - Stripping a client's own x-meridian-subject: that is the gateway's
//     edge filters' job, before this handler.
package transcode

import (
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"slices"
	"strings"

	"connectrpc.com/vanguard"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/meridian-platform/meridian"
)

// MaxMessageBytes bounds one request or response message the transcoder
// buffers, as gRPC's default receive limit does; a larger one fails the
// call with RESOURCE_EXHAUSTED (429 to a REST client). It does not apply to
// plain gRPC, which passes through unread.
const MaxMessageBytes = 4 << 20

// Config says which schemas a route transcodes with: a gateway route's
// "transcode" object.
type Config struct {
	// DescriptorSet is the path of a binary FileDescriptorSet holding the
	// services and everything they import: the output of `buf build -o
	// FILE` or `protoc --include_imports --descriptor_set_out=FILE`.
	// Required. It is read once, by New; a changed file takes effect when
	// the route is built again.
	DescriptorSet string `json:"descriptor_set"`
	// Services are the fully-qualified names of the services to expose
	// ("acme.orders.v1.Orders"). Empty exposes every service in the set
	// that has at least one method.
	Services []string `json:"services,omitempty"`
}

// Validate checks the fields without reading the file; New reads it and
// reports what is wrong with its contents under the same field names.
// Errors are *meridian.Error naming "descriptor_set" or "services[i]".
func (c *Config) Validate() error {
	if c.DescriptorSet == "" {
		return meridian.FieldError("descriptor_set", "is required: the path of a binary FileDescriptorSet (buf build -o FILE, or protoc --include_imports --descriptor_set_out=FILE)")
	}
	for i, name := range c.Services {
		field := fmt.Sprintf("services[%d]", i)
		if !protoreflect.FullName(name).IsValid() {
			return meridian.FieldError(field, "%q is not a fully-qualified service name such as acme.orders.v1.Orders", name)
		}
		if j := slices.Index(c.Services, name); j < i {
			return meridian.FieldError(field, "%q is also services[%d]", name, j)
		}
	}
	return nil
}

// New returns a handler that transcodes REST/JSON, Connect and gRPC-Web
// requests for the configured services into gRPC requests on upstream,
// and hands plain gRPC requests to upstream unchanged (see the package
// doc). upstream must answer gRPC: in the gateway it is the proxy to the
// route's gRPC service. The schemas are loaded and the routes compiled
// here, once; the handler is safe for concurrent use.
func New(cfg Config, upstream http.Handler) (http.Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if upstream == nil {
		return nil, errors.New("transcode: upstream handler is nil")
	}
	files, err := loadDescriptorSet(cfg.DescriptorSet)
	if err != nil {
		return nil, err
	}
	schemas, err := selectServices(files, cfg)
	if err != nil {
		return nil, err
	}
	g := newGate(upstream, schemas)
	services := make([]*vanguard.Service, len(schemas))
	for i, sd := range schemas {
		services[i] = vanguard.NewServiceWithSchema(sd, g)
	}
	t, err := vanguard.NewTranscoder(services, vanguard.WithCodec(newJSONCodec), vanguard.WithDefaultServiceOptions(
		// The upstream speaks gRPC with the binary codec and nothing else
		// is assumed of it: identity is the one encoding every gRPC server
		// accepts, so the transcoder decompresses rather than forward a
		// compression the upstream may not have registered.
		vanguard.WithTargetProtocols(vanguard.ProtocolGRPC),
		vanguard.WithTargetCodecs(vanguard.CodecProto),
		vanguard.WithNoTargetCompression(),
		vanguard.WithTypeResolver(&resolver{set: dynamicpb.NewTypes(files)}),
		vanguard.WithMaxMessageBufferBytes(MaxMessageBytes),
	))
	if err != nil {
		// A service vanguard cannot route, such as an HTTP rule whose path
		// template does not parse or that two methods share.
		return nil, &meridian.Error{Code: meridian.CodeInvalid, Field: "descriptor_set",
			Message: fmt.Sprintf("%s cannot be transcoded", cfg.DescriptorSet), Err: err}
	}
	return &handler{grpc: upstream, transcoder: t}, nil
}

type handler struct {
	grpc       http.Handler
	transcoder *vanguard.Transcoder
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if isGRPC(r.Header.Get("Content-Type")) {
		h.grpc.ServeHTTP(w, r)
		return
	}
	ex := &exchange{ResponseWriter: w}
	h.transcoder.ServeHTTP(ex, r)
	ex.finish()
}

// isGRPC reports whether a content-type is gRPC's: "application/grpc",
// alone or followed by "+codec" or parameters, in any case. gRPC-Web
// ("application/grpc-web…") is not: the transcoder turns it into gRPC.
func isGRPC(contentType string) bool {
	const grpc = "application/grpc"
	if len(contentType) < len(grpc) || !strings.EqualFold(contentType[:len(grpc)], grpc) {
		return false
	}
	rest := contentType[len(grpc):]
	return rest == "" || rest[0] == '+' || rest[0] == ';'
}

// loadDescriptorSet reads and links a FileDescriptorSet file. Every error
// names "descriptor_set".
func loadDescriptorSet(path string) (*protoregistry.Files, error) {
	invalid := func(err error, format string, args ...any) error {
		e := meridian.FieldError("descriptor_set", format, args...)
		e.Err = err
		return e
	}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, invalid(err, "%s does not exist", path)
	case err != nil:
		return nil, invalid(err, "%s cannot be read", path)
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(b, &set); err != nil {
		return nil, invalid(err, "%s is not a binary FileDescriptorSet (make one with buf build -o FILE, or protoc --include_imports --descriptor_set_out=FILE)", path)
	}
	if len(set.GetFile()) == 0 {
		return nil, invalid(nil, "%s holds no files: is it a binary FileDescriptorSet (buf build -o FILE, or protoc --include_imports --descriptor_set_out=FILE)?", path)
	}
	// The most common mistake gets its own message: protoc without
	// --include_imports writes only the named files.
	have := make(map[string]bool, len(set.GetFile()))
	for _, f := range set.GetFile() {
		have[f.GetName()] = true
	}
	for _, f := range set.GetFile() {
		for _, dep := range f.GetDependency() {
			if !have[dep] {
				return nil, invalid(nil, "%s: %s imports %s, which the set lacks: build it with its imports (protoc --include_imports; buf build includes them)", path, f.GetName(), dep)
			}
		}
	}
	files, err := protodesc.NewFiles(&set)
	if err != nil {
		return nil, invalid(err, "%s is not a consistent set of files", path)
	}
	return files, nil
}

// selectServices resolves cfg.Services in files, or finds every service
// with methods when it is empty.
func selectServices(files *protoregistry.Files, cfg Config) ([]protoreflect.ServiceDescriptor, error) {
	if len(cfg.Services) == 0 {
		var all []protoreflect.ServiceDescriptor
		files.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
			for i := range fd.Services().Len() {
				if sd := fd.Services().Get(i); sd.Methods().Len() > 0 {
					all = append(all, sd)
				}
			}
			return true
		})
		if len(all) == 0 {
			return nil, meridian.FieldError("descriptor_set", "%s has no service with methods", cfg.DescriptorSet)
		}
		// RangeFiles has no defined order; routes should not depend on it.
		slices.SortFunc(all, func(a, b protoreflect.ServiceDescriptor) int {
			return strings.Compare(string(a.FullName()), string(b.FullName()))
		})
		return all, nil
	}
	out := make([]protoreflect.ServiceDescriptor, len(cfg.Services))
	for i, name := range cfg.Services {
		field := fmt.Sprintf("services[%d]", i)
		d, err := files.FindDescriptorByName(protoreflect.FullName(name))
		if err != nil {
			return nil, meridian.FieldError(field, "%q is not in %s", name, cfg.DescriptorSet)
		}
		sd, ok := d.(protoreflect.ServiceDescriptor)
		if !ok {
			return nil, meridian.FieldError(field, "%q is not a service in %s", name, cfg.DescriptorSet)
		}
		if sd.Methods().Len() == 0 {
			return nil, meridian.FieldError(field, "%q has no methods", name)
		}
		out[i] = sd
	}
	return out, nil
}

// resolver finds message and extension types in the descriptor set first,
// then among the types linked into the binary (for a google.protobuf.Any
// holding, say, a google.rpc error detail the set does not include). It is
// a pointer, so vanguard can use it as a map key.
type resolver struct {
	set *dynamicpb.Types
}

var _ vanguard.TypeResolver = (*resolver)(nil)

func (r *resolver) FindMessageByName(name protoreflect.FullName) (protoreflect.MessageType, error) {
	if mt, err := r.set.FindMessageByName(name); err == nil {
		return mt, nil
	}
	return protoregistry.GlobalTypes.FindMessageByName(name)
}

func (r *resolver) FindMessageByURL(url string) (protoreflect.MessageType, error) {
	if mt, err := r.set.FindMessageByURL(url); err == nil {
		return mt, nil
	}
	return protoregistry.GlobalTypes.FindMessageByURL(url)
}

func (r *resolver) FindExtensionByName(name protoreflect.FullName) (protoreflect.ExtensionType, error) {
	if xt, err := r.set.FindExtensionByName(name); err == nil {
		return xt, nil
	}
	return protoregistry.GlobalTypes.FindExtensionByName(name)
}

func (r *resolver) FindExtensionByNumber(message protoreflect.FullName, field protoreflect.FieldNumber) (protoreflect.ExtensionType, error) {
	if xt, err := r.set.FindExtensionByNumber(message, field); err == nil {
		return xt, nil
	}
	return protoregistry.GlobalTypes.FindExtensionByNumber(message, field)
}
