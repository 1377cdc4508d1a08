// Package jetstream is the event bus engine on NATS JetStream, the default
// (github.com/nats-io/nats.go/jetstream).
//
// Mapping (docs/bus.md has the reasons):
//
//   - A topic is one stream, named StreamPrefix + the topic with '.'
//     replaced by '_' ("orders.eu" → "BUS_orders_eu"), limits retention
//     (events stay for every group and for replay until MaxAge, MaxBytes or
//     MaxMsgs drops the oldest). Its partition p is the subject
//     "<SubjectPrefix>.<topic>.<p>"; a replay of a dead letter to one group
//     goes to "<SubjectPrefix>_r.<topic>.<p>.<group>". Each stream's
//     subjects have a fixed number of tokens beyond the topic's, so streams
//     of different topics never overlap.
//   - An unordered group is one durable pull consumer named after the
//     group, shared by its members (competing consumers); an ordered group
//     is one durable pull consumer per partition, "<group>_p<n>", with
//     MaxAckPending 1.
//   - Events are CloudEvents in binary content mode (wire.go); the dedup
//     key is the Nats-Msg-Id header, within the stream's Duplicates window.
//   - Retries are Nak with a delay; MaxDeliver is unlimited on the server
//     and the member dead-letters the event itself after MaxDeliveries.
//     The history of a failing event's attempts (time and error) is kept in
//     the KV bucket HistoryBucket until it succeeds or is dead-lettered.
package jetstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/bus"
)

// Config tunes the engine. The zero value works.
type Config struct {
	// SubjectPrefix is the subject token(s) before the topic. Default "bus".
	SubjectPrefix string
	// StreamPrefix starts every topic's stream name. Default "BUS_".
	StreamPrefix string
	// Replicas is the stream replicas of a topic whose TopicConfig has
	// none. Default 1; 3 on a production cluster.
	Replicas int
	// MemoryStorage keeps streams in memory instead of files (tests,
	// benchmarks); events do not survive a server restart.
	MemoryStorage bool
	// NoAutoCreate makes Publish and Subscribe on a missing topic fail with
	// not_found, instead of creating it with TopicDefaults.
	NoAutoCreate bool
	// TopicDefaults configures auto-created topics (Name is ignored), and
	// the zero fields of EnsureTopic's config.
	TopicDefaults bus.TopicConfig
	// MaxPendingPublishes bounds the asynchronous publishes awaiting their
	// acknowledgement; PublishAsync blocks beyond it. Default 4000.
	MaxPendingPublishes int
	// PublishTimeout fails an asynchronous publish not acknowledged within
	// it. Default none: a publish pending when the connection drops fails
	// then (nats.go fails them all on a disconnect), and Flush is bounded
	// by its context; a timeout costs a timer per publish. It also bounds
	// how long PublishAsync waits for room when MaxPendingPublishes are
	// outstanding (default 10s).
	PublishTimeout time.Duration
	// HistoryBucket is the KV bucket with the attempt histories of failing
	// events. Default "BUS_HISTORY".
	HistoryBucket string
	// HistoryTTL drops histories left behind (a group deleted while an
	// event was failing). Default 7 days.
	HistoryTTL time.Duration
	// Logger receives what the engine cannot return: failed acks, members
	// that stopped. Default: discard.
	Logger *slog.Logger
}

// Backend is the JetStream engine. It is safe for concurrent use.
type Backend struct {
	cfg Config
	nc  *nats.Conn
	js  jetstream.JetStream
	log *slog.Logger

	mu     sync.Mutex
	topics map[string]*topicState
	subs   map[*subscription]struct{}
	closed bool

	hist historyStore
	pub  asyncPublishes
	// stallWait bounds PublishAsync's wait for room.
	stallWait []jetstream.PublishOpt
}

var _ bus.Backend = (*Backend)(nil)

// topicState is what publishing and subscribing need of a topic's stream.
type topicState struct {
	name       string
	stream     string
	partitions int
	dedup      bool
	cfg        bus.TopicConfig // as created, for its dead-letter topic
}

// Stream metadata keys: what the stream name does not say.
const (
	mdTopic      = "meridian.topic"
	mdPartitions = "meridian.partitions"
	mdDedup      = "meridian.dedup"
	mdGroup      = "meridian.group"
	mdOrdered    = "meridian.ordered"
	mdPartition  = "meridian.partition"
)

