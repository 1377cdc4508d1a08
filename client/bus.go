package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/bus"
	"github.com/meridian-platform/meridian/bus/bushttp"
)

// topicPath is /v1/topics/{topic}, after checking the name so that a bad
// one fails here, naming the field.
func topicPath(topic string) (string, error) {
	if err := bus.ValidateTopic(topic); err != nil {
		return "", err
	}
	return "/v1/topics/" + url.PathEscape(topic), nil
}

// Publish publishes e to topic, in the structured content mode, and
// returns the receipt once the bus has stored it. e is sent as it is: the
// server fills specversion and time when missing and answers CodeInvalid
// naming the attribute at fault. A duplicate (same source and id within
// the topic's dedup window) is not an error: the receipt says Duplicate.
func (c *Client) Publish(ctx context.Context, topic string, e bus.Event) (bushttp.Receipt, error) {
	var out bushttp.Receipt
	path, err := topicPath(topic)
	if err != nil {
		return out, err
	}
	_, err = c.do(ctx, request{method: http.MethodPost, path: path + "/events", body: e, contentType: bushttp.ContentTypeStructured}, &out)
	return out, err
}

// PublishBatch publishes events to topic in one request (the batched
// content mode) and returns their receipts in order. The server checks
// every event before storing any; on an error some may be stored, and
// publishing the same batch again is safe (dedup by source and id).
func (c *Client) PublishBatch(ctx context.Context, topic string, events []bus.Event) ([]bushttp.Receipt, error) {
	path, err := topicPath(topic)
	if err != nil {
		return nil, err
	}
	var out bushttp.BatchReceipt
	if _, err := c.do(ctx, request{method: http.MethodPost, path: path + "/events", body: events, contentType: bushttp.ContentTypeBatch}, &out); err != nil {
		return nil, err
	}
	return out.Receipts, nil
}

// Topics lists the topics with their counts, dead-letter topics included.
func (c *Client) Topics(ctx context.Context) ([]bus.TopicInfo, error) {
	var out bushttp.TopicList
	if _, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/topics"}, &out); err != nil {
		return nil, err
	}
	return out.Topics, nil
}

// Topic describes one topic, its groups and its dead-letter count;
// CodeNotFound when it does not exist.
func (c *Client) Topic(ctx context.Context, topic string) (*bushttp.TopicDetail, error) {
	path, err := topicPath(topic)
	if err != nil {
		return nil, err
	}
	var out bushttp.TopicDetail
	if _, err := c.do(ctx, request{method: http.MethodGet, path: path}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// StreamQuery says where a topic stream starts; at most one field may be
// set. The zero value streams the events published from now on.
type StreamQuery struct {
	// FromSeq starts at this sequence (or the first retained after it); 1
	// streams everything the topic retains.
	FromSeq uint64
	// Since starts at the first event stored at or after this time.
	Since time.Time
	// After resumes after this sequence, as a reconnect does.
	After uint64
	// Ready, when set, is called once the server's subscription exists:
	// events published from then on are in the stream.
	Ready func(bushttp.StreamReady)
}

// StreamEvents streams a topic's events (GET
// /v1/topics/{topic}/events/stream) and calls fn with each, in order,
// from the calling goroutine. It blocks until ctx ends (returning
// ctx.Err()), fn returns an error (returned unchanged) or the stream
// breaks (a *meridian.Error, CodeUnavailable when the connection was
// lost). To resume, call again with After set to the last Sequence fn saw.
// The stream is at least once: after a break, an event may come twice.
func (c *Client) StreamEvents(ctx context.Context, topic string, q StreamQuery, fn func(bushttp.TopicEvent) error) error {
	path, err := topicPath(topic)
	if err != nil {
		return err
	}
	query := url.Values{}
	if q.FromSeq > 0 {
		query.Set("from_seq", u64(q.FromSeq))
	}
	if !q.Since.IsZero() {
		query.Set("since", q.Since.UTC().Format(time.RFC3339Nano))
	}
	return c.watch(ctx, path+"/events/stream", query, q.After, func(ev sseEvent, _ uint64) error {
		switch ev.name {
		case bushttp.StreamEventReady:
			var r bushttp.StreamReady
			if err := c.decodeEvent(ev, &r); err != nil {
				return err
			}
			if q.Ready != nil {
				q.Ready(r)
			}
			return nil
		case bushttp.StreamEventEvent:
			var te bushttp.TopicEvent
			if err := c.decodeEvent(ev, &te); err != nil {
				return err
			}
			if err := fn(te); err != nil {
				return errCallback{err}
			}
		}
		return nil // a kind of event this client does not know
	})
}

// DeadLetters lists up to limit dead letters of topic (the original
// topic, not its ".dlq") after a sequence of the dead-letter topic,
// oldest first. limit 0 is the server's default (100).
func (c *Client) DeadLetters(ctx context.Context, topic string, after uint64, limit int) ([]bus.DeadLetter, error) {
	path, err := topicPath(topic)
	if err != nil {
		return nil, err
	}
	query := url.Values{}
	if after > 0 {
		query.Set("after", u64(after))
	}
	if limit > 0 {
		query.Set("limit", strconv.Itoa(limit))
	}
	var out bushttp.DeadLetterList
	if _, err := c.do(ctx, request{method: http.MethodGet, path: path + "/dlq", query: query}, &out); err != nil {
		return nil, err
	}
	return out.DeadLetters, nil
}

// DeadLetter reads one dead letter by its sequence in the dead-letter
// topic; CodeNotFound when there is none.
func (c *Client) DeadLetter(ctx context.Context, topic string, seq uint64) (*bus.DeadLetter, error) {
	path, err := topicPath(topic)
	if err != nil {
		return nil, err
	}
	if seq == 0 {
		return nil, meridian.FieldError("seq", "is required (1 or more)")
	}
	var out bus.DeadLetter
	if _, err := c.do(ctx, request{method: http.MethodGet, path: path + "/dlq/" + u64(seq)}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ReplayDeadLetters publishes dead letters back to topic: one
// (req.Sequence) or all of them (req.All), and reports each one replayed.
func (c *Client) ReplayDeadLetters(ctx context.Context, topic string, req bushttp.ReplayRequest) ([]bushttp.Replayed, error) {
	path, err := topicPath(topic)
	if err != nil {
		return nil, err
	}
	var out bushttp.ReplayResult
	if _, err := c.do(ctx, request{method: http.MethodPost, path: path + "/dlq/replay", body: req}, &out); err != nil {
		return nil, err
	}
	return out.Replayed, nil
}
