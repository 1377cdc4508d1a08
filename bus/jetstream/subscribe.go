package jetstream

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/bus"
	"github.com/meridian-platform/meridian/internal/backoff"
)

// subscription is one member of a group: one pull consumer (unordered) or
// one per partition (ordered), each read by a fetch goroutine; handlers
// run on the fetch goroutine (ordered, or Concurrency 1) or on
// Concurrency workers fed by it.
type subscription struct {
	b            *Backend
	topic, group string
	ts           *topicState
	opts         bus.SubscribeOptions
	h            bus.Handler

	// dataPrefix and replayPrefix start the topic's subjects, up to the
	// partition.
	dataPrefix, replayPrefix string

	// hctx is the parent of handler contexts: ctx's values, cancelled by
	// Close.
	hctx      context.Context
	cancel    context.CancelFunc
	stopWatch func() bool // stops the watch on Subscribe's ctx; under mu

	iters     []jetstream.MessagesContext
	ephemeral []string // consumers of a private subscription, deleted at the end

	stopping atomic.Bool
	quit     chan struct{} // closed when stopping starts
	stopOnce sync.Once
	wg       sync.WaitGroup // fetchers and workers
	done     chan struct{}  // closed when everything has stopped

	mu  sync.Mutex
	err error
}

var _ bus.Subscription = (*subscription)(nil)

// Subscribe joins group on topic.
func (b *Backend) Subscribe(ctx context.Context, topic, group string, h bus.Handler, opts bus.SubscribeOptions) (bus.Subscription, error) {
	if h == nil {
		return nil, meridian.FieldError("handler", "is required")
	}
	if err := bus.ValidateTopic(topic); err != nil {
		return nil, err
	}
	if err := bus.ValidateGroup(group); err != nil {
		return nil, err
	}
	opts = opts.WithDefaults(topic)
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	ts, err := b.topic(ctx, topic, b.defaults(topic))
	if err != nil {
		return nil, err
	}
	hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &subscription{
		b: b, topic: topic, group: group, ts: ts, opts: opts, h: h,
		dataPrefix:   b.dataSubject(topic, ""),
		replayPrefix: b.cfg.SubjectPrefix + "_r." + topic + ".",
		hctx:         hctx, cancel: cancel,
		quit: make(chan struct{}),
		done: make(chan struct{}),
	}

	parts := []int{-1}
	if opts.Ordered {
		parts = make([]int, ts.partitions)
		for i := range parts {
			parts[i] = i
		}
	}
	for _, p := range parts {
		c, err := b.ensureConsumer(ctx, s, p)
		if err == nil {
			if group == "" {
				s.ephemeral = append(s.ephemeral, c.CachedInfo().Name)
			}
			var it jetstream.MessagesContext
			it, err = c.Messages(s.pullOpts()...)
			if err == nil {
				s.iters = append(s.iters, it)
			}
		}
		if err != nil {
			s.abort()
			return nil, err
		}
	}

	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		s.abort()
		return nil, meridian.Errorf(meridian.CodeUnavailable, "bus/jetstream: the backend is closed")
	}
	b.subs[s] = struct{}{}
	b.mu.Unlock()

	for _, it := range s.iters {
		var work chan jetstream.Msg
		if !opts.Ordered && opts.Concurrency > 1 {
			work = make(chan jetstream.Msg)
			for range opts.Concurrency {
				s.wg.Add(1)
				go s.worker(work)
			}
		}
		s.wg.Add(1)
		go s.fetch(it, work)
	}
	go s.finish()
	stop := context.AfterFunc(ctx, func() { s.beginStop(false, nil) })
	s.mu.Lock()
	s.stopWatch = stop
	s.mu.Unlock()
	return s, nil
}

func (s *subscription) pullOpts() []jetstream.PullMessagesOpt {
	if s.opts.Ordered {
		// The consumer hands out one event at a time anyway.
		return []jetstream.PullMessagesOpt{jetstream.PullMaxMessages(1)}
	}
	return []jetstream.PullMessagesOpt{jetstream.PullMaxMessages(s.opts.Batch)}
}

