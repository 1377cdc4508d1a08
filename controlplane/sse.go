package controlplane

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/meridian-platform/meridian"
)

// ssePing is how often an idle stream sends a comment, so proxies keep it
// open and a dead client is noticed.
const ssePing = 15 * time.Second

// sse writes a server-sent event stream.
type sse struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func startSSE(w http.ResponseWriter) *sse {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	s := &sse{w: w, rc: http.NewResponseController(w)}
	_ = s.rc.Flush()
	return s
}

// send writes one event; id is the watch index a client resumes after.
// An id of 0 is not written, so that the client keeps the last one it had
// (resuming after 0 and from the start are the same).
func (s *sse) send(event string, id uint64, data any) error {
	var b bytes.Buffer
	b.WriteString("event: ")
	b.WriteString(event)
	if id != 0 {
		b.WriteString("\nid: ")
		b.WriteString(strconv.FormatUint(id, 10))
	}
	b.WriteString("\ndata: ")
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // keeps data lines short: config values are often HTML-ish
	if err := enc.Encode(data); err != nil {
		return err
	}
	b.WriteString("\n") // Encode ended the data line; a blank line ends the event
	if _, err := s.w.Write(b.Bytes()); err != nil {
		return err
	}
	return s.rc.Flush()
}

func (s *sse) ping() error {
	if _, err := s.w.Write([]byte(": ping\n\n")); err != nil {
		return err
	}
	return s.rc.Flush()
}

// watchIndex reads where a watch resumes: ?index=N, else the Last-Event-ID
// header an EventSource sends when it reconnects, else 0.
func watchIndex(r *http.Request) (uint64, error) {
	v := r.URL.Query().Get("index")
	field := "index"
	if v == "" {
		v, field = r.Header.Get("Last-Event-ID"), "Last-Event-ID"
	}
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, meridian.FieldError(field, "%q is not a non-negative integer", v)
	}
	return n, nil
}

func notFound(format string, args ...any) error {
	return meridian.Errorf(meridian.CodeNotFound, format, args...)
}
