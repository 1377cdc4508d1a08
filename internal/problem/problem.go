// Package problem writes errors as RFC 9457 application/problem+json. It is
// the one place where domain error codes become HTTP statuses.
package problem

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/meridian-platform/meridian"
)

// Details is the problem+json body. Code, Field and CurrentRevision are
// extension members.
type Details struct {
	Type            string `json:"type"`
	Title           string `json:"title"`
	Status          int    `json:"status"`
	Detail          string `json:"detail,omitempty"`
	Instance        string `json:"instance,omitempty"`
	Code            string `json:"code"`
	Field           string `json:"field,omitempty"`
	CurrentRevision uint64 `json:"current_revision,omitempty"`
}

// ContentType of a problem.
const ContentType = "application/problem+json"

// TypeBase prefixes the problem type URI; the code follows.
const TypeBase = "https://meridian.dev/problems/"

var statusOf = map[meridian.Code]int{
	meridian.CodeInvalid:      http.StatusBadRequest,
	meridian.CodeUnauthorized: http.StatusUnauthorized,
	meridian.CodeForbidden:    http.StatusForbidden,
	meridian.CodeNotFound:     http.StatusNotFound,
	meridian.CodeConflict:     http.StatusConflict,
	meridian.CodeTooLarge:     http.StatusRequestEntityTooLarge,
	meridian.CodeRateLimited:  http.StatusTooManyRequests,
	meridian.CodeUnavailable:  http.StatusServiceUnavailable,
	meridian.CodeInternal:     http.StatusInternalServerError,
}

// Status is the HTTP status for a code.
func Status(c meridian.Code) int {
	if s, ok := statusOf[c]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// CodeOf is the code for an HTTP status, for clients reading answers that
// carry no code (a proxy's error page, say). Statuses that mean "try again
// later" from a proxy (502, 504) are unavailable.
func CodeOf(status int) meridian.Code {
	switch status {
	case http.StatusPreconditionFailed:
		return meridian.CodeConflict
	case http.StatusBadGateway, http.StatusGatewayTimeout:
		return meridian.CodeUnavailable
	}
	for c, s := range statusOf {
		if s == status {
			return c
		}
	}
	return meridian.CodeInternal
}

// Known reports whether c is a code this version knows; a client treats
// others by their status instead.
func Known(c meridian.Code) bool {
	_, ok := statusOf[c]
	return ok
}

// Write answers err as a problem. Anything that is not a *meridian.Error is
// internal: it is logged and the client sees only that something failed.
func Write(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	var me *meridian.Error
	if !errors.As(err, &me) {
		me = &meridian.Error{Code: meridian.CodeInternal, Err: err}
	}
	write(w, r, log, Status(me.Code), me)
}

// WriteStatus answers err as a problem with a status its code does not
// say: a proxy's 502 and 504, which are unavailable to a client but tell
// an operator whether the upstream failed or was slow.
func WriteStatus(w http.ResponseWriter, r *http.Request, status int, err *meridian.Error) {
	write(w, r, nil, status, err)
}

func write(w http.ResponseWriter, r *http.Request, log *slog.Logger, status int, me *meridian.Error) {
	d := Details{
		Type:            TypeBase + string(me.Code),
		Title:           http.StatusText(status),
		Status:          status,
		Code:            string(me.Code),
		Field:           me.Field,
		CurrentRevision: me.Current,
		Instance:        r.URL.Path,
	}
	switch me.Code {
	case meridian.CodeInternal:
		d.Detail = "internal error; the server log has the details"
		if log != nil {
			log.ErrorContext(r.Context(), "internal error", "method", r.Method, "path", r.URL.Path, "err", me.Err)
		}
	default:
		d.Detail = me.Error()
	}
	if me.Code == meridian.CodeUnavailable || me.Code == meridian.CodeRateLimited {
		// Whole seconds, rounded up: a client that waits less is refused again.
		secs := max(1, int64((me.RetryAfter+time.Second-1)/time.Second))
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	}
	w.Header().Set("Content-Type", ContentType)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(d.Status)
	_ = json.NewEncoder(w).Encode(d)
}
