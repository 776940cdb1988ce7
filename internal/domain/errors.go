// Package domain holds nvent's vocabulary: events, documents, key-value
// entries, the rules for their names, and the one error type that every layer
// returns and the edges (HTTP, message acknowledgement) map to a status.
package domain

import (
	"errors"
	"fmt"
)

// Code classifies an error. Codes are stable: they are part of the HTTP API
// (`{"error":{"code": …}}`) and decide whether a message is retried.
type Code string

// The error codes. Anything that is not a *Error is reported as CodeInternal.
const (
	CodeInvalidInput Code = "invalid_input"
	CodeConflict     Code = "conflict"
	CodeNotFound     Code = "not_found"
	CodeTooLarge     Code = "too_large"
	CodeUnavailable  Code = "unavailable"
	CodeUnauthorized Code = "unauthorized"
	CodeForbidden    Code = "forbidden"
	CodeInternal     Code = "internal"
)

// Error is a classified error. Compare with errors.Is against the sentinels
// below (ErrNotFound, …): two *Error values match when their codes match and
// the target carries no message of its own.
type Error struct {
	Code    Code
	Message string
	Err     error // the cause, if any; never shown to API clients
}

// Sentinels for errors.Is.
var (
	ErrInvalidInput = &Error{Code: CodeInvalidInput}
	ErrConflict     = &Error{Code: CodeConflict}
	ErrNotFound     = &Error{Code: CodeNotFound}
	ErrTooLarge     = &Error{Code: CodeTooLarge}
	ErrUnavailable  = &Error{Code: CodeUnavailable}
	ErrUnauthorized = &Error{Code: CodeUnauthorized}
	ErrForbidden    = &Error{Code: CodeForbidden}
)

func (e *Error) Error() string {
	switch {
	case e.Message == "" && e.Err == nil:
		return string(e.Code)
	case e.Err == nil:
		return e.Message
	case e.Message == "":
		return e.Err.Error()
	default:
		return e.Message + ": " + e.Err.Error()
	}
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is a sentinel (an *Error without a message) of the
// same code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Message == "" && t.Err == nil && t.Code == e.Code
}

// Errorf builds an *Error with a formatted message. A %w verb in format sets
// the cause.
func Errorf(code Code, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	return &Error{Code: code, Message: err.Error(), Err: errors.Unwrap(err)}
}

// Wrap classifies cause under code with a message. The message is what API
// clients see; the cause is only logged.
func Wrap(code Code, cause error, message string) *Error {
	return &Error{Code: code, Message: message, Err: cause}
}

// ErrorCode returns the code of the first *Error in err's chain, or
// CodeInternal.
func ErrorCode(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// PublicMessage is the text an API client may see for err: the message of
// the first *Error in its chain, or a generic text for internal errors, whose
// details stay in the logs.
func PublicMessage(err error) string {
	var e *Error
	if errors.As(err, &e) && e.Message != "" {
		return e.Message
	}
	if errors.As(err, &e) {
		return string(e.Code)
	}
	return "internal error"
}
