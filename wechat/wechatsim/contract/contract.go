// Package contract holds WeChat Pay's published request contract for the
// combine endpoints, as the simulator and the contract tests read it: the
// OpenAPI descriptions of TheNorthMemory/wechatpay-openapi (app, jsapi, h5,
// native, miniprogram, close, query), corrected where the official request
// tables say otherwise (CORRECTIONS.md records each change and its source),
// and the example requests of the seed pages.
//
// It imports nothing from package wechat: it is the reading of the docs
// that the client is checked against.
package contract

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"sigs.k8s.io/yaml"
)

// Files are the vendored OpenAPI files (<endpoint>.yaml) and seed examples
// (examples/*.json).
//
//go:embed *.yaml examples/*.json
var Files embed.FS

// Endpoints are the create endpoints, named as in their path and file.
var Endpoints = []string{"app", "jsapi", "h5", "native", "miniprogram"}

// BodySchema answers the request-body schema of <name>.yaml (an endpoint,
// or "close") as decoded JSON.
func BodySchema(name string) (map[string]any, error) {
	y, err := Files.ReadFile(name + ".yaml")
	if err != nil {
		return nil, err
	}
	j, err := yaml.YAMLToJSON(y)
	if err != nil {
		return nil, fmt.Errorf("%s.yaml: %w", name, err)
	}
	var doc map[string]any
	if err := json.Unmarshal(j, &doc); err != nil {
		return nil, fmt.Errorf("%s.yaml: %w", name, err)
	}
	for _, method := range []string{"post", "get"} {
		op, _ := doc[method].(map[string]any)
		params, _ := op["parameters"].([]any)
		for _, p := range params {
			if pm, _ := p.(map[string]any); pm["in"] == "body" {
				if s, ok := pm["schema"].(map[string]any); ok {
					return s, nil
				}
			}
		}
	}
	return nil, fmt.Errorf("%s.yaml: %w", name, errors.New("no body parameter"))
}

// AnswerSchema answers the 200 answer's schema of <name>.yaml (query, or a
// create endpoint) as decoded JSON.
func AnswerSchema(name string) (map[string]any, error) {
	y, err := Files.ReadFile(name + ".yaml")
	if err != nil {
		return nil, err
	}
	var doc map[string]any
	if err := yaml.Unmarshal(y, &doc); err != nil {
		return nil, fmt.Errorf("%s.yaml: %w", name, err)
	}
	for _, method := range []string{"post", "get"} {
		op, _ := doc[method].(map[string]any)
		resp, _ := op["responses"].(map[string]any)
		for _, code := range []string{"200", "'200'"} {
			if r, ok := resp[code].(map[string]any); ok {
				if s, ok := r["schema"].(map[string]any); ok {
					return s, nil
				}
			}
		}
	}
	return nil, fmt.Errorf("%s.yaml: %w", name, errors.New("no 200 answer"))
}

// Example is one example request and the flavour and endpoint it is for.
type Example struct {
	Name      string
	Flavour   string // merchant, partner, ecommerce or individual
	TradeType string // the endpoint
	Body      []byte
	// Field is empty for a request the contract accepts; otherwise the
	// JSON pointer of the first field it refuses (a seed example as
	// published, which breaks its own page's rules).
	Field string
}

// FlavoursOf lists the flavours an endpoint is offered in.
func FlavoursOf(endpoint string) []string {
	switch endpoint {
	case "miniprogram":
		return []string{"individual"}
	case "app":
		return []string{"merchant", "partner", "ecommerce", "individual"}
	}
	return []string{"merchant", "partner", "ecommerce"}
}

// notInFlavour names the properties a flavour does not have: sub-merchants
// exist only for partner and e-commerce, individual payees only for the
// individual flavour.
func notInFlavour(f, name string) bool {
	switch name {
	case "sub_mchid", "sub_appid", "sub_openid":
		return f == "merchant" || f == "individual"
	case "individual_auth_id", "individual_name", "order_service_type", "trade_scenario":
		return f != "individual"
	}
	return false
}

// requiredInFlavour names properties a flavour requires beyond the schema.
func requiredInFlavour(f, name string) bool {
	switch name {
	case "sub_mchid":
		return f == "partner" || f == "ecommerce"
	case "individual_auth_id":
		return f == "individual"
	}
	return false
}

