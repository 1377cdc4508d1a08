package controlplane

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/goccy/go-yaml"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/controlplane/store"
)

// The config center keeps one bucket, "config": key → configRecord. Every
// write is a new revision of the key and the bucket keeps 10,000 of them a
// key, so history, diff and rollback read the store itself; nothing but the
// latest entry of each live key is held in memory (for listing and
// consistent reads). A delete is the store's own delete revision: it stays
// in the history, but, having no value, it records no author or message.

// MaxConfigMessage is the longest change message, in bytes.
const MaxConfigMessage = 1 << 10

// configRecord is what the bucket holds for each revision, so that every
// revision says who wrote it, when and why.
type configRecord struct {
	Value   string                `json:"value"`
	Format  meridian.ConfigFormat `json:"format"`
	Author  string                `json:"author"`
	Message string                `json:"message,omitempty"`
	Time    time.Time             `json:"time"`
}

// ConfigCenter stores versioned config keys. Reads of the latest values come
// from a mirror of the bucket; reads of past revisions go to the store.
type ConfigCenter struct {
	b        store.Bucket
	log      *slog.Logger
	maxValue int
	validate func(key string, format meridian.ConfigFormat, value string) error // Config.ValidateConfig; may be nil
	mirror   *mirror

	mu     sync.RWMutex
	latest map[string]meridian.ConfigEntry // live keys only
}

func newConfigCenter(b store.Bucket, log *slog.Logger, maxValue int,
	validate func(key string, format meridian.ConfigFormat, value string) error,
) *ConfigCenter {
	if maxValue <= 0 {
		maxValue = meridian.DefaultMaxValueSize
	}
	c := &ConfigCenter{b: b, log: log, maxValue: maxValue, validate: validate, latest: map[string]meridian.ConfigEntry{}}
	c.mirror = newMirror(b, "config", log, c.apply)
	return c
}

// run keeps the mirror until ctx ends.
func (c *ConfigCenter) run(ctx context.Context) error { return c.mirror.run(ctx) }

// ready reports whether the mirror holds the whole bucket.
func (c *ConfigCenter) ready() bool { return c.mirror.ready() }

