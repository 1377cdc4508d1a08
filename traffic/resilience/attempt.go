package resilience

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"sync/atomic"
)

// ErrRejected is wrapped by every error a resilience layer returns when it
// refuses a request locally (breaker open, throttled, bulkhead full or queue
// timeout). Such a request never reached the upstream. The retry layer does
// not retry these: the layer that refused would refuse again.
//
//	if errors.Is(err, resilience.ErrRejected) { ... }
var ErrRejected = errors.New("rejected locally by a resilience policy")

// Attempt is the state of one try of a request, shared by the layers of one
// client chain through the request's context. The retry layer creates it
// (NewAttempt), numbers the tries and fills in what the last one failed
// with; the balancer stage, which picks the endpoint for a try, records it
// in Endpoint and passes Failed as its avoid argument, so that a retry goes
// to another instance whenever one exists.
//
// The layers of one try run on the goroutine that called RoundTrip, one
// after the other, so the fields need no lock; only the body-close hook
// (HandOff) may run on another goroutine.
type Attempt struct {
	// N numbers the tries from 1.
	N int
	// Endpoint is the id of the endpoint this try was sent to. The balancer
	// stage sets it; the retry layer clears it before each try.
	Endpoint string
	// Failed lists the endpoints that earlier tries of this request failed
	// on, oldest first (the balancer's avoid argument).
	Failed []string
	// Err and Status are the last failure: a transport error, or the
	// retryable status the upstream answered (0 when Err is set).
	Err    error
	Status int

	deferred [3]func()
	more     []func()
	n        int

	body   attemptBody
	handed bool

	url      *url.URL // the current try's own URL (TryURL), nil before the first
	firstURL url.URL  // the first try's, held here so that it costs no allocation
}

// attemptCtx carries an Attempt; it is a single allocation holding both
// the context node and the Attempt, which keeps the retry layer to two
// allocations per request (this and the request clone).
type attemptCtx struct {
	context.Context
	a Attempt
}

type attemptKey struct{}

func (c *attemptCtx) Value(key any) any {
	if key == (attemptKey{}) {
		return &c.a
	}
	return c.Context.Value(key)
}

// NewAttempt returns a context derived from parent that carries a new
// Attempt, and the Attempt. The retry layer calls it once per request and
// reuses the Attempt for every try.
func NewAttempt(parent context.Context) (context.Context, *Attempt) {
	c := &attemptCtx{Context: parent}
	return c, &c.a
}

// AttemptFrom returns the Attempt carried by ctx, or nil when the request
// did not pass through a retry layer.
func AttemptFrom(ctx context.Context) *Attempt {
	a, _ := ctx.Value(attemptKey{}).(*Attempt)
	return a
}

// TryURL returns a copy of u that belongs to the current try alone, for
// the retry layer to put in the request it makes for each try. Layers
// below the retry layer may change that copy in place (the balancer stage
// points its host at the endpoint it picked) where they would otherwise
// have to copy the request and its URL; OwnsURL tells them whether a
// request's URL is that copy. The first try's copy is held in the Attempt
// and costs no allocation; each later try gets a fresh one, since the
// transport may still be reading the previous try's request.
func (a *Attempt) TryURL(u *url.URL) *url.URL {
	if a.url == nil {
		a.firstURL = *u
		a.url = &a.firstURL
	} else {
		c := *u
		a.url = &c
	}
	return a.url
}

// OwnsURL reports whether u is the current try's own URL (see TryURL), so
// that a layer may change it in place.
func (a *Attempt) OwnsURL(u *url.URL) bool { return u != nil && u == a.url }

// Defer registers f to run once this try is over: when the caller closes
// the body of the response that HandOff passed on, or when the retry layer
// discards the try (Release). A layer that holds something for the whole
// response, such as a bulkhead slot or a per-try timeout, registers its
// release here instead of wrapping the body itself, which saves an
// allocation per request. A layer must call Defer only when it returns a
// response; when it returns an error it releases at once.
func (a *Attempt) Defer(f func()) {
	if a.n < len(a.deferred) {
		a.deferred[a.n] = f
		a.n++
		return
	}
	a.more = append(a.more, f)
}

// Release runs the deferred functions now, in reverse order of Defer, and
// forgets them. The retry layer calls it for a try it discards or that
// ended in an error.
func (a *Attempt) Release() {
	for i := len(a.more) - 1; i >= 0; i-- {
		a.more[i]()
	}
	a.more = a.more[:0]
	for i := a.n - 1; i >= 0; i-- {
		a.deferred[i]()
		a.deferred[i] = nil
	}
	a.n = 0
}

// HandOff passes resp on to the caller: if functions were deferred, resp's
// body is replaced by one that runs them when it is closed (or reaches EOF
// and is then closed; an HTTP client must close every body). It is called
// at most once per Attempt, for the response the retry layer returns.
func (a *Attempt) HandOff(resp *http.Response) {
	if a.n == 0 && len(a.more) == 0 {
		return
	}
	// A 101 answer's body is the upgraded connection (an
	// io.ReadWriteCloser that net/http hands to the caller as is); wrapping
	// it would break the upgrade, so the try counts as over here.
	if a.handed || resp == nil || resp.Body == nil || resp.StatusCode == http.StatusSwitchingProtocols {
		a.Release()
		return
	}
	a.handed = true
	a.body.rc = resp.Body
	a.body.a = a
	resp.Body = &a.body
}

// attemptBody runs the Attempt's deferred functions on Close. It does not
// implement io.WriterTo or the like on purpose: Read and Close are all
// callers use on a client response body.
type attemptBody struct {
	rc     io.ReadCloser
	a      *Attempt
	closed atomic.Bool
}

func (b *attemptBody) Read(p []byte) (int, error) { return b.rc.Read(p) }

func (b *attemptBody) Close() error {
	err := b.rc.Close()
	if b.closed.CompareAndSwap(false, true) {
		b.a.Release()
	}
	return err
}
