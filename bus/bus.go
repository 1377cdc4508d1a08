package bus

import (
	"context"
	"time"
)

// Backend is an event bus engine: the one interface the jetstream engine
// implements today and Kafka, RabbitMQ and Redis Streams engines implement
// later. The bustest package is its conformance suite.
//
// Semantics every engine keeps (docs/bus.md has the reasons):
//
//   - A topic is an append-only, retained log of events, split into
//     TopicConfig.Partitions partitions; an event's partition is
//     Partition(OrderingKey(e), n), computed the same way by every engine.
//   - A group is a durable set of competing consumers: each event of the
//     topic is handled by one member of each group (fan-out across groups).
//   - Delivery is at least once. A handler's nil return acknowledges the
//     event; an error gets a redelivery after a backoff (RetryPolicy); after
//     MaxDeliveries failed attempts, or at once for a Permanent error, the
//     event is moved to the topic's dead-letter topic (DeadLetterTopic) with
//     the reason and the history of its attempts.
//   - Publishing an event whose source and id were published within the
//     topic's DedupWindow stores nothing and answers the first receipt's
//     sequence with Duplicate set.
type Backend interface {
	Publisher
	Subscriber
	Admin
	DeadLetters
	// Close stops every subscription started through the backend (as
	// Subscription.Close) and waits, within ctx, for outstanding
	// asynchronous publishes (as Flush). It does not close the connection
	// the backend was given: its owner does.
	Close(ctx context.Context) error
}

// Publisher publishes events to topics.
type Publisher interface {
	// Publish stores e in topic and returns once the broker has
	// acknowledged it (persisted, replicated as the topic is configured).
	// e is validated (Event.Normalize) first; the error then names the
	// attribute. A missing topic is created with the engine's defaults
	// unless the engine is configured not to.
	Publish(ctx context.Context, topic string, e Event, opts ...PublishOption) (Receipt, error)
	// PublishAsync sends e without waiting for the broker's
	// acknowledgement: done (which may be nil) is called exactly once with
	// the receipt or the error, on an engine goroutine, so it must not
	// block. It blocks only while too many publishes are outstanding, and
	// returns an error without calling done when e is invalid or cannot be
	// sent at all.
	PublishAsync(ctx context.Context, topic string, e Event, done func(Receipt, error), opts ...PublishOption) error
	// Flush waits until every PublishAsync call made before it has been
	// acknowledged or has failed (its done called), or until ctx ends. It
	// reports the failures among them as a *PublishError.
	Flush(ctx context.Context) error
}

// Subscriber starts subscriptions.
type Subscriber interface {
	// Subscribe joins group (creating it at opts.StartAt if it does not
	// exist yet) and calls h for the group's share of the topic's events
	// until the subscription is drained or closed or ctx ends. Members of
	// one group share the events (competing consumers); every group gets
	// every event. group "" makes a private, non-durable subscription
	// (tailing, replay to a tool) that disappears with its member.
	//
	// ctx bounds the subscription's life: when it ends the subscription
	// stops as Close. Handler contexts carry ctx's values, the event's
	// trace context (TraceFromContext) and its Delivery (DeliveryFrom).
	Subscribe(ctx context.Context, topic, group string, h Handler, opts SubscribeOptions) (Subscription, error)
}

// Admin manages topics and groups: what `meridian topics` and the control
// plane's API use.
type Admin interface {
	// EnsureTopic creates the topic, or updates the retention and dedup
	// settings of an existing one. Partitions cannot change after creation
	// (a conflict error): that would move keys between partitions and break
	// their order.
	EnsureTopic(ctx context.Context, cfg TopicConfig) (TopicInfo, error)
	// Topic describes one topic; a not_found error when it does not exist.
	Topic(ctx context.Context, name string) (TopicInfo, error)
	// Topics lists every topic, dead-letter topics included, by name.
	Topics(ctx context.Context) ([]TopicInfo, error)
	// DeleteTopic deletes the topic, its events and its groups.
	DeleteTopic(ctx context.Context, name string) error
	// Groups lists the durable groups of a topic, by name.
	Groups(ctx context.Context, topic string) ([]GroupInfo, error)
	// DeleteGroup deletes a group and its position; members still
	// subscribed stop with an error.
	DeleteGroup(ctx context.Context, topic, group string) error
}

