package wechat

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"
)

// DecodeCreateRequest decodes a create body the way WeChat Pay reads it,
// which encoding/json alone does not: every key must be one of the request's
// field names exactly (encoding/json matches keys case-insensitively and,
// without DisallowUnknownFields, ignores unknown ones), no value may be JSON
// null (the interface rules forbid it; encoding/json turns it into "absent"),
// every string must be valid UTF-8 with no \u surrogate escapes
// (encoding/json silently turns invalid bytes and lone surrogates into
// U+FFFD), and every number must have the field's type. The first problem
// is a *ValidationError whose Field is the JSON pointer. The decoded request
// is not yet validated: call Validate.
func DecodeCreateRequest(data []byte) (*CombineOrderRequest, error) {
	var req CombineOrderRequest
	if err := checkJSON(data, &req, true); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, &req); err != nil {
		return nil, &ValidationError{Issue: "body is not valid JSON"}
	}
	return &req, nil
}

// CheckJSON checks that data is a JSON document of the shape of v (a
// pointer to a struct of this package) under the strict reading of
// DecodeCreateRequest, without decoding it. A problem is a
// *ValidationError naming the JSON pointer. Unlike DecodeCreateRequest it
// does not require the fields without omitempty: Validate names those.
func CheckJSON(data []byte, v any) error { return checkJSON(data, v, false) }

// checkJSON is CheckJSON; with requireAll a field without omitempty must be
// present, as it is in every body this package marshals.
func checkJSON(data []byte, v any, requireAll bool) error {
	if !json.Valid(data) {
		if !utf8.Valid(data) {
			return &ValidationError{Issue: "body is not valid UTF-8"}
		}
		return &ValidationError{Issue: "body is not valid JSON"}
	}
	c := checker{requireAll: requireAll}
	if e := c.value(json.RawMessage(bytes.TrimSpace(data)), reflect.TypeOf(v).Elem(), ""); e != nil {
		return e
	}
	return nil
}

// jsonFields answers a struct type's JSON field names and types, and the
// names of the fields without omitempty, in declaration order.
func jsonFields(t reflect.Type) (map[string]reflect.Type, []string) {
	out := make(map[string]reflect.Type, t.NumField())
	var always []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		out[name] = f.Type
		if !strings.Contains(opts, "omitempty") {
			always = append(always, name)
		}
	}
	return out, always
}

// checker walks a JSON value against a Go type.
type checker struct{ requireAll bool }

// escapePointer escapes a key as a JSON pointer token (RFC 6901).
func escapePointer(k string) string {
	return strings.ReplaceAll(strings.ReplaceAll(k, "~", "~0"), "/", "~1")
}

func (c checker) value(raw json.RawMessage, t reflect.Type, ptr string) *ValidationError {
	if string(raw) == "null" {
		return &ValidationError{Field: ptr, Issue: "must not be null: omit an optional field instead"}
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	fail := func(want string) *ValidationError {
		return &ValidationError{Field: ptr, Issue: "must be " + want}
	}
	switch t.Kind() {
	case reflect.Struct:
		if raw[0] != '{' {
			return fail("an object")
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(raw, &m); err != nil {
			return fail("an object")
		}
		fields, always := jsonFields(t)
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		// Report in a stable order: unknown keys first, then the rest.
		sortKeys(keys, fields)
		for _, k := range keys {
			p := ptr + "/" + escapePointer(k)
			ft, ok := fields[k]
			if !ok {
				return &ValidationError{Field: p, Issue: "is not a field of this request (keys are case-sensitive)"}
			}
			if e := c.value(m[k], ft, p); e != nil {
				return e
			}
		}
		for _, k := range always {
			if _, ok := m[k]; !ok && c.requireAll {
				return &ValidationError{Field: ptr + "/" + escapePointer(k), Issue: "is required"}
			}
		}
	case reflect.Slice:
		if raw[0] != '[' {
			return fail("an array")
		}
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			return fail("an array")
		}
		for i, it := range items {
			if e := c.value(it, t.Elem(), ptr+"/"+strconv.Itoa(i)); e != nil {
				return e
			}
		}
	case reflect.String:
		if raw[0] != '"' {
			return fail("a string")
		}
		if !utf8.Valid(raw) {
			return &ValidationError{Field: ptr, Issue: "is not valid UTF-8"}
		}
		if hasSurrogateEscape(raw) {
			return &ValidationError{Field: ptr, Issue: "has a character outside the Basic Multilingual Plane (4 bytes in UTF-8)"}
		}
	case reflect.Bool:
		if string(raw) != "true" && string(raw) != "false" {
			return fail("a boolean")
		}
	case reflect.Int, reflect.Int64:
		if _, err := strconv.ParseInt(string(raw), 10, 64); err != nil {
			return fail("an integer")
		}
	}
	return nil
}

// sortKeys orders keys unknown to fields first, each group by name.
func sortKeys(keys []string, fields map[string]reflect.Type) {
	rank := func(k string) int {
		if _, ok := fields[k]; ok {
			return 1
		}
		return 0
	}
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0; j-- {
			a, b := keys[j-1], keys[j]
			if rank(a) < rank(b) || (rank(a) == rank(b) && a < b) {
				break
			}
			keys[j-1], keys[j] = b, a
		}
	}
}

// hasSurrogateEscape reports whether a raw JSON string has a \uD800–\uDFFF
// escape: half of a 4-byte character, or a lone surrogate that decoders turn
// into U+FFFD.
func hasSurrogateEscape(raw []byte) bool {
	for i := 0; i+5 < len(raw); i++ {
		if raw[i] != '\\' {
			continue
		}
		if raw[i+1] != 'u' {
			i++ // skip the escaped character (it may be a backslash)
			continue
		}
		if c := raw[i+2] | 0x20; c == 'd' {
			if d := raw[i+3] | 0x20; d >= '8' && d <= '9' || d >= 'a' && d <= 'f' {
				return true
			}
		}
	}
	return false
}
