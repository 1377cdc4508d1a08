package bus

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"time"
)

// Codec encodes typed event data. JSON is the default.
type Codec interface {
	// ContentType is the datacontenttype of the data it writes.
	ContentType() string
	Marshal(v any) ([]byte, error)
	Unmarshal(data []byte, v any) error
}

// JSON is the JSON codec (application/json, encoding/json).
var JSON Codec = jsonCodec{}

type jsonCodec struct{}

func (jsonCodec) ContentType() string                { return "application/json" }
func (jsonCodec) Marshal(v any) ([]byte, error)      { return json.Marshal(v) }
func (jsonCodec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

// Topic is a topic whose events carry data of type T.
//
//	var OrderPlaced = bus.NewTopic[Order]("orders", "com.example.order.placed", "/orders")
//	_, err := bus.Publish(ctx, b, OrderPlaced, order, bus.WithKey(order.ID))
//	sub, err := bus.Subscribe(ctx, b, OrderPlaced, "billing", func(ctx context.Context, m bus.Message[Order]) error { … }, bus.SubscribeOptions{})
type Topic[T any] struct {
	// Name is the topic's name (ValidateTopic).
	Name string
	// Type is the CloudEvents type of the events published; default Name.
	Type string
	// Source is the CloudEvents source of the events published; default
	// "/" + Name. WithSource overrides it per publish.
	Source string
	// Codec encodes the data; default JSON.
	Codec Codec
}

// NewTopic declares a typed topic with the JSON codec.
func NewTopic[T any](name, eventType, source string) Topic[T] {
	return Topic[T]{Name: name, Type: eventType, Source: source, Codec: JSON}
}

func (t Topic[T]) codec() Codec {
	if t.Codec == nil {
		return JSON
	}
	return t.Codec
}

// Event builds the event that publishing v would send: a new id (NewID),
// the topic's type and source, the time now and v encoded by the codec.
func (t Topic[T]) Event(v T) (Event, error) {
	c := t.codec()
	data, err := c.Marshal(v)
	if err != nil {
		return Event{}, fmt.Errorf("bus: encode %s data: %w", t.Name, err)
	}
	e := Event{ID: NewID(), Source: t.Source, Type: t.Type, Time: time.Now().UTC(), DataContentType: c.ContentType(), Data: data}
	if e.Source == "" {
		e.Source = "/" + t.Name
	}
	if e.Type == "" {
		e.Type = t.Name
	}
	return e, nil
}

// Message is a typed delivery: the decoded data beside the delivery (its
// event, attempt and InProgress).
type Message[T any] struct {
	Data T
	*Delivery
}

// Publish publishes v to t and waits for the broker's acknowledgement
// (Publisher.Publish). opts may set the id, subject, key, source or
// extensions of the event.
func Publish[T any](ctx context.Context, p Publisher, t Topic[T], v T, opts ...PublishOption) (Receipt, error) {
	e, err := t.Event(v)
	if err != nil {
		return Receipt{}, err
	}
	return p.Publish(ctx, t.Name, e, withEncoded(opts)...)
}

// encoded marks the data as written by a codec.
func encoded(c *PublishConfig) { c.encoded = true }

var onlyEncoded = []PublishOption{encoded}

func withEncoded(opts []PublishOption) []PublishOption {
	if len(opts) == 0 {
		return onlyEncoded
	}
	return append(opts[:len(opts):len(opts)], encoded)
}

// PublishAsync publishes v to t without waiting (Publisher.PublishAsync);
// Flush waits for the acknowledgements.
func PublishAsync[T any](ctx context.Context, p Publisher, t Topic[T], v T, done func(Receipt, error), opts ...PublishOption) error {
	e, err := t.Event(v)
	if err != nil {
		return err
	}
	return p.PublishAsync(ctx, t.Name, e, done, withEncoded(opts)...)
}

// Subscribe subscribes h to t in group (Subscriber.Subscribe), decoding
// each event's data. An event that does not decode is a Permanent error:
// it goes to the dead-letter topic without retries.
func Subscribe[T any](ctx context.Context, s Subscriber, t Topic[T], group string, h func(context.Context, Message[T]) error, opts SubscribeOptions) (Subscription, error) {
	c := t.codec()
	return s.Subscribe(ctx, t.Name, group, func(ctx context.Context, d *Delivery) error {
		var m Message[T]
		m.Delivery = d
		if err := c.Unmarshal(d.Event.Data, &m.Data); err != nil {
			return Permanent(fmt.Errorf("decode %s data of %s: %w", c.ContentType(), d.Event, err))
		}
		return h(ctx, m)
	}, opts)
}

// WithID sets the event's id (by default a new random one). Two publishes
// with one source and id within the dedup window store one event.
func WithID(id string) PublishOption {
	return func(c *PublishConfig) { c.edits = append(c.edits, func(e *Event) { e.ID = id }) }
}

// WithSubject sets the event's subject, which is also its ordering key when
// it has no partitionkey.
func WithSubject(subject string) PublishOption {
	return func(c *PublishConfig) { c.edits = append(c.edits, func(e *Event) { e.Subject = subject }) }
}

// WithSource sets the event's source.
func WithSource(source string) PublishOption {
	return func(c *PublishConfig) { c.edits = append(c.edits, func(e *Event) { e.Source = source }) }
}

// NewID returns a random UUID (version 4), the default event id. Its 122
// random bits come from the runtime's ChaCha8 generator (math/rand/v2),
// seeded from the operating system: unpredictable enough for an id, and
// some ten times cheaper than crypto/rand on the publish path.
func NewID() string {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(b[8:], rand.Uint64())
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}
