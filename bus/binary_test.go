package bus_test

import (
	"testing"

	"github.com/meridian-platform/meridian/bus"
)

func TestAttrPercentEncoding(t *testing.T) {
	for _, s := range []string{"", "plain", "a b", "100%", "%zz", "%4", "\x00\x7f", "日本", `"q"`} {
		enc := bus.EncodeAttr(s)
		for i := 0; i < len(enc); i++ {
			if c := enc[i]; c <= ' ' || c > '~' || c == '"' {
				t.Fatalf("EncodeAttr(%q) = %q keeps byte %q", s, enc, c)
			}
		}
		if dec := bus.DecodeAttr(enc); dec != s {
			t.Fatalf("DecodeAttr(EncodeAttr(%q)) = %q", s, dec)
		}
	}
	if got := bus.DecodeAttr("%zz%4"); got != "%zz%4" {
		t.Fatalf("malformed escapes changed: %q", got)
	}
}

func TestSetAttr(t *testing.T) {
	var e bus.Event
	for name, v := range map[string]string{"id": "1", "source": "/s", "type": "t", "subject": "x", "time": "2026-11-26T10:00:00Z", "traceparent": "00-ab"} {
		if err := e.SetAttr(name, v); err != nil {
			t.Fatal(err)
		}
	}
	if e.ID != "1" || e.Source != "/s" || e.Type != "t" || e.Subject != "x" || e.Time.IsZero() || e.Extensions["traceparent"] != "00-ab" {
		t.Fatalf("event = %+v", e)
	}
	if err := e.SetAttr("time", "yesterday"); err == nil {
		t.Fatal("a bad time was accepted")
	}
}
