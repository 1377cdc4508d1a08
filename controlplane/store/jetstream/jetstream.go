// Package jetstream keeps the control plane's state in NATS JetStream
// key-value buckets: the embedded server by default, or an external cluster
// shared by several control-plane replicas.
//
// A bucket is a KV bucket (stream KV_<name>). Revisions are the stream's
// sequence numbers, so they grow across the bucket as the store contract
// asks. Key segments are escaped into subject tokens: characters other than
// letters, digits, '_' and '-' become "=XX", so "orders/10.0.0.1:80" is
// stored as "orders.10=2E0=2E0=2E1=3A80" and prefixes map onto subject
// wildcards.
package jetstream

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-platform/meridian/controlplane/store"
)

// Config says how buckets are created.
type Config struct {
	// Replicas of each bucket's stream: 1 for the embedded server, 3 on a
	// production cluster.
	Replicas int
	// Prefix is put before every bucket name, so that several Meridian
	// installations can share one NATS account. Default "meridian_".
	Prefix string
}

// Store is a store.Store on JetStream. It does not own the connection.
type Store struct {
	js  jetstream.JetStream
	cfg Config
}

var _ store.Store = (*Store)(nil)

// New returns a store on nc.
func New(nc *nats.Conn, cfg Config) (*Store, error) {
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.Replicas < 1 || cfg.Replicas > 5 {
		return nil, fmt.Errorf("jetstream store: replicas %d is out of range 1-5", cfg.Replicas)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "meridian_"
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream store: %w", err)
	}
	return &Store{js: js, cfg: cfg}, nil
}

// Bucket opens a bucket, creating it or updating its config.
func (s *Store) Bucket(ctx context.Context, name string, cfg store.BucketConfig) (store.Bucket, error) {
	if cfg.History < 1 {
		cfg.History = 1
	}
	kvc := jetstream.KeyValueConfig{
		Bucket:       s.cfg.Prefix + name,
		History:      uint8(min(cfg.History, jetstream.KeyValueMaxHistory)),
		Replicas:     s.cfg.Replicas,
		Storage:      jetstream.FileStorage,
		MaxValueSize: int32(cfg.MaxValueSize),
	}
	if cfg.TTL {
		// Expired keys leave a marker so that watchers see the expiry; the
		// marker itself is dropped after this long.
		kvc.LimitMarkerTTL = time.Minute
	}
	kv, err := s.js.CreateOrUpdateKeyValue(ctx, kvc)
	if err != nil {
		return nil, mapErr(fmt.Errorf("open bucket %s: %w", name, err))
	}
	st, err := s.js.Stream(ctx, "KV_"+kvc.Bucket)
	if err != nil {
		return nil, mapErr(fmt.Errorf("open bucket %s: %w", name, err))
	}
	if cfg.History > jetstream.KeyValueMaxHistory {
		// The KV API stops at 64 revisions a key; the stream itself keeps
		// as many as it is told, and the KV client reads them all the same.
		sc := st.CachedInfo().Config
		if sc.MaxMsgsPerSubject != int64(cfg.History) {
			sc.MaxMsgsPerSubject = int64(cfg.History)
			if _, err := s.js.UpdateStream(ctx, sc); err != nil {
				return nil, mapErr(fmt.Errorf("open bucket %s: keep %d revisions: %w", name, cfg.History, err))
			}
		}
	}
	return &bucket{kv: kv, js: s.js, stream: st, subjectPrefix: "$KV." + kvc.Bucket + "."}, nil
}

type bucket struct {
	kv            jetstream.KeyValue
	js            jetstream.JetStream
	stream        jetstream.Stream
	subjectPrefix string
}

var _ store.Bucket = (*bucket)(nil)

func (b *bucket) Get(ctx context.Context, key string) (store.Entry, error) {
	e, err := b.kv.Get(ctx, encodeKey(key))
	if err != nil {
		return store.Entry{}, mapKeyErr(key, err)
	}
	return entry(e), nil
}

