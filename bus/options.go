package bus

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"regexp"
	"strings"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/internal/backoff"
)

// Defaults of SubscribeOptions and TopicConfig.
const (
	DefaultMaxDeliveries = 5
	DefaultMinBackOff    = time.Second
	DefaultMaxBackOff    = time.Minute
	DefaultAckWait       = 30 * time.Second
	DefaultMaxInFlight   = 1000
	DefaultBatch         = 100
	DefaultPartitions    = 8
	MaxPartitions        = 1024
	DefaultMaxAge        = 7 * 24 * time.Hour
	DefaultDedupWindow   = 2 * time.Minute
)

// Extension attributes with a meaning to the bus.
const (
	// ExtPartitionKey is the CloudEvents Partitioning extension: the
	// ordering key.
	ExtPartitionKey = "partitionkey"
	// ExtTraceParent and ExtTraceState are the CloudEvents Distributed
	// Tracing extension (W3C Trace Context).
	ExtTraceParent = "traceparent"
	ExtTraceState  = "tracestate"
)

var groupName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]*$`)

// validTopic is `^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`, by hand: it runs on
// every publish.
func validTopic(s string) bool {
	seg := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '-':
			seg++
		case c == '.' && seg > 0:
			seg = 0
		default:
			return false
		}
	}
	return seg > 0
}

// ValidateTopic checks a topic name: 1-200 characters, dot-separated
// segments of letters, digits, '-' and '_'. The error is invalid and names
// the field "topic".
func ValidateTopic(name string) error {
	if len(name) == 0 || len(name) > 200 || !validTopic(name) {
		return meridian.FieldError("topic", "%q is not a topic name: 1-200 characters, dot-separated segments of letters, digits, '-' and '_'", name)
	}
	return nil
}

// ValidateGroup checks a group name: 1-64 characters, a letter then
// letters, digits, '-' and '_' ("" is a private subscription and valid).
func ValidateGroup(name string) error {
	if name == "" {
		return nil
	}
	if len(name) > 64 || !groupName.MatchString(name) {
		return meridian.FieldError("group", "%q is not a group name: 1-64 characters, a letter then letters, digits, '-' and '_'", name)
	}
	return nil
}

// DeadLetterTopic names the dead-letter topic of topic: "<topic>.dlq". A
// dead-letter topic is an ordinary topic (one partition, the original
// topic's retention), so it can be listed, tailed and subscribed to.
func DeadLetterTopic(topic string) string { return topic + ".dlq" }

// OrderingKey is the key that orders e: its partitionkey extension, else its
// subject, else its id (which spreads unkeyed events over the partitions).
func OrderingKey(e *Event) string {
	if k := e.Extensions[ExtPartitionKey]; k != "" {
		return k
	}
	if e.Subject != "" {
		return e.Subject
	}
	return e.ID
}

// Partition maps a key to one of n partitions (FNV-1a, 32 bits, modulo n).
// Every engine uses it, so that a key's partition does not depend on the
// engine.
func Partition(key string, n int) int {
	if n <= 1 {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte(key))
	return int(h.Sum32() % uint32(n))
}

// WithDefaults returns c with its zero fields set to their defaults.
func (c TopicConfig) WithDefaults() TopicConfig {
	if c.Partitions == 0 {
		c.Partitions = DefaultPartitions
	}
	if c.MaxAge == 0 {
		c.MaxAge = DefaultMaxAge
	}
	if c.DedupWindow == 0 {
		// The default window shrinks to fit a short MaxAge; a window
		// asked for does not (Validate refuses it).
		c.DedupWindow = DefaultDedupWindow
		if c.MaxAge > 0 && c.DedupWindow > c.MaxAge {
			c.DedupWindow = c.MaxAge
		}
	}
	return c
}

// Validate checks c after WithDefaults, naming the field at fault.
func (c TopicConfig) Validate() error {
	if err := ValidateTopic(c.Name); err != nil {
		return err
	}
	switch {
	case c.Partitions < 1 || c.Partitions > MaxPartitions:
		return meridian.FieldError("partitions", "%d is out of range 1-%d", c.Partitions, MaxPartitions)
	case c.MaxBytes < 0:
		return meridian.FieldError("max_bytes", "%d is negative", c.MaxBytes)
	case c.MaxMsgs < 0:
		return meridian.FieldError("max_msgs", "%d is negative", c.MaxMsgs)
	case c.Replicas < 0 || c.Replicas > 5:
		return meridian.FieldError("replicas", "%d is out of range 0-5", c.Replicas)
	case c.MaxAge > 0 && c.DedupWindow > c.MaxAge:
		return meridian.FieldError("dedup_window", "%s is longer than max_age %s", c.DedupWindow, c.MaxAge)
	}
	return nil
}

// WithDefaults returns o with its zero fields set to their defaults.
func (o SubscribeOptions) WithDefaults(topic string) SubscribeOptions {
	if o.Concurrency <= 0 {
		o.Concurrency = 1
	}
	if o.MaxDeliveries == 0 {
		o.MaxDeliveries = DefaultMaxDeliveries
	}
	if o.MinBackOff <= 0 {
		o.MinBackOff = DefaultMinBackOff
	}
	if o.MaxBackOff <= 0 {
		o.MaxBackOff = DefaultMaxBackOff
	}
	if o.AckWait <= 0 {
		o.AckWait = DefaultAckWait
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = DefaultMaxInFlight
	}
	if o.Batch <= 0 {
		o.Batch = DefaultBatch
	}
	if o.DeadLetterTopic == "" {
		o.DeadLetterTopic = DeadLetterTopic(topic)
	}
	return o
}

// Validate checks o after WithDefaults, naming the field at fault.
func (o SubscribeOptions) Validate() error {
	set := 0
	if o.StartAt.First {
		set++
	}
	if o.StartAt.Sequence > 0 {
		set++
	}
	if !o.StartAt.Time.IsZero() {
		set++
	}
	switch {
	case set > 1:
		return meridian.FieldError("start_at", "give one of first, sequence and time")
	case o.AckWait < 100*time.Millisecond:
		return meridian.FieldError("ack_wait", "%s is shorter than 100ms", o.AckWait)
	case o.MinBackOff > o.MaxBackOff:
		return meridian.FieldError("min_backoff", "%s is longer than max_backoff %s", o.MinBackOff, o.MaxBackOff)
	}
	for i, d := range o.BackOff {
		if d < 0 {
			return meridian.FieldError(fmt.Sprintf("backoff[%d]", i), "%s is negative", d)
		}
	}
	if err := ValidateTopic(o.DeadLetterTopic); err != nil {
		return meridian.FieldError("dead_letter_topic", "%s", err.(*meridian.Error).Message)
	}
	return nil
}

// Delay is the wait before the redelivery that follows failed attempt n
// (from 1).
func (p RetryPolicy) Delay(attempt int) time.Duration {
	if attempt < 1 {
		attempt = 1
	}
	if len(p.BackOff) > 0 {
		return p.BackOff[min(attempt, len(p.BackOff))-1]
	}
	b := backoff.Backoff{Base: p.MinBackOff, Max: p.MaxBackOff}
	for range attempt - 1 {
		b.Next()
	}
	return b.Next()
}

// Action is what happens to a delivery once its handler has returned.
type Action int

const (
	ActionAck        Action = iota // done; forget it
	ActionRetry                    // deliver it again after Decision.Delay
	ActionDeadLetter               // move it to the dead-letter topic
)

func (a Action) String() string {
	return [...]string{"ack", "retry", "dead-letter"}[a]
}

// Decision is the outcome of a delivery.
type Decision struct {
	Action Action
	Delay  time.Duration // before the redelivery, for ActionRetry
}

// Decide is the retry rule every engine applies, given the attempt that
// just ended (from 1) and the handler's error. o must have its defaults.
func (o SubscribeOptions) Decide(attempt int, err error) Decision {
	switch {
	case err == nil:
		return Decision{Action: ActionAck}
	case IsPermanent(err), o.MaxDeliveries > 0 && attempt >= o.MaxDeliveries:
		return Decision{Action: ActionDeadLetter}
	default:
		return Decision{Action: ActionRetry, Delay: o.Delay(attempt)}
	}
}

// permanent marks an error that retrying cannot fix.
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// Permanent marks err as one that retrying will not fix (an event that
// cannot be decoded, a rule it breaks): a handler returning it sends the
// event to the dead-letter topic at once. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanent{err}
}

// IsPermanent reports whether err was marked by Permanent.
func IsPermanent(err error) bool {
	var p permanent
	return errors.As(err, &p)
}

// PublishOption tunes one publish.
type PublishOption func(*PublishConfig)

// PublishConfig is the result of PublishOptions; engines read it through
// Prepare.
type PublishConfig struct {
	// DedupID replaces the dedup key (by default derived from the event's
	// source and id).
	DedupID string
	// NoDedup publishes without a dedup key.
	NoDedup bool

	edits []func(*Event)
	// encoded is set by the typed API: the data comes from its codec, so
	// it is not checked again.
	encoded bool
}

// WithKey sets the event's ordering key (its partitionkey extension).
func WithKey(key string) PublishOption {
	return func(c *PublishConfig) { c.edits = append(c.edits, func(e *Event) { setExt(e, ExtPartitionKey, key) }) }
}

// WithDedupID makes id the dedup key instead of the event's source and id.
func WithDedupID(id string) PublishOption { return func(c *PublishConfig) { c.DedupID = id } }

// WithoutDedup publishes without a dedup key: the event is stored even if
// one with its source and id was stored within the window.
func WithoutDedup() PublishOption { return func(c *PublishConfig) { c.NoDedup = true } }

// WithExtension sets an extension attribute of the event.
func WithExtension(name, value string) PublishOption {
	return func(c *PublishConfig) { c.edits = append(c.edits, func(e *Event) { setExt(e, name, value) }) }
}

func setExt(e *Event, name, value string) {
	ext := make(map[string]string, len(e.Extensions)+1)
	for k, v := range e.Extensions {
		ext[k] = v
	}
	ext[name] = value
	e.Extensions = ext
}

// Prepare is what every engine does before a publish: it checks the topic,
// applies opts to e (a copy: the caller's event is not changed), fills its
// trace context from ctx (ContextWithTrace) when it has none, normalizes
// it and returns the publish settings.
func Prepare(ctx context.Context, topic string, e *Event, opts []PublishOption) (PublishConfig, error) {
	var c PublishConfig
	if err := ValidateTopic(topic); err != nil {
		return c, err
	}
	for _, o := range opts {
		o(&c)
	}
	for _, edit := range c.edits {
		edit(e)
	}
	c.edits = nil
	if tp, ts := TraceFromContext(ctx); tp != "" && e.Extensions[ExtTraceParent] == "" {
		setExt(e, ExtTraceParent, tp)
		if ts != "" {
			setExt(e, ExtTraceState, ts)
		}
	}
	if err := e.normalize(!c.encoded); err != nil {
		return c, err
	}
	return c, nil
}

// PublishError reports the asynchronous publishes that failed before a
// Flush.
type PublishError struct {
	Failed []FailedPublish
}

// FailedPublish is one failed asynchronous publish.
type FailedPublish struct {
	Topic, Source, ID string
	Err               error
}

func (e *PublishError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "bus: %d asynchronous publishes failed", len(e.Failed))
	for i, f := range e.Failed {
		if i == 3 {
			fmt.Fprintf(&b, "; …")
			break
		}
		fmt.Fprintf(&b, "; %s %s/%s: %v", f.Topic, f.Source, f.ID, f.Err)
	}
	return b.String()
}

// Unwrap returns the errors of the failed publishes.
func (e *PublishError) Unwrap() []error {
	errs := make([]error, len(e.Failed))
	for i, f := range e.Failed {
		errs[i] = f.Err
	}
	return errs
}
