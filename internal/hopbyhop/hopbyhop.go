// Package hopbyhop names the HTTP header fields that belong to one
// connection and are never forwarded by a proxy.
package hopbyhop

import (
	"net/textproto"
	"slices"
)

// Headers are the hop-by-hop fields (RFC 9110 §7.6.1) that may appear
// without being listed in Connection: those of RFC 9110 and of the
// obsoleted RFC 2616 §13.5.1, as net/http/httputil.ReverseProxy strips
// them. Fields a request's Connection header lists are hop-by-hop too.
var Headers = []string{
	"Connection",
	"Proxy-Connection",
	"Keep-Alive",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te",
	"Trailer",
	"Transfer-Encoding",
	"Upgrade",
}

// Is reports whether name, in any case, is one of Headers.
func Is(name string) bool {
	return slices.Contains(Headers, textproto.CanonicalMIMEHeaderKey(name))
}