func (b *bucket) GetRevision(ctx context.Context, key string, rev uint64) (store.Entry, error) {
	// kv.GetRevision hides delete revisions; read the raw message so a
	// history entry that deleted the key can be read too.
	m, err := b.stream.GetMsg(ctx, rev)
	if err != nil {
		return store.Entry{}, mapKeyErr(key, err)
	}
	if m.Subject != b.subjectPrefix+encodeKey(key) {
		return store.Entry{}, fmt.Errorf("%s at revision %d: %w", key, rev, store.ErrNotFound)
	}
	e := store.Entry{Key: key, Value: m.Data, Revision: m.Sequence, Op: store.OpPut, Time: m.Time}
	if op := m.Header.Get("KV-Operation"); op != "" || m.Header.Get(jetstream.MarkerReasonHeader) != "" {
		e.Op, e.Value = store.OpDelete, nil
	}
	return e, nil
}

func (b *bucket) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	rev, err := b.kv.Put(ctx, encodeKey(key), value)
	return rev, mapKeyErr(key, err)
}

func (b *bucket) Create(ctx context.Context, key string, value []byte) (uint64, error) {
	rev, err := b.kv.Create(ctx, encodeKey(key), value)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, b.conflict(ctx, key)
	}
	return rev, mapKeyErr(key, err)
}

func (b *bucket) Update(ctx context.Context, key string, value []byte, expect uint64) (uint64, error) {
	rev, err := b.kv.Update(ctx, encodeKey(key), value, expect)
	if isWrongLastSequence(err) {
		return 0, b.conflict(ctx, key)
	}
	return rev, mapKeyErr(key, err)
}

func (b *bucket) Delete(ctx context.Context, key string, expect uint64) (uint64, error) {
	var opts []jetstream.KVDeleteOpt
	if expect > 0 {
		opts = append(opts, jetstream.LastRevision(expect))
	}
	err := b.kv.Delete(ctx, encodeKey(key), opts...)
	if isWrongLastSequence(err) {
		return 0, b.conflict(ctx, key)
	}
	if err != nil {
		return 0, mapKeyErr(key, err)
	}
	// The KV client does not return the delete's revision; the stream's last
	// sequence is at least it, which is what callers use it for (an index).
	return b.Revision(ctx)
}

func (b *bucket) PutTTL(ctx context.Context, key string, value []byte, ttl time.Duration) (uint64, error) {
	ack, err := b.js.Publish(ctx, b.subjectPrefix+encodeKey(key), value, jetstream.WithMsgTTL(ttl))
	if err != nil {
		return 0, mapKeyErr(key, err)
	}
	return ack.Sequence, nil
}

func (b *bucket) List(ctx context.Context, prefix string) ([]store.Entry, error) {
	w, err := b.kv.Watch(ctx, filterFor(prefix), jetstream.IgnoreDeletes())
	if err != nil {
		return nil, mapErr(err)
	}
	defer w.Stop()
	var out []store.Entry
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("list %q: watch closed: %w", prefix, store.ErrUnavailable)
			}
			if e == nil {
				return out, nil
			}
			if en := entry(e); strings.HasPrefix(en.Key, prefix) {
				out = append(out, en)
			}
		case <-ctx.Done():
			return nil, mapErr(ctx.Err())
		}
	}
}

func (b *bucket) History(ctx context.Context, key string) ([]store.Entry, error) {
	es, err := b.kv.History(ctx, encodeKey(key))
	if err != nil {
		return nil, mapKeyErr(key, err)
	}
	out := make([]store.Entry, len(es))
	for i, e := range es {
		out[i] = entry(e)
	}
	return out, nil
}

