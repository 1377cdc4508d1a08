package gateway

import (
	"errors"
	"fmt"
	"strings"

	"github.com/goccy/go-yaml"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/gateway/aggregate"
	"github.com/meridian-platform/meridian/gateway/compress"
	"github.com/meridian-platform/meridian/gateway/cors"
	"github.com/meridian-platform/meridian/gateway/transcode"
	"github.com/meridian-platform/meridian/traffic/identity"
	"github.com/meridian-platform/meridian/traffic/policy"
	"github.com/meridian-platform/meridian/traffic/ratelimit"
)

// Config is a gateway's whole routing document: what the config center
// holds at Key(name) and what --routes-file reads. JSON is the canonical
// form; YAML reads alike. It is replaced as a whole: a gateway activates a
// new Config only after all of it validated, never part of one.
type Config struct {
	// Policies are the named resiliency policies routes refer to, with the
	// schema of the resiliency spec (docs/traffic.md): timeouts, retries,
	// circuit_breakers, throttles, bulkheads, rate_limits (calls to the
	// upstream as a whole), balancers, outlier_detectors.
	Policies policy.Policies `json:"policies,omitzero"`
	// Default names the policies of every route that names none of its own
	// for a layer. Unset layers get the built-in policies: 3 attempts,
	// an error-rate breaker, outlier detection, peak EWMA.
	Default policy.Target `json:"default,omitzero"`
	// Auth declares how callers are authenticated: JWT providers and API
	// keys. Routes choose what they require.
	Auth identity.Config `json:"auth,omitzero"`
	// RateLimits are the named edge rate limits routes refer to: requests
	// per client (by IP, subject, API key or a header), enforced before
	// anything is forwarded.
	RateLimits map[string]RateLimit `json:"rate_limits,omitempty"`
	// CORS is the default CORS policy of routes that set none (package
	// gateway/cors). Nil: no CORS headers; browsers allow same-origin
	// calls only.
	CORS *cors.Config `json:"cors,omitempty"`
	// Compression sets how routes compress responses (package
	// gateway/compress): encodings, minimum size, content types, level.
	// Nil: zstd, br and gzip at their fastest levels, for responses of
	// 1 KiB and more of text, JSON, XML, JavaScript and SVG.
	Compression *compress.Config `json:"compression,omitempty"`
	// Routes are matched most specific first (see Match); ties in the
	// order written.
	Routes []Route `json:"routes"`
}

// RateLimit is an edge rate limit: Limit per key.
type RateLimit struct {
	ratelimit.Limit `yaml:",inline"`
	// Key is what a client is: "ip" (the peer address; default),
	// "subject" (the authenticated subject, else the IP), "api_key" (the
	// API key's name, else the IP) or "header:<Name>" (the header's
	// value, else the IP).
	Key string `json:"key,omitempty"`
}

// Route is one route: what it matches and where it sends what matched.
type Route struct {
	// Name identifies the route in errors, logs, metrics and the CLI:
	// 1-63 lowercase letters, digits and '-'.
	Name  string `json:"name"`
	Match Match  `json:"match"`
	// Exactly one of Upstream, Split and Aggregate says where requests
	// go.
	Upstream *Upstream `json:"upstream,omitempty"`
	// Split sends each request to one backend: the first whose When
	// matches the request, else one chosen at random by weight.
	Split []Backend `json:"split,omitempty"`
	// Aggregate calls several upstreams in parallel and merges their JSON
	// (package gateway/aggregate). Branch URLs name services
	// (http://orders/v1/orders/{id}) or fixed hosts.
	Aggregate *aggregate.Config `json:"aggregate,omitempty"`
	// Transcode serves REST/JSON (google.api.http rules), Connect and
	// gRPC-Web from a gRPC upstream (package gateway/transcode); gRPC
	// requests pass through as they are. The upstream is spoken to over
	// h2c.
	Transcode *transcode.Config `json:"transcode,omitempty"`

	Rewrite *Rewrite  `json:"rewrite,omitempty"`
	Headers HeaderOps `json:"headers,omitzero"`
	// Mirror sends a copy of a share of the requests to another upstream
	// and ignores its answers.
	Mirror *Mirror `json:"mirror,omitempty"`

	// Policies name the resiliency policies of this route's upstream
	// calls, overriding Config.Default layer by layer.
	Policies policy.Target `json:"policies,omitzero"`
	// RateLimit names an edge rate limit of Config.RateLimits.
	RateLimit string `json:"rate_limit,omitempty"`
	// Auth is what a caller must present: methods (jwt, api_key; empty:
	// either), roles (any of) and scopes (all of). Nil: the route is
	// public and credentials are not looked at. Either way, identity
	// headers a client sent are removed before forwarding.
	Auth *identity.Requirement `json:"auth,omitempty"`
	// CORS overrides Config.CORS for this route.
	CORS *cors.Config `json:"cors,omitempty"`
	// MaxBodyBytes bounds request bodies; larger ones get 413 before
	// anything is forwarded. Default 10 MiB; -1: no limit.
	MaxBodyBytes int64 `json:"max_body_bytes,omitempty"`
	// Compress negotiates response compression (zstd, br, gzip). Nil: on.
	Compress *bool `json:"compress,omitempty"`
}

