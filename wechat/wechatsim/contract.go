package wechatsim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/wxcombine/orderworker/wechat/wechatsim/contract"
)

// englishPrinter formats schema violations.
var englishPrinter = message.NewPrinter(language.English)

// Contract operations: the create endpoints by trade type, and close.
const (
	contractClose = "close"
)

// contractSchemas holds the compiled request-body schema of every endpoint, keyed
// by trade type ("app", …) or "close".
type contractSchemas struct {
	schemas map[string]*jsonschema.Schema
}

var loadContract = sync.OnceValues(func() (*contractSchemas, error) {
	c := &contractSchemas{schemas: map[string]*jsonschema.Schema{}}
	for _, name := range []string{"app", "jsapi", "h5", "native", "miniprogram", contractClose} {
		s, err := compileBody(name)
		if err != nil {
			return nil, fmt.Errorf("wechatsim: contract %s.yaml: %w", name, err)
		}
		c.schemas[name] = s
	}
	return c, nil
})

// compileBody compiles the body parameter's schema of contract/<name>.yaml,
// made strict: every object schema without additionalProperties gets
// additionalProperties: false, because WeChat Pay refuses keys an endpoint
// does not define (keys are case-sensitive).
func compileBody(name string) (*jsonschema.Schema, error) {
	body, err := contract.BodySchema(name)
	if err != nil {
		return nil, err
	}
	strict(body)
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	url := "mem:///" + name + ".json"
	if err := c.AddResource(url, body); err != nil {
		return nil, err
	}
	return c.Compile(url)
}

// strict closes every object schema under s.
func strict(s map[string]any) {
	if s["type"] == "object" {
		if _, ok := s["additionalProperties"]; !ok {
			s["additionalProperties"] = false
		}
		if props, ok := s["properties"].(map[string]any); ok {
			for _, p := range props {
				if pm, ok := p.(map[string]any); ok {
					strict(pm)
				}
			}
		}
	}
	if items, ok := s["items"].(map[string]any); ok {
		strict(items)
	}
}

// violation is one way a body breaks the contract: a JSON pointer and the
// rule broken.
type violation struct {
	field string
	issue string
}

// checkSchema validates body against the schema of op and answers the first
// violation, or nil. Of several violations it prefers, in order, an unknown
// key, a wrong type, any other keyword, and a missing key, each group by
// pointer: a case-variant key then names itself rather than the key it
// misspells.
func (c *contractSchemas) checkSchema(op string, body []byte) *violation {
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return &violation{issue: "body is not valid JSON"}
	}
	err = c.schemas[op].Validate(inst)
	if err == nil {
		return nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return &violation{issue: err.Error()}
	}
	var found []rankedViolation
	collect(ve, &found)
	if len(found) == 0 {
		return &violation{issue: ve.Error()}
	}
	slices.SortStableFunc(found, func(a, b rankedViolation) int {
		if a.rank != b.rank {
			return a.rank - b.rank
		}
		return strings.Compare(a.field, b.field)
	})
	return &found[0].violation
}

type rankedViolation struct {
	violation
	rank int
}

func pointer(loc []string, extra ...string) string {
	var b strings.Builder
	for _, t := range append(slices.Clone(loc), extra...) {
		b.WriteByte('/')
		b.WriteString(strings.ReplaceAll(strings.ReplaceAll(t, "~", "~0"), "/", "~1"))
	}
	return b.String()
}

// collect gathers the leaf errors of ve.
func collect(ve *jsonschema.ValidationError, out *[]rankedViolation) {
	if len(ve.Causes) > 0 {
		for _, c := range ve.Causes {
			collect(c, out)
		}
		return
	}
	add := func(rank int, field, issue string) {
		*out = append(*out, rankedViolation{violation{field, issue}, rank})
	}
	switch k := ve.ErrorKind.(type) {
	case *kind.AdditionalProperties:
		for _, p := range k.Properties {
			add(0, pointer(ve.InstanceLocation, p), "is not a field of this endpoint (keys are case-sensitive)")
		}
	case *kind.Type:
		issue := "must be " + strings.Join(k.Want, " or ") + ", not " + k.Got
		if k.Got == "null" {
			issue = "must not be null"
		}
		add(1, pointer(ve.InstanceLocation), issue)
	case *kind.Required:
		for _, m := range k.Missing {
			add(3, pointer(ve.InstanceLocation, m), "is required")
		}
	default:
		add(2, pointer(ve.InstanceLocation), strings.TrimSpace(ve.ErrorKind.LocalizedString(englishPrinter)))
	}
}

// checkText walks a raw JSON body and answers the first string that WeChat
// Pay's character set refuses: invalid UTF-8, or a \u surrogate escape (a
// 4-byte character or a lone surrogate). The schema cannot see either: a
// JSON decoder replaces both with U+FFFD or decodes them silently.
func checkText(raw json.RawMessage, ptr string) *violation {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return nil
	}
	switch raw[0] {
	case '{':
		var m map[string]json.RawMessage
		if json.Unmarshal(raw, &m) != nil {
			return nil // the schema reports it
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			if v := checkText(m[k], pointer(nil, append(splitPointer(ptr), k)...)); v != nil {
				return v
			}
		}
	case '[':
		var a []json.RawMessage
		if json.Unmarshal(raw, &a) != nil {
			return nil
		}
		for i, it := range a {
			if v := checkText(it, ptr+"/"+strconv.Itoa(i)); v != nil {
				return v
			}
		}
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil
		}
		if !isUTF8(raw) {
			return &violation{ptr, "is not valid UTF-8"}
		}
		if surrogateEscape(raw) || has4Byte(s) {
			return &violation{ptr, "has a 4-byte UTF-8 character; only 1- to 3-byte characters are supported"}
		}
	}
	return nil
}

func splitPointer(p string) []string {
	if p == "" {
		return nil
	}
	parts := strings.Split(p[1:], "/")
	for i, t := range parts {
		parts[i] = strings.ReplaceAll(strings.ReplaceAll(t, "~1", "/"), "~0", "~")
	}
	return parts
}
