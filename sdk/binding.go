package sdk

import (
	"bytes"
	"context"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/goccy/go-yaml"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/internal/backoff"
)

// ConfigSource reads and watches the config center. *client.Client
// satisfies it.
//
// WatchConfig delivers every change under prefix after index after, once,
// in order, then an EventSync event, then live changes; it blocks until ctx
// ends, fn returns an error or the stream breaks.
type ConfigSource interface {
	GetConfig(ctx context.Context, key string, revision uint64) (*meridian.ConfigEntry, error)
	WatchConfig(ctx context.Context, prefix string, after uint64, fn func(meridian.ConfigEvent) error) error
}

// BindOption configures a Binding.
type BindOption func(*bindOptions)

type bindOptions struct {
	log          *slog.Logger
	onError      func(error)
	base         time.Duration
	max          time.Duration
	allowMissing bool
}

// BindLogger sets the logger for rejected revisions and watch reconnects.
// Default: discard.
func BindLogger(l *slog.Logger) BindOption { return func(o *bindOptions) { o.log = l } }

// OnBindError is called, from the binding's goroutine, for every revision
// the binding does not apply: one that does not decode into T (a
// *meridian.Error with CodeInvalid whose Field is the key) and the
// deletion of the key (CodeNotFound). Count them in a metric or alert on
// them; the binding keeps its last good value either way.
func OnBindError(fn func(error)) BindOption { return func(o *bindOptions) { o.onError = fn } }

// AllowMissing lets the key be absent: BindConfig then binds the zero T
// (Revision 0) instead of failing, and applies the key's first revision
// when it is written; a deletion of the key applies the zero T again
// rather than being rejected. For optional config whose absence means
// "the defaults", such as a resiliency spec.
func AllowMissing() BindOption { return func(o *bindOptions) { o.allowMissing = true } }

// BindBackoff sets the watch's reconnect backoff (see
// discovery.WithBackoff). Defaults: 100ms and 10s.
func BindBackoff(base, max time.Duration) BindOption {
	return func(o *bindOptions) { o.base, o.max = base, max }
}

// Binding holds the latest good value of one config key, decoded into T,
// and keeps it current.
//
// Ownership: BindConfig starts one goroutine, which the Binding owns. It
// watches the key until ctx (the one given to BindConfig) ends or Close is
// called, whichever is first; Close also waits for it, so no onChange call
// runs after Close returns. Get keeps answering the last value after
// either.
type Binding[T any] struct {
	key      string
	cur      atomic.Pointer[bound[T]]
	lastErr  atomic.Pointer[error]
	onChange func(old, new T)
	opts     bindOptions

	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
}

type bound[T any] struct {
	v   T
	rev uint64
}

// BindConfig reads key's latest revision from src, decodes it into T and
// keeps it current by watching the key.
//
// The value decodes by the entry's format: json with encoding/json,
// rejecting unknown fields and trailing data; yaml with goccy/go-yaml in
// strict mode (unknown fields and duplicate keys are errors; fields are
// matched by yaml tag, else json tag; json.Unmarshaler types decode as
// from JSON); text only into a string, or a type whose pointer implements
// encoding.TextUnmarshaler. Each revision decodes into a fresh T, never on
// top of the previous value. If *T has a method Validate() error, a
// revision that decodes but does not validate is treated as one that does
// not decode.
//
// BindConfig fails if the key cannot be read (the *meridian.Error from src,
// CodeNotFound if it does not exist) or its latest revision does not decode
// (CodeInvalid, Field the key): a service should not start on config it
// cannot read. Later, a revision that does not decode, or the key's
// deletion, is logged and reported to OnBindError, and the last good value
// stays. After each applied revision, onChange (if not nil) is called with
// the previous and the new value, from the binding's goroutine, one call at
// a time; Get already returns the new value then. onChange must not call
// Close.
func BindConfig[T any](ctx context.Context, src ConfigSource, key string, onChange func(old, new T), opts ...BindOption) (*Binding[T], error) {
	if err := meridian.ValidateConfigKey("key", key); err != nil {
		return nil, err
	}
	b := &Binding[T]{key: key, onChange: onChange, done: make(chan struct{})}
	b.opts.log = slog.New(slog.DiscardHandler)
	for _, o := range opts {
		o(&b.opts)
	}
	e, err := src.GetConfig(ctx, key, 0)
	switch {
	case b.opts.allowMissing && (meridian.IsCode(err, meridian.CodeNotFound) || err == nil && e.Deleted):
		// Watch from the start: the key's first revision arrives as a put.
		e = &meridian.ConfigEntry{Key: key}
	case err != nil:
		return nil, fmt.Errorf("sdk: reading config %s: %w", key, err)
	case e.Deleted:
		return nil, meridian.Errorf(meridian.CodeNotFound, "config key %s is deleted", key)
	}
	var v T
	if e.Revision > 0 {
		if v, err = decodeEntry[T](e); err != nil {
			return nil, err
		}
	}
	b.cur.Store(&bound[T]{v: v, rev: e.Revision})
	ctx, b.cancel = context.WithCancel(ctx)
	go b.watch(ctx, src, e.Revision)
	return b, nil
}

// Get returns the latest value that decoded, without locking.
func (b *Binding[T]) Get() T { return b.cur.Load().v }

