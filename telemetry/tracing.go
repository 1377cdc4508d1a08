package telemetry

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/meridian-platform/meridian"
)

// The OTLP protocols TracingConfig.Protocol accepts.
const (
	ProtocolGRPC = "grpc"
	ProtocolHTTP = "http/protobuf"
)

// The environment variables of the OTLP exporters that NewTracing looks at
// itself, only to decide whether there is an exporter and which one; the
// exporters read them (and the rest of OTEL_EXPORTER_OTLP_*: headers,
// timeouts, certificates, compression) with their own rules.
const (
	envEndpoint       = "OTEL_EXPORTER_OTLP_ENDPOINT"
	envTracesEndpoint = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	envProtocol       = "OTEL_EXPORTER_OTLP_PROTOCOL"
	envTracesProtocol = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
)

// scope is the instrumentation scope of the spans Middleware starts.
const scope = "github.com/meridian-platform/meridian/telemetry"

// TracingConfig configures tracing for one component. The zero value, with
// a ServiceName, is valid and propagates trace context without recording
// anything (see the package doc).
type TracingConfig struct {
	// ServiceName is the resource's service.name, e.g. "meridian-gateway".
	// Required; a DNS label, like every Meridian service name. It wins
	// over OTEL_SERVICE_NAME; OTEL_RESOURCE_ATTRIBUTES adds to it.
	ServiceName string `json:"service_name"`
	// SampleRatio is the probability, in [0, 1], that a request without a
	// sampled or unsampled parent starts a trace. A parent's decision is
	// always followed. Default 0: start no traces; with no exporter either,
	// record nothing and only propagate.
	SampleRatio float64 `json:"sample_ratio,omitempty"`
	// Endpoint is the OTLP collector's URL: "http://collector:4317" for
	// grpc, "http://collector:4318" for http/protobuf, where an empty path
	// means the standard "/v1/traces" and any other path is used as given.
	// "http" sends in plain text, "https" with TLS. Default "": the
	// exporter's own OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or
	// OTEL_EXPORTER_OTLP_ENDPOINT, and if neither is set, no exporter:
	// sampled spans are recorded and dropped.
	Endpoint string `json:"endpoint,omitempty"`
	// Protocol is the OTLP transport: "grpc" or "http/protobuf". Default
	// "": OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or OTEL_EXPORTER_OTLP_PROTOCOL
	// if set, else "grpc".
	Protocol string `json:"protocol,omitempty"`
}

// Validate reports the first invalid field as a *meridian.Error naming it.
// It does not look at the environment: NewTracing checks the exporter
// variables it uses.
func (c *TracingConfig) Validate() error {
	if err := meridian.ValidateServiceName("service_name", c.ServiceName); err != nil {
		return err
	}
	if math.IsNaN(c.SampleRatio) || c.SampleRatio < 0 || c.SampleRatio > 1 {
		return meridian.FieldError("sample_ratio", "is %v; it must be in [0, 1]", c.SampleRatio)
	}
	if err := validateProtocol(c.Protocol); err != nil {
		return meridian.FieldError("protocol", "%v", err)
	}
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		switch {
		case err != nil:
			return meridian.FieldError("endpoint", "%q is not a URL: %v", c.Endpoint, err)
		case u.Scheme != "http" && u.Scheme != "https":
			return meridian.FieldError("endpoint", "%q: the scheme must be http or https, as in http://collector:4317", c.Endpoint)
		case u.Host == "":
			return meridian.FieldError("endpoint", "%q has no host", c.Endpoint)
		case u.User != nil || u.RawQuery != "" || u.Fragment != "":
			return meridian.FieldError("endpoint", "%q: user info, query and fragment are not used by OTLP; remove them", c.Endpoint)
		}
	}
	return nil
}

func validateProtocol(p string) error {
	switch p {
	case "", ProtocolGRPC, ProtocolHTTP:
		return nil
	}
	return fmt.Errorf("%q is not supported: use %q or %q", p, ProtocolGRPC, ProtocolHTTP)
}

// Option adjusts NewTracing.
type Option func(*options)

type options struct {
	processors []sdktrace.SpanProcessor
}

// WithSpanProcessor adds a span processor beside the OTLP exporter, or in
// its place when none is configured. Once NewTracing has succeeded the
// Tracing owns it, and Shutdown shuts it down. It is exported because the
// package's own tests, which have no OTLP receiver, observe spans through
// it (tracetest's SpanRecorder, or a batcher around tracetest's
// InMemoryExporter), and because a program may want a second destination,
// such as stdouttrace while debugging.
func WithSpanProcessor(p sdktrace.SpanProcessor) Option {
	return func(o *options) { o.processors = append(o.processors, p) }
}

// Tracing is one component's tracer provider and propagator. Safe for
// concurrent use. Shutdown flushes it.
type Tracing struct {
	tp     trace.TracerProvider
	sdk    *sdktrace.TracerProvider // nil when propagation only
	prop   propagation.TextMapPropagator
	server trace.Tracer // Middleware's
}

