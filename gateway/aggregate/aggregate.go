package aggregate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/internal/problem"
)

// New validates cfg and returns the handler of its route. rt sends every
// branch request (normally the outbound transport, which resolves service
// names); log receives branch failures, whose causes clients never see
// (nil discards them). The error is Validate's, or one about rt.
func New(cfg Config, rt http.RoundTripper, log *slog.Logger) (http.Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if rt == nil {
		return nil, errors.New("aggregate: New needs a RoundTripper to send branch requests")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &handler{
		rt:       rt,
		log:      log,
		partial:  cfg.OnFailure == OnFailurePartial,
		timeout:  DefaultTimeout,
		maxBody:  DefaultMaxBranchBody,
		branches: make([]branch, len(cfg.Branches)),
	}
	if cfg.Timeout != 0 {
		h.timeout = cfg.Timeout.D()
	}
	h.timeoutCause = &timeoutError{fmt.Sprintf("the aggregation timed out after %s", h.timeout)}
	if cfg.MaxBranchBody != 0 {
		h.maxBody = cfg.MaxBranchBody
	}
	for i, b := range cfg.Branches {
		t, err := parseTemplate(b.URL)
		if err != nil {
			return nil, err // Validate has parsed it already
		}
		cb := branch{
			label:        b.Name,
			method:       b.Method,
			url:          t,
			timeout:      b.Timeout.D(),
			required:     b.Required == nil || *b.Required,
			forwardQuery: b.ForwardQuery,
		}
		if cb.label == "" {
			cb.label = fmt.Sprintf("branches[%d]", i)
		} else {
			cb.key, _ = json.Marshal(b.Name)
		}
		if cb.method == "" {
			cb.method = http.MethodGet
		}
		if cb.timeout != 0 {
			cb.timeoutCause = &timeoutError{fmt.Sprintf("timed out after %s", cb.timeout)}
		}
		h.branches[i] = cb
	}
	return h, nil
}

// BranchFailedType is the problem type of an answer that failed because
// of its branches. Its extension members are "branch" and
// "upstream_status" when one required branch decided the answer, and
// "errors" (shaped like the merged object's "_errors") when every branch
// failed.
const BranchFailedType = problem.TypeBase + "branch-failed"

// maxPooledBuffer keeps the occasional huge body from pinning its buffer
// in the pool.
const maxPooledBuffer = 1 << 20

// drainLimit is how much of a failed branch's body is read before closing
// it, so that a short error body does not cost the connection.
const drainLimit = 4 << 10

type handler struct {
	branches     []branch
	rt           http.RoundTripper
	log          *slog.Logger
	partial      bool
	timeout      time.Duration
	timeoutCause error
	maxBody      int64
	buffers      sync.Pool // of *bytes.Buffer
}

type branch struct {
	label        string // Name, or "branches[i]" for a branch merged into the root
	key          []byte // Name as a JSON string; nil for a root branch
	method       string
	url          template
	timeout      time.Duration // 0: the aggregation's
	timeoutCause error
	required     bool
	forwardQuery bool
}

// timeoutError is the cause of a context ended by a branch's or the
// aggregation's timeout; its text is what clients see.
type timeoutError struct{ msg string }

func (e *timeoutError) Error() string { return e.msg }

// errAborted ends the other branches once a required one has failed under
// OnFailureFail.
var errAborted = errors.New("aggregate: another required branch failed")

// result is one branch's outcome: a JSON value (named branches), the
// members of a JSON object (root branches), or a failure.
type result struct {
	buf     *bytes.Buffer // holds body until the answer is written
	body    []byte
	members []member
	fail    *failure
}

type member struct {
	key   []byte // a JSON string
	value []byte
}

// failure is why a branch failed, as clients see it (status, detail) and
// as the log sees it (err).
type failure struct {
	status   int
	detail   string
	upstream bool // status is the upstream's own
	timeout  bool
	aborted  bool // cancelled by this handler or by the caller: not a failure of the branch
	err      error
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	targets := make([]string, len(h.branches))
	for i := range h.branches {
		t, err := h.branches[i].target(r)
		if err != nil {
			problem.Write(w, r, h.log, err)
			return
		}
		targets[i] = t
	}
	header := outgoingHeader(r.Header)

	ctx, cancel := context.WithTimeoutCause(r.Context(), h.timeout, h.timeoutCause)
	defer cancel()
	ctx, abort := context.WithCancelCause(ctx)
	defer abort(nil)

	results := make([]result, len(h.branches))
	defer h.release(results)
	var decided atomic.Int64 // 1 + the index of the required branch whose failure decided the answer
	var wg sync.WaitGroup
	for i := range h.branches {
		wg.Go(func() {
			b := &h.branches[i]
			results[i] = h.call(ctx, b, targets[i], header.Clone())
			f := results[i].fail
			if f == nil || f.aborted {
				return
			}
			h.log.WarnContext(r.Context(), "aggregate branch failed",
				"branch", b.label, "method", b.method, "url", targets[i], "status", f.status, "detail", f.detail, "err", f.err)
			if b.required && !h.partial && decided.CompareAndSwap(0, int64(i)+1) {
				abort(errAborted)
			}
		})
	}
	wg.Wait()

	if err := r.Context().Err(); err != nil {
		// The caller went away (nobody reads an answer) or its own deadline
		// passed (it may still read one).
		if errors.Is(err, context.DeadlineExceeded) {
			h.writeProblem(w, r, http.StatusGatewayTimeout, "the request's deadline passed before every branch answered", nil)
		}
		return
	}
	if d := decided.Load(); d > 0 {
		i := int(d - 1)
		f := results[i].fail
		status := http.StatusBadGateway
		if f.timeout {
			status = http.StatusGatewayTimeout
		}
		h.writeProblem(w, r, status, fmt.Sprintf("branch %q failed: %s", h.branches[i].label, f.detail), func(p *branchProblem) {
			p.Branch = h.branches[i].label
			if f.upstream {
				p.UpstreamStatus = f.status
			}
		})
		return
	}
	failed, timeouts := 0, 0
	for _, res := range results {
		if res.fail != nil {
			failed++
			if res.fail.timeout {
				timeouts++
			}
		}
	}
	if failed == len(results) {
		status := http.StatusBadGateway
		if timeouts == failed {
			status = http.StatusGatewayTimeout
		}
		var errs bytes.Buffer
		h.writeErrors(&errs, results)
		h.writeProblem(w, r, status, "every branch failed", func(p *branchProblem) { p.Errors = errs.Bytes() })
		return
	}
	h.writeMerged(w, results, failed > 0)
}

// target is b's URL for r: placeholders filled and, with forwardQuery,
// r's query appended.
func (b *branch) target(r *http.Request) (string, error) {
	u, err := b.url.fill(r)
	if err != nil {
		return "", err
	}
	if b.forwardQuery && r.URL.RawQuery != "" {
		sep := "?"
		if strings.Contains(u, "?") {
			sep = "&"
		}
		u += sep + r.URL.RawQuery
	}
	return u, nil
}

// call sends b's request and reads its answer. It never returns a result
// with both a body and a failure.
func (h *handler) call(ctx context.Context, b *branch, target string, header http.Header) result {
	if b.timeout != 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, b.timeout, b.timeoutCause)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, b.method, target, nil)
	if err != nil {
		return result{fail: &failure{status: http.StatusBadGateway, detail: "the request could not be built; the gateway log has the details", err: err}}
	}
	req.Header = header
	resp, err := h.rt.RoundTrip(req)
	if err != nil {
		return result{fail: classify(ctx, err)}
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		_, _ = io.CopyN(io.Discard, resp.Body, drainLimit)
		return result{fail: &failure{status: resp.StatusCode, upstream: true, detail: fmt.Sprintf("upstream answered %d", resp.StatusCode)}}
	}
	if ce := resp.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		return result{fail: &failure{status: http.StatusBadGateway, detail: fmt.Sprintf("response has Content-Encoding %q; the gateway asked for identity", ce)}}
	}
	tooLarge := &failure{status: http.StatusBadGateway, detail: fmt.Sprintf("response is larger than the limit of %d bytes", h.maxBody)}
	if resp.ContentLength > h.maxBody {
		return result{fail: tooLarge}
	}
	buf := h.getBuffer()
	if resp.ContentLength > 0 {
		buf.Grow(int(resp.ContentLength))
	}
	// One byte past the limit tells a body at the limit from a larger one.
	if _, err := buf.ReadFrom(io.LimitReader(resp.Body, h.maxBody+1)); err != nil {
		h.putBuffer(buf)
		return result{fail: classify(ctx, err)}
	}
	if int64(buf.Len()) > h.maxBody {
		h.putBuffer(buf)
		return result{fail: tooLarge}
	}
	body := bytes.TrimSpace(buf.Bytes())
	if !json.Valid(body) {
		h.putBuffer(buf)
		return result{fail: &failure{status: http.StatusBadGateway, detail: "response is not JSON"}}
	}
	if b.key != nil {
		return result{buf: buf, body: body}
	}
	members, err := topLevel(body)
	h.putBuffer(buf) // members are copies
	if err != nil {
		return result{fail: &failure{status: http.StatusBadGateway, detail: "response is not a JSON object, which a branch without a name must answer", err: err}}
	}
	return result{members: members}
}

