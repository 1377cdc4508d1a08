package compress

import (
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/meridian-platform/meridian"
)

// Config says which responses are compressed and how. The zero value means
// the defaults on the fields.
type Config struct {
	// Encodings are the content codings offered, in the gateway's order of
	// preference among "zstd", "br" and "gzip". The client's q-values decide
	// first; this order breaks ties. Default zstd, br, gzip.
	Encodings []string `json:"encodings,omitempty"`
	// MinSize is the size in bytes below which a response goes
	// uncompressed: a compressed frame that small saves nothing on the wire
	// and still costs an encoder. The size is read from Content-Length or,
	// without one, the response is held back until MinSize bytes have been
	// written (or the handler returns or flushes). Default 1024; at most
	// MaxMinSize. Use 1 to compress every non-empty response.
	MinSize int `json:"min_size,omitempty"`
	// ContentTypes are the compressible media types, matched as
	// case-insensitive prefixes of the response's Content-Type without its
	// parameters: "text/" matches text/html and text/csv. Default
	// DefaultContentTypes(). text/event-stream and application/grpc* are
	// never compressed whatever this says.
	ContentTypes []string `json:"content_types,omitempty"`
	// Level trades speed for size: "fastest" (the default, since a proxy
	// pays for it on every request) or "default", each encoder's own
	// default level. See the package documentation for the levels used.
	Level string `json:"level,omitempty"`
}

// MaxMinSize bounds Config.MinSize: that many bytes of each undecided
// response are held in memory.
const MaxMinSize = 1 << 20

// DefaultMinSize is Config.MinSize's default.
const DefaultMinSize = 1024

const (
	levelFastest = "fastest"
	levelDefault = "default"
)

// DefaultContentTypes returns Config.ContentTypes' default: text, JSON and
// XML in their common forms (problem details included), JavaScript, SVG,
// WebAssembly and uncompressed fonts. The slice is the caller's.
func DefaultContentTypes() []string {
	return []string{
		"text/",
		"application/json",
		"application/problem+json",
		"application/x-ndjson",
		"application/ld+json",
		"application/geo+json",
		"application/vnd.api+json",
		"application/graphql-response+json",
		"application/manifest+json",
		"application/xml",
		"application/problem+xml",
		"application/atom+xml",
		"application/rss+xml",
		"application/xhtml+xml",
		"application/javascript",
		"application/x-javascript",
		"application/ecmascript",
		"application/wasm",
		"image/svg+xml",
		"font/ttf",
		"font/otf",
		"application/vnd.ms-fontobject",
	}
}

// mediaPrefix is a type and an optional start of a subtype, in RFC 9110
// token characters less "*": matching is by prefix, so no wildcard is needed.
var mediaPrefix = regexp.MustCompile(`^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]*$`)

// Validate reports the first field out of range, naming it ("encodings[1]",
// "min_size", "content_types[0]", "level"). It does not change c.
func (c *Config) Validate() error {
	var seen [numCodings]bool
	for i, name := range c.Encodings {
		field := "encodings[" + strconv.Itoa(i) + "]"
		cd, ok := codingByName(name)
		if !ok {
			return meridian.FieldError(field, "%q is not one of zstd, br, gzip", name)
		}
		if seen[cd] {
			return meridian.FieldError(field, "%q is listed twice", name)
		}
		seen[cd] = true
	}
	if c.MinSize < 0 {
		return meridian.FieldError("min_size", "%d must not be negative (0 means the default, %d)", c.MinSize, DefaultMinSize)
	}
	if c.MinSize > MaxMinSize {
		return meridian.FieldError("min_size", "%d is above the limit of %d: responses are held in memory until they reach min_size", c.MinSize, MaxMinSize)
	}
	for i, t := range c.ContentTypes {
		field := "content_types[" + strconv.Itoa(i) + "]"
		switch {
		case strings.Contains(t, "*"):
			return meridian.FieldError(field, "%q has a wildcard: types match by prefix, so write %q", t, strings.TrimRight(t, "*"))
		case !mediaPrefix.MatchString(t):
			return meridian.FieldError(field, "%q is not a media type or a prefix of one such as \"text/\" or \"application/json\" (no parameters)", t)
		case neverCompressed(t):
			return meridian.FieldError(field, "%q is never compressed: server-sent events must stream unbuffered and gRPC compresses its own messages", t)
		}
	}
	switch c.Level {
	case "", levelFastest, levelDefault:
	default:
		return meridian.FieldError("level", "%q is not one of fastest, default", c.Level)
	}
	return nil
}

// withDefaults returns c with its zero fields filled in and content types
// lowercased; c must be valid.
func (c Config) withDefaults() Config {
	if len(c.Encodings) == 0 {
		c.Encodings = []string{"zstd", "br", "gzip"}
	}
	if c.MinSize == 0 {
		c.MinSize = DefaultMinSize
	}
	if len(c.ContentTypes) == 0 {
		c.ContentTypes = DefaultContentTypes()
	} else {
		c.ContentTypes = slices.Clone(c.ContentTypes)
		for i, t := range c.ContentTypes {
			c.ContentTypes[i] = strings.ToLower(t)
		}
	}
	if c.Level == "" {
		c.Level = levelFastest
	}
	return c
}
