// Package jsonbody decodes request bodies strictly: one JSON value, no
// unknown fields, a size limit, and errors that name the offending field.
package jsonbody

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"

	"github.com/meridian-platform/meridian"
)

// DefaultLimit is the largest body accepted when the caller gives none.
const DefaultLimit = 1 << 20

// Decode reads r's body into v. Errors are *meridian.Error: CodeTooLarge
// past limit bytes, CodeInvalid naming the field otherwise.
func Decode(w http.ResponseWriter, r *http.Request, v any, limit int64) error {
	body, err := Read(w, r, limit)
	if err != nil {
		return err
	}
	return Unmarshal(body, v)
}

// Read reads r's body whatever its format, with Decode's size limit and
// errors.
func Read(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if limit <= 0 {
		limit = DefaultLimit
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, &meridian.Error{Code: meridian.CodeTooLarge, Field: "body", Message: fmt.Sprintf("is larger than the limit of %d bytes", limit)}
		}
		return nil, &meridian.Error{Code: meridian.CodeInvalid, Field: "body", Message: "could not be read", Err: err}
	}
	return body, nil
}

// Unmarshal decodes data into v with the same rules as Decode.
func Unmarshal(data []byte, v any) error {
	if len(bytes.TrimSpace(data)) == 0 {
		return meridian.FieldError("body", "is empty; a JSON object is required")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return describe(data, err)
	}
	if dec.More() {
		return meridian.FieldError("body", "has data after the JSON value")
	}
	return nil
}

func describe(data []byte, err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		line, col := position(data, syn.Offset)
		return meridian.FieldError("body", "malformed JSON at line %d, column %d: %s", line, col, syn.Error())
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			field = "body"
		}
		if typ.Type == reflect.TypeFor[meridian.Duration]() {
			return meridian.FieldError(field, "must be a duration like \"10s\" or \"1m30s\", got %s", typ.Value)
		}
		return meridian.FieldError(field, "must be %s, got JSON %s", jsonKind(typ.Type.Kind().String()), typ.Value)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return meridian.FieldError("body", "malformed JSON: unexpected end of input")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return meridian.FieldError(name, "is not a known field")
	}
	// Errors from a field's own UnmarshalJSON (durations and the like).
	return meridian.FieldError("body", "%s", strings.TrimPrefix(err.Error(), "json: "))
}

func jsonKind(goKind string) string {
	switch goKind {
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64", "float32", "float64":
		return "a number"
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "slice", "array":
		return "an array"
	case "map", "struct":
		return "an object"
	}
	return goKind
}

func position(data []byte, off int64) (line, col int) {
	line, col = 1, 1
	for i := int64(0); i < off && i < int64(len(data)); i++ {
		if data[i] == '\n' {
			line++
			col = 1
		} else {
			col++
		}
	}
	return line, col
}
