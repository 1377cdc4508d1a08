package ratelimit

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/internal/problem"
)

// QuotaExceededType is the problem type of a 429 answer: the "quota-exceeded"
// type draft-ietf-httpapi-ratelimit-headers asks IANA to register.
const QuotaExceededType = "https://iana.org/assignments/http-problem-types#quota-exceeded"

// MiddlewareOption adjusts Middleware.
type MiddlewareOption func(*middleware)

// WithPolicyName names the policy in the RateLimit and RateLimit-Policy
// fields and in a 429's violated-policies. Default "default". The name is a
// structured-field string, so it is limited to printable ASCII other than
// '"' and '\'; Middleware panics on anything else, as it is a programming
// error.
func WithPolicyName(name string) MiddlewareOption {
	return func(m *middleware) { m.name = name }
}

// WithCost sets how many units a request takes (a batch endpoint may charge
// per item). Default 1. A cost above the Limit's Burst could never pass and
// is answered 400 naming it, so the client can split the batch.
func WithCost(cost func(*http.Request) int) MiddlewareOption {
	return func(m *middleware) { m.cost = cost }
}

// WithLogger is where problem.Write logs internal errors (a limiter error
// that is neither CodeInvalid nor ErrUnavailable). Default none.
func WithLogger(log *slog.Logger) MiddlewareOption {
	return func(m *middleware) { m.log = log }
}

type middleware struct {
	l     Limiter
	keyFn func(*http.Request) string
	name  string
	cost  func(*http.Request) int
	log   *slog.Logger
}

// Middleware limits requests to the handler it wraps, per keyFn(r) (see
// RemoteIP). Every key, the empty string included, is limited; route what
// must not be limited (health checks) around it.
//
// It follows draft-ietf-httpapi-ratelimit-headers-10 (and -11, unchanged in
// this respect), the draft that replaced the RateLimit-Limit,
// RateLimit-Remaining and RateLimit-Reset fields of -07 and earlier with two
// structured fields. Every decided response carries
//
//	RateLimit-Policy: "default";q=<Burst>;w=<seconds>
//	RateLimit: "default";r=<Remaining>;t=<seconds>
//
// q is the Burst and w the time an exhausted key takes to refill it
// (Burst·T), so q/w is the sustained rate; w is rounded up to a whole second
// (the draft has no smaller unit), which understates the rate of a policy
// refilling in under a second rather than overstating it. r is Remaining and
// t is ResetAfter rounded up: a client that takes no more than r units in t
// seconds is never refused.
//
// A denied request is answered 429 with Retry-After (RetryAfter rounded up
// to a whole second, at least 1) and an RFC 9457 problem+json body of the
// draft's quota-exceeded type naming the violated policy; its code member is
// "unavailable", the code Meridian clients give a 429, so they back off and
// retry. A limiter error is answered through problem.Write: a FailClosed
// store failure (ErrUnavailable) becomes 503 with Retry-After and the
// message "rate limiter unavailable", never the store's error. A FailOpen
// decision (StoreErr set, Allowed) passes the request without RateLimit
// fields, since nothing is known; count those with the engine's hooks.
func Middleware(l Limiter, keyFn func(*http.Request) string, opts ...MiddlewareOption) func(http.Handler) http.Handler {
	m := &middleware{l: l, keyFn: keyFn, name: "default"}
	for _, o := range opts {
		o(m)
	}
	if !validPolicyName(m.name) {
		panic(fmt.Sprintf("ratelimit: policy name %q is not a structured-field string of printable ASCII without '\"' or '\\'", m.name))
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n := 1
			if m.cost != nil {
				n = m.cost(r)
			}
			d, err := m.l.Allow(r.Context(), m.keyFn(r), n)
			if err != nil {
				problem.Write(w, r, m.log, err)
				return
			}
			if d.StoreErr == nil {
				m.setFields(w.Header(), d)
			}
			if !d.Allowed {
				m.refuse(w, r, d)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

func (m *middleware) setFields(h http.Header, d Decision) {
	h.Set("RateLimit-Policy", strconv.Quote(m.name)+";q="+strconv.Itoa(d.Limit.Burst)+";w="+strconv.FormatInt(max(ceilSeconds(d.Limit.Window()), 1), 10))
	h.Set("RateLimit", strconv.Quote(m.name)+";r="+strconv.Itoa(d.Remaining)+";t="+strconv.FormatInt(ceilSeconds(d.ResetAfter), 10))
}

// quotaExceeded is the 429 body: Meridian's problem members plus the
// draft's violated-policies.
type quotaExceeded struct {
	problem.Details
	ViolatedPolicies []string `json:"violated-policies"`
}

func (m *middleware) refuse(w http.ResponseWriter, r *http.Request, d Decision) {
	retry := max(ceilSeconds(d.RetryAfter), 1)
	body := quotaExceeded{
		Details: problem.Details{
			Type:     QuotaExceededType,
			Title:    "Quota Exceeded",
			Status:   http.StatusTooManyRequests,
			Detail:   fmt.Sprintf("rate limit %q (%s) exceeded; retry in %ds", m.name, d.Limit, retry),
			Instance: r.URL.Path,
			Code:     string(meridian.CodeUnavailable),
		},
		ViolatedPolicies: []string{m.name},
	}
	h := w.Header()
	h.Set("Retry-After", strconv.FormatInt(retry, 10))
	h.Set("Content-Type", problem.ContentType)
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusTooManyRequests)
	_ = json.NewEncoder(w).Encode(body)
}

// ceilSeconds is d in whole seconds, rounded up.
func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}

// validPolicyName reports whether name, quoted, is a structured-field
// string (RFC 9651 §3.3.3) that strconv.Quote leaves unescaped.
func validPolicyName(name string) bool {
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// RemoteIP is a key function for Middleware: the client's IP address as the
// server saw it (r.RemoteAddr without the port). Behind a proxy that is the
// proxy; use a key function that trusts the proxy's forwarding header there.
func RemoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