// classify describes an error from sending a branch request or reading
// its answer. ctx is the branch's context: its cause tells a timeout from
// an abort.
func classify(ctx context.Context, err error) *failure {
	if ctx.Err() != nil {
		var te *timeoutError
		if cause := context.Cause(ctx); errors.As(cause, &te) {
			return &failure{status: http.StatusGatewayTimeout, detail: te.msg, timeout: true, err: err}
		}
		return &failure{aborted: true, err: err}
	}
	var me *meridian.Error
	if errors.As(err, &me) && (me.Code == meridian.CodeUnavailable || me.Code == meridian.CodeRateLimited) {
		// The transport refused the call (no instances, breaker open, rate
		// limit): its message is written for clients.
		return &failure{status: problem.Status(me.Code), detail: me.Message, err: err}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		// A deadline of the transport's own, such as the upstream policy's timeout.
		return &failure{status: http.StatusGatewayTimeout, detail: "timed out", timeout: true, err: err}
	}
	return &failure{status: http.StatusBadGateway, detail: "the request failed; the gateway log has the details", err: err}
}

var errNotObject = errors.New("not a JSON object")

// topLevel splits a JSON object into its members, dropping ErrorsKey. A
// key that appears twice keeps its last value, as encoding/json does.
func topLevel(body []byte) ([]member, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, errNotObject
	}
	var members []member
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, _ := tok.(string) // an object's keys are strings
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return nil, err
		}
		if key == ErrorsKey {
			continue
		}
		k, err := json.Marshal(key)
		if err != nil {
			return nil, err
		}
		members = append(members, member{key: k, value: value})
	}
	return members, nil
}