// Match says which requests a route takes. Every condition set must hold.
type Match struct {
	// Hosts are exact host names or "*.example.com" (one or more labels
	// in front); the port of the Host header is ignored. Empty: any.
	Hosts []string `json:"hosts,omitempty"`
	// Path is an exact path, or a template whose segments may be
	// parameters: /v1/orders/{id}, or end in {rest...} to take the rest.
	// Parameters are available to rewrites and aggregation as {id}.
	Path string `json:"path,omitempty"`
	// PathPrefix matches paths starting with it at a segment boundary:
	// /api matches /api and /api/x, not /apix. At most one of Path and
	// PathPrefix; neither: any path.
	PathPrefix string `json:"path_prefix,omitempty"`
	// Methods are allowed methods. Empty: any.
	Methods []string `json:"methods,omitempty"`
	// Headers must be present with these exact values ("*": present with
	// any value).
	Headers map[string]string `json:"headers,omitempty"`
	// Query parameters must be present with these exact values ("*": any).
	Query map[string]string `json:"query,omitempty"`
}

// Upstream is where requests go: a service found through the registry
// or fixed URLs.
type Upstream struct {
	// Service is the registry name of the upstream service.
	Service string `json:"service,omitempty"`
	// Subset narrows the service's instances: "version" matches the
	// instance's version, "zone" its zone, any other key its metadata.
	Subset map[string]string `json:"subset,omitempty"`
	// URLs are fixed upstreams (http:// or https://, host and optional
	// port, no path), balanced like a service's instances. Exactly one of
	// Service and URLs.
	URLs []string `json:"urls,omitempty"`
	// Protocol is what the gateway speaks to the upstream: "http"
	// (HTTP/1.1, or HTTP/2 over TLS), "h2c" (HTTP/2 without TLS) or
	// "grpc" (h2c, and gRPC errors). Default "http"; gRPC requests
	// (content-type application/grpc) always go over HTTP/2.
	Protocol string `json:"protocol,omitempty"`
}

// Backend is one target of a split.
type Backend struct {
	Upstream `yaml:",inline"`
	// Weight is the share of requests not taken by a When, relative to
	// the other backends' weights. 0: only requests matching When.
	Weight int `json:"weight"`
	// When sends every request it matches to this backend, whatever the
	// weights.
	When *Condition `json:"when,omitempty"`
}

// Condition matches requests by header or cookie, for canaries by user.
type Condition struct {
	Headers map[string]string `json:"headers,omitempty"`
	Cookies map[string]string `json:"cookies,omitempty"`
}

// Rewrite changes the request before it is forwarded.
type Rewrite struct {
	// Path replaces the path; it may use the match's parameters: with
	// match.path /v1/orders/{id}, "/orders/{id}". With a prefix match,
	// StripPrefix is usually what is wanted.
	Path string `json:"path,omitempty"`
	// StripPrefix removes match.path_prefix from the path (/api/x → /x).
	StripPrefix bool `json:"strip_prefix,omitempty"`
	// AddPrefix is put in front of the (stripped) path.
	AddPrefix string `json:"add_prefix,omitempty"`
	// Host replaces the Host header. Default: the client's Host is kept.
	Host string `json:"host,omitempty"`
}

// HeaderOps change request and response headers.
type HeaderOps struct {
	Request  HeaderOp `json:"request,omitzero"`
	Response HeaderOp `json:"response,omitzero"`
}

// HeaderOp sets, adds and removes headers, in that order: remove first.
type HeaderOp struct {
	Remove []string          `json:"remove,omitempty"`
	Set    map[string]string `json:"set,omitempty"`
	Add    map[string]string `json:"add,omitempty"`
}

// Mirror copies requests to a shadow upstream. The copy is sent in the
// background, never waited for, and its answer is discarded; requests
// with bodies over 64 KiB are not mirrored.
type Mirror struct {
	Upstream `yaml:",inline"`
	// Percent is the share of requests mirrored, 0-100. Default 100.
	Percent float64 `json:"percent,omitempty"`
}

// Format is a routes document's encoding.
type Format = meridian.ConfigFormat

// Parse decodes a routes document strictly (unknown fields are errors,
// with line and column) and validates it. Errors are *meridian.Error with
// CodeInvalid: a decoding error names the line, Validate's name the route
// and the field, several joined.
func Parse(format Format, data []byte) (*Config, error) {
	var c Config
	switch format {
	case meridian.FormatJSON, meridian.FormatYAML, "":
		// YAML is a superset of JSON: one strict decoder reads both and
		// reports positions for either.
		if err := yaml.UnmarshalWithOptions(data, &c, yaml.Strict(), yaml.UseJSONUnmarshaler()); err != nil {
			return nil, decodeError(err)
		}
	default:
		return nil, meridian.FieldError("format", "%q is not json or yaml", format)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

func decodeError(err error) error {
	var me *meridian.Error
	if errors.As(err, &me) {
		return err
	}
	var ye yaml.Error
	if errors.As(err, &ye) {
		msg := ye.GetMessage()
		if tok := ye.GetToken(); tok != nil && tok.Position != nil {
			return &meridian.Error{Code: meridian.CodeInvalid,
				Message: fmt.Sprintf("line %d, column %d: %s", tok.Position.Line, tok.Position.Column, msg)}
		}
		return &meridian.Error{Code: meridian.CodeInvalid, Message: msg}
	}
	return &meridian.Error{Code: meridian.CodeInvalid, Message: strings.TrimPrefix(err.Error(), "json: "), Err: err}
}