// ensureConsumer finds or creates the consumer of a partition (p < 0: the
// whole topic) for s, bringing its ack wait and in-flight limit to the
// member's options.
func (b *Backend) ensureConsumer(ctx context.Context, s *subscription, p int) (jetstream.Consumer, error) {
	o := s.opts
	cfg := jetstream.ConsumerConfig{
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       o.AckWait,
		MaxDeliver:    -1, // the member dead-letters after MaxDeliveries
		MaxAckPending: o.MaxInFlight,
		Metadata:      map[string]string{mdGroup: s.group, mdOrdered: strconv.FormatBool(o.Ordered)},
	}
	// An unordered member reads the whole stream, without a filter: the
	// server's fastest path (a filter costs it some 15% more CPU per
	// event). Replays meant for other groups reach it too, and are
	// acknowledged unseen (skip). An ordered member reads one partition.
	part := ""
	if p >= 0 {
		part = strconv.Itoa(p)
		cfg.MaxAckPending = 1
		cfg.Metadata[mdPartition] = part
		cfg.FilterSubjects = []string{b.dataSubject(s.topic, part)}
	}
	switch st := o.StartAt; {
	case st.First:
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	case st.Sequence > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, st.Sequence
	case !st.Time.IsZero():
		t := st.Time
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
	default:
		cfg.DeliverPolicy = jetstream.DeliverNewPolicy
	}
	stream := s.ts.stream
	if s.group == "" {
		// Private: the server removes it if its member vanishes.
		cfg.InactiveThreshold = max(10*time.Second, o.AckWait)
		c, err := b.js.CreateConsumer(ctx, stream, cfg)
		if err != nil {
			return nil, b.consumerErr(s, err)
		}
		return c, nil
	}
	name := consumerName(s.group, o.Ordered, p)
	cfg.Durable = name
	if p >= 0 {
		cfg.FilterSubjects = append(cfg.FilterSubjects, b.replaySubject(s.topic, part, s.group))
	}
	// An ordered group and an unordered one of the same name would both
	// get every event: refuse the second.
	other := consumerName(s.group, !o.Ordered, 0)
	if c, err := b.js.Consumer(ctx, stream, other); err == nil && c.CachedInfo().Config.Metadata[mdGroup] == s.group {
		return nil, &meridian.Error{Code: meridian.CodeConflict, Field: "group",
			Message: fmt.Sprintf("group %s of topic %s exists with ordered=%v; a group is either ordered or not", s.group, s.topic, !o.Ordered)}
	}
	for range 3 {
		c, err := b.js.Consumer(ctx, stream, name)
		if err == nil {
			old := c.CachedInfo().Config
			if old.Metadata[mdGroup] != s.group {
				return nil, &meridian.Error{Code: meridian.CodeConflict, Field: "group",
					Message: fmt.Sprintf("consumer %s of topic %s belongs to group %q, not %q", name, s.topic, old.Metadata[mdGroup], s.group)}
			}
			if old.AckWait == cfg.AckWait && old.MaxAckPending == cfg.MaxAckPending {
				return c, nil
			}
			old.AckWait, old.MaxAckPending = cfg.AckWait, cfg.MaxAckPending
			c, err = b.js.UpdateConsumer(ctx, stream, old)
			if err != nil {
				return nil, b.consumerErr(s, err)
			}
			return c, nil
		}
		if !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil, b.consumerErr(s, err)
		}
		c, err = b.js.CreateConsumer(ctx, stream, cfg)
		if errors.Is(err, jetstream.ErrConsumerExists) {
			continue // another member created it first
		}
		if err != nil {
			return nil, b.consumerErr(s, err)
		}
		return c, nil
	}
	return nil, meridian.Errorf(meridian.CodeConflict, "group %s of topic %s: consumer %s keeps changing", s.group, s.topic, name)
}

func (b *Backend) consumerErr(s *subscription, err error) error {
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		b.forget(s.topic)
		return notFound("topic", "topic %q does not exist", s.topic)
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.Code == 400 {
		return &meridian.Error{Code: meridian.CodeInvalid, Field: "group", Message: fmt.Sprintf("cannot join group %q of topic %s: %s", s.group, s.topic, apiErr.Description), Err: err}
	}
	return unavailable("join group "+s.group+" of "+s.topic, err)
}

