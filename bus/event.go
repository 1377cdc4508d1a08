// Package bus is Meridian's event bus: CloudEvents 1.0 publish/subscribe
// with durable consumer groups, at-least-once delivery with retries and
// dead letters, per-key ordering and replay. Engines live in subpackages
// (jetstream is the default); bustest is the conformance suite.
package bus

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/meridian-platform/meridian"
)

// SpecVersion is the CloudEvents version Meridian speaks.
const SpecVersion = "1.0"

// Event is a CloudEvent (https://github.com/cloudevents/spec, v1.0).
// Data holds the payload bytes as they are: JSON text when DataContentType
// is JSON, anything otherwise.
type Event struct {
	ID              string    // required; unique per Source (deduplication key)
	Source          string    // required; URI-reference of the producer
	SpecVersion     string    // "1.0"; filled by Normalize
	Type            string    // required; e.g. "com.example.order.placed"
	Subject         string    // optional
	Time            time.Time // optional; filled by Normalize
	DataContentType string    // optional; e.g. "application/json"
	DataSchema      string    // optional URI
	Data            []byte    // optional payload
	// Extensions are the other attributes, lower-case alphanumeric names
	// (traceparent, tracestate, partitionkey, …).
	Extensions map[string]string
}

// attrName is the CloudEvents rule for attribute names.
var attrName = regexp.MustCompile(`^[a-z0-9]{1,20}$`)

// core attribute names, which extensions may not reuse.
var core = map[string]bool{
	"id": true, "source": true, "specversion": true, "type": true, "subject": true, "time": true,
	"datacontenttype": true, "dataschema": true, "data": true, "data_base64": true,
}

// Normalize fills SpecVersion and Time and checks the event, naming the
// attribute at fault.
func (e *Event) Normalize() error { return e.normalize(true) }

// normalize is Normalize; checkData false skips the JSON check of data
// that a codec has just written.
func (e *Event) normalize(checkData bool) error {
	if e.SpecVersion == "" {
		e.SpecVersion = SpecVersion
	}
	if e.SpecVersion != SpecVersion {
		return meridian.FieldError("specversion", "%q is not supported; use %q", e.SpecVersion, SpecVersion)
	}
	for _, a := range []struct{ name, v string }{{"id", e.ID}, {"source", e.Source}, {"type", e.Type}} {
		if a.v == "" {
			return meridian.FieldError(a.name, "is required")
		}
		if len(a.v) > 1024 {
			return meridian.FieldError(a.name, "is longer than 1024 characters")
		}
	}
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	for k, v := range e.Extensions {
		if !attrName.MatchString(k) || core[k] {
			return meridian.FieldError(k, "is not a valid extension attribute name: 1-20 lower-case letters or digits, not a core attribute")
		}
		if len(v) > 4096 {
			return meridian.FieldError(k, "is longer than 4096 characters")
		}
	}
	if checkData && e.isJSON() && len(e.Data) > 0 && !json.Valid(e.Data) {
		return meridian.FieldError("data", "is not valid JSON although datacontenttype is %q", e.DataContentType)
	}
	return nil
}

func (e *Event) isJSON() bool {
	ct := strings.ToLower(strings.TrimSpace(strings.Split(e.DataContentType, ";")[0]))
	return ct == "" || ct == "application/json" || ct == "text/json" || strings.HasSuffix(ct, "+json")
}

// structured is the JSON event format (structured mode).
type structured struct {
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	SpecVersion     string          `json:"specversion"`
	Type            string          `json:"type"`
	Subject         string          `json:"subject,omitempty"`
	Time            *time.Time      `json:"time,omitempty"`
	DataContentType string          `json:"datacontenttype,omitempty"`
	DataSchema      string          `json:"dataschema,omitempty"`
	Data            json.RawMessage `json:"data,omitempty"`
	DataBase64      string          `json:"data_base64,omitempty"`
}

// MarshalJSON writes the structured JSON format: JSON data inline, other
// data as data_base64, extensions as top-level members.
func (e Event) MarshalJSON() ([]byte, error) {
	s := structured{ID: e.ID, Source: e.Source, SpecVersion: e.SpecVersion, Type: e.Type, Subject: e.Subject,
		DataContentType: e.DataContentType, DataSchema: e.DataSchema}
	if !e.Time.IsZero() {
		t := e.Time
		s.Time = &t
	}
	if len(e.Data) > 0 {
		if e.isJSON() && json.Valid(e.Data) {
			s.Data = e.Data
		} else {
			s.DataBase64 = base64.StdEncoding.EncodeToString(e.Data)
		}
	}
	b, err := json.Marshal(s)
	if err != nil || len(e.Extensions) == 0 {
		return b, err
	}
	ext, err := json.Marshal(e.Extensions)
	if err != nil {
		return nil, err
	}
	// Splice the extensions into the object: {...core..., ...ext...}.
	return append(append(b[:len(b)-1], ','), ext[1:]...), nil
}

// UnmarshalJSON reads the structured JSON format. String-valued members
// that are not core attributes are extensions; errors name the attribute.
func (e *Event) UnmarshalJSON(b []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return meridian.FieldError("body", "is not a JSON object: %v", err)
	}
	str := func(name string) (string, error) {
		v, ok := raw[name]
		if !ok || string(v) == "null" {
			return "", nil
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return "", meridian.FieldError(name, "must be a string")
		}
		return s, nil
	}
	var out Event
	var err error
	for _, f := range []struct {
		name string
		dst  *string
	}{{"id", &out.ID}, {"source", &out.Source}, {"specversion", &out.SpecVersion}, {"type", &out.Type},
		{"subject", &out.Subject}, {"datacontenttype", &out.DataContentType}, {"dataschema", &out.DataSchema}} {
		if *f.dst, err = str(f.name); err != nil {
			return err
		}
	}
	if ts, err := str("time"); err != nil {
		return err
	} else if ts != "" {
		if out.Time, err = time.Parse(time.RFC3339Nano, ts); err != nil {
			return meridian.FieldError("time", "%q is not an RFC 3339 timestamp", ts)
		}
	}
	if d, ok := raw["data"]; ok && string(d) != "null" {
		if _, has := raw["data_base64"]; has {
			return meridian.FieldError("data_base64", "cannot be given together with data")
		}
		if out.isJSON() {
			out.Data = append([]byte(nil), d...)
		} else {
			var s string
			if err := json.Unmarshal(d, &s); err != nil {
				out.Data = append([]byte(nil), d...)
			} else {
				out.Data = []byte(s)
			}
		}
	}
	if b64, err := str("data_base64"); err != nil {
		return err
	} else if b64 != "" {
		if out.Data, err = base64.StdEncoding.DecodeString(b64); err != nil {
			return meridian.FieldError("data_base64", "is not valid base64")
		}
	}
	for k, v := range raw {
		if core[k] {
			continue
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			// CloudEvents allows other scalar types; keep their JSON text.
			s = strings.Trim(string(v), `"`)
		}
		if out.Extensions == nil {
			out.Extensions = map[string]string{}
		}
		out.Extensions[k] = s
	}
	*e = out
	return nil
}

// String is for logs.
func (e Event) String() string { return fmt.Sprintf("%s/%s (%s)", e.Source, e.ID, e.Type) }
