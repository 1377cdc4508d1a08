// Package client is the Go client of the control plane's HTTP API
// (docs/api.md): registry, config center, tokens and the event bus
// (publish, topic streams, dead letters, push subscriptions).
//
// Every method takes a context first and returns errors as *meridian.Error,
// so callers branch on codes with meridian.IsCode:
//
//   - a problem+json answer keeps the server's code, field, detail and, on a
//     revision conflict, the current revision;
//   - any other non-2xx answer gets a code derived from its status;
//   - a request that never got an answer is CodeUnavailable with the
//     transport error as its cause (the control plane is unreachable);
//   - a request abandoned because ctx ended returns ctx.Err() itself.
//
// A Client is safe for concurrent use.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/internal/problem"
)

// IndexHeader carries the store revision a registry or config answer
// reflects.
const IndexHeader = "X-Meridian-Index"

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 64 << 10

// Client talks to one control-plane address.
type Client struct {
	addr  string // as given to New, for messages
	base  string // scheme://host[/path], no trailing slash
	token string
	hc    *http.Client
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient makes the client send its requests through hc (for TLS
// settings, proxies or tests). Watches and blocking queries stay open for
// minutes, so hc should have no overall Timeout; bound calls with ctx
// instead. The default is a client without a timeout on
// http.DefaultTransport.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) {
		if hc != nil {
			c.hc = hc
		}
	}
}

// New returns a client of the control plane at addr: "host:port" (plain
// HTTP), "http://host:port" or "https://host:port", optionally followed by
// a path prefix when the API sits behind a proxy. token is sent as a bearer
// token; empty sends none.
func New(addr, token string, opts ...Option) (*Client, error) {
	addr = strings.TrimSuffix(strings.TrimSpace(addr), "/")
	if addr == "" {
		return nil, meridian.FieldError("addr", "is required: host:port, http://host:port or https://host:port")
	}
	raw := addr
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, meridian.FieldError("addr", "%q is not a control-plane address: use host:port, http://host:port or https://host:port", addr)
	}
	if strings.ContainsFunc(token, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return nil, meridian.FieldError("token", "contains a control character (a stray newline?)")
	}
	c := &Client{
		addr:  addr,
		base:  u.Scheme + "://" + u.Host + u.EscapedPath(),
		token: token,
		hc:    &http.Client{},
	}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// Addr is the address the client was built with, as given to New (without
// a trailing slash).
func (c *Client) Addr() string { return c.addr }

// request is one API call. path is already escaped.
type request struct {
	method string
	path   string
	query  url.Values
	body   any // JSON-encoded when non-nil
	// contentType of the body; default application/json.
	contentType string
}

// newRequest builds the HTTP request with the headers every call carries.
func (c *Client) newRequest(ctx context.Context, r request, accept string) (*http.Request, error) {
	u := c.base + r.path
	if len(r.query) > 0 {
		u += "?" + r.query.Encode()
	}
	var body io.Reader
	if r.body != nil {
		b, err := json.Marshal(r.body)
		if err != nil {
			return nil, fmt.Errorf("encoding the %s %s body: %w", r.method, r.path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u, body)
	if err != nil {
		return nil, meridian.FieldError("addr", "cannot build a request for %s: %v", c.addr, err)
	}
	if r.body != nil {
		ct := r.contentType
		if ct == "" {
			ct = "application/json"
		}
		req.Header.Set("Content-Type", ct)
	}
	req.Header.Set("Accept", accept)
	req.Header.Set("User-Agent", "meridian-client")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return req, nil
}

// send runs req and turns a missing answer into an error: ctx.Err() when
// ctx ended, else CodeUnavailable naming the address.
func (c *Client) send(ctx context.Context, req *http.Request) (*http.Response, error) {
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, ctxErr
		}
		return nil, &meridian.Error{
			Code:    meridian.CodeUnavailable,
			Message: "control plane unreachable at " + c.addr,
			Err:     err,
		}
	}
	return resp, nil
}

// do runs a JSON call: it decodes a 2xx answer into out (when out is not
// nil and the answer has a body) and returns the answer's index header.
func (c *Client) do(ctx context.Context, r request, out any) (uint64, error) {
	req, err := c.newRequest(ctx, r, "application/json")
	if err != nil {
		return 0, err
	}
	resp, err := c.send(ctx, req)
	if err != nil {
		return 0, err
	}
	defer func() {
		// Drain a little so the connection can be reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
		resp.Body.Close()
	}()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return 0, c.answerError(resp)
	}
	index, _ := strconv.ParseUint(resp.Header.Get(IndexHeader), 10, 64)
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return index, nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return 0, ctxErr
		}
		return 0, &meridian.Error{
			Code:    meridian.CodeInternal,
			Message: fmt.Sprintf("cannot decode the answer of %s %s from %s: %v", r.method, r.path, c.addr, err),
			Err:     err,
		}
	}
	return index, nil
}

// answerError turns a non-2xx answer into a *meridian.Error.
func (c *Client) answerError(resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	var p problem.Details
	if mt == problem.ContentType && json.Unmarshal(body, &p) == nil {
		e := &meridian.Error{Code: meridian.Code(p.Code), Field: p.Field, Message: p.Detail, Current: p.CurrentRevision}
		if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs > 0 {
			e.RetryAfter = time.Duration(secs) * time.Second
		}
		if !problem.Known(e.Code) {
			e.Code = problem.CodeOf(resp.StatusCode)
		}
		// The server's detail is its error's text, which already starts
		// with the field; keep it once so Error() reads "field: message".
		if e.Field != "" {
			e.Message = strings.TrimPrefix(e.Message, e.Field+": ")
		}
		if e.Message == "" {
			e.Message = p.Title
		}
		if e.Message == "" {
			e.Message = http.StatusText(resp.StatusCode)
		}
		return e
	}
	msg := fmt.Sprintf("%s answered %s", c.addr, resp.Status)
	if line, _, _ := strings.Cut(strings.TrimSpace(string(body)), "\n"); line != "" {
		if len(line) > 200 {
			line = line[:200] + "…"
		}
		msg += ": " + line
	}
	return &meridian.Error{Code: problem.CodeOf(resp.StatusCode), Message: msg}
}

// errCallback carries an error returned by a watch callback through the
// stream reader, so the watch returns it unchanged.
type errCallback struct{ err error }

func (e errCallback) Error() string { return e.err.Error() }

// asCallbackError returns the callback's own error if err is one.
func asCallbackError(err error) (error, bool) {
	var cb errCallback
	if errors.As(err, &cb) {
		return cb.err, true
	}
	return nil, false
}

func u64(n uint64) string { return strconv.FormatUint(n, 10) }
