package wechatsim_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/wxcombine/orderworker/wechat"
	"github.com/wxcombine/orderworker/wechat/wechatsim"
)

func TestServer_Authentication(t *testing.T) {
	e := newEnv(t, wechatsim.Config{})
	m := e.merchant
	no := newNo("A")
	body := mustJSON(t, merchantOrder(no, ""))
	target := wechat.TradeTypeJSAPI.Path()
	now := time.Now().Unix()

	// header builds an Authorization header from pairs in the given order.
	header := func(pairs ...string) string { return wechat.AuthScheme + " " + strings.Join(pairs, ",") }
	sign := func(ts int64, nonce string, b []byte) string {
		sig, err := wechat.Sign(m.PrivateKey, wechat.RequestMessage("POST", target, ts, nonce, b))
		if err != nil {
			t.Fatal(err)
		}
		return sig
	}
	nonce := wechat.NewNonce()
	good := sign(now, nonce, body)
	pair := func(k, v string) string { return fmt.Sprintf(`%s="%s"`, k, v) }
	ts := fmt.Sprint(now)

	tests := []struct {
		name       string
		auth       string
		body       []byte
		wantStatus int
		wantField  string
	}{
		{"PHP pair order", header(pair("mchid", mchA), pair("serial_no", m.Serial), pair("timestamp", ts), pair("nonce_str", nonce), pair("signature", good)), body, 200, ""},
		{"reversed pair order", header(pair("signature", good), pair("nonce_str", nonce), pair("timestamp", ts), pair("serial_no", m.Serial), pair("mchid", mchA)), body, 200, ""},
		{"missing nonce_str", header(pair("mchid", mchA), pair("serial_no", m.Serial), pair("timestamp", ts), pair("signature", good)), body, 401, "authorization"},
		{"no header", "", body, 401, "authorization"},
		{"wrong scheme", "WECHATPAY2-SM2-WITH-SM3 " + pair("mchid", mchA), body, 401, "authorization"},
		{"unknown mchid", header(pair("mchid", "1234567890"), pair("serial_no", m.Serial), pair("timestamp", ts), pair("nonce_str", nonce), pair("signature", good)), body, 401, "mchid"},
		{"unknown serial", header(pair("mchid", mchA), pair("serial_no", "ABCDEF"), pair("timestamp", ts), pair("nonce_str", nonce), pair("signature", good)), body, 401, "serial_no"},
		{"stale timestamp", header(pair("mchid", mchA), pair("serial_no", m.Serial), pair("timestamp", fmt.Sprint(now-600)), pair("nonce_str", nonce), pair("signature", sign(now-600, nonce, body))), body, 401, "timestamp"},
		{"tampered body", header(pair("mchid", mchA), pair("serial_no", m.Serial), pair("timestamp", ts), pair("nonce_str", nonce), pair("signature", good)), append([]byte(" "), body...), 401, "signature"},
		{"other merchant's key", header(pair("mchid", mchB), pair("serial_no", e.fix.sim[1].Serial), pair("timestamp", ts), pair("nonce_str", nonce), pair("signature", good)), body, 401, "signature"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest("POST", e.url+target, strings.NewReader(string(tt.body)))
			if err != nil {
				t.Fatal(err)
			}
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			req.Header.Set("Accept", "application/json")
			resp := do(t, req)
			if resp.status != tt.wantStatus {
				t.Fatalf("status = %d (%s), want %d", resp.status, resp.body, tt.wantStatus)
			}
			if resp.header.Get(wechat.HeaderRequestID) == "" {
				t.Error("answer has no Request-ID")
			}
			if tt.wantStatus == 200 {
				if err := e.merchant.Platform.Verify(resp.header, resp.body); err != nil {
					t.Errorf("200 answer does not verify: %v", err)
				}
				return
			}
			var got struct {
				Code   string `json:"code"`
				Detail struct {
					Field    string `json:"field"`
					Location string `json:"location"`
					Detail   struct {
						Issue string `json:"issue"`
					} `json:"detail"`
					SignInformation *struct {
						Method string `json:"method"`
						URL    string `json:"url"`
						Length int    `json:"sign_message_length"`
					} `json:"sign_information"`
				} `json:"detail"`
			}
			if err := json.Unmarshal(resp.body, &got); err != nil {
				t.Fatalf("401 body %s: %v", resp.body, err)
			}
			if got.Code != "SIGN_ERROR" || got.Detail.Field != tt.wantField || got.Detail.Location != "authorization" || got.Detail.Detail.Issue == "" {
				t.Errorf("401 body = %s, want SIGN_ERROR with field %q, location authorization and an issue", resp.body, tt.wantField)
			}
			if tt.wantField == "signature" && (got.Detail.SignInformation == nil || got.Detail.SignInformation.URL != target) {
				t.Errorf("signature mismatch body = %s, want sign_information for %s", resp.body, target)
			}
		})
	}
}

