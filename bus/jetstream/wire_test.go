package jetstream

import (
	"maps"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/bus"
)

func TestWireIsBinaryModeCloudEvents(t *testing.T) {
	e := bus.Event{
		ID: "id 1", Source: "/orders", SpecVersion: "1.0", Type: "com.example.placed", Subject: "ö\"%\r\n",
		Time: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC), DataContentType: "application/json", DataSchema: "urn:s",
		Data: []byte(`{"a":1}`), Extensions: map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "partitionkey": "k"},
	}
	m := encode("bus.orders.3", &e, "dedup")
	want := map[string]string{
		"ce-specversion": "1.0", "ce-id": "id%201", "ce-source": "/orders", "ce-type": "com.example.placed",
		"ce-subject": "%C3%B6%22%25%0D%0A", "ce-time": "2026-01-02T03:04:05.000000006Z", "ce-dataschema": "urn:s",
		"content-type": "application/json", "ce-traceparent": e.Extensions["traceparent"], "ce-partitionkey": "k",
		"Nats-Msg-Id": "dedup",
	}
	got := map[string]string{}
	for k, v := range m.Header {
		got[k] = v[0]
	}
	if !maps.Equal(got, want) {
		t.Fatalf("headers\n%v\nwant\n%v", got, want)
	}
	if string(m.Data) != `{"a":1}` || m.Subject != "bus.orders.3" {
		t.Fatalf("body %q subject %s", m.Data, m.Subject)
	}
	back, err := decode(m.Header, m.Data)
	if err != nil {
		t.Fatal(err)
	}
	if back.ID != e.ID || back.Subject != e.Subject || !back.Time.Equal(e.Time) || back.DataSchema != e.DataSchema ||
		back.DataContentType != e.DataContentType || !maps.Equal(back.Extensions, e.Extensions) || string(back.Data) != string(e.Data) {
		t.Fatalf("round trip:\n%+v\nwant\n%+v", back, e)
	}
}

func TestDecodeNamesTheAttribute(t *testing.T) {
	for _, c := range []struct {
		name  string
		h     nats.Header
		field string
	}{
		{"no specversion", nats.Header{"ce-id": {"1"}}, "specversion"},
		{"no id", nats.Header{"ce-specversion": {"1.0"}, "ce-source": {"/s"}, "ce-type": {"t"}}, "id"},
		{"no type", nats.Header{"ce-specversion": {"1.0"}, "ce-id": {"1"}, "ce-source": {"/s"}}, "type"},
		{"bad time", nats.Header{"ce-specversion": {"1.0"}, "ce-id": {"1"}, "ce-source": {"/s"}, "ce-type": {"t"}, "ce-time": {"yesterday"}}, "time"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := decode(c.h, nil)
			if me, ok := err.(*meridian.Error); !ok || me.Field != c.field {
				t.Fatalf("err = %v, want one naming %s", err, c.field)
			}
		})
	}
}
