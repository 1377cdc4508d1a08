package main

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/meridian-platform/meridian/bus"
	"github.com/meridian-platform/meridian/sdk"
)

// rawSys is what an application writes on nats.go JetStream alone: a
// stream per topic, JSON payloads with a Nats-Msg-Id for dedup, async
// publishes, one durable pull consumer with explicit acks.
type rawSys struct {
	pubConn, subConn *nats.Conn
	pub, sub         jetstream.JetStream
	batch            int
}

func newRaw(url string, batch int) (*rawSys, error) {
	pc, err := nats.Connect(url, nats.Name("raw-pub"))
	if err != nil {
		return nil, err
	}
	sc, err := nats.Connect(url, nats.Name("raw-sub"))
	if err != nil {
		pc.Close()
		return nil, err
	}
	pub, err := jetstream.New(pc, jetstream.WithPublishAsyncMaxPending(4000))
	if err != nil {
		return nil, err
	}
	sub, err := jetstream.New(sc)
	if err != nil {
		return nil, err
	}
	return &rawSys{pubConn: pc, subConn: sc, pub: pub, sub: sub, batch: batch}, nil
}

func (r *rawSys) name() string { return "raw" }

func (r *rawSys) setup(ctx context.Context, topic string) error {
	_, err := r.pub.CreateStream(ctx, jetstream.StreamConfig{
		Name: "RAW_" + topic, Subjects: []string{"raw." + topic}, Storage: jetstream.FileStorage,
		MaxAge: 7 * 24 * time.Hour, Duplicates: 2 * time.Minute,
	})
	return err
}

func (r *rawSys) consume(ctx context.Context, topic string, onEvent func(payload)) (func(), error) {
	c, err := r.sub.CreateConsumer(ctx, "RAW_"+topic, jetstream.ConsumerConfig{
		Durable: "g", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, MaxAckPending: 5000,
	})
	if err != nil {
		return nil, err
	}
	it, err := c.Messages(jetstream.PullMaxMessages(r.batch))
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			m, err := it.Next()
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return
			}
			if err != nil {
				continue
			}
			var p payload
			if json.Unmarshal(m.Data(), &p) == nil {
				onEvent(p)
			}
			m.Ack()
		}
	}()
	return func() { it.Stop(); <-done }, nil
}

func (r *rawSys) publish(ctx context.Context, topic string, p payload) error {
	data, err := encodePayload(p)
	if err != nil {
		return err
	}
	m := &nats.Msg{Subject: "raw." + topic, Data: data, Header: nats.Header{nats.MsgIdHdr: {nuid.Next()}}}
	_, err = r.pub.PublishMsgAsync(m)
	return err
}

func (r *rawSys) flush(ctx context.Context) error {
	select {
	case <-r.pub.PublishAsyncComplete():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *rawSys) teardown(ctx context.Context, topic string) error {
	return r.pub.DeleteStream(ctx, "RAW_"+topic)
}

func (r *rawSys) close() { r.pubConn.Close(); r.subConn.Close() }

// sdkSys goes through Meridian's SDK: sdk.OpenBus (one bus to publish, one
// to consume, as the raw side has two connections), typed topics.
type sdkSys struct {
	pub, sub *sdk.Bus
	batch    int
}

func newSDK(ctx context.Context, url string, batch int) (*sdkSys, error) {
	pub, err := sdk.OpenBus(ctx, sdk.BusConfig{URL: url, Name: "sdk-pub"})
	if err != nil {
		return nil, err
	}
	sub, err := sdk.OpenBus(ctx, sdk.BusConfig{URL: url, Name: "sdk-sub"})
	if err != nil {
		pub.Close(ctx)
		return nil, err
	}
	return &sdkSys{pub: pub, sub: sub, batch: batch}, nil
}

func (s *sdkSys) name() string { return "sdk" }

func topicOf(name string) bus.Topic[payload] {
	return bus.NewTopic[payload](name, "dev.meridian.bench", "/bench")
}

func (s *sdkSys) setup(ctx context.Context, topic string) error {
	_, err := s.pub.EnsureTopic(ctx, bus.TopicConfig{Name: topic})
	return err
}

func (s *sdkSys) consume(ctx context.Context, topic string, onEvent func(payload)) (func(), error) {
	sub, err := bus.Subscribe(ctx, s.sub, topicOf(topic), "g", func(ctx context.Context, m bus.Message[payload]) error {
		onEvent(m.Data)
		return nil
	}, bus.SubscribeOptions{Batch: s.batch, MaxInFlight: 5000, StartAt: bus.StartAt{First: true}})
	if err != nil {
		return nil, err
	}
	return func() { sub.Close() }, nil
}

func (s *sdkSys) publish(ctx context.Context, topic string, p payload) error {
	return bus.PublishAsync(ctx, s.pub, topicOf(topic), p, nil)
}

func (s *sdkSys) flush(ctx context.Context) error { return s.pub.Flush(ctx) }

func (s *sdkSys) teardown(ctx context.Context, topic string) error {
	return s.pub.DeleteTopic(ctx, topic)
}

func (s *sdkSys) close() {
	s.pub.Close(context.Background())
	s.sub.Close(context.Background())
}
