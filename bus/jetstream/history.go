package jetstream

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-platform/meridian/bus"
)

// historyStore keeps the failed attempts of an event per group in a KV
// bucket, key "<stream>.<consumer>.<sequence>", so that whichever member
// dead-letters it knows every attempt, including those of members that
// are gone. Only failures touch it: an event that succeeds at once costs
// nothing.
type historyStore struct {
	js       jetstream.JetStream
	bucket   string
	ttl      time.Duration
	replicas int
	memory   bool

	mu sync.Mutex
	kv jetstream.KeyValue
}

func (h *historyStore) open(ctx context.Context) (jetstream.KeyValue, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.kv != nil {
		return h.kv, nil
	}
	cfg := jetstream.KeyValueConfig{Bucket: h.bucket, Description: "Meridian bus: attempts of failing events", TTL: h.ttl, Replicas: h.replicas, History: 1}
	if h.memory {
		cfg.Storage = jetstream.MemoryStorage
	}
	kv, err := h.js.CreateOrUpdateKeyValue(ctx, cfg)
	if err != nil {
		return nil, err
	}
	h.kv = kv
	return kv, nil
}

func historyKey(stream, consumer string, seq uint64) string {
	return stream + "." + consumer + "." + strconv.FormatUint(seq, 10)
}

// record appends the attempt that just failed (delivery number n) to the
// history and returns it, storing it when save is set. Deliveries with no
// recorded outcome before n (a member lost, an ack wait run out) are filled
// in as such.
func (h *historyStore) record(ctx context.Context, key string, n int, a bus.Attempt, save bool) ([]bus.Attempt, error) {
	kv, err := h.open(ctx)
	if err != nil {
		return []bus.Attempt{a}, err
	}
	var as []bus.Attempt
	entry, err := kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		return []bus.Attempt{a}, err
	default:
		_ = json.Unmarshal(entry.Value(), &as)
	}
	for len(as) < n-1 {
		as = append(as, bus.Attempt{Error: bus.NoOutcome})
	}
	as = append(as[:min(len(as), n-1)], a)
	if !save {
		return as, nil
	}
	b, _ := json.Marshal(as)
	_, err = kv.Put(ctx, key, b)
	return as, err
}

// forget drops a history once its event has succeeded or is dead.
func (h *historyStore) forget(ctx context.Context, key string) error {
	kv, err := h.open(ctx)
	if err != nil {
		return err
	}
	if err := kv.Purge(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return err
	}
	return nil
}
