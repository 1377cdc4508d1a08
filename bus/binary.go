package bus

import (
	"strings"
	"time"

	"github.com/meridian-platform/meridian"
)

// Binary mode carries attributes as message headers (the CloudEvents HTTP
// and NATS bindings alike); these helpers are what every binding shares.

func mustEncode(c byte) bool { return c <= ' ' || c > '~' || c == '"' || c == '%' }

const hexDigits = "0123456789ABCDEF"

// EncodeAttr percent-encodes an attribute value for a header, by the HTTP
// binding's rule (section 3.1.3.2): space, '"', '%' and every byte outside
// printable ASCII, so that no value can break a header line.
func EncodeAttr(s string) string {
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

// DecodeAttr undoes EncodeAttr; a '%' not followed by two hex digits is
// kept as it is, as senders that do not encode may send one.
func DecodeAttr(s string) string {
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

// SetAttr sets the attribute name (lower case, without a binding's "ce-"
// prefix) to the decoded value v: a core attribute, or else an extension.
// A time that does not parse is an error naming "time".
func (e *Event) SetAttr(name, v string) error {
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
			return meridian.FieldError("time", "%q is not an RFC 3339 timestamp", v)
		}
		e.Time = t
	default:
		if e.Extensions == nil {
			e.Extensions = make(map[string]string, 4)
		}
		e.Extensions[name] = v
	}
	return nil
}
