// Package apierr is the error shape of Kiln's native API:
// {"error":{"code","message","field"}} with an HTTP status, and the
// helpers that decode request bodies strictly (unknown fields and type
// errors become 400s naming the field).
package apierr

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Error codes.
const (
	CodeInvalid      = "invalid_request"
	CodeUnknownField = "unknown_field"
	CodeLimit        = "limit_exceeded"
	CodeRateLimited  = "rate_limited"
	CodeConcurrency  = "too_many_jobs"
	CodeUnauthorized = "unauthorized"
	CodeNotFound     = "not_found"
	// CodeForbidden is a 403: the key is valid but may not do this.
	CodeForbidden   = "forbidden"
	CodeConflict    = "conflict"
	CodeTooLarge    = "body_too_large"
	CodeUnavailable = "unavailable"
	CodeInternal    = "internal_error"
	CodeNoModel     = "model_not_found"
	// CodeMethodNotAllowed is a 405; the error lists the allowed methods.
	CodeMethodNotAllowed = "method_not_allowed"
)

// Error is an API error: status, code, message and, when one field of the
// request is at fault, its name.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
	// Allowed lists the methods a path accepts (405 responses); it is also
	// sent as the Allow header.
	Allowed []string `json:"allowed,omitempty"`
	// Details carries structured data about the error (for example a cost
	// estimate and a suggestion).
	Details any `json:"details,omitempty"`
	// RetryAfter, when positive, is sent as the Retry-After header.
	RetryAfter time.Duration `json:"-"`
}

func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%s: %s (%s)", e.Code, e.Message, e.Field)
	}
	return e.Code + ": " + e.Message
}

// Body is the JSON envelope.
type Body struct {
	Error *Error `json:"error"`
}

// New makes an error.
func New(status int, code, field, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Field: field, Message: fmt.Sprintf(format, args...)}
}

// Invalid is a 400 about one field.
func Invalid(field, format string, args ...any) *Error {
	return New(http.StatusBadRequest, CodeInvalid, field, format, args...)
}

// Limit is a 400 naming the limit a field exceeds.
func Limit(field, format string, args ...any) *Error {
	return New(http.StatusBadRequest, CodeLimit, field, format, args...)
}

// NotFound is a 404.
func NotFound(what string) *Error {
	return New(http.StatusNotFound, CodeNotFound, "", "%s not found", what)
}

// TooMany is a 429 with Retry-After.
func TooMany(code string, retry time.Duration, format string, args ...any) *Error {
	e := New(http.StatusTooManyRequests, code, "", format, args...)
	e.RetryAfter = retry
	return e
}

// SetHeaders sets the headers an error carries (Retry-After, Allow,
// WWW-Authenticate); every API shape's writer calls it.
func SetHeaders(w http.ResponseWriter, e *Error) {
	if e.RetryAfter > 0 {
		secs := int((e.RetryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
	}
	if len(e.Allowed) > 0 {
		w.Header().Set("Allow", strings.Join(e.Allowed, ", "))
	}
	if e.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="kiln"`)
	}
}

// Write sends the error as JSON.
func Write(w http.ResponseWriter, e *Error) {
	SetHeaders(w, e)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.Status)
	_ = json.NewEncoder(w).Encode(Body{Error: e})
}

// DecodeStrict decodes one JSON object from r into v, rejecting bodies
// over limit bytes, text that is not UTF-8 (which the JSON decoder would
// silently replace), unknown fields, wrong types and trailing data.
func DecodeStrict(r io.Reader, limit int64, v any) *Error {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if int64(len(data)) > limit {
		return New(http.StatusRequestEntityTooLarge, CodeTooLarge, "", "request body exceeds %d bytes", limit)
	}
	if err != nil {
		return Invalid("", "reading the request body: %v", err)
	}
	if !utf8.Valid(data) {
		return Invalid("", "request body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	var extra json.RawMessage
	if dec.More() || dec.Decode(&extra) != io.EOF {
		return Invalid("", "request body holds more than one JSON value")
	}
	return nil
}

func decodeError(err error) *Error {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			return Invalid("", "request body must be a JSON object")
		}
		return Invalid(field, "%s must be %s, not a JSON %s", field, describe(typeErr.Type.String()), typeErr.Value)
	case errors.As(err, &syntaxErr):
		return Invalid("", "malformed JSON at byte %d: %v", syntaxErr.Offset, syntaxErr)
	case errors.Is(err, io.EOF):
		return Invalid("", "request body is empty; send a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return Invalid("", "request body ends in the middle of a JSON value")
	}
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		name = strings.Trim(name, `"`)
		return &Error{Status: http.StatusBadRequest, Code: CodeUnknownField, Field: name,
			Message: fmt.Sprintf("unknown field %q", name)}
	}
	return Invalid("", "invalid request body: %v", err)
}

func describe(goType string) string {
	switch strings.TrimPrefix(goType, "*") {
	case "string":
		return "a string"
	case "int", "int64", "uint64", "int32":
		return "an integer"
	case "float64", "float32":
		return "a number"
	case "bool":
		return "true or false"
	}
	if strings.HasPrefix(goType, "[]") {
		return "an array"
	}
	return "an object"
}