// writeMerged answers 200 with the merged object.
func (h *handler) writeMerged(w http.ResponseWriter, results []result, withErrors bool) {
	var obj object
	for i, res := range results {
		b := &h.branches[i]
		switch {
		case res.fail != nil && b.key != nil:
			obj.set(b.key, null)
		case res.fail != nil:
			// A root branch that failed has no key to set; _errors lists it.
		case b.key != nil:
			obj.set(b.key, res.body)
		default:
			for _, m := range res.members {
				obj.set(m.key, m.value)
			}
		}
	}
	out := h.getBuffer()
	defer h.putBuffer(out)
	out.WriteByte('{')
	for i, m := range obj.members {
		if i > 0 {
			out.WriteByte(',')
		}
		out.Write(m.key)
		out.WriteByte(':')
		out.Write(m.value)
	}
	if withErrors {
		if len(obj.members) > 0 {
			out.WriteByte(',')
		}
		out.WriteString(`"` + ErrorsKey + `":`)
		h.writeErrors(out, results)
	}
	out.WriteByte('}')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(out.Len()))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out.Bytes())
}

var null = []byte("null")

// branchError is one entry of "_errors".
type branchError struct {
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

// writeErrors writes the failed branches as a JSON object keyed by their
// labels, in configuration order.
func (h *handler) writeErrors(out *bytes.Buffer, results []result) {
	out.WriteByte('{')
	n := 0
	for i, res := range results {
		if res.fail == nil {
			continue
		}
		if n++; n > 1 {
			out.WriteByte(',')
		}
		label, _ := json.Marshal(h.branches[i].label)
		entry, _ := json.Marshal(branchError{Status: res.fail.status, Detail: res.fail.detail})
		out.Write(label)
		out.WriteByte(':')
		out.Write(entry)
	}
	out.WriteByte('}')
}

// object is a JSON object under construction whose keys keep the order in
// which they were first set.
type object struct {
	members []member
	at      map[string]int
}

func (o *object) set(key, value []byte) {
	if i, ok := o.at[string(key)]; ok {
		o.members[i].value = value // the later branch wins
		return
	}
	if o.at == nil {
		o.at = map[string]int{}
	}
	o.at[string(key)] = len(o.members)
	o.members = append(o.members, member{key: key, value: value})
}

// branchProblem is the problem an answer gets when its branches failed:
// Meridian's problem members and BranchFailedType's.
type branchProblem struct {
	problem.Details
	Branch         string          `json:"branch,omitempty"`
	UpstreamStatus int             `json:"upstream_status,omitempty"`
	Errors         json.RawMessage `json:"errors,omitempty"`
}

// writeProblem answers a 502 or 504 problem. internal/problem maps codes to
// statuses and has none for these, so the body is built here, with
// problem's members and the code it gives these statuses.
func (h *handler) writeProblem(w http.ResponseWriter, r *http.Request, status int, detail string, extend func(*branchProblem)) {
	p := branchProblem{Details: problem.Details{
		Type:     BranchFailedType,
		Title:    http.StatusText(status),
		Status:   status,
		Detail:   detail,
		Instance: r.URL.Path,
		Code:     string(problem.CodeOf(status)),
	}}
	if extend != nil {
		extend(&p)
	}
	w.Header().Set("Content-Type", problem.ContentType)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(p)
}

func (h *handler) getBuffer() *bytes.Buffer {
	if b, ok := h.buffers.Get().(*bytes.Buffer); ok {
		return b
	}
	return new(bytes.Buffer)
}

func (h *handler) putBuffer(b *bytes.Buffer) {
	if b.Cap() > maxPooledBuffer {
		return
	}
	b.Reset()
	h.buffers.Put(b)
}

// release returns the buffers that held branch bodies, once the answer is
// written.
func (h *handler) release(results []result) {
	for _, res := range results {
		if res.buf != nil {
			h.putBuffer(res.buf)
		}
	}
}
