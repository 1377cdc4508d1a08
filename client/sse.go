package client

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"

	"github.com/meridian-platform/meridian"
)

// maxEventLine bounds one line of an event stream, and the data of one
// event, so that a broken or hostile server cannot make the reader grow
// without bound.
const maxEventLine = 4 << 20

// sseEvent is one dispatched server-sent event.
type sseEvent struct {
	name string // the event: field, "message" when absent
	id   string // the last id: field seen, as the SSE spec keeps it
	data []byte // data: lines joined with "\n"
}

// readSSE parses r as text/event-stream (the WHATWG server-sent events
// format) and calls fn with each event. It returns fn's error, a read
// error, CodeInternal when a line or an event is too large (retrying would
// meet it again), or io.EOF when the stream ends; an event cut off by the
// end of the stream is dropped, as the spec says.
func readSSE(r io.Reader, fn func(sseEvent) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxEventLine)
	sc.Split(sseLines())
	var (
		name    string
		lastID  string
		data    bytes.Buffer
		hasData bool
	)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 { // a blank line dispatches
			if hasData || name != "" {
				if name == "" {
					name = "message"
				}
				ev := sseEvent{name: name, id: lastID, data: bytes.Clone(data.Bytes())}
				if err := fn(ev); err != nil {
					return err
				}
			}
			name, hasData = "", false
			data.Reset()
			continue
		}
		if line[0] == ':' { // a comment, such as the server's ": ping"
			continue
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "event":
			name = string(value)
		case "data":
			if hasData {
				data.WriteByte('\n')
			}
			data.Write(value)
			hasData = true
			if data.Len() > maxEventLine {
				return meridian.Errorf(meridian.CodeInternal, "event stream: an event's data is longer than %d bytes", maxEventLine)
			}
		case "id":
			if bytes.IndexByte(value, 0) < 0 {
				lastID = string(value)
			}
		}
		// "retry" and unknown fields are ignored.
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return meridian.Errorf(meridian.CodeInternal, "event stream: a line is longer than %d bytes", maxEventLine)
		}
		return err
	}
	return io.EOF
}

// sseLines returns a split function for lines ending in "\r\n", "\n" or
// "\r", as the SSE format allows all three. A "\r" ends its line at once,
// so that a stream using "\r" alone is not held up waiting for the next
// byte; a "\n" right after it is then skipped.
func sseLines() bufio.SplitFunc {
	afterCR := false
	return func(data []byte, atEOF bool) (int, []byte, error) {
		if afterCR && len(data) > 0 {
			afterCR = false
			if data[0] == '\n' {
				return 1, nil, nil
			}
		}
		if atEOF && len(data) == 0 {
			return 0, nil, nil
		}
		if i := bytes.IndexAny(data, "\r\n"); i >= 0 {
			if data[i] == '\n' {
				return i + 1, data[:i], nil
			}
			if i+1 < len(data) {
				if data[i+1] == '\n' {
					return i + 2, data[:i], nil
				}
				return i + 1, data[:i], nil
			}
			afterCR = true
			return i + 1, data[:i], nil
		}
		if atEOF {
			return len(data), data, nil
		}
		return 0, nil, nil
	}
}

// watch opens an event stream at path (after index `after`) and calls fn
// with each event and its id as an index, until ctx ends, fn fails or the
// stream breaks. See WatchRegistry for the contract. fn wraps the errors of
// the caller's callback in errCallback; its other errors are malformed
// events.
func (c *Client) watch(ctx context.Context, path string, query url.Values, after uint64, fn func(sseEvent, uint64) error) error {
	if after > 0 {
		query.Set("index", u64(after))
	}
	req, err := c.newRequest(ctx, request{method: http.MethodGet, path: path, query: query}, "text/event-stream")
	if err != nil {
		return err
	}
	req.Header.Set("Cache-Control", "no-cache")
	resp, err := c.send(ctx, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return c.answerError(resp)
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		return meridian.Errorf(meridian.CodeInternal, "%s answered a watch with %q, not an event stream", c.addr, mt)
	}
	last := after
	err = readSSE(resp.Body, func(ev sseEvent) error {
		var index uint64
		if ev.id != "" {
			n, err := strconv.ParseUint(ev.id, 10, 64)
			if err != nil {
				return c.badEvent(ev, "its id is not an index")
			}
			index = n
		}
		if err := fn(ev, index); err != nil {
			return err
		}
		if index > last {
			last = index
		}
		return nil
	})
	if ctxErr := ctx.Err(); ctxErr != nil {
		return ctxErr
	}
	if cbErr, ok := asCallbackError(err); ok {
		return cbErr
	}
	if me := (*meridian.Error)(nil); errors.As(err, &me) {
		return err // a malformed or oversized event: retrying would meet it again
	}
	msg := "watch stream from " + c.addr + " broke after index " + u64(last)
	if errors.Is(err, io.EOF) {
		msg = "watch stream from " + c.addr + " ended after index " + u64(last)
		err = nil
	}
	return &meridian.Error{Code: meridian.CodeUnavailable, Message: msg, Err: err}
}
