package bushttp

import (
	"time"

	"github.com/meridian-platform/meridian/bus"
)

// Receipt is the answer to a publish: bus.Receipt in JSON.
type Receipt struct {
	Topic     string `json:"topic"`
	Partition int    `json:"partition"`
	Sequence  uint64 `json:"sequence"`
	// Duplicate is set when an event with the same source and id was
	// published within the topic's dedup window: nothing was stored and
	// Sequence is the first copy's.
	Duplicate bool `json:"duplicate"`
}

// NewReceipt converts the bus's receipt.
func NewReceipt(r bus.Receipt) Receipt {
	return Receipt{Topic: r.Topic, Partition: r.Partition, Sequence: r.Sequence, Duplicate: r.Duplicate}
}

// BatchReceipt is the answer to a batched publish: one receipt per event,
// in the batch's order.
type BatchReceipt struct {
	Receipts []Receipt `json:"receipts"`
}

// TopicEvent is one event of a topic's stream (GET
// /v1/topics/{topic}/events/stream): the event and where it sits.
type TopicEvent struct {
	Topic     string    `json:"topic"`
	Sequence  uint64    `json:"sequence"`
	Partition int       `json:"partition"`
	Published time.Time `json:"published"`
	Event     bus.Event `json:"event"`
}

// StreamReady is the data of the "ready" event that opens a topic's stream
// once the subscription behind it exists: events published from then on
// are in the stream.
type StreamReady struct {
	Topic string `json:"topic"`
	// LastSequence is the topic's last sequence when the stream opened.
	LastSequence uint64 `json:"last_sequence"`
}

// Event names of a topic's stream.
const (
	StreamEventReady = "ready"
	StreamEventEvent = "event"
)

// TopicList is the answer of GET /v1/topics.
type TopicList struct {
	Topics []bus.TopicInfo `json:"topics"`
}

// TopicDetail is the answer of GET /v1/topics/{topic}.
type TopicDetail struct {
	Topic  bus.TopicInfo   `json:"topic"`
	Groups []bus.GroupInfo `json:"groups"`
	// DeadLetters counts the events in the topic's dead-letter topic.
	DeadLetters uint64 `json:"dead_letters"`
}

// DeadLetterList is the answer of GET /v1/topics/{topic}/dlq.
type DeadLetterList struct {
	DeadLetters []bus.DeadLetter `json:"dead_letters"`
}

// ReplayRequest is the body of POST /v1/topics/{topic}/dlq/replay: one
// dead letter (Sequence) or all of them (All).
type ReplayRequest struct {
	// Sequence is the dead letter's sequence in the dead-letter topic.
	Sequence uint64 `json:"sequence,omitempty"`
	// All replays every dead letter of the topic, oldest first.
	All bool `json:"all,omitempty"`
	// AllGroups sends the events to every group of the topic instead of
	// only to the group that gave up on each (bus.ReplayOptions).
	AllGroups bool `json:"all_groups,omitempty"`
	// Keep leaves the dead letters in the dead-letter topic.
	Keep bool `json:"keep,omitempty"`
}

// Replayed is one dead letter replayed.
type Replayed struct {
	// Sequence is the dead letter's sequence in the dead-letter topic.
	Sequence uint64 `json:"sequence"`
	// Receipt is the publish of its event back to the topic.
	Receipt Receipt `json:"receipt"`
}

// ReplayResult is the answer of a replay.
type ReplayResult struct {
	Replayed []Replayed `json:"replayed"`
}
