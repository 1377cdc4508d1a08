package aggregate

import (
	"net/http"
	"net/textproto"
	"strings"

	"github.com/meridian-platform/meridian/internal/hopbyhop"
	"github.com/meridian-platform/meridian/traffic/resilience/deadline"
)

// notForwarded are end-to-end headers that do not apply to a branch
// request (see the package documentation): those describing the incoming
// body, which is not forwarded; Range, which is about the merged answer;
// and the caller's remaining time, stale by now. If-* headers go too.
var notForwarded = []string{
	"Content-Length",
	"Content-Type",
	"Content-Encoding",
	"Expect",
	"Range",
	deadline.Header,
}

// outgoingHeader is the header of every branch request made for an
// incoming request with header in: in's end-to-end headers, and Accept
// and Accept-Encoding of the gateway's choosing.
func outgoingHeader(in http.Header) http.Header {
	h := in.Clone()
	if h == nil {
		h = http.Header{}
	}
	for _, v := range h["Connection"] {
		for name := range strings.SplitSeq(v, ",") {
			if name = textproto.TrimString(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopbyhop.Headers {
		h.Del(name)
	}
	for _, name := range notForwarded {
		h.Del(name)
	}
	for name := range h {
		if strings.HasPrefix(name, "If-") { // conditionals are about the merged answer
			delete(h, name)
		}
	}
	h.Set("Accept", "application/json")
	h.Set("Accept-Encoding", "identity") // bodies are merged, so read as plain bytes
	return h
}
