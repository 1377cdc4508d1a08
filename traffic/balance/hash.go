package balance

import (
	"net/http"
	"net/textproto"
	"strings"

	"github.com/cespare/xxhash/v2"
)

// The helpers below compute Request.Hash from what identifies a request's
// affinity (a user, a session, a tenant, a cart). They use xxhash64, so
// every client (SDK, gateway, sidecar) maps a key to the same point of the
// same ring. They return 0 (no key) when the key is absent, and never 0
// otherwise. None allocates when given a canonical header name.

// HashString hashes a key. It never returns 0, so an empty key is still a
// key.
func HashString(key string) uint64 {
	if h := xxhash.Sum64String(key); h != 0 {
		return h
	}
	return 1
}

// HashHeader hashes the values of the header name in h, joined by ", " as
// HTTP combines repeated fields; 0 when the header is absent. Pass name in
// canonical form ("X-User-Id") to avoid an allocation.
func HashHeader(h http.Header, name string) uint64 {
	vs := h[name]
	if vs == nil {
		vs = h[textproto.CanonicalMIMEHeaderKey(name)]
	}
	switch len(vs) {
	case 0:
		return 0
	case 1:
		return HashString(vs[0])
	}
	var d xxhash.Digest
	d.Reset()
	for i, v := range vs {
		if i > 0 {
			_, _ = d.WriteString(", ")
		}
		_, _ = d.WriteString(v)
	}
	if s := d.Sum64(); s != 0 {
		return s
	}
	return 1
}

// HashCookie hashes the value of the cookie name in h's Cookie headers
// (the request's headers); 0 when there is no such cookie. Surrounding
// double quotes are removed from the value, as net/http does, so quoted
// and bare values hash alike.
func HashCookie(h http.Header, name string) uint64 {
	for _, line := range h["Cookie"] {
		for line != "" {
			var part string
			part, line, _ = strings.Cut(line, ";")
			k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
			if !ok || k != name {
				continue
			}
			if len(v) > 1 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			return HashString(v)
		}
	}
	return 0
}

// HashPathValue hashes the path wildcard name of r's matched pattern
// (r.PathValue, as set by http.ServeMux for patterns such as
// "/carts/{cart}/items"); 0 when it is empty or not in the pattern. To
// hash the whole path, use HashString(r.URL.Path).
func HashPathValue(r *http.Request, name string) uint64 {
	v := r.PathValue(name)
	if v == "" {
		return 0
	}
	return HashString(v)
}