// DeadLetters reads and replays a topic's dead-letter topic. topic is the
// original topic, not the ".dlq" one.
type DeadLetters interface {
	// DeadLetters lists up to limit dead letters of topic whose sequence in
	// the dead-letter topic is greater than after, oldest first. limit <= 0
	// means 100.
	DeadLetters(ctx context.Context, topic string, after uint64, limit int) ([]DeadLetter, error)
	// DeadLetter reads one dead letter by its sequence in the dead-letter
	// topic; a not_found error when there is none.
	DeadLetter(ctx context.Context, topic string, seq uint64) (DeadLetter, error)
	// ReplayDeadLetter publishes the dead letter's original event again (the
	// same id, attributes and data, without the dead-letter extensions) and
	// then removes it from the dead-letter topic, unless opts.Keep. It goes
	// to the group that dead-lettered it only, unless opts.AllGroups or the
	// letter came from a private subscription. Replaying the same letter
	// twice within the dedup window publishes it once.
	ReplayDeadLetter(ctx context.Context, topic string, seq uint64, opts ReplayOptions) (Receipt, error)
	// DeleteDeadLetter removes one dead letter; a not_found error when
	// there is none.
	DeleteDeadLetter(ctx context.Context, topic string, seq uint64) error
}

// ReplayOptions tune ReplayDeadLetter.
type ReplayOptions struct {
	// AllGroups sends the event to every group of the topic, as a new
	// publish would, instead of only to the group that failed it.
	AllGroups bool
	// Keep leaves the dead letter in the dead-letter topic.
	Keep bool
}

// Receipt is the broker's acknowledgement of a publish.
type Receipt struct {
	Topic     string
	Partition int
	// Sequence is the event's position in the topic: the stream sequence
	// on JetStream (one counter across partitions). Engines whose
	// positions are per partition document their mapping.
	Sequence uint64
	// Duplicate is set when the event was a duplicate within the dedup
	// window: nothing was stored and Sequence is the first copy's.
	Duplicate bool
}

// Handler handles one delivery. Returning nil acknowledges the event; an
// error asks for a redelivery after a backoff, or a dead letter once the
// attempts are spent (at once for a Permanent error). A panic counts as an
// error. A handler that may run longer than SubscribeOptions.AckWait calls
// InProgress (or d.InProgress) now and then, or the event is redelivered
// to another member while it still runs.
type Handler func(ctx context.Context, d *Delivery) error

// Delivery is one delivery of an event to a handler.
type Delivery struct {
	Event Event
	Topic string
	Group string // "" for a private subscription
	// Partition is the partition the event was published to.
	Partition int
	// Sequence is the event's position in the topic (see Receipt).
	Sequence uint64
	// Attempt counts deliveries of this event to the group, from 1.
	Attempt int
	// Published is when the broker stored the event.
	Published time.Time
	// Heartbeat is set by the engine: it resets the ack-wait timer of the
	// delivery. Handlers call InProgress.
	Heartbeat func() error
}

// InProgress tells the broker the handler is still working on d, so that
// the event is not redelivered when AckWait passes.
func (d *Delivery) InProgress() error {
	if d == nil || d.Heartbeat == nil {
		return nil
	}
	return d.Heartbeat()
}

// Subscription is one member of a group.
type Subscription interface {
	Topic() string
	Group() string
	// Drain stops fetching, lets the handlers already running finish and
	// records their outcome; events fetched but not started are given back
	// to the group at once. It returns when all is done or ctx ends (then
	// as Close).
	Drain(ctx context.Context) error
	// Close stops at once: handler contexts are cancelled, and events not
	// acknowledged are given back to the group for redelivery. It waits
	// for the subscription's goroutines to exit.
	Close() error
	// Done is closed when the subscription has stopped, for whatever
	// reason; Err then tells why (nil after Drain or Close).
	Done() <-chan struct{}
	Err() error
}