// fetch reads one consumer until the subscription stops, handing events
// to work (or handling them itself when work is nil). Once stopping, the
// events still buffered are given back to the group.
func (s *subscription) fetch(it jetstream.MessagesContext, work chan jetstream.Msg) {
	defer s.wg.Done()
	if work != nil {
		defer close(work)
	}
	var bo backoff.Backoff
	for {
		msg, err := it.Next()
		if err != nil {
			switch {
			case errors.Is(err, jetstream.ErrConsumerDeleted), errors.Is(err, jetstream.ErrConsumerNotFound),
				errors.Is(err, jetstream.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, jetstream.ErrBadRequest):
				s.beginStop(false, fmt.Errorf("bus/jetstream: group %q of %s: %w", s.group, s.topic, err))
				return // what is buffered comes back after AckWait
			case errors.Is(err, jetstream.ErrMsgIteratorClosed):
				return
			}
			// Missed heartbeats, a reconnect: nats.go recovers by itself.
			s.b.log.Debug("bus: fetch", "topic", s.topic, "group", s.group, "err", err)
			backoff.Sleep(s.hctx, bo.Next())
			continue
		}
		bo.Reset()
		if s.stopping.Load() {
			_ = msg.Nak()
			continue
		}
		if work == nil {
			s.handle(msg)
			continue
		}
		select {
		case work <- msg:
		case <-s.quit:
			_ = msg.Nak()
		}
	}
}

func (s *subscription) worker(work <-chan jetstream.Msg) {
	defer s.wg.Done()
	for msg := range work {
		s.handle(msg)
	}
}

// handle runs the handler on one message and settles it: ack, a delayed
// redelivery, or a dead letter.
func (s *subscription) handle(msg jetstream.Msg) {
	md, err := msg.Metadata()
	if err != nil {
		s.b.log.Warn("bus: message without JetStream metadata", "topic", s.topic, "subject", msg.Subject(), "err", err)
		_ = msg.Term()
		return
	}
	if s.skip(msg.Subject()) {
		_ = msg.Ack()
		return
	}
	d := &bus.Delivery{
		Topic: s.topic, Group: s.group, Partition: s.partitionOf(msg.Subject()),
		Sequence: md.Sequence.Stream, Attempt: int(md.NumDelivered), Published: md.Timestamp,
		Heartbeat: msg.InProgress,
	}
	e, herr := decode(msg.Headers(), msg.Data())
	if herr != nil {
		// Not a CloudEvent (published around the bus): keep its bytes in
		// the dead-letter topic under an event of our own.
		e = bus.Event{
			ID: fmt.Sprintf("%s-%d", md.Stream, md.Sequence.Stream), Source: "/meridian/bus/" + s.topic, SpecVersion: bus.SpecVersion,
			Type: "dev.meridian.bus.malformed", Time: md.Timestamp, DataContentType: "application/octet-stream", Data: msg.Data(),
		}
		herr = bus.Permanent(fmt.Errorf("not a binary-mode CloudEvent: %w", herr))
	}
	d.Event = e
	if herr == nil {
		herr = s.call(d)
	}
	if herr != nil && s.hctx.Err() != nil {
		// Cut off by Close: not the event's fault; give it back now.
		_ = msg.Nak()
		return
	}
	dec := s.opts.Decide(d.Attempt, herr)
	if dec.Action == bus.ActionAck {
		if err := msg.Ack(); err != nil {
			s.b.log.Warn("bus: ack", "topic", s.topic, "group", s.group, "seq", d.Sequence, "err", err)
		}
		if d.Attempt == 1 {
			return // the fast path: no history to forget
		}
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.hctx), 10*time.Second)
	defer cancel()
	key := historyKey(md.Stream, md.Consumer, md.Sequence.Stream)
	switch dec.Action {
	case bus.ActionAck:
		if err := s.b.hist.forget(ctx, key); err != nil {
			s.b.log.Debug("bus: forget history", "key", key, "err", err)
		}
	case bus.ActionRetry:
		if _, err := s.b.hist.record(ctx, key, d.Attempt, bus.Attempt{At: time.Now().UTC(), Error: herr.Error()}, true); err != nil {
			s.b.log.Warn("bus: record attempt", "key", key, "err", err)
		}
		_ = msg.NakWithDelay(dec.Delay)
	case bus.ActionDeadLetter:
		attempts, err := s.b.hist.record(ctx, key, d.Attempt, bus.Attempt{At: time.Now().UTC(), Error: herr.Error()}, false)
		if err != nil {
			s.b.log.Warn("bus: read attempts", "key", key, "err", err)
		}
		if err := s.deadLetter(ctx, d, md.Consumer, herr, attempts); err != nil {
			// Nothing is lost: the event stays in the group and comes back.
			s.b.log.Warn("bus: dead letter", "topic", s.topic, "group", s.group, "seq", d.Sequence, "err", err)
			_ = msg.NakWithDelay(s.opts.Delay(d.Attempt))
			return
		}
		_ = msg.TermWithReason("dead-lettered to " + s.opts.DeadLetterTopic)
		if err := s.b.hist.forget(ctx, key); err != nil {
			s.b.log.Debug("bus: forget history", "key", key, "err", err)
		}
	}
}