// NewTracing validates cfg and builds the tracer provider with its OTLP
// exporter, if any. Besides cfg it reads the process environment the way
// the OpenTelemetry SDK does: the OTEL_EXPORTER_OTLP_* variables (through
// the exporter) and OTEL_RESOURCE_ATTRIBUTES. It neither installs anything
// globally nor connects: the exporter dials the collector on its first
// export, so an unreachable collector costs dropped spans, never a failed
// start. Export errors go where the SDK sends them, to otel.Handle, whose
// default logs them with the standard logger.
func NewTracing(ctx context.Context, cfg TracingConfig, opts ...Option) (*Tracing, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	t := &Tracing{
		prop: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
	}

	exp, err := newExporter(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if cfg.SampleRatio == 0 && exp == nil && len(o.processors) == 0 {
		t.tp = noop.NewTracerProvider()
		t.server = t.tp.Tracer(scope)
		return t, nil
	}

	res, err := resource.New(ctx,
		resource.WithFromEnv(),
		resource.WithTelemetrySDK(),
		resource.WithAttributes(semconv.ServiceName(cfg.ServiceName)),
	)
	if err != nil {
		// A malformed OTEL_RESOURCE_ATTRIBUTES is reported as a partial
		// resource; anything else is fatal.
		if !errors.Is(err, resource.ErrPartialResource) {
			if exp != nil {
				_ = exp.Shutdown(ctx)
			}
			return nil, fmt.Errorf("telemetry: resource: %w", err)
		}
	}

	tpOpts := []sdktrace.TracerProviderOption{
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.SampleRatio))),
	}
	if exp != nil {
		tpOpts = append(tpOpts, sdktrace.WithBatcher(exp))
	}
	for _, p := range o.processors {
		tpOpts = append(tpOpts, sdktrace.WithSpanProcessor(p))
	}
	t.sdk = sdktrace.NewTracerProvider(tpOpts...)
	t.tp = t.sdk
	t.server = t.tp.Tracer(scope)
	return t, nil
}

// newExporter returns the OTLP exporter cfg and the environment ask for,
// or nil when neither names an endpoint.
func newExporter(ctx context.Context, cfg TracingConfig) (sdktrace.SpanExporter, error) {
	if cfg.Endpoint == "" && os.Getenv(envTracesEndpoint) == "" && os.Getenv(envEndpoint) == "" {
		return nil, nil
	}
	proto := cfg.Protocol
	if proto == "" {
		for _, env := range []string{envTracesProtocol, envProtocol} {
			if v := os.Getenv(env); v != "" {
				if err := validateProtocol(v); err != nil {
					return nil, meridian.FieldError(env, "%v", err)
				}
				proto = v
				break
			}
		}
	}
	var (
		exp sdktrace.SpanExporter
		err error
	)
	switch proto {
	case ProtocolHTTP:
		var o []otlptracehttp.Option
		if cfg.Endpoint != "" {
			o = append(o, otlptracehttp.WithEndpointURL(httpTracesURL(cfg.Endpoint)))
		}
		exp, err = otlptracehttp.New(ctx, o...)
	default:
		var o []otlptracegrpc.Option
		if cfg.Endpoint != "" {
			o = append(o, otlptracegrpc.WithEndpointURL(cfg.Endpoint))
		}
		exp, err = otlptracegrpc.New(ctx, o...)
	}
	if err != nil {
		return nil, fmt.Errorf("telemetry: OTLP %s exporter: %w", proto, err)
	}
	return exp, nil
}

// httpTracesURL gives an endpoint without a path the standard OTLP/HTTP
// traces path, as the exporter does for OTEL_EXPORTER_OTLP_ENDPOINT.
func httpTracesURL(endpoint string) string {
	u, err := url.Parse(endpoint) // Validate parsed it already
	if err != nil || (u.Path != "" && u.Path != "/") {
		return endpoint
	}
	u.Path = "/v1/traces"
	return u.String()
}

// Tracer returns a tracer for an instrumentation scope, conventionally the
// import path of the instrumented package. When propagation only, it is a
// no-op tracer that still carries a caller's span context to child spans.
func (t *Tracing) Tracer(name string) trace.Tracer {
	return t.tp.Tracer(name)
}

// Propagator returns the propagator of W3C trace context (traceparent,
// tracestate) and W3C baggage.
func (t *Tracing) Propagator() propagation.TextMapPropagator { return t.prop }

// Inject writes the trace context and baggage of ctx into h, for an
// outgoing request: traceparent and tracestate from the span in ctx (the
// caller's own, when propagation only) and baggage. It writes nothing for a
// context without either.
func (t *Tracing) Inject(ctx context.Context, h http.Header) {
	t.prop.Inject(ctx, headerCarrier(h))
}

// Shutdown ends the tracer provider: it exports the spans still queued in
// the batcher, shuts the exporter and any WithSpanProcessor processor down,
// and stops their goroutines. Spans ended afterwards are dropped. It
// returns early with ctx's error if ctx ends first. Calling it again does
// nothing.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t.sdk == nil {
		return nil
	}
	return t.sdk.Shutdown(ctx)
}