// SubscribeOptions tune a subscription. The zero value works: unordered,
// one handler at a time, 5 deliveries, exponential backoff from 1s to 1m,
// 30s ack wait, new events only.
type SubscribeOptions struct {
	// Ordered asks for per-key order: events of one key (OrderingKey) are
	// handled one at a time, in publish order, across all members of the
	// group; events of different partitions run in parallel. Each partition
	// has at most one event in flight in the group, so the topic's
	// Partitions bounds the parallelism. Ordered is part of the group's
	// identity: do not mix ordered and unordered members in one group.
	Ordered bool
	// Concurrency is how many handlers run at once in this member of an
	// unordered group. Default 1. Ignored when Ordered (each partition runs
	// one at a time; all partitions may run at once).
	Concurrency int
	// MaxDeliveries is how many times an event is delivered before it is
	// dead-lettered. Default 5; negative means retry for ever.
	MaxDeliveries int
	// RetryPolicy gives the delay before each redelivery.
	RetryPolicy
	// AckWait is how long a delivery may go without an outcome or a
	// heartbeat before the broker gives it to another member. Default 30s.
	AckWait time.Duration
	// MaxInFlight bounds the events delivered to the group's members and
	// not yet acknowledged, across the group (unordered groups). Default
	// 1000. Set on the group when it is created or a member joins.
	MaxInFlight int
	// Batch is how many events a member fetches at once (unordered).
	// Default 100; events fetched wait for a free handler while their ack
	// wait runs, so keep Batch × handler time well under AckWait.
	Batch int
	// StartAt is where a new group starts. Ignored when the group exists:
	// it resumes where it stopped.
	StartAt StartAt
	// DeadLetterTopic receives the dead letters. Default
	// DeadLetterTopic(topic), "<topic>.dlq".
	DeadLetterTopic string
}

// RetryPolicy computes the delay before a redelivery after a failed
// attempt: BackOff when given, else exponential with full jitter (a
// uniformly random delay below min(MaxBackOff, MinBackOff·2^(n-1)) after
// attempt n, never zero), which keeps many failing events from coming back
// in one wave.
type RetryPolicy struct {
	// BackOff lists the delays after attempt 1, 2, …; the last one repeats.
	BackOff []time.Duration
	// MinBackOff is the ceiling of the first computed delay. Default 1s.
	MinBackOff time.Duration
	// MaxBackOff caps the computed delays. Default 1m.
	MaxBackOff time.Duration
}

// StartAt is where a new group starts reading a topic; the zero value means
// the events published from now on. At most one field may be set.
type StartAt struct {
	// First starts at the earliest event the topic retains.
	First bool `json:"first,omitempty"`
	// Sequence starts at this sequence (or the first retained after it).
	Sequence uint64 `json:"sequence,omitempty"`
	// Time starts at the first event stored at or after it.
	Time time.Time `json:"time,omitzero"`
}

// TopicConfig declares a topic. Zero fields take the defaults named on
// them.
type TopicConfig struct {
	// Name: dot-separated segments of letters, digits, '-' and '_' (see
	// ValidateTopic). Required.
	Name string `json:"name"`
	// Partitions is the number of ordering partitions: ordered groups handle
	// one event per partition at a time. Default 8; 1 to 1024; fixed once
	// the topic exists.
	Partitions int `json:"partitions,omitempty"`
	// MaxAge drops events older than this. Default 7 days; negative means
	// no age limit.
	MaxAge time.Duration `json:"max_age,omitempty"`
	// MaxBytes drops the oldest events when the topic grows beyond this
	// many bytes. 0 means no limit.
	MaxBytes int64 `json:"max_bytes,omitempty"`
	// MaxMsgs drops the oldest events beyond this count. 0 means no limit.
	MaxMsgs int64 `json:"max_msgs,omitempty"`
	// DedupWindow is how long a published event's source and id are
	// remembered to drop duplicates. Default 2m; negative turns dedup off;
	// at most MaxAge.
	DedupWindow time.Duration `json:"dedup_window,omitempty"`
	// Replicas is how many copies the engine keeps (JetStream stream
	// replicas). 0 means the engine's configured default.
	Replicas int `json:"replicas,omitempty"`
}

// TopicInfo describes a topic.
type TopicInfo struct {
	TopicConfig
	Messages      uint64    `json:"messages"`
	Bytes         uint64    `json:"bytes"`
	FirstSequence uint64    `json:"first_sequence"`
	LastSequence  uint64    `json:"last_sequence"`
	FirstTime     time.Time `json:"first_time,omitzero"`
	LastTime      time.Time `json:"last_time,omitzero"`
	Created       time.Time `json:"created,omitzero"`
}

// GroupInfo describes a durable group of a topic.
type GroupInfo struct {
	Topic   string `json:"topic"`
	Name    string `json:"name"`
	Ordered bool   `json:"ordered"`
	// Pending counts events not yet delivered to the group.
	Pending uint64 `json:"pending"`
	// InFlight counts events delivered and not yet acknowledged.
	InFlight int `json:"in_flight"`
	// Redelivered counts in-flight events delivered more than once.
	Redelivered int `json:"redelivered"`
	// Members is how many members are waiting for events right now, as far
	// as the engine can tell.
	Members int `json:"members"`
	// Acked is the sequence below which every event is acknowledged.
	Acked   uint64    `json:"acked"`
	Created time.Time `json:"created,omitzero"`
}
