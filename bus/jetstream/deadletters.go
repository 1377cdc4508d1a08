package jetstream

import (
	"context"
	"errors"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/bus"
)

// dlqStream returns the dead-letter stream of topic; ok false when the
// topic has none yet (nothing was dead-lettered).
func (b *Backend) dlqStream(ctx context.Context, topic string) (jetstream.Stream, bool, error) {
	if err := bus.ValidateTopic(topic); err != nil {
		return nil, false, err
	}
	s, err := b.stream(ctx, bus.DeadLetterTopic(topic))
	if meridian.IsCode(err, meridian.CodeNotFound) {
		if _, err := b.stream(ctx, topic); err != nil {
			return nil, false, err
		}
		return nil, false, nil
	}
	return s, err == nil, err
}

// DeadLetters lists dead letters after a sequence of the dead-letter topic.
func (b *Backend) DeadLetters(ctx context.Context, topic string, after uint64, limit int) ([]bus.DeadLetter, error) {
	if limit <= 0 {
		limit = 100
	}
	s, ok, err := b.dlqStream(ctx, topic)
	if err != nil || !ok {
		return nil, err
	}
	subj := b.dataSubject(bus.DeadLetterTopic(topic), "*")
	var out []bus.DeadLetter
	for seq := after + 1; len(out) < limit; {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return out, unavailable("read dead letters of "+topic, err)
		}
		if dl, err := readDeadLetter(m); err == nil {
			out = append(out, dl)
		}
		seq = m.Sequence + 1
	}
	return out, nil
}

func readDeadLetter(m *jetstream.RawStreamMsg) (bus.DeadLetter, error) {
	e, err := decode(m.Header, m.Data)
	if err != nil {
		return bus.DeadLetter{}, err
	}
	return bus.ParseDeadLetter(e, m.Sequence)
}

// DeadLetter reads one dead letter.
func (b *Backend) DeadLetter(ctx context.Context, topic string, seq uint64) (bus.DeadLetter, error) {
	s, ok, err := b.dlqStream(ctx, topic)
	if err != nil {
		return bus.DeadLetter{}, err
	}
	if !ok || seq == 0 {
		return bus.DeadLetter{}, noDeadLetter(topic, seq)
	}
	m, err := s.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return bus.DeadLetter{}, noDeadLetter(topic, seq)
	}
	if err != nil {
		return bus.DeadLetter{}, unavailable("read dead letter", err)
	}
	dl, err := readDeadLetter(m)
	if err != nil {
		return bus.DeadLetter{}, &meridian.Error{Code: meridian.CodeInvalid, Field: "seq", Message: "message " + strconv.FormatUint(seq, 10) + " of " + bus.DeadLetterTopic(topic) + " is not a dead letter", Err: err}
	}
	return dl, nil
}

func noDeadLetter(topic string, seq uint64) error {
	return notFound("seq", "%s has no dead letter %d", bus.DeadLetterTopic(topic), seq)
}

// ReplayDeadLetter publishes a dead letter's event again, to its group's
// replay subject (or to the topic), then deletes it unless opts.Keep.
func (b *Backend) ReplayDeadLetter(ctx context.Context, topic string, seq uint64, opts bus.ReplayOptions) (bus.Receipt, error) {
	dl, err := b.DeadLetter(ctx, topic, seq)
	if err != nil {
		return bus.Receipt{}, err
	}
	ts, err := b.topic(ctx, dl.Topic, nil)
	if err != nil {
		return bus.Receipt{}, err
	}
	e := dl.Event
	p := dl.Partition
	if p < 0 || p >= ts.partitions {
		p = bus.Partition(bus.OrderingKey(&e), ts.partitions)
	}
	subject := b.dataSubject(ts.name, strconv.Itoa(p))
	if dl.Group != "" && !opts.AllGroups {
		subject = b.replaySubject(ts.name, strconv.Itoa(p), dl.Group)
	}
	id := ""
	if ts.dedup {
		id = "replay:" + b.streamName(bus.DeadLetterTopic(topic)) + ":" + strconv.FormatUint(seq, 10)
	}
	r, err := b.publishMsg(ctx, ts, p, encode(subject, &e, id))
	if err != nil {
		return r, err
	}
	if !opts.Keep {
		if err := b.DeleteDeadLetter(ctx, topic, seq); err != nil && !meridian.IsCode(err, meridian.CodeNotFound) {
			return r, err
		}
	}
	return r, nil
}

// DeleteDeadLetter removes one dead letter.
func (b *Backend) DeleteDeadLetter(ctx context.Context, topic string, seq uint64) error {
	s, ok, err := b.dlqStream(ctx, topic)
	if err != nil {
		return err
	}
	if !ok || seq == 0 {
		return noDeadLetter(topic, seq)
	}
	if err := s.DeleteMsg(ctx, seq); err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) || errors.Is(err, jetstream.ErrMsgDeleteUnsuccessful) {
			return noDeadLetter(topic, seq)
		}
		return unavailable("delete dead letter", err)
	}
	return nil
}
