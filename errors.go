package meridian

import (
	"errors"
	"fmt"
	"time"
)

// Code classifies an Error. The HTTP edge maps each code to one status.
type Code string

const (
	CodeInvalid      Code = "invalid"      // 400: the request is malformed or a field is out of range
	CodeUnauthorized Code = "unauthorized" // 401: no token, or not a valid one
	CodeForbidden    Code = "forbidden"    // 403: the token's role does not allow this
	CodeNotFound     Code = "not_found"    // 404
	CodeConflict     Code = "conflict"     // 409: compare-and-set lost, or already exists
	CodeTooLarge     Code = "too_large"    // 413
	CodeRateLimited  Code = "rate_limited" // 429: a rate limit refused the request; retry after RetryAfter
	CodeUnavailable  Code = "unavailable"  // 503: the store or a dependency is down; retry
	CodeInternal     Code = "internal"     // 500: a bug; details are logged, not returned
)

// Error is the domain error. Field names the offending input (a JSON field
// path such as "check.interval", a query parameter or a config key) where
// there is one.
type Error struct {
	Code    Code
	Field   string
	Message string
	// Current is the current revision on a conflict, so a caller can retry.
	Current uint64
	// RetryAfter tells a refused caller when to try again (unavailable and
	// rate_limited); zero lets the edge pick its default.
	RetryAfter time.Duration
	Err        error // the cause, for logs; never shown to API users
}

func (e *Error) Error() string {
	msg := e.Message
	if e.Field != "" {
		msg = e.Field + ": " + msg
	}
	if e.Err != nil && e.Code != CodeInternal {
		return msg + ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf builds an Error with a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// FieldError is an invalid-input Error naming the field.
func FieldError(field, format string, args ...any) *Error {
	return &Error{Code: CodeInvalid, Field: field, Message: fmt.Sprintf(format, args...)}
}

// Problems returns the problems in a validation error: its *Errors, joined
// (errors.Join) or not, in order; any other error becomes one with its
// text as the message and CodeInvalid. Validators report every problem at
// once; the API, the CLI and the gateway list them one by one.
func Problems(err error) []*Error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []*Error
		for _, e := range j.Unwrap() {
			out = append(out, Problems(e)...)
		}
		return out
	}
	var me *Error
	if errors.As(err, &me) {
		return []*Error{me}
	}
	return []*Error{{Code: CodeInvalid, Message: err.Error()}}
}

// ErrorCode returns the code of err, CodeInternal for anything that is not
// an *Error so that internals never leak to users.
func ErrorCode(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// IsCode reports whether err is an *Error with the code.
func IsCode(err error, code Code) bool { return err != nil && ErrorCode(err) == code }
