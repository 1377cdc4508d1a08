package jetstream

import (
	"context"
	"strconv"
	"testing"

	"github.com/meridian-platform/meridian/bus"
)

type benchPayload struct {
	Seq  int    `json:"seq"`
	Sent int64  `json:"sent"`
	Pad  string `json:"pad"`
}

// BenchmarkPublishPath is the client work of one typed publish before
// nats.go: event, validation, wire encoding, header serialization.
func BenchmarkPublishPath(b *testing.B) {
	t := bus.NewTopic[benchPayload]("bench", "dev.meridian.bench", "/bench")
	ts := &topicState{name: "bench", stream: "BUS_bench", partitions: 8, dedup: true}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		e, _ := t.Event(benchPayload{Seq: 1, Sent: 2, Pad: "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"})
		pc, err := bus.Prepare(ctx, "bench", &e, nil) // as an untyped publish: data checked

		if err != nil {
			b.Fatal(err)
		}
		p := bus.Partition(bus.OrderingKey(&e), ts.partitions)
		m := encode("bus.bench."+strconv.Itoa(p), &e, msgID(ts, &e, pc))
		if len(m.Header) != 7 {
			b.Fatalf("headers %v", m.Header)
		}
	}
}

// BenchmarkDecode is the client work of reading one delivered event.
func BenchmarkDecode(b *testing.B) {
	e := bus.Event{ID: bus.NewID(), Source: "/bench", SpecVersion: "1.0", Type: "dev.meridian.bench", DataContentType: "application/json", Data: []byte(`{"seq":1}`)}
	e.Normalize()
	m := encode("bus.bench.1", &e, "x")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decode(m.Header, m.Data); err != nil {
			b.Fatal(err)
		}
	}
}
