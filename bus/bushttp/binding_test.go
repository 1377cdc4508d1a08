package bushttp_test

import (
	"context"
	"io"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/bus"
	"github.com/meridian-platform/meridian/bus/bushttp"
)

// roundTrip writes e in mode and reads it back as a receiver would.
func roundTrip(t *testing.T, e bus.Event, mode bushttp.Mode) bus.Event {
	t.Helper()
	req, err := bushttp.NewRequest(context.Background(), "http://target/events", e, mode)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(req.Body)
	got, batch, err := bushttp.ReadEvents(req.Header, body)
	if err != nil || batch || len(got) != 1 {
		t.Fatalf("%s: read back %v %v %v", mode, got, batch, err)
	}
	return got[0]
}

func TestBothModesCarryEveryAttribute(t *testing.T) {
	events := map[string]bus.Event{
		"JSON data": {ID: "a-1", Source: "/orders", SpecVersion: "1.0", Type: "com.example.placed", Subject: "order 7",
			Time: time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC), DataContentType: "application/json", DataSchema: "https://example.com/s.json",
			Data: []byte(`{"id":7}`), Extensions: map[string]string{"partitionkey": "customer-1", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}},
		"binary data": {ID: "a-2", Source: "/files", SpecVersion: "1.0", Type: "file.uploaded", Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
			DataContentType: "application/octet-stream", Data: []byte{0, 1, 2, 0xff}},
		"values that need escaping": {ID: "id with spaces", Source: "/ünïcode \"quoted\" 100%", SpecVersion: "1.0", Type: "t",
			Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Extensions: map[string]string{"note": "line\nbreak"}},
	}
	for name, e := range events {
		for _, mode := range []bushttp.Mode{bushttp.Structured, bushttp.Binary} {
			t.Run(name+"/"+string(mode), func(t *testing.T) {
				if got := roundTrip(t, e, mode); !reflect.DeepEqual(got, e) {
					t.Errorf("got  %#v\nwant %#v", got, e)
				}
			})
		}
	}
}

func TestBinaryHeadersArePercentEncoded(t *testing.T) {
	h := http.Header{}
	bushttp.SetBinaryHeaders(h, bus.Event{ID: "1", Source: "/a b", SpecVersion: "1.0", Type: `say "hi" 100%`, Subject: "€"})
	for k, want := range map[string]string{"Ce-Source": "/a%20b", "Ce-Type": "say%20%22hi%22%20100%25", "Ce-Subject": "%E2%82%AC"} {
		if got := h.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
}

func TestReadEventsNamesTheAttribute(t *testing.T) {
	structured := http.Header{"Content-Type": {bushttp.ContentTypeStructured + "; charset=utf-8"}}
	cases := []struct {
		name   string
		header http.Header
		body   string
		field  string
	}{
		{"missing id", structured, `{"specversion":"1.0","source":"/s","type":"t"}`, "id"},
		{"bad time", structured, `{"specversion":"1.0","id":"1","source":"/s","type":"t","time":"noon"}`, "time"},
		{"data and data_base64", structured, `{"specversion":"1.0","id":"1","source":"/s","type":"t","data":1,"data_base64":"AA=="}`, "data_base64"},
		{"binary datacontenttype header", http.Header{"Ce-Specversion": {"1.0"}, "Ce-Id": {"1"}, "Ce-Source": {"/s"}, "Ce-Type": {"t"}, "Ce-Datacontenttype": {"text/plain"}}, "", "datacontenttype"},
		{"batch that is not an array", http.Header{"Content-Type": {bushttp.ContentTypeBatch}}, `{}`, "body"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := bushttp.ReadEvents(tc.header, []byte(tc.body))
			me, ok := err.(*meridian.Error)
			if !ok || me.Code != meridian.CodeInvalid || me.Field != tc.field {
				t.Fatalf("err = %v, want invalid %s", err, tc.field)
			}
		})
	}
}

func TestUnencodedPercentSurvives(t *testing.T) {
	h := http.Header{"Ce-Specversion": {"1.0"}, "Ce-Id": {"50%off"}, "Ce-Source": {"/s"}, "Ce-Type": {"t"}}
	got, _, err := bushttp.ReadEvents(h, nil)
	if err != nil || got[0].ID != "50%off" {
		t.Fatalf("%+v %v", got, err)
	}
}