// New returns an engine on nc, whose owner keeps it (and closes it after
// Close). It makes no call to the server: streams and consumers are made
// when first used.
func New(nc *nats.Conn, cfg Config) (*Backend, error) {
	if nc == nil {
		return nil, meridian.FieldError("nc", "a NATS connection is required")
	}
	if cfg.SubjectPrefix == "" {
		cfg.SubjectPrefix = "bus"
	}
	if cfg.StreamPrefix == "" {
		cfg.StreamPrefix = "BUS_"
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.MaxPendingPublishes <= 0 {
		cfg.MaxPendingPublishes = 4000
	}
	if cfg.HistoryBucket == "" {
		cfg.HistoryBucket = "BUS_HISTORY"
	}
	if cfg.HistoryTTL <= 0 {
		cfg.HistoryTTL = 7 * 24 * time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	for _, tok := range strings.Split(cfg.SubjectPrefix, ".") {
		if tok == "" || strings.ContainsAny(tok, "*> \t") {
			return nil, meridian.FieldError("SubjectPrefix", "%q is not a subject prefix", cfg.SubjectPrefix)
		}
	}
	if strings.ContainsAny(cfg.StreamPrefix, ".*> \t/\\") {
		return nil, meridian.FieldError("StreamPrefix", "%q cannot start a stream name", cfg.StreamPrefix)
	}
	b := &Backend{
		cfg:    cfg,
		nc:     nc,
		log:    cfg.Logger,
		topics: make(map[string]*topicState),
		subs:   make(map[*subscription]struct{}),
	}
	b.pub.init()
	stall := cfg.PublishTimeout
	if stall <= 0 {
		stall = 10 * time.Second
	}
	b.stallWait = []jetstream.PublishOpt{jetstream.WithStallWait(stall)}
	jsOpts := []jetstream.JetStreamOpt{
		jetstream.WithPublishAsyncMaxPending(cfg.MaxPendingPublishes),
		jetstream.WithPublishAsyncAckHandler(b.pub.acked),
		jetstream.WithPublishAsyncErrHandler(b.pub.errored),
	}
	if cfg.PublishTimeout > 0 {
		jsOpts = append(jsOpts, jetstream.WithPublishAsyncTimeout(cfg.PublishTimeout))
	}
	js, err := jetstream.New(nc, jsOpts...)
	if err != nil {
		return nil, fmt.Errorf("bus/jetstream: %w", err)
	}
	b.js = js
	b.hist = historyStore{js: js, bucket: cfg.HistoryBucket, ttl: cfg.HistoryTTL, replicas: cfg.Replicas, memory: cfg.MemoryStorage}
	return b, nil
}

// Close stops every subscription and waits for outstanding asynchronous
// publishes within ctx. The connection stays open.
func (b *Backend) Close(ctx context.Context) error {
	b.mu.Lock()
	b.closed = true
	subs := make([]*subscription, 0, len(b.subs))
	for s := range b.subs {
		subs = append(subs, s)
	}
	b.mu.Unlock()
	for _, s := range subs {
		s.Close()
	}
	return b.Flush(ctx)
}

// Names.

func (b *Backend) streamName(topic string) string {
	return b.cfg.StreamPrefix + strings.ReplaceAll(topic, ".", "_")
}

func (b *Backend) dataSubject(topic, partition string) string {
	return b.cfg.SubjectPrefix + "." + topic + "." + partition
}

func (b *Backend) replaySubject(topic, partition, group string) string {
	return b.cfg.SubjectPrefix + "_r." + topic + "." + partition + "." + group
}

func consumerName(group string, ordered bool, partition int) string {
	if !ordered {
		return group
	}
	return group + "_p" + strconv.Itoa(partition)
}

// topic returns the state of a topic, creating it with create's config
// when it is missing and create is not nil.
func (b *Backend) topic(ctx context.Context, name string, create func() bus.TopicConfig) (*topicState, error) {
	b.mu.Lock()
	ts := b.topics[name]
	b.mu.Unlock()
	if ts != nil {
		return ts, nil
	}
	info, err := b.js.Stream(ctx, b.streamName(name))
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		if create == nil {
			return nil, &meridian.Error{Code: meridian.CodeNotFound, Field: "topic", Message: fmt.Sprintf("topic %q does not exist", name)}
		}
		if _, err := b.EnsureTopic(ctx, create()); err != nil {
			return nil, err
		}
		b.mu.Lock()
		ts = b.topics[name]
		b.mu.Unlock()
		return ts, nil
	case err != nil:
		return nil, unavailable("look up topic "+name, err)
	}
	return b.remember(name, info.CachedInfo().Config)
}

// remember caches the state of a topic from its stream's config.
func (b *Backend) remember(name string, sc jetstream.StreamConfig) (*topicState, error) {
	if got := sc.Metadata[mdTopic]; got != name {
		return nil, &meridian.Error{Code: meridian.CodeConflict, Field: "topic",
			Message: fmt.Sprintf("stream %s belongs to topic %q, not %q (topic names that differ only in '.' and '_' share a stream name)", sc.Name, got, name)}
	}
	n, err := strconv.Atoi(sc.Metadata[mdPartitions])
	if err != nil || n < 1 {
		return nil, meridian.Errorf(meridian.CodeInternal, "stream %s has no partition count", sc.Name)
	}
	ts := &topicState{name: name, stream: sc.Name, partitions: n, dedup: sc.Metadata[mdDedup] != "off", cfg: topicConfig(name, sc)}
	b.mu.Lock()
	b.topics[name] = ts
	b.mu.Unlock()
	return ts, nil
}

func (b *Backend) forget(name string) {
	b.mu.Lock()
	delete(b.topics, name)
	b.mu.Unlock()
}

// defaults returns the auto-create config of a topic, nil when topics are
// not auto-created (dead-letter topics always are).
func (b *Backend) defaults(name string) func() bus.TopicConfig {
	if b.cfg.NoAutoCreate {
		return nil
	}
	return func() bus.TopicConfig {
		c := b.cfg.TopicDefaults
		c.Name = name
		return c
	}
}

// unavailable wraps an error of the server or the connection.
func unavailable(what string, err error) error {
	if me := (*meridian.Error)(nil); errors.As(err, &me) {
		return err
	}
	return &meridian.Error{Code: meridian.CodeUnavailable, Message: "bus/jetstream: " + what, Err: err}
}
