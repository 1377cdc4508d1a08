package jetstream

import (
	"context"
	"errors"
	"strconv"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/bus"
)

// message builds the message of a publish: validated event, partition,
// subject and dedup key.
func (b *Backend) message(ctx context.Context, topic string, e *bus.Event, opts []bus.PublishOption) (*nats.Msg, *topicState, int, error) {
	pc, err := bus.Prepare(ctx, topic, e, opts)
	if err != nil {
		return nil, nil, 0, err
	}
	ts, err := b.topic(ctx, topic, b.defaults(topic))
	if err != nil {
		return nil, nil, 0, err
	}
	p := bus.Partition(bus.OrderingKey(e), ts.partitions)
	return encode(b.dataSubject(topic, strconv.Itoa(p)), e, msgID(ts, e, pc)), ts, p, nil
}

func msgID(ts *topicState, e *bus.Event, pc bus.PublishConfig) string {
	switch {
	case pc.NoDedup || !ts.dedup:
		return ""
	case pc.DedupID != "":
		return pc.DedupID
	}
	return bus.DedupKey(e.Source, e.ID)
}

// Publish stores e and waits for the stream's acknowledgement.
func (b *Backend) Publish(ctx context.Context, topic string, e bus.Event, opts ...bus.PublishOption) (bus.Receipt, error) {
	m, ts, p, err := b.message(ctx, topic, &e, opts)
	if err != nil {
		return bus.Receipt{}, err
	}
	return b.publishMsg(ctx, ts, p, m)
}

func (b *Backend) publishMsg(ctx context.Context, ts *topicState, p int, m *nats.Msg) (bus.Receipt, error) {
	ack, err := b.js.PublishMsg(ctx, m)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoStreamResponse) {
			// The stream may have been deleted since it was cached.
			b.forget(ts.name)
		}
		return bus.Receipt{}, unavailable("publish to "+ts.name, err)
	}
	return bus.Receipt{Topic: ts.name, Partition: p, Sequence: ack.Sequence, Duplicate: ack.Duplicate}, nil
}

// PublishAsync sends e; done learns the outcome.
func (b *Backend) PublishAsync(ctx context.Context, topic string, e bus.Event, done func(bus.Receipt, error), opts ...bus.PublishOption) error {
	m, ts, p, err := b.message(ctx, topic, &e, opts)
	if err != nil {
		return err
	}
	b.pub.add(m, pending{topic: ts.name, partition: p, source: e.Source, id: e.ID, done: done})
	if _, err := b.js.PublishMsgAsync(m, b.stallWait...); err != nil {
		if p, ok := b.pub.take(m, nil); ok {
			b.pub.settle(p)
		}
		return unavailable("publish to "+topic, err)
	}
	return nil
}

// Flush waits for the asynchronous publishes made before it.
func (b *Backend) Flush(ctx context.Context) error {
	return b.pub.flush(ctx)
}

// asyncPublishes tracks the asynchronous publishes awaiting their ack, by
// message: nats.go's ack and error handlers hand back the message. Each
// publish belongs to the epoch current when it was made; Flush closes the
// epoch and waits for it and the earlier ones to empty, so that publishes
// made after a Flush began never hold it up.
type asyncPublishes struct {
	mu      sync.Mutex
	pending map[*nats.Msg]pending
	epoch   uint64
	epochs  map[uint64]*epoch
	failed  []bus.FailedPublish
}

// maxFailures bounds the failures kept for the next Flush when nobody
// flushes; done callbacks see every one.
const maxFailures = 1000

type epoch struct {
	n    int
	done chan struct{}
}

type pending struct {
	epoch      uint64
	topic      string
	partition  int
	source, id string
	done       func(bus.Receipt, error)
}

func (a *asyncPublishes) init() {
	a.pending = make(map[*nats.Msg]pending)
	a.epochs = map[uint64]*epoch{0: {done: make(chan struct{})}}
}

func (a *asyncPublishes) add(m *nats.Msg, p pending) {
	a.mu.Lock()
	p.epoch = a.epoch
	a.epochs[a.epoch].n++
	a.pending[m] = p
	a.mu.Unlock()
}

// take forgets m, reporting what it was and recording err if it failed.
// settle must follow, once its done has been called.
func (a *asyncPublishes) take(m *nats.Msg, err error) (pending, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.pending[m]
	if !ok {
		return p, false
	}
	delete(a.pending, m)
	if err != nil && len(a.failed) < maxFailures {
		a.failed = append(a.failed, bus.FailedPublish{Topic: p.topic, Source: p.source, ID: p.id, Err: err})
	}
	return p, true
}

// settle counts p out of its epoch, so that a Flush waiting for it returns
// only after its done has run.
func (a *asyncPublishes) settle(p pending) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if e := a.epochs[p.epoch]; e != nil {
		e.n--
		if e.n == 0 && p.epoch != a.epoch {
			close(e.done)
			delete(a.epochs, p.epoch)
		}
	}
}

func (a *asyncPublishes) acked(_ jetstream.JetStream, m *nats.Msg, ack *jetstream.PubAck) {
	p, ok := a.take(m, nil)
	if !ok {
		return
	}
	if p.done != nil {
		p.done(bus.Receipt{Topic: p.topic, Partition: p.partition, Sequence: ack.Sequence, Duplicate: ack.Duplicate}, nil)
	}
	a.settle(p)
}

func (a *asyncPublishes) errored(_ jetstream.JetStream, m *nats.Msg, err error) {
	p, ok := a.take(m, err)
	if !ok {
		return
	}
	if p.done != nil {
		p.done(bus.Receipt{}, &meridian.Error{Code: meridian.CodeUnavailable, Message: "bus/jetstream: publish to " + p.topic, Err: err})
	}
	a.settle(p)
}

// flush closes the current epoch and waits until it and every earlier one
// have emptied, then reports (and forgets) the failures seen so far.
func (a *asyncPublishes) flush(ctx context.Context) error {
	a.mu.Lock()
	var wait []chan struct{}
	for n, e := range a.epochs {
		if e.n == 0 {
			close(e.done)
			delete(a.epochs, n)
		} else {
			wait = append(wait, e.done)
		}
	}
	a.epoch++
	a.epochs[a.epoch] = &epoch{done: make(chan struct{})}
	a.mu.Unlock()
	for _, done := range wait {
		select {
		case <-done:
		case <-ctx.Done():
			return &meridian.Error{Code: meridian.CodeUnavailable, Message: "bus/jetstream: flush: publishes still awaiting their acknowledgement", Err: ctx.Err()}
		}
	}
	a.mu.Lock()
	failed := a.failed
	a.failed = nil
	a.mu.Unlock()
	if len(failed) > 0 {
		return &bus.PublishError{Failed: failed}
	}
	return nil
}
