package jetstream

import (
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/bus"
)

// The wire format is the CloudEvents NATS protocol binding in binary
// content mode (as cloudevents/sdk-go's nats_jetstream protocol writes
// it): every attribute but datacontenttype travels in a header named
// "ce-<attribute>", datacontenttype in "content-type", and the data is the
// message body as it is. Header values are percent-encoded by the HTTP
// binding's rule (section 3.1.3.2): space, '"', '%' and every byte outside
// printable ASCII, so that no value can break a header line.
const (
	hdrPrefix      = "ce-"
	hdrSpecVersion = "ce-specversion"
	hdrID          = "ce-id"
	hdrSource      = "ce-source"
	hdrType        = "ce-type"
	hdrSubject     = "ce-subject"
	hdrTime        = "ce-time"
	hdrDataSchema  = "ce-dataschema"
	hdrContentType = "content-type"
)

// encode writes e (normalized) as a binary-mode message on subject.
func encode(subject string, e *bus.Event, msgID string) *nats.Msg {
	n := 5 + len(e.Extensions) // specversion, id, source, type, time
	for _, v := range [...]string{e.Subject, e.DataSchema, e.DataContentType, msgID} {
		if v != "" {
			n++
		}
	}
	// The exact size keeps a small map in one group; one backing array
	// serves every header's value slice.
	vals := make([]string, 0, n)
	h := make(nats.Header, n)
	set := func(k, v string) {
		vals = append(vals, v)
		h[k] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	set(hdrSpecVersion, e.SpecVersion)
	set(hdrID, bus.EncodeAttr(e.ID))
	set(hdrSource, bus.EncodeAttr(e.Source))
	set(hdrType, bus.EncodeAttr(e.Type))
	set(hdrTime, e.Time.UTC().Format(time.RFC3339Nano))
	if e.Subject != "" {
		set(hdrSubject, bus.EncodeAttr(e.Subject))
	}
	if e.DataSchema != "" {
		set(hdrDataSchema, bus.EncodeAttr(e.DataSchema))
	}
	if e.DataContentType != "" {
		set(hdrContentType, bus.EncodeAttr(e.DataContentType))
	}
	for k, v := range e.Extensions {
		set(hdrPrefix+k, bus.EncodeAttr(v))
	}
	if msgID != "" {
		set(nats.MsgIdHdr, msgID)
	}
	return &nats.Msg{Subject: subject, Header: h, Data: e.Data}
}

// decode reads a binary-mode message. Headers other than ce-* and
// content-type (Nats-Msg-Id, …) are not part of the event. The error
// names the attribute at fault.
func decode(h nats.Header, data []byte) (bus.Event, error) {
	var e bus.Event
	for k, vs := range h {
		if len(vs) == 0 {
			continue
		}
		if len(k) <= len(hdrPrefix) || !strings.EqualFold(k[:len(hdrPrefix)], hdrPrefix) {
			if strings.EqualFold(k, hdrContentType) {
				e.DataContentType = bus.DecodeAttr(vs[0])
			}
			continue
		}
		name := k[len(hdrPrefix):]
		if hasUpper(name) {
			name = strings.ToLower(name)
		}
		if err := e.SetAttr(name, bus.DecodeAttr(vs[0])); err != nil {
			return e, err
		}
	}
	if e.SpecVersion == "" {
		return e, meridian.FieldError("specversion", "is missing: not a binary-mode CloudEvent")
	}
	if len(data) > 0 {
		e.Data = data
	}
	// The publisher validated the event (Prepare); only what a handler
	// cannot do without is checked again, not the data.
	for _, a := range []struct{ name, v string }{{"id", e.ID}, {"source", e.Source}, {"type", e.Type}} {
		if a.v == "" {
			return e, meridian.FieldError(a.name, "is missing")
		}
	}
	return e, nil
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return true
		}
	}
	return false
}