// call runs the handler, turning a panic into an error.
func (s *subscription) call(d *bus.Delivery) (err error) {
	defer func() {
		if r := recover(); r != nil {
			s.b.log.Error("bus: handler panicked", "topic", s.topic, "group", s.group, "event", d.Event.String(), "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("handler panicked: %v", r)
		}
	}()
	return s.h(bus.HandlerContext(s.hctx, d), d)
}

// deadLetter publishes d's event to the dead-letter topic, keyed so that a
// second try (the Term was lost, the member died) stores it once.
func (s *subscription) deadLetter(ctx context.Context, d *bus.Delivery, consumer string, cause error, attempts []bus.Attempt) error {
	dl := bus.DeadLetter{
		Topic: s.topic, Group: s.group, Partition: d.Partition, OriginalSequence: d.Sequence,
		Reason: cause.Error(), Deliveries: d.Attempt, Attempts: attempts, DeadAt: time.Now().UTC(), Event: d.Event,
	}
	e := dl.ToEvent()
	src := s.ts.cfg
	dts, err := s.b.topic(ctx, s.opts.DeadLetterTopic, func() bus.TopicConfig {
		c := src
		c.Name, c.Partitions = s.opts.DeadLetterTopic, 1
		return c
	})
	if err != nil {
		return err
	}
	p := bus.Partition(bus.OrderingKey(&e), dts.partitions)
	m := encode(s.b.dataSubject(dts.name, strconv.Itoa(p)), &e, "dlq:"+s.ts.stream+":"+consumer+":"+strconv.FormatUint(d.Sequence, 10))
	_, err = s.b.publishMsg(ctx, dts, p, m)
	return err
}

// skip reports whether subject is a replay meant for another group.
func (s *subscription) skip(subject string) bool {
	rest, ok := strings.CutPrefix(subject, s.replayPrefix)
	if !ok {
		return false
	}
	_, group, _ := strings.Cut(rest, ".")
	return group != s.group || s.group == ""
}

// partitionOf reads the partition from a data or replay subject.
func (s *subscription) partitionOf(subject string) int {
	rest, ok := strings.CutPrefix(subject, s.dataPrefix)
	if !ok {
		rest, _ = strings.CutPrefix(subject, s.replayPrefix)
		rest, _, _ = strings.Cut(rest, ".")
	}
	p, _ := strconv.Atoi(rest)
	return p
}

// beginStop starts stopping, once: no more fetching, buffered events given
// back; with graceful false, handler contexts are cancelled too. cause is
// the error that stopped it, nil when asked to.
func (s *subscription) beginStop(graceful bool, cause error) {
	if cause != nil {
		s.mu.Lock()
		if s.err == nil {
			s.err = cause
		}
		s.mu.Unlock()
	}
	if !graceful {
		s.cancel()
	}
	s.stopOnce.Do(func() {
		s.stopping.Store(true)
		close(s.quit)
		for _, it := range s.iters {
			it.Drain()
		}
	})
}

// finish waits for the goroutines, then cleans up.
func (s *subscription) finish() {
	s.wg.Wait()
	s.mu.Lock()
	if s.stopWatch != nil {
		s.stopWatch()
	}
	s.mu.Unlock()
	s.cleanup()
	s.cancel()
	close(s.done)
}

func (s *subscription) cleanup() {
	s.b.mu.Lock()
	delete(s.b.subs, s)
	s.b.mu.Unlock()
	if len(s.ephemeral) == 0 || s.b.nc.IsClosed() {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.hctx), 5*time.Second)
	defer cancel()
	for _, name := range s.ephemeral {
		if err := s.b.js.DeleteConsumer(ctx, s.ts.stream, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			s.b.log.Debug("bus: delete private consumer", "consumer", name, "err", err)
		}
	}
}

// abort undoes a Subscribe that failed half-way.
func (s *subscription) abort() {
	for _, it := range s.iters {
		it.Stop()
	}
	s.cleanup()
	s.cancel()
}

func (s *subscription) Topic() string { return s.topic }
func (s *subscription) Group() string { return s.group }

func (s *subscription) Drain(ctx context.Context) error {
	s.beginStop(true, nil)
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		s.beginStop(false, nil)
		<-s.done
		return ctx.Err()
	}
}

func (s *subscription) Close() error {
	s.beginStop(false, nil)
	<-s.done
	return nil
}

func (s *subscription) Done() <-chan struct{} { return s.done }

func (s *subscription) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}
