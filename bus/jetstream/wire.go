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
	set(hdrID, pctEncode(e.ID))
	set(hdrSource, pctEncode(e.Source))
	set(hdrType, pctEncode(e.Type))
	set(hdrTime, e.Time.UTC().Format(time.RFC3339Nano))
	if e.Subject != "" {
		set(hdrSubject, pctEncode(e.Subject))
	}
	if e.DataSchema != "" {
		set(hdrDataSchema, pctEncode(e.DataSchema))
	}
	if e.DataContentType != "" {
		set(hdrContentType, pctEncode(e.DataContentType))
	}
	for k, v := range e.Extensions {
		set(hdrPrefix+k, pctEncode(v))
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
				e.DataContentType = pctDecode(vs[0])
			}
			continue
		}
		name := k[len(hdrPrefix):]
		if hasUpper(name) {
			name = strings.ToLower(name)
		}
		v := pctDecode(vs[0])
		switch name {
		case "specversion":
			e.SpecVersion = v
		case "id":
			e.ID = v
		case "source":
			e.Source = v
		case "type":
			e.Type = v
		case "subject":
			e.Subject = v
		case "dataschema":
			e.DataSchema = v
		case "datacontenttype":
			e.DataContentType = v
		case "time":
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return e, meridian.FieldError("time", "%q is not an RFC 3339 time", v)
			}
			e.Time = t
		default:
			if e.Extensions == nil {
				e.Extensions = make(map[string]string, len(h))
			}
			e.Extensions[name] = v
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

func mustEncode(c byte) bool { return c <= ' ' || c > '~' || c == '"' || c == '%' }

const hexDigits = "0123456789ABCDEF"

func pctEncode(s string) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if mustEncode(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	b := make([]byte, 0, len(s)+2*n)
	for i := 0; i < len(s); i++ {
		if c := s[i]; mustEncode(c) {
			b = append(b, '%', hexDigits[c>>4], hexDigits[c&15])
		} else {
			b = append(b, c)
		}
	}
	return string(b)
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// pctDecode undoes pctEncode; a '%' not followed by two hex digits is kept
// as it is.
func pctDecode(s string) string {
	if strings.IndexByte(s, '%') < 0 {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			hi, ok1 := unhex(s[i+1])
			lo, ok2 := unhex(s[i+2])
			if ok1 && ok2 {
				b = append(b, hi<<4|lo)
				i += 2
				continue
			}
		}
		b = append(b, s[i])
	}
	return string(b)
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return true
		}
	}
	return false
}