func (c *ConfigCenter) apply(e store.Entry) {
	var ce meridian.ConfigEntry
	if e.Op == store.OpPut {
		var err error
		if ce, err = decodeConfig(e); err != nil {
			c.log.Warn("config value is not a Meridian record; serving it as text", "key", e.Key, "revision", e.Revision, "err", err)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e.Op == store.OpPut {
		c.latest[e.Key] = ce
	} else {
		delete(c.latest, e.Key)
	}
}

// decodeConfig turns a stored revision into an entry. A value that is not a
// record (written to the bucket by something else) is returned as a text
// value with the error, so that it is still readable.
func decodeConfig(e store.Entry) (meridian.ConfigEntry, error) {
	ce := meridian.ConfigEntry{Key: e.Key, Revision: e.Revision, Time: e.Time}
	if e.Op == store.OpDelete {
		ce.Deleted = true
		return ce, nil
	}
	var rec configRecord
	dec := json.NewDecoder(bytes.NewReader(e.Value))
	dec.DisallowUnknownFields()
	err := dec.Decode(&rec)
	if err == nil && rec.Format == "" {
		err = errors.New("no format")
	}
	if err != nil {
		ce.Value, ce.Format = string(e.Value), meridian.FormatText
		return ce, err
	}
	ce.Value, ce.Format, ce.Author, ce.Message, ce.Time = rec.Value, rec.Format, rec.Author, rec.Message, rec.Time
	return ce, nil
}

// encodeConfig is the stored form of a record. HTML escaping is off: it
// would grow every '<', '>' and '&' sixfold against the bucket's size limit.
func encodeConfig(rec configRecord) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(rec) // strings and a time: cannot fail
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// ConfigWrite is one write of a key.
type ConfigWrite struct {
	Value string
	// Format is json, yaml or text; empty means text. json and yaml values
	// must parse.
	Format meridian.ConfigFormat
	// Author is the writing token's name.
	Author string
	// Message says why, at most MaxConfigMessage bytes.
	Message string
	// ExpectRevision makes the write a compare-and-set: nil writes
	// unconditionally, 0 only if the key does not exist (or is deleted), N
	// only if the key's latest revision is N.
	ExpectRevision *uint64
}

// checkWrite fills defaults into w and validates it, naming the field.
func (c *ConfigCenter) checkWrite(w *ConfigWrite) error {
	if w.Format == "" {
		w.Format = meridian.FormatText
	}
	if len(w.Message) > MaxConfigMessage {
		return meridian.FieldError("message", "is %d bytes; the limit is %d", len(w.Message), MaxConfigMessage)
	}
	if len(w.Value) > c.maxValue {
		return &meridian.Error{Code: meridian.CodeTooLarge, Field: "value",
			Message: fmt.Sprintf("is %d bytes; the limit is %d bytes", len(w.Value), c.maxValue)}
	}
	return validateConfigValue(w.Format, w.Value)
}

// validateConfigValue checks that a value parses in its format; the error
// names the field "value" and says where parsing failed.
func validateConfigValue(format meridian.ConfigFormat, value string) error {
	switch format {
	case meridian.FormatText:
		return nil
	case meridian.FormatJSON:
		// RawMessage keeps the check to a scan: nothing is built.
		var v json.RawMessage
		if err := json.Unmarshal([]byte(value), &v); err != nil {
			var syn *json.SyntaxError
			if errors.As(err, &syn) {
				off := syn.Offset
				if strings.HasPrefix(syn.Error(), "invalid character") {
					off-- // Offset counts the bad byte itself; point at it
				}
				line, col := textPosition(value, off)
				return meridian.FieldError("value", "is not valid JSON: line %d, column %d: %s", line, col, syn.Error())
			}
			return meridian.FieldError("value", "is not valid JSON: %s", err.Error())
		}
		return nil
	case meridian.FormatYAML:
		// Decoding (not only parsing) also catches duplicate keys and
		// undefined aliases. Aliases are shared, not copied, so an alias
		// bomb costs nothing.
		var v any
		if err := yaml.Unmarshal([]byte(value), &v); err != nil {
			var ye yaml.Error
			if errors.As(err, &ye) && ye.GetToken() != nil {
				pos := ye.GetToken().Position
				return meridian.FieldError("value", "is not valid YAML: line %d, column %d: %s", pos.Line, pos.Column, ye.GetMessage())
			}
			return meridian.FieldError("value", "is not valid YAML: %s", firstLine(err.Error()))
		}
		return nil
	case "":
		return meridian.FieldError("format", "is required")
	}
	return meridian.FieldError("format", "%q is not one of json, yaml, text", format)
}

// textPosition is the 1-based line and column of byte offset off; an
// offset past the end points just after the last byte.
func textPosition(s string, off int64) (line, col int) {
	off = min(max(off, 0), int64(len(s)))
	before := s[:off]
	line = strings.Count(before, "\n") + 1
	col = len(before) - strings.LastIndexByte(before, '\n')
	return line, col
}

func firstLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	return first
}

// maxProblemsShown bounds how many of a refused value's problems an
// answer lists; the others are counted.
const maxProblemsShown = 20

// subField is field within parent: "parent.field", or parent alone.
func subField(parent, field string) string {
	switch {
	case parent == "":
		return field
	case field == "":
		return parent
	}
	return parent + "." + field
}

// problemList shows problems as "field: message", fields within parent,
// joined by "; ". Only Field and Message are shown: a problem's cause is
// for logs.
func problemList(parent string, ps []*meridian.Error) string {
	var b strings.Builder
	for i, p := range ps {
		if i == maxProblemsShown {
			fmt.Fprintf(&b, "; and %d more", len(ps)-i)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		if f := subField(parent, p.Field); f != "" {
			b.WriteString(f + ": ")
		}
		msg := p.Message
		if msg == "" {
			msg = "is not valid"
		}
		b.WriteString(msg)
	}
	return b.String()
}

// checkValue runs Config.ValidateConfig on a write of key that passed
// checkWrite; it returns the hook's error as is.
func (c *ConfigCenter) checkValue(key string, w ConfigWrite) error {
	if c.validate == nil {
		return nil
	}
	return c.validate(key, w.Format, w.Value)
}

// refusedPut is the answer to a put whose value the hook refused: the
// first problem's field within "value" is the field, and the message goes
// on with the others, so the detail lists them all.
func refusedPut(err error) error {
	ps := meridian.Problems(err)
	first := ps[0]
	msg := first.Message
	if msg == "" {
		msg = "is not valid"
	}
	if len(ps) > 1 {
		msg += "; " + problemList("value", ps[1:])
	}
	return &meridian.Error{Code: meridian.CodeInvalid, Field: subField("value", first.Field), Message: msg}
}

// Put writes a new revision of key.
func (c *ConfigCenter) Put(ctx context.Context, key string, w ConfigWrite) (*meridian.ConfigEntry, error) {
	if err := meridian.ValidateConfigKey("key", key); err != nil {
		return nil, err
	}
	if err := c.checkWrite(&w); err != nil {
		return nil, err
	}
	if err := c.checkValue(key, w); err != nil {
		return nil, refusedPut(err)
	}
	return c.write(ctx, key, w)
}

// write stores w, checked, as key's new revision.
func (c *ConfigCenter) write(ctx context.Context, key string, w ConfigWrite) (*meridian.ConfigEntry, error) {
	rec := configRecord{Value: w.Value, Format: w.Format, Author: w.Author, Message: w.Message, Time: time.Now().UTC()}
	val := encodeConfig(rec)
	var rev uint64
	var err error
	switch {
	case w.ExpectRevision == nil:
		rev, err = c.b.Put(ctx, key, val)
	case *w.ExpectRevision == 0:
		rev, err = c.b.Create(ctx, key, val)
	default:
		rev, err = c.b.Update(ctx, key, val, *w.ExpectRevision)
	}
	if errors.Is(err, store.ErrTooLarge) {
		// Within the value limit but not once JSON-escaped in its record.
		return nil, &meridian.Error{Code: meridian.CodeTooLarge, Field: "value", Err: err,
			Message: fmt.Sprintf("is %d bytes, %d once escaped in its record: too large for the store", len(w.Value), len(val))}
	}
	if err != nil {
		return nil, storeError(err)
	}
	return &meridian.ConfigEntry{
		Key: key, Value: rec.Value, Format: rec.Format, Revision: rev,
		Author: rec.Author, Message: rec.Message, Time: rec.Time,
	}, nil
}

// Delete deletes key, leaving a delete revision in its history, and returns
// the bucket's revision after it. expect > 0 makes it a compare-and-delete.
// Deleting a key that does not exist is CodeNotFound.
func (c *ConfigCenter) Delete(ctx context.Context, key string, expect uint64) (uint64, error) {
	if err := meridian.ValidateConfigKey("key", key); err != nil {
		return 0, err
	}
	// Delete against the revision just read, so that a missing key is a 404
	// rather than a second delete revision; an unconditional delete that
	// loses a race with a write reads again.
	for range 5 {
		cur, err := c.b.Get(ctx, key)
		if errors.Is(err, store.ErrNotFound) {
			return 0, notFound("config key %q does not exist", key)
		}
		if err != nil {
			return 0, storeError(err)
		}
		if expect > 0 && cur.Revision != expect {
			return 0, storeError(&store.ConflictError{Key: key, Current: cur.Revision})
		}
		rev, err := c.b.Delete(ctx, key, cur.Revision)
		if expect == 0 && errors.Is(err, store.ErrConflict) {
			continue
		}
		return rev, storeError(err)
	}
	return 0, meridian.Errorf(meridian.CodeConflict, "config key %q kept changing while being deleted; retry", key)
}

// Get returns the latest entry of a live key and the index the answer
// reflects, from the mirror: the caller syncs it first for a consistent read.
func (c *ConfigCenter) Get(key string) (meridian.ConfigEntry, uint64, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	// Under the read lock the mirror cannot apply another change, so its
	// revision never claims more than the map holds.
	e, ok := c.latest[key]
	index := c.mirror.revision()
	if !ok {
		return meridian.ConfigEntry{}, index, notFound("config key %q does not exist: never written, or deleted (its history has any past revisions)", key)
	}
	return e, index, nil
}

// List returns the live keys under prefix, sorted by key, and the index the
// answer reflects. The caller syncs the mirror first for a consistent read.
func (c *ConfigCenter) List(prefix string) ([]meridian.ConfigEntry, uint64) {
	c.mu.RLock()
	out := make([]meridian.ConfigEntry, 0, min(len(c.latest), 1024))
	for k, e := range c.latest {
		if strings.HasPrefix(k, prefix) {
			out = append(out, e)
		}
	}
	index := c.mirror.revision()
	c.mu.RUnlock()
	sortBy(out, func(e meridian.ConfigEntry) string { return e.Key })
	return out, index
}

// revision reads revision rev of key from the store, delete revisions
// included; field names the request input that gave rev.
func (c *ConfigCenter) revision(ctx context.Context, key string, rev uint64, field string) (meridian.ConfigEntry, error) {
	if rev == 0 {
		return meridian.ConfigEntry{}, meridian.FieldError(field, "0 is not a revision: revisions start at 1")
	}
	e, err := c.b.GetRevision(ctx, key, rev)
	if errors.Is(err, store.ErrNotFound) {
		return meridian.ConfigEntry{}, &meridian.Error{Code: meridian.CodeNotFound, Field: field,
			Message: fmt.Sprintf("%d is not a revision of config key %q (see its history)", rev, key)}
	}
	if err != nil {
		return meridian.ConfigEntry{}, storeError(err)
	}
	ce, _ := decodeConfig(e)
	return ce, nil
}

// At returns revision rev of key. A revision that is not one of the key's,
// or the one that deleted it, is CodeNotFound.
func (c *ConfigCenter) At(ctx context.Context, key string, rev uint64) (meridian.ConfigEntry, error) {
	if err := meridian.ValidateConfigKey("key", key); err != nil {
		return meridian.ConfigEntry{}, err
	}
	e, err := c.revision(ctx, key, rev, "revision")
	if err == nil && e.Deleted {
		return meridian.ConfigEntry{}, &meridian.Error{Code: meridian.CodeNotFound, Field: "revision",
			Message: fmt.Sprintf("config key %q was deleted at revision %d; that revision has no value", key, rev)}
	}
	return e, err
}

// History returns the kept revisions of key, oldest first, deletes
// included.
func (c *ConfigCenter) History(ctx context.Context, key string) ([]meridian.ConfigEntry, error) {
	if err := meridian.ValidateConfigKey("key", key); err != nil {
		return nil, err
	}
	es, err := c.b.History(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFound("config key %q has never been written", key)
	}
	if err != nil {
		return nil, storeError(err)
	}
	out := make([]meridian.ConfigEntry, len(es))
	for i, e := range es {
		out[i], _ = decodeConfig(e)
	}
	return out, nil
}

// ConfigDiff is the answer of Diff.
type ConfigDiff struct {
	From uint64 `json:"from"`
	To   uint64 `json:"to"`
	// Diff is a unified diff of the values, with the headers
	// "--- key@from" and "+++ key@to"; empty when the values are equal. A
	// delete revision diffs as an empty value.
	Diff string `json:"diff"`
}

// Diff compares two revisions of key; to == 0 means the latest.
func (c *ConfigCenter) Diff(ctx context.Context, key string, from, to uint64) (*ConfigDiff, error) {
	if err := meridian.ValidateConfigKey("key", key); err != nil {
		return nil, err
	}
	a, err := c.revision(ctx, key, from, "from")
	if err != nil {
		return nil, err
	}
	var b meridian.ConfigEntry
	if to == 0 {
		e, err := c.b.Get(ctx, key)
		if errors.Is(err, store.ErrNotFound) {
			return nil, &meridian.Error{Code: meridian.CodeNotFound, Field: "to",
				Message: fmt.Sprintf("config key %q does not exist now; give a revision from its history", key)}
		}
		if err != nil {
			return nil, storeError(err)
		}
		b, _ = decodeConfig(e)
	} else if b, err = c.revision(ctx, key, to, "to"); err != nil {
		return nil, err
	}
	d, err := unifiedDiff(key, a.Revision, a.Value, b.Revision, b.Value)
	if err != nil {
		return nil, fmt.Errorf("diff %s@%d..%d: %w", key, a.Revision, b.Revision, err)
	}
	return &ConfigDiff{From: a.Revision, To: b.Revision, Diff: d}, nil
}

// Rollback writes revision rev's value and format again, as a new
// revision by author. An empty message becomes "rollback to revision N". A
// value that Config.ValidateConfig refuses now (it may have been written
// under older rules, or before the hook was set) is not written again:
// CodeInvalid on the field "revision", naming the problems.
func (c *ConfigCenter) Rollback(ctx context.Context, key string, rev uint64, author, message string) (*meridian.ConfigEntry, error) {
	if err := meridian.ValidateConfigKey("key", key); err != nil {
		return nil, err
	}
	old, err := c.revision(ctx, key, rev, "revision")
	if err != nil {
		return nil, err
	}
	if old.Deleted {
		return nil, meridian.FieldError("revision", "%d is the deletion of config key %q and has no value; roll back to a revision that has one", rev, key)
	}
	if message == "" {
		message = fmt.Sprintf("rollback to revision %d", rev)
	}
	w := ConfigWrite{Value: old.Value, Format: old.Format, Author: author, Message: message}
	if err := c.checkWrite(&w); err != nil {
		return nil, err
	}
	if err := c.checkValue(key, w); err != nil {
		return nil, meridian.FieldError("revision", "%d's value is no longer valid for config key %q: %s", rev, key, problemList("", meridian.Problems(err)))
	}
	return c.write(ctx, key, w)
}

// event turns a watched change into its SSE name, id and data.
func (c *ConfigCenter) event(e store.Entry) (string, uint64, any) {
	if e.Op == store.OpSynced {
		// No entry: a sync event says only how far the backlog reached.
		return string(meridian.EventSync), e.Revision, struct {
			Type  meridian.EventType `json:"type"`
			Index uint64             `json:"index"`
		}{meridian.EventSync, e.Revision}
	}
	ce, _ := decodeConfig(e)
	ev := meridian.ConfigEvent{Type: meridian.EventPut, Index: e.Revision, Entry: ce}
	if ce.Deleted {
		ev.Type = meridian.EventDelete
	}
	return string(ev.Type), e.Revision, ev
}
