package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/nvent/nvent/internal/domain"
)

// StatusOf maps an error code to its HTTP status. This is the one place
// where domain errors meet HTTP; every endpoint answers through WriteError.
func StatusOf(code domain.Code) int {
	switch code {
	case domain.CodeInvalidInput:
		return http.StatusBadRequest
	case domain.CodeConflict:
		return http.StatusConflict
	case domain.CodeNotFound:
		return http.StatusNotFound
	case domain.CodeTooLarge:
		return http.StatusRequestEntityTooLarge
	case domain.CodeUnavailable:
		return http.StatusServiceUnavailable
	case domain.CodeUnauthorized:
		return http.StatusUnauthorized
	case domain.CodeForbidden:
		return http.StatusForbidden
	default:
		return http.StatusInternalServerError
	}
}

type errorBody struct {
	Error struct {
		Code    domain.Code `json:"code"`
		Message string      `json:"message"`
	} `json:"error"`
}

// WriteJSON writes v with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError writes err as {"error":{"code","message"}} with the status its
// code maps to. Internal and unavailable errors are logged with their cause
// and the request's correlation id; clients see only the public message
// ("internal error" for the unforeseen).
func WriteError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	code := domain.ErrorCode(err)
	status := StatusOf(code)
	if status >= 500 {
		log.ErrorContext(r.Context(), "request failed", slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.String("correlation_id", domain.CorrelationID(r.Context())), slog.String("code", string(code)), slog.Any("error", err))
	}
	WriteJSON(w, status, errBody(code, domain.PublicMessage(err)))
}

func (a *API) writeError(w http.ResponseWriter, r *http.Request, err error) {
	WriteError(w, r, a.log, err)
}

// decodeJSON reads r's body (at most the configured size) into v. Unknown
// fields are rejected when strict is set, so that a misspelt field is an
// error rather than silently ignored.
func (a *API) decodeJSON(w http.ResponseWriter, r *http.Request, v any, strict bool) error {
	body, err := a.readBody(w, r)
	if err != nil {
		return err
	}
	return decodeStrict(body, v, strict)
}

func decodeStrict(body []byte, v any, strict bool) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	if strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		return domain.Wrap(domain.CodeInvalidInput, err, "request body is not valid JSON for this endpoint: "+err.Error())
	}
	if dec.More() {
		return domain.Errorf(domain.CodeInvalidInput, "request body holds more than one JSON value")
	}
	return nil
}

// readBody reads the whole body, failing with too_large past MaxBodyBytes
// and with invalid_input when it is empty.
func (a *API) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := a.readOptionalBody(w, r)
	if err == nil && body == nil {
		err = domain.Errorf(domain.CodeInvalidInput, "request body is empty")
	}
	return body, err
}

// readOptionalBody is readBody for endpoints whose body may be left out: it
// returns nil for an empty (or all white space) body.
func (a *API) readOptionalBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	return ReadOptionalBody(w, r, a.maxBody, a.bodyTimeout)
}

// ReadOptionalBody reads r's whole body, or nil when it is empty or all
// white space. It fails with too_large past maxBytes, and with
// invalid_input when the body does not arrive within timeout (0: no
// deadline) — a client that trickles its body is cut off rather than
// holding the request open.
func ReadOptionalBody(w http.ResponseWriter, r *http.Request, maxBytes int64, timeout time.Duration) ([]byte, error) {
	rc := http.NewResponseController(w)
	deadline := timeout > 0 && rc.SetReadDeadline(time.Now().Add(timeout)) == nil
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBytes))
	if deadline && err == nil {
		// The connection lives on after the body: lift the deadline, or the
		// server's wait for the next request would trip on it. (After an
		// error it stays, so that the server gives up on the rest of the
		// body at once and closes the connection.)
		_ = rc.SetReadDeadline(time.Time{})
	}
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return nil, domain.Errorf(domain.CodeTooLarge, "request body is larger than %d bytes", maxBytes)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil, domain.Wrap(domain.CodeInvalidInput, err, fmt.Sprintf("request body did not arrive within %v", timeout))
	case err != nil:
		return nil, domain.Wrap(domain.CodeInvalidInput, err, "error reading request body")
	case len(bytes.TrimSpace(body)) == 0:
		return nil, nil
	}
	return body, nil
}
