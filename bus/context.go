package bus

import "context"

type ctxKey int

const (
	traceKey ctxKey = iota
	deliveryKey
)

type trace struct{ parent, state string }

// ContextWithTrace returns ctx carrying a W3C trace context (traceparent,
// tracestate). Publish copies it into events that have none, so a handler
// that publishes passes its event's trace on; handler contexts carry their
// event's.
func ContextWithTrace(ctx context.Context, traceparent, tracestate string) context.Context {
	if traceparent == "" {
		return ctx
	}
	return context.WithValue(ctx, traceKey, trace{traceparent, tracestate})
}

// TraceFromContext returns the trace context set by ContextWithTrace.
func TraceFromContext(ctx context.Context) (traceparent, tracestate string) {
	t, _ := ctx.Value(traceKey).(trace)
	return t.parent, t.state
}

// HandlerContext is the context an engine gives a handler: base with the
// delivery and the event's trace context. Engines call it.
func HandlerContext(base context.Context, d *Delivery) context.Context {
	ctx := context.WithValue(base, deliveryKey, d)
	if tp := d.Event.Extensions[ExtTraceParent]; tp != "" {
		ctx = ContextWithTrace(ctx, tp, d.Event.Extensions[ExtTraceState])
	}
	return ctx
}

// DeliveryFrom returns the delivery a handler context was made for.
func DeliveryFrom(ctx context.Context) (*Delivery, bool) {
	d, ok := ctx.Value(deliveryKey).(*Delivery)
	return d, ok
}

// InProgress resets the ack-wait timer of the delivery ctx belongs to (see
// Delivery.InProgress), for code deep in a handler that has only its
// context. Outside a handler it does nothing.
func InProgress(ctx context.Context) error {
	d, _ := DeliveryFrom(ctx)
	return d.InProgress()
}
