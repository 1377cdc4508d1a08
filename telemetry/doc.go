// Package telemetry builds Meridian's OpenTelemetry tracing: a tracer
// provider, the W3C propagators and the HTTP server middleware that the
// gateway wraps each route with. Everything is constructed and returned;
// nothing is installed globally (no otel.SetTracerProvider, no
// otel.SetTextMapPropagator), so a component traces with the *Tracing it
// is given and two of them in one process never interfere.
//
// Metrics are not here: Meridian exports them with Prometheus.
//
// # Sampling
//
// Sampling is parent-based. A request whose traceparent says "sampled" is
// always sampled, one whose traceparent says "not sampled" never is, and a
// request without a traceparent (a root) is sampled with probability
// TracingConfig.SampleRatio, decided from its trace id so that every
// service using the same ratio decides the same way.
//
// SampleRatio 0 therefore means "start no traces, only follow the callers'
// decisions". With no exporter configured as well (no Endpoint, no
// OTEL_EXPORTER_OTLP_*ENDPOINT variable, no WithSpanProcessor) a followed
// span would be recorded only to be dropped, so that combination is
// propagation only: Tracer returns no-op tracers, and Middleware creates no
// span at all. It extracts the caller's traceparent and baggage into the
// request context and Inject forwards them unchanged, so a trace started
// upstream continues through the gateway to the next hop; the gateway
// itself does not appear in it. A request without trace headers then costs
// a few header look-ups and no allocation. This is what the zero value of
// TracingConfig, given a ServiceName, does.
//
// With a ratio above 0 and no exporter, sampled spans are recorded and
// dropped at End: nothing leaves the process. That is the way to measure
// what recording costs without a collector.
//
// # Middleware: hand-written, not otelhttp
//
// Middleware is hand-written rather than a wrapper of otelhttp
// (go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp), because
// otelhttp does its work for every request, sampled or not: it builds the
// semantic-convention attributes before it knows the sampling decision,
// wraps the response writer and the body, adds a labeler to the context and
// records its metrics (through the global MeterProvider unless it is given
// one; Meridian's metrics are Prometheus's anyway). Middleware asks the sampler first; an unsampled
// request gets the span context in its request context (so Inject
// propagates the "not sampled" decision and the next hop does not start a
// trace of its own) and nothing else: the response writer is not wrapped.
// Only a sampled request gets the attributes and the status-recording
// writer. BenchmarkMiddleware runs both on the same tracer provider and
// propagator, with no exporter (sampled spans are recorded and dropped)
// and a handler that only writes a status. Medians of 8 runs on the 2-core
// development machine, shared with other builds at the time (Go 1.26.8,
// OpenTelemetry v1.45.0, otelhttp v0.70.0):
//
//	                                    hand-written              otelhttp
//	root at ratio 0.01 (99% unsampled)  0.73 µs   494 B   3 allocs  6.3 µs  3076 B  32 allocs
//	parent not sampled                  1.0 µs    592 B   5 allocs  3.4 µs  3200 B  35 allocs
//	parent sampled                      3.1 µs   3664 B  11 allocs  8.3 µs  5248 B  37 allocs
//	propagation only                    0.04 µs     0 B   0 allocs  4.0 µs  2448 B  30 allocs
//
// The times move with the machine's load; the allocation counts do not.
// On the unsampled path, which is nearly every request at production
// ratios, otelhttp allocates ten times as often and takes several times as
// long; on the sampled path it is still about twice the cost. Of the three
// allocations left on the unsampled path, one is the request copy that
// carries the new context and two are the SDK's non-recording span and
// its context. The propagators' lower-case header keys, which http.Header
// would canonicalize into a new string on every look-up, are mapped to
// their canonical forms beforehand (headerCarrier).
//
// # Attributes
//
// A sampled server span is named by the route (a low-cardinality name the
// caller chooses, never the raw path) and carries the stable HTTP server
// conventions (semconv v1.43.0): http.request.method, url.scheme, url.path,
// http.route (the ServeMux pattern, when there is one), server.address,
// server.port, network.protocol.version, client.address, network.peer.*,
// user_agent.original and http.response.status_code. url.query is left out
// because query strings carry tokens. A 5xx answer, or a panic in the
// handler, sets the span status to Error and error.type; a 4xx is the
// client's error and leaves the status unset, as the conventions say for
// server spans.
package telemetry
