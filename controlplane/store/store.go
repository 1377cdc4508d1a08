// Package store defines the versioned key-value store the control plane
// keeps all of its state in, and the errors every engine returns.
//
// The model is etcd's: every write to a bucket gets a revision that grows
// across the whole bucket, so a revision doubles as a watch index; a watch
// resumes after any revision it has seen and receives every later change
// once, in order. Keys are "/"-separated paths ("orders/i-1",
// "prod/orders/db_url"); prefixes select a subtree.
//
// Engines live in subpackages (jetstream is the default, embedded or
// clustered); storetest is the conformance suite every engine passes.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Errors every engine returns, wrapped; test with errors.Is.
var (
	ErrNotFound    = errors.New("key not found")
	ErrConflict    = errors.New("revision conflict")
	ErrUnavailable = errors.New("store unavailable")
	ErrTooLarge    = errors.New("value too large")
)

// ConflictError is returned (wrapping ErrConflict) when a compare-and-set
// lost; Current is the key's revision now, 0 if it does not exist.
type ConflictError struct {
	Key     string
	Current uint64
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("revision conflict on %s (current revision %d)", e.Key, e.Current)
}

func (e *ConflictError) Unwrap() error { return ErrConflict }

// Op is what an entry records.
type Op uint8

const (
	OpPut    Op = iota + 1
	OpDelete    // deleted, or expired (TTL)
	// OpSynced is sent once by Watch, with no key, when the backlog up to the
	// moment the watch started has been delivered. Its Revision is the
	// highest revision the backlog covered, deliveries skipped included.
	OpSynced
)

// Entry is one revision of one key.
type Entry struct {
	Key      string
	Value    []byte // nil for OpDelete
	Revision uint64
	Op       Op
	Time     time.Time
}

// BucketConfig describes a bucket. A bucket opened again with another
// config is updated to it.
type BucketConfig struct {
	// History is how many revisions are kept per key (at least 1).
	History int
	// TTL enables PutTTL on the bucket.
	TTL bool
	// MaxValueSize is the largest value accepted, in bytes; 0 is the engine's limit.
	MaxValueSize int
}

// Store opens buckets.
type Store interface {
	Bucket(ctx context.Context, name string, cfg BucketConfig) (Bucket, error)
}

// Bucket is a keyspace with revisions, compare-and-set, TTLs and watches.
type Bucket interface {
	// Get returns the latest revision of a live key, or ErrNotFound.
	Get(ctx context.Context, key string) (Entry, error)
	// GetRevision returns revision rev, which must be a revision of key
	// (a put or a delete), or ErrNotFound.
	GetRevision(ctx context.Context, key string, rev uint64) (Entry, error)
	// Put writes unconditionally.
	Put(ctx context.Context, key string, value []byte) (uint64, error)
	// Create writes only if the key does not exist (or is deleted);
	// otherwise a *ConflictError.
	Create(ctx context.Context, key string, value []byte) (uint64, error)
	// Update writes only if the key's latest revision is expect; otherwise a
	// *ConflictError with the current revision.
	Update(ctx context.Context, key string, value []byte, expect uint64) (uint64, error)
	// Delete removes a key, leaving a delete revision in its history. With
	// expect > 0 it is a compare-and-delete. Deleting a missing key is not
	// an error.
	Delete(ctx context.Context, key string, expect uint64) (uint64, error)
	// PutTTL writes a value that the store deletes by itself after ttl
	// unless it is written again; the deletion is seen by watches.
	PutTTL(ctx context.Context, key string, value []byte, ttl time.Duration) (uint64, error)
	// List returns the live keys under prefix with their latest revisions.
	List(ctx context.Context, prefix string) ([]Entry, error)
	// History returns the kept revisions of key, oldest first, deletes included.
	History(ctx context.Context, key string) ([]Entry, error)
	// Watch streams every change under prefix with a revision above after,
	// in revision order. With after == 0 it first sends the live keys (as
	// puts) instead of the whole history. An OpSynced entry marks the end of
	// the backlog. The channel is closed when ctx ends or the watch breaks;
	// resume with the last revision received.
	Watch(ctx context.Context, prefix string, after uint64) (<-chan Entry, error)
	// Revision is the bucket's latest revision.
	Revision(ctx context.Context) (uint64, error)
}
