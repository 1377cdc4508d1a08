// Package bushttp is the event bus over HTTP: the CloudEvents HTTP protocol
// binding (structured, binary and batched content modes) and the wire types
// of the control plane's bus API (docs/api.md, "Event bus"), shared by the
// server (controlplane) and its Go client (client).
//
// The binding follows the CloudEvents HTTP Protocol Binding 1.0.2:
//
//   - structured mode: Content-Type application/cloudevents+json, the body
//     is the event in the JSON format (bus.Event's MarshalJSON);
//   - batched mode: Content-Type application/cloudevents-batch+json, the
//     body is a JSON array of such events;
//   - binary mode: every attribute but datacontenttype in a "ce-<name>"
//     header (percent-encoded as section 3.1.3.2 says), datacontenttype in
//     Content-Type, the body is the data as it is.
package bushttp

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/bus"
)

// Content types of the structured and batched modes.
const (
	ContentTypeStructured = "application/cloudevents+json"
	ContentTypeBatch      = "application/cloudevents-batch+json"
)

// Mode is how an event travels in an HTTP message.
type Mode string

const (
	// Structured puts the whole event in the body as JSON (what Dapr
	// sends to its subscribers).
	Structured Mode = "structured"
	// Binary puts the attributes in ce- headers and the data in the body.
	Binary Mode = "binary"
)

// Header names of the binary mode.
const (
	headerPrefix      = "ce-"
	headerSpecVersion = "ce-specversion"
)

// ReadEvents reads the events of an HTTP message given its header and body,
// in whichever mode the Content-Type says: a structured or binary message
// holds one event, a batch any number (batch is then true). Each event is
// normalized (bus.Event.Normalize); the error is invalid and names the
// attribute at fault ("id", "time", …), prefixed with the event's index
// in a batch ("[2].id").
func ReadEvents(h http.Header, body []byte) (events []bus.Event, batch bool, err error) {
	ct := h.Get("Content-Type")
	mt, _, _ := mime.ParseMediaType(ct)
	switch {
	case mt == ContentTypeBatch:
		var raw []json.RawMessage
		if err := json.Unmarshal(body, &raw); err != nil {
			return nil, true, meridian.FieldError("body", "is not a JSON array of events: %v", err)
		}
		events = make([]bus.Event, len(raw))
		for i, r := range raw {
			if err := readStructured(r, &events[i]); err != nil {
				return nil, true, prefixField(fmt.Sprintf("[%d]", i), err)
			}
		}
		return events, true, nil
	case mt == ContentTypeStructured:
		var e bus.Event
		if err := readStructured(body, &e); err != nil {
			return nil, false, err
		}
		return []bus.Event{e}, false, nil
	case strings.HasPrefix(mt, "application/cloudevents"):
		return nil, false, meridian.FieldError("Content-Type", "%q is not supported: use %s, %s, or binary mode (ce- headers)", mt, ContentTypeStructured, ContentTypeBatch)
	case h.Get(headerSpecVersion) == "":
		return nil, false, meridian.FieldError("specversion", "is missing: send the event as %s, or in binary mode with ce-specversion, ce-id, ce-source and ce-type headers", ContentTypeStructured)
	}
	e, err := readBinary(h, body)
	if err != nil {
		return nil, false, err
	}
	return []bus.Event{e}, false, nil
}

func readStructured(b []byte, e *bus.Event) error {
	if len(bytes.TrimSpace(b)) == 0 {
		return meridian.FieldError("body", "is empty; a CloudEvent in JSON is required")
	}
	if err := json.Unmarshal(b, e); err != nil {
		return unwrapJSON(err)
	}
	return e.Normalize()
}

// unwrapJSON returns the *meridian.Error an UnmarshalJSON method returned,
// which encoding/json passes on as it is, or a body error for broken JSON.
func unwrapJSON(err error) error {
	if me, ok := err.(*meridian.Error); ok {
		return me
	}
	return meridian.FieldError("body", "is not a JSON object: %v", err)
}

func prefixField(prefix string, err error) error {
	if me, ok := err.(*meridian.Error); ok && me.Field != "" {
		c := *me
		c.Field = prefix + "." + me.Field
		return &c
	}
	return err
}

// readBinary reads a binary-mode message.
func readBinary(h http.Header, body []byte) (bus.Event, error) {
	var e bus.Event
	for k, vs := range h {
		name, ok := strings.CutPrefix(strings.ToLower(k), headerPrefix)
		if !ok || len(vs) == 0 {
			continue
		}
		if name == "datacontenttype" {
			return e, meridian.FieldError("datacontenttype", "travels in the Content-Type header in binary mode, not in ce-datacontenttype")
		}
		if err := e.SetAttr(name, bus.DecodeAttr(vs[0])); err != nil {
			return e, err
		}
	}
	e.DataContentType = h.Get("Content-Type")
	if len(body) > 0 {
		e.Data = body
	}
	return e, e.Normalize()
}

// NewRequest builds a POST of e to url in mode (Structured when empty).
// e should be normalized.
func NewRequest(ctx context.Context, url string, e bus.Event, mode Mode) (*http.Request, error) {
	if mode == Binary {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(e.Data))
		if err != nil {
			return nil, err
		}
		SetBinaryHeaders(req.Header, e)
		return req, nil
	}
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("bushttp: encode %s: %w", e, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", ContentTypeStructured+"; charset=utf-8")
	return req, nil
}

// SetBinaryHeaders writes e's attributes into h as the binary mode does.
func SetBinaryHeaders(h http.Header, e bus.Event) {
	set := func(name, v string) {
		if v != "" {
			h[http.CanonicalHeaderKey(headerPrefix+name)] = []string{bus.EncodeAttr(v)}
		}
	}
	set("specversion", e.SpecVersion)
	set("id", e.ID)
	set("source", e.Source)
	set("type", e.Type)
	set("subject", e.Subject)
	set("dataschema", e.DataSchema)
	if !e.Time.IsZero() {
		set("time", e.Time.UTC().Format(time.RFC3339Nano))
	}
	for k, v := range e.Extensions {
		set(k, v)
	}
	if e.DataContentType != "" {
		h.Set("Content-Type", e.DataContentType)
	}
}
