package client_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/client"
)

// stream is a test double of a watch endpoint (see client_test.go): it
// writes body as an event stream, flushed, then holds the stream open until
// the client leaves, or ends it when hangUp is set.
type stream struct {
	body   string
	hangUp bool
	status int
	ctype  string
	query  chan string // receives each request's raw query
}

func (s *stream) start(t *testing.T) *client.Client {
	t.Helper()
	s.query = make(chan string, 8)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.query <- r.URL.Path + "?" + r.URL.RawQuery
		ct := s.ctype
		if ct == "" {
			ct = "text/event-stream"
		}
		w.Header().Set("Content-Type", ct)
		if s.status != 0 {
			w.WriteHeader(s.status)
		}
		io.WriteString(w, s.body)
		http.NewResponseController(w).Flush()
		if !s.hangUp {
			<-r.Context().Done()
		}
	}))
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL, "", client.WithHTTPClient(srv.Client()))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var errEnough = errors.New("enough")

// collect returns a callback that records events and stops with errEnough
// after n of them.
func collect[E any](n int, into *[]E) func(E) error {
	return func(e E) error {
		*into = append(*into, e)
		if len(*into) == n {
			return errEnough
		}
		return nil
	}
}

func TestWatchRegistrySnapshotSyncLive(t *testing.T) {
	s := &stream{body: ": hello\n\n" +
		"event: put\nid: 4\ndata: {\"type\":\"put\",\"index\":4,\"service\":\"orders\",\"id\":\"o-1\",\"instance\":{\"service\":\"orders\",\"id\":\"o-1\",\"address\":\"10.0.0.1\",\"port\":80,\"protocol\":\"http\",\"weight\":100,\"health\":{\"status\":\"passing\",\"since\":\"0001-01-01T00:00:00Z\"},\"registered_at\":\"0001-01-01T00:00:00Z\",\"revision\":4}}\n\n" +
		"event: sync\nid: 6\ndata: {\"type\":\"sync\",\"index\":6}\n\n" +
		": ping\n\n" +
		"event: delete\nid: 7\ndata: {\"type\":\"delete\",\"index\":7,\"service\":\"orders\",\"id\":\"o-1\",\"reason\":\"lease expired\"}\n\n"}
	c := s.start(t)
	var got []meridian.InstanceEvent
	err := c.WatchRegistry(context.Background(), "orders", 0, collect(3, &got))
	if !errors.Is(err, errEnough) || err != errEnough {
		t.Fatalf("error = %v, want the callback's own error", err)
	}
	if q := <-s.query; q != "/v1/registry/watch?service=orders" {
		t.Errorf("request = %s", q)
	}
	want := []meridian.InstanceEvent{
		{Type: "put", Index: 4, Service: "orders", ID: "o-1", Instance: &meridian.Instance{
			Service: "orders", ID: "o-1", Address: "10.0.0.1", Port: 80, Protocol: "http", Weight: 100,
			Health: meridian.Health{Status: "passing"}, Revision: 4}},
		{Type: "sync", Index: 6},
		{Type: "delete", Index: 7, Service: "orders", ID: "o-1", Reason: "lease expired"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("events\n got %+v\nwant %+v", got, want)
	}
}

// TestEventStreamFormat feeds the parser the variations the SSE format
// allows.
func TestEventStreamFormat(t *testing.T) {
	entry := func(key string, rev uint64) string {
		return `{"key":"` + key + `","value":"v","format":"text","revision":` + strconv.FormatUint(rev, 10) + `,"author":"a","time":"0001-01-01T00:00:00Z"}`
	}
	tests := []struct {
		name string
		body string
		want []meridian.ConfigEvent
	}{
		{
			name: "type and index only in the fields",
			body: "event: put\nid: 3\ndata: {\"entry\":" + entry("a", 3) + "}\n\n",
			want: []meridian.ConfigEvent{{Type: "put", Index: 3, Entry: ce("a", 3)}},
		},
		{
			name: "CRLF line endings",
			body: "event: put\r\nid: 3\r\ndata: {\"entry\":" + entry("a", 3) + "}\r\n\r\n",
			want: []meridian.ConfigEvent{{Type: "put", Index: 3, Entry: ce("a", 3)}},
		},
		{
			name: "CR line endings",
			body: "event: put\rid: 3\rdata: {\"entry\":" + entry("a", 3) + "}\r\r",
			want: []meridian.ConfigEvent{{Type: "put", Index: 3, Entry: ce("a", 3)}},
		},
		{
			name: "data over several lines, no space after the colon",
			body: "event:put\nid:3\ndata:{\"type\":\"put\",\ndata: \"entry\":" + entry("a", 3) + "}\n\n",
			want: []meridian.ConfigEvent{{Type: "put", Index: 3, Entry: ce("a", 3)}},
		},
		{
			name: "comments, retry and unknown fields are ignored",
			body: ": ping\nretry: 1000\nevent: put\nfoo: bar\nid: 3\n: mid-event comment\ndata: {\"entry\":" + entry("a", 3) + "}\n\n",
			want: []meridian.ConfigEvent{{Type: "put", Index: 3, Entry: ce("a", 3)}},
		},
		{
			name: "sync without data",
			body: "event: sync\nid: 9\n\n",
			want: []meridian.ConfigEvent{{Type: "sync", Index: 9}},
		},
		{
			name: "the last id carries over to an event without one",
			body: "event: sync\nid: 9\n\nevent: put\ndata: {\"entry\":" + entry("a", 9) + "}\n\n",
			want: []meridian.ConfigEvent{{Type: "sync", Index: 9}, {Type: "put", Index: 9, Entry: ce("a", 9)}},
		},
		{
			name: "unknown event types are skipped",
			body: "event: compacted\nid: 2\ndata: {}\n\nevent: delete\nid: 4\ndata: {\"entry\":" + entry("a", 4) + "}\n\n",
			want: []meridian.ConfigEvent{{Type: "delete", Index: 4, Entry: ce("a", 4)}},
		},
		{
			name: "blank lines without an event dispatch nothing",
			body: "\n\n\nevent: sync\nid: 1\n\n",
			want: []meridian.ConfigEvent{{Type: "sync", Index: 1}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := (&stream{body: tt.body}).start(t)
			var got []meridian.ConfigEvent
			if err := c.WatchConfig(context.Background(), "", 0, collect(len(tt.want), &got)); err != errEnough {
				t.Fatalf("error = %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("events\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func ce(key string, rev uint64) meridian.ConfigEntry {
	return meridian.ConfigEntry{Key: key, Value: "v", Format: "text", Revision: rev, Author: "a"}
}

func TestWatchEndsWithContext(t *testing.T) {
	s := &stream{body: "event: sync\nid: 5\n\n"}
	c := s.start(t)
	ctx, cancel := context.WithCancel(context.Background())
	synced := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- c.WatchConfig(ctx, "prod/", 0, func(ev meridian.ConfigEvent) error {
			if ev.Type == meridian.EventSync {
				close(synced)
			}
			return nil
		})
	}()
	<-synced
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("error = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("watch did not end with its context")
	}
	if q := <-s.query; q != "/v1/config/watch?prefix=prod%2F" {
		t.Errorf("request = %s", q)
	}
}

func TestWatchStreamEndsAndResumes(t *testing.T) {
	s := &stream{hangUp: true, body: "event: sync\nid: 5\n\nevent: delete\nid: 8\ndata: {\"service\":\"a\",\"id\":\"b\"}\n\nevent: put\nid: 9\ndata: {\"ser"}
	c := s.start(t)
	var got []meridian.InstanceEvent
	err := c.WatchRegistry(context.Background(), "", 3, collect(10, &got))
	var me *meridian.Error
	if !errors.As(err, &me) || me.Code != meridian.CodeUnavailable || !strings.Contains(me.Message, "after index 8") {
		t.Fatalf("error = %v, want unavailable after index 8", err)
	}
	if len(got) != 2 || got[1].Index != 8 {
		t.Fatalf("events = %+v, want the two complete ones", got)
	}
	if q := <-s.query; q != "/v1/registry/watch?index=3" {
		t.Errorf("request = %s", q)
	}
	_ = c.WatchRegistry(context.Background(), "", got[len(got)-1].Index, func(meridian.InstanceEvent) error { return nil })
	if q := <-s.query; q != "/v1/registry/watch?index=8" {
		t.Errorf("resumed request = %s", q)
	}
}

func TestWatchFailures(t *testing.T) {
	tests := []struct {
		name string
		s    stream
		code meridian.Code
	}{
		{"undecodable data", stream{body: "event: put\nid: 1\ndata: {nope\n\n"}, meridian.CodeInternal},
		{"put without data", stream{body: "event: put\nid: 1\n\n"}, meridian.CodeInternal},
		{"id that is not an index", stream{body: "event: sync\nid: x\n\n"}, meridian.CodeInternal},
		{"line over 4 MiB", stream{body: "data: " + strings.Repeat("x", 4<<20+1) + "\n\n"}, meridian.CodeInternal},
		{"data over 4 MiB in many lines", stream{body: strings.Repeat("data: "+strings.Repeat("x", 4<<10)+"\n", 1<<10+1) + "\n"}, meridian.CodeInternal},
		{"not an event stream", stream{ctype: "text/html", hangUp: true}, meridian.CodeInternal},
		{"forbidden", stream{status: 403, ctype: "application/problem+json", hangUp: true, body: `{"status":403,"code":"forbidden","detail":"no"}`}, meridian.CodeForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.s.start(t)
			err := c.WatchRegistry(context.Background(), "", 0, func(meridian.InstanceEvent) error { return nil })
			if !meridian.IsCode(err, tt.code) {
				t.Fatalf("error = %v, want %s", err, tt.code)
			}
		})
	}
}