func (b *bucket) Watch(ctx context.Context, prefix string, after uint64) (<-chan store.Entry, error) {
	ctx, cancel := context.WithCancel(ctx)
	var opts []jetstream.WatchOpt
	if after > 0 {
		opts = append(opts, jetstream.IncludeHistory(), jetstream.ResumeFromRevision(after+1))
	}
	w, err := b.kv.Watch(ctx, filterFor(prefix), opts...)
	if err != nil {
		cancel()
		return nil, mapErr(err)
	}
	// After a reconnect the server may have lost the watch's consumer (it
	// restarted); ending the watch makes the caller resume from the last
	// revision it has, on a fresh consumer, without waiting for the client
	// library's heartbeat-based recovery.
	nc := b.js.Conn()
	reconnected := nc.StatusChanged(nats.CONNECTED)
	out := make(chan store.Entry, 64)
	go func() {
		defer close(out)
		defer cancel()
		defer w.Stop()
		defer nc.RemoveStatusListener(reconnected)
		synced, last := false, after
		for {
			var e jetstream.KeyValueEntry
			var ok bool
			select {
			case e, ok = <-w.Updates():
				if !ok {
					return
				}
			case <-reconnected:
				return
			case <-ctx.Done():
				return
			}
			var en store.Entry
			switch {
			case e == nil:
				synced = true
				en = store.Entry{Op: store.OpSynced, Revision: last}
			default:
				en = entry(e)
				last = max(last, en.Revision)
				if !strings.HasPrefix(en.Key, prefix) || (after == 0 && !synced && en.Op == store.OpDelete) {
					continue // outside a partial-segment prefix, or a dead key in the snapshot
				}
			}
			select {
			case out <- en:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

func (b *bucket) Revision(ctx context.Context) (uint64, error) {
	info, err := b.stream.Info(ctx)
	if err != nil {
		return 0, mapErr(err)
	}
	return info.State.LastSeq, nil
}

func (b *bucket) conflict(ctx context.Context, key string) error {
	ce := &store.ConflictError{Key: key}
	if e, err := b.Get(ctx, key); err == nil {
		ce.Current = e.Revision
	}
	return ce
}

func entry(e jetstream.KeyValueEntry) store.Entry {
	en := store.Entry{Key: decodeKey(e.Key()), Value: e.Value(), Revision: e.Revision(), Op: store.OpPut, Time: e.Created()}
	if e.Operation() != jetstream.KeyValuePut {
		en.Op, en.Value = store.OpDelete, nil
	}
	return en
}

func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

func mapKeyErr(key string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted), errors.Is(err, jetstream.ErrMsgNotFound):
		return fmt.Errorf("%s: %w", key, store.ErrNotFound)
	}
	return mapErr(fmt.Errorf("%s: %w", key, err))
}

// mapErr turns connection and server failures into ErrUnavailable, so that
// the API answers 503 and callers retry.
func mapErr(err error) error {
	if err == nil {
		return nil
	}
	switch {
	case errors.Is(err, nats.ErrMaxPayload):
		return fmt.Errorf("%w: %w", store.ErrTooLarge, err)
	case errors.Is(err, context.Canceled):
		return err
	}
	return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
}

// filterFor turns a key prefix into the narrowest subject filter that
// covers it: its complete segments, then ">".
func filterFor(prefix string) string {
	i := strings.LastIndexByte(prefix, '/')
	if i < 0 {
		return jetstream.AllKeys
	}
	return encodeKey(prefix[:i]) + ".>"
}

const hexdigits = "0123456789ABCDEF"

func encodeKey(key string) string {
	var b strings.Builder
	b.Grow(len(key) + 8)
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case c == '/':
			b.WriteByte('.')
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '-':
			b.WriteByte(c)
		default:
			b.WriteByte('=')
			b.WriteByte(hexdigits[c>>4])
			b.WriteByte(hexdigits[c&15])
		}
	}
	return b.String()
}

func decodeKey(subject string) string {
	var b strings.Builder
	b.Grow(len(subject))
	for i := 0; i < len(subject); i++ {
		c := subject[i]
		switch {
		case c == '.':
			b.WriteByte('/')
		case c == '=' && i+2 < len(subject):
			b.WriteByte(unhex(subject[i+1])<<4 | unhex(subject[i+2]))
			i += 2
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10
	}
	return 0
}