// Revision returns the config revision Get's value comes from.
func (b *Binding[T]) Revision() uint64 { return b.cur.Load().rev }

// Err returns why the key's latest revision is not the one Get returns (it
// did not decode, or the key was deleted), or nil when it is.
func (b *Binding[T]) Err() error {
	if p := b.lastErr.Load(); p != nil {
		return *p
	}
	return nil
}

// Close stops the watch and waits for its goroutine to return. It is safe
// to call more than once and from any goroutine but the binding's own
// (onChange).
func (b *Binding[T]) Close() {
	b.closeOnce.Do(b.cancel)
	<-b.done
}

// watch follows the key from revision after until ctx ends, reconnecting
// with backoff and resuming after the last index seen.
func (b *Binding[T]) watch(ctx context.Context, src ConfigSource, after uint64) {
	defer close(b.done)
	bo := backoff.Backoff{Base: b.opts.base, Max: b.opts.max}
	for {
		err := src.WatchConfig(ctx, b.key, after, func(ev meridian.ConfigEvent) error {
			index := ev.Index
			if index == 0 {
				index = ev.Entry.Revision
			}
			switch {
			case ev.Type == meridian.EventSync:
				bo.Reset()
			case index <= after:
				// Already seen before a reconnect.
			case ev.Entry.Key != b.key:
				// Another key under the same prefix.
			case (ev.Type == meridian.EventDelete || ev.Entry.Deleted) && b.opts.allowMissing:
				var zero T
				b.set(index, zero)
			case ev.Type == meridian.EventDelete || ev.Entry.Deleted:
				b.reject(index, meridian.Errorf(meridian.CodeNotFound, "config key %s was deleted at revision %d; keeping revision %d", b.key, index, b.Revision()))
			case ev.Type == meridian.EventPut:
				b.apply(index, &ev.Entry)
			}
			if ev.Type != meridian.EventSync {
				after = max(after, index)
			}
			return nil
		})
		if ctx.Err() != nil {
			return
		}
		if meridian.IsCode(err, meridian.CodeConflict) {
			// The resume index is no longer in the history: read the
			// latest revision and go on from it.
			if e, gerr := src.GetConfig(ctx, b.key, 0); gerr == nil && e.Revision > after {
				if !e.Deleted {
					b.apply(e.Revision, e)
				}
				after = e.Revision
			}
		}
		d := bo.Next()
		b.opts.log.Warn("config watch broke; keeping the current value", "key", b.key, "revision", b.Revision(), "retry_in", d, "err", err)
		if !backoff.Sleep(ctx, d) {
			return
		}
	}
}

func (b *Binding[T]) apply(rev uint64, e *meridian.ConfigEntry) {
	v, err := decodeEntry[T](e)
	if err != nil {
		b.reject(rev, err)
		return
	}
	b.set(rev, v)
}

// set makes v, of revision rev, the bound value.
func (b *Binding[T]) set(rev uint64, v T) {
	old := b.cur.Swap(&bound[T]{v: v, rev: rev})
	b.lastErr.Store(nil)
	b.opts.log.Info("config applied", "key", b.key, "revision", rev)
	if b.onChange != nil {
		b.onChange(old.v, v)
	}
}

func (b *Binding[T]) reject(rev uint64, err error) {
	b.lastErr.Store(&err)
	b.opts.log.Error("config revision rejected; keeping the last good value",
		"key", b.key, "revision", rev, "kept_revision", b.Revision(), "err", err)
	if b.opts.onError != nil {
		b.opts.onError(err)
	}
}

// decodeEntry decodes an entry's value into a fresh T by its format.
func decodeEntry[T any](e *meridian.ConfigEntry) (T, error) {
	var v T
	err := decodeValue(e.Format, e.Value, &v)
	if err != nil {
		return v, &meridian.Error{
			Code:    meridian.CodeInvalid,
			Field:   e.Key,
			Message: fmt.Sprintf("revision %d (%s) does not decode into %T", e.Revision, e.Format, v),
			Err:     err,
		}
	}
	if val, ok := any(&v).(interface{ Validate() error }); ok {
		if err := val.Validate(); err != nil {
			return v, &meridian.Error{
				Code:    meridian.CodeInvalid,
				Field:   e.Key,
				Message: fmt.Sprintf("revision %d is not a valid %T", e.Revision, v),
				Err:     err,
			}
		}
	}
	return v, nil
}

func decodeValue(format meridian.ConfigFormat, value string, v any) error {
	switch format {
	case meridian.FormatJSON:
		dec := json.NewDecoder(bytes.NewReader([]byte(value)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(v); err != nil {
			return err
		}
		if _, err := dec.Token(); !errors.Is(err, io.EOF) {
			return errors.New("data after the JSON value")
		}
		return nil
	case meridian.FormatYAML:
		// JSON is the canonical form: types that decode themselves from JSON
		// (json.Unmarshaler) do so from YAML too.
		return yaml.UnmarshalWithOptions([]byte(value), v, yaml.Strict(), yaml.UseJSONUnmarshaler())
	case meridian.FormatText, "":
		switch p := v.(type) {
		case *string:
			*p = value
			return nil
		case encoding.TextUnmarshaler:
			return p.UnmarshalText([]byte(value))
		}
		return fmt.Errorf("a text value binds only to a string or an encoding.TextUnmarshaler")
	}
	return fmt.Errorf("unknown format %q", format)
}
