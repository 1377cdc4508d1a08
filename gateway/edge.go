package gateway

import (
	"net/http"
	"strings"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/gateway/aggregate"
	"github.com/meridian-platform/meridian/gateway/transcode"
	"github.com/meridian-platform/meridian/internal/problem"
	"github.com/meridian-platform/meridian/traffic/ratelimit"
)

// defaultMaxBody is a route's request body limit unless it sets one.
const defaultMaxBody = 10 << 20

// edge holds what a document's routes share at the edge: the rate
// limiters by name.
type edge struct {
	g        *Gateway
	cfg      *Config
	limiters map[string]ratelimit.Limiter
}

func (g *Gateway) newEdge(cfg *Config) (*edge, error) {
	e := &edge{g: g, cfg: cfg, limiters: map[string]ratelimit.Limiter{}}
	for name, rl := range cfg.RateLimits {
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
	h = bodyLimit(rc.MaxBodyBytes, h)
	if rc.RateLimit != "" {
		h = ratelimit.Middleware(e.limiters[rc.RateLimit], limitKey(e.cfg.RateLimits[rc.RateLimit].Key),
			ratelimit.WithPolicyName(rc.RateLimit), ratelimit.WithLogger(e.g.log))(h)
	}
	if t := e.g.opts.Tracing; t != nil {
		h = t.Middleware(rc.Name, h)
	}
	return h, nil
}

// limitKey returns the client key function of an edge rate limit.
func limitKey(kind string) func(*http.Request) string {
	switch {
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
			problem.Write(w, r, nil, &meridian.Error{Code: meridian.CodeTooLarge,
				Message: "the request body is larger than this route's limit of " + formatBytes(max)})
			return
		}
		if r.Body != nil && r.Body != http.NoBody && r.ContentLength < 0 {
			r.Body = http.MaxBytesReader(w, r.Body, max)
		}
		next.ServeHTTP(w, r)
	})
}

func formatBytes(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return itoa(n>>20) + " MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return itoa(n>>10) + " KiB"
	}
	return itoa(n) + " bytes"
}

func itoa(n int64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
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
