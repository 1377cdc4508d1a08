package gateway

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"strconv"
	"strings"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/gateway/aggregate"
	"github.com/meridian-platform/meridian/gateway/compress"
	"github.com/meridian-platform/meridian/gateway/cors"
	"github.com/meridian-platform/meridian/gateway/transcode"
	"github.com/meridian-platform/meridian/internal/problem"
	"github.com/meridian-platform/meridian/traffic/identity"
	"github.com/meridian-platform/meridian/traffic/ratelimit"
)

// defaultMaxBody is a route's request body limit unless it sets one.
const defaultMaxBody = 10 << 20

// edge holds what a document's routes share at the edge: the verifier,
// the rate limiters by name, compression and the default CORS.
type edge struct {
	g        *Gateway
	cfg      *Config
	limiters map[string]ratelimit.Limiter
	verifier *identity.Verifier // nil: no auth declared
	compress func(http.Handler) http.Handler
	cors     func(http.Handler) http.Handler // the document's default; nil: none
}

// newEdge makes the shared edge state of cfg. The verifier is kept across
// documents whose auth section did not change, so a reload keeps its
// fetched keys and its cache of verified tokens. Called under g.mu.
func (g *Gateway) newEdge(cfg *Config) (*edge, error) {
	e := &edge{g: g, cfg: cfg, limiters: map[string]ratelimit.Limiter{}}
	prev := g.edge
	if len(cfg.Auth.JWT) > 0 || len(cfg.Auth.APIKeys) > 0 {
		if prev != nil && prev.verifier != nil && reflect.DeepEqual(prev.cfg.Auth, cfg.Auth) {
			e.verifier = prev.verifier
		} else {
			v, err := identity.New(cfg.Auth, identity.Options{Logger: g.log})
			if err != nil {
				return nil, err
			}
			e.verifier = v
		}
	}
	var cc compress.Config
	if cfg.Compression != nil {
		cc = *cfg.Compression
	}
	var err error
	if e.compress, err = compress.New(cc); err != nil {
		return nil, err
	}
	if cfg.CORS != nil {
		if e.cors, err = cors.New(*cfg.CORS); err != nil {
			return nil, err
		}
	}
	for name, rl := range cfg.RateLimits {
		// A limit that did not change keeps its limiter, and so its
		// clients' counts, across reloads.
		if prev != nil {
			if kept, ok := prev.limiters[name]; ok && prev.cfg.RateLimits[name].Limit == rl.Limit {
				e.limiters[name] = kept
				continue
			}
		}
		l, err := ratelimit.NewLocal(ratelimit.LocalConfig{Limit: rl.Limit})
		if err != nil {
			return nil, meridian.FieldError("rate_limits."+name, "%v", err)
		}
		e.limiters[name] = l
	}
	return e, nil
}

// wrap puts the edge layers around a route's terminal handler, in this
// order from the outside: CORS (a preflight never reaches the rest), the
// identity (client copies of identity headers are always removed), the
// route's rate limit, the body limit, compression.
func (e *edge) wrap(rc *Route, h http.Handler) (http.Handler, error) {
	if rc.Compress == nil || *rc.Compress {
		h = e.compress(h)
	}
	h = bodyLimit(rc.MaxBodyBytes, h)
	if rc.RateLimit != "" {
		h = ratelimit.Middleware(e.limiters[rc.RateLimit], limitKey(e.cfg.RateLimits[rc.RateLimit].Key),
			ratelimit.WithPolicyName(rc.RateLimit), ratelimit.WithLogger(e.g.log))(h)
	}
	h = e.authn(rc, h)
	switch {
	case rc.CORS != nil:
		c, err := cors.New(*rc.CORS)
		if err != nil {
			return nil, err
		}
		h = c(h)
	case e.cors != nil:
		h = e.cors(h)
	}
	if t := e.g.opts.Tracing; t != nil {
		h = t.Middleware(rc.Name, h)
	}
	return h, nil
}

// authn authenticates the caller of a route with an auth requirement and
// checks it; the identity goes upstream in the X-Meridian-* headers, and
// every copy of those a client sent is removed first, on every route. A
// caller without valid credentials gets 401 with a WWW-Authenticate
// challenge, one without the role or scope 403; neither is forwarded.
func (e *edge) authn(rc *Route, next http.Handler) http.Handler {
	req, v := rc.Auth, e.verifier
	if req == nil || v == nil {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			identity.StripHeaders(r.Header)
			next.ServeHTTP(w, r)
		})
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := v.Authenticate(r.Context(), r)
		if err == nil {
			err = req.Allow(id)
		}
		if err != nil {
			var me *meridian.Error
			if errors.As(err, &me) && me.Code == meridian.CodeUnauthorized {
				w.Header().Set("WWW-Authenticate", identity.Challenge(err))
			}
			problem.Write(w, r, e.g.log, err)
			return
		}
		v.Forward(r.Header, id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), identityKey{}, id)))
	})
}

type identityKey struct{}

// callerIdentity is the identity authn verified for r, nil on a public
// route.
func callerIdentity(r *http.Request) *identity.Identity {
	id, _ := r.Context().Value(identityKey{}).(*identity.Identity)
	return id
}

// limitKey returns the client key function of an edge rate limit.
func limitKey(kind string) func(*http.Request) string {
	switch {
	case kind == "subject":
		return func(r *http.Request) string {
			if id := callerIdentity(r); id != nil {
				return "s:" + id.Issuer + "|" + id.Subject
			}
			return ratelimit.RemoteIP(r)
		}
	case kind == "api_key":
		return func(r *http.Request) string {
			if id := callerIdentity(r); id != nil && id.Method == identity.MethodAPIKey {
				return "k:" + id.Provider
			}
			return ratelimit.RemoteIP(r)
		}
	case strings.HasPrefix(kind, "header:"):
		name := http.CanonicalHeaderKey(kind[len("header:"):])
		return func(r *http.Request) string {
			if v := r.Header.Get(name); v != "" {
				return "h:" + v
			}
			return ratelimit.RemoteIP(r)
		}
	default:
		return ratelimit.RemoteIP
	}
}

// bodyLimit refuses bodies over max bytes with 413: at once when
// Content-Length says so, else when reading passes the limit.
func bodyLimit(max int64, next http.Handler) http.Handler {
	switch {
	case max < 0:
		return next
	case max == 0:
		max = defaultMaxBody
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > max {
			problem.Write(w, r, nil, tooLarge(max))
			return
		}
		if r.Body != nil && r.Body != http.NoBody && r.ContentLength < 0 {
			r.Body = http.MaxBytesReader(w, r.Body, max)
		}
		next.ServeHTTP(w, r)
	})
}

// tooLarge is the refusal of a body over a route's limit of max bytes.
func tooLarge(max int64) *meridian.Error {
	return &meridian.Error{Code: meridian.CodeTooLarge,
		Message: "the request body is larger than this route's limit of " + formatBytes(max)}
}

func formatBytes(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + " MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + " KiB"
	}
	return strconv.FormatInt(n, 10) + " bytes"
}

// aggregate is the terminal of an aggregation route: its branches go
// through the same data path as forwarded requests.
func (g *Gateway) aggregate(rc *Route) (http.Handler, error) {
	return aggregate.New(*rc.Aggregate, g.h1, g.log)
}

// transcode is the terminal of a transcoding route: REST calls become
// gRPC calls that f forwards over h2c.
func (g *Gateway) transcode(rc *Route, f *forward) (http.Handler, error) {
	f.h2 = true
	return transcode.New(*rc.Transcode, f)
}