// exampleOf builds a value of schema s from its example values: every
// property when full, else only the required ones.
func exampleOf(s map[string]any, f string, full bool) any {
	switch s["type"] {
	case "object":
		req, _ := s["required"].([]any)
		props, _ := s["properties"].(map[string]any)
		out := map[string]any{}
		for name, p := range props {
			if notInFlavour(f, name) {
				continue
			}
			if !full && !slices.Contains(req, any(name)) && !requiredInFlavour(f, name) {
				continue
			}
			out[name] = exampleOf(p.(map[string]any), f, full)
		}
		return out
	case "array":
		return []any{exampleOf(s["items"].(map[string]any), f, full)}
	case "boolean":
		return true
	}
	if ex, ok := s["example"]; ok {
		if s["type"] == "string" {
			return fmt.Sprint(ex)
		}
		return ex
	}
	if e, ok := s["enum"].([]any); ok {
		return e[0]
	}
	if s["type"] == "string" {
		return "x"
	}
	return 1
}

// Marshal encodes v as WeChat Pay reads it: no HTML escaping.
func Marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSpace(buf.Bytes()), nil
}

// OpenAPIExamples answers, for each endpoint and each flavour it is offered
// in, the request made of the OpenAPI file's example values with every
// property and with the required ones only. The merchant flavour needs two
// sub-orders: the example sub-order is repeated with "2" appended to its
// out_trade_no.
func OpenAPIExamples() ([]Example, error) {
	var out []Example
	for _, ep := range Endpoints {
		schema, err := BodySchema(ep)
		if err != nil {
			return nil, err
		}
		for _, f := range FlavoursOf(ep) {
			for _, full := range []bool{true, false} {
				v, _ := exampleOf(schema, f, full).(map[string]any)
				if f == "merchant" {
					subs, _ := v["sub_orders"].([]any)
					second := map[string]any{}
					for k, x := range subs[0].(map[string]any) {
						second[k] = x
					}
					second["out_trade_no"] = fmt.Sprint(second["out_trade_no"], "2")
					v["sub_orders"] = append(subs, second)
				}
				name := "openapi " + ep + ".yaml example, required fields"
				if full {
					name = "openapi " + ep + ".yaml example, every field"
				}
				b, err := Marshal(v)
				if err != nil {
					return nil, err
				}
				out = append(out, Example{Name: name, Flavour: f, TradeType: ep, Body: b})
			}
		}
	}
	return out, nil
}

// SeedExamples answers the seed pages' example requests, each as published
// and, where that breaks the page's own rules, as corrected
// (CORRECTIONS.md, "Examples").
func SeedExamples() ([]Example, error) {
	read := func(name string) (map[string]any, []byte, error) {
		b, err := Files.ReadFile("examples/" + name)
		if err != nil {
			return nil, nil, err
		}
		var m map[string]any
		return m, b, json.Unmarshal(b, &m)
	}
	var out []Example
	m000, b000, err := read("seed000_miniprogram.json")
	if err != nil {
		return nil, err
	}
	m000["scene_info"].(map[string]any)["device_id"] = "POS1:123"
	c000, _ := Marshal(m000)
	m002, b002, err := read("seed002_jsapi.json")
	if err != nil {
		return nil, err
	}
	m002["combine_appid"] = "wxd678efh567hg6787"
	delete(m002["sub_orders"].([]any)[0].(map[string]any), "profit_sharing")
	m002["scene_info"].(map[string]any)["device_id"] = "POS1:123"
	c002, _ := Marshal(m002)
	_, b003, err := read("seed003_app.json")
	if err != nil {
		return nil, err
	}
	out = append(out,
		Example{Name: "seed 000 example as published", Flavour: "individual", TradeType: "miniprogram", Body: b000, Field: "/scene_info/device_id"},
		Example{Name: "seed 000 example, corrected", Flavour: "individual", TradeType: "miniprogram", Body: c000},
		Example{Name: "seed 002 example as published", Flavour: "ecommerce", TradeType: "jsapi", Body: b002, Field: "/sub_orders/0/profit_sharing"},
		Example{Name: "seed 002 example, corrected", Flavour: "ecommerce", TradeType: "jsapi", Body: c002},
		Example{Name: "seed 003 example", Flavour: "ecommerce", TradeType: "app", Body: b003},
		Example{Name: "seed 003 example", Flavour: "partner", TradeType: "app", Body: b003},
	)
	return out, nil
}