// TestServer_PathEscaping checks that the signature covers the raw request
// target and that the path segment is decoded exactly once.
func TestServer_PathEscaping(t *testing.T) {
	e := newEnv(t, wechatsim.Config{})
	no := "P" + newNo("") + "|08*06"
	if _, err := e.client.CreateCombineOrder(t.Context(), wechat.TradeTypeJSAPI, merchantOrder(no, "")); err != nil {
		t.Fatalf("CreateCombineOrder(%q) = %v", no, err)
	}
	tests := []struct {
		name   string
		target string
		want   int
	}{
		{"escaped once", wechat.QueryByOutTradeNoPath(no), 200},
		{"escaped once, upper-case hex", strings.NewReplacer("|", "%7C", "*", "%2A").Replace("/v3/combine-transactions/out-trade-no/" + no), 200},
		{"escaped twice (the official sample's bug)", strings.NewReplacer("|", "%257C", "*", "%252A").Replace("/v3/combine-transactions/out-trade-no/" + no), 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := do(t, signedRequest(t, e.merchant, e.url, "GET", tt.target, nil, time.Now().Unix()))
			if resp.status != tt.want {
				t.Errorf("GET %s = %d %s, want %d", tt.target, resp.status, resp.body, tt.want)
			}
		})
	}
}

func TestServer_ParamError(t *testing.T) {
	e := newEnv(t, wechatsim.Config{})
	tests := []struct {
		name      string
		mutate    func(*wechat.CombineOrderRequest)
		raw       string
		wantField string
	}{
		{"one sub-order in the merchant flavour", func(r *wechat.CombineOrderRequest) { r.SubOrders = r.SubOrders[:1] }, "", "/sub_orders"},
		{"missing description", func(r *wechat.CombineOrderRequest) { r.SubOrders[1].Description = "" }, "", "/sub_orders/1/description"},
		{"combine_mchid of another merchant", func(r *wechat.CombineOrderRequest) { r.CombineMchID = mchB }, "", "/combine_mchid"},
		{"amount of the wrong type", nil, `{"combine_out_trade_no":"X1234567","sub_orders":[{"amount":{"total_amount":"1"}}]}`, "/sub_orders/0/amount/total_amount"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := []byte(tt.raw)
			if tt.mutate != nil {
				req := merchantOrder(newNo("P"), "")
				tt.mutate(req)
				body = mustJSON(t, req)
			}
			resp := do(t, signedRequest(t, e.merchant, e.url, "POST", wechat.TradeTypeJSAPI.Path(), body, time.Now().Unix()))
			var got struct {
				Code   string `json:"code"`
				Detail struct {
					Field    string `json:"field"`
					Location string `json:"location"`
				} `json:"detail"`
			}
			_ = json.Unmarshal(resp.body, &got)
			if resp.status != 400 || got.Code != "PARAM_ERROR" || got.Detail.Field != tt.wantField || got.Detail.Location != "body" {
				t.Errorf("answer = %d %s, want 400 PARAM_ERROR with field %s", resp.status, resp.body, tt.wantField)
			}
			if err := e.merchant.Platform.Verify(resp.header, resp.body); err != nil {
				t.Errorf("error answer is not signed: %v", err)
			}
		})
	}
}

// FuzzAuthorizationHeader sends arbitrary Authorization headers through the
// handler: it must never panic and never accept a request whose header is
// not a valid signature.
func FuzzAuthorizationHeader(f *testing.F) {
	fx, err := keys()
	if err != nil {
		f.Fatal(err)
	}
	s, err := wechatsim.New(wechatsim.Config{Platform: fx.platform, Merchants: fx.sim})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(s.Close)
	h := s.Handler()
	m := fx.client[0]
	target := wechat.QueryByOutTradeNoPath("F123456")
	a, err := wechat.SignRequest(m.PrivateKey, m.MchID, m.Serial, "GET", target, time.Now().Unix(), wechat.NewNonce(), nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(a.String())
	f.Add(wechat.AuthScheme + ` mchid="1",nonce_str="",timestamp="x",serial_no="",signature=""`)
	f.Add(wechat.AuthScheme + ` mchid="` + mchA + `",mchid="` + mchA + `"`)
	f.Add("")
	valid := a.String()
	f.Fuzz(func(t *testing.T, auth string) {
		req := httptest.NewRequest("GET", target, nil)
		req.Header.Set("Authorization", auth)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch {
		case rec.Code == 401:
		case auth == valid && rec.Code == 404:
		default:
			parsed, perr := wechat.ParseAuthorization(auth)
			if perr != nil || parsed.Signature != a.Signature {
				t.Errorf("Authorization %q answered %d, want 401", auth, rec.Code)
			}
		}
	})
}
