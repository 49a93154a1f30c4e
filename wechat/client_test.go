package wechat

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestClient_CreateCombineOrder(t *testing.T) {
	tests := []struct {
		flavour   Flavour
		tradeType TradeType
		get       func(*PrepayResult) string
		want      string
	}{
		{FlavourMerchant, TradeTypeApp, func(r *PrepayResult) string { return r.PrepayID }, "wx201410272009395522657a690389285100"},
		{FlavourPartner, TradeTypeJSAPI, func(r *PrepayResult) string { return r.PrepayID }, "wx201410272009395522657a690389285100"},
		{FlavourEcommerce, TradeTypeH5, func(r *PrepayResult) string { return r.H5URL }, "https://wx.tenpay.com/cgi-bin/mmpayweb-bin/checkmweb?prepay_id=wx1&package=1"},
		{FlavourMerchant, TradeTypeNative, func(r *PrepayResult) string { return r.CodeURL }, "weixin://wxpay/bizpayurl?pr=JyC91EIz1"},
		{FlavourIndividual, TradeTypeMiniProgram, func(r *PrepayResult) string { return r.PrepayID }, "wx201410272009395522657a690389285100"},
		{FlavourIndividual, TradeTypeApp, func(r *PrepayResult) string { return r.PrepayID }, "wx201410272009395522657a690389285100"},
	}
	for _, tt := range tests {
		t.Run(string(tt.flavour)+"/"+string(tt.tradeType), func(t *testing.T) {
			f := newFakeWeChat(t)
			c := newTestClient(t, f, func(cfg *Config) { cfg.Flavour = tt.flavour; cfg.UserAgent = "test-agent/1" })
			req := validRequest(tt.flavour, tt.tradeType)
			res, err := c.CreateCombineOrder(t.Context(), tt.tradeType, req)
			if err != nil {
				t.Fatalf("CreateCombineOrder() = %v", err)
			}
			if got := tt.get(res); got != tt.want {
				t.Errorf("result = %q, want %q", got, tt.want)
			}
			r := f.last()
			if r.Method != http.MethodPost || r.RequestURI != "/v3/combine-transactions/"+string(tt.tradeType) {
				t.Errorf("request = %s %s, want POST %s", r.Method, r.RequestURI, tt.tradeType.Path())
			}
			wantBody, _ := MarshalBody(req)
			if !bytes.Equal(r.Body, wantBody) {
				t.Errorf("body = %s, want %s", r.Body, wantBody)
			}
			assertNoNull(t, r.Body)
			var back CombineOrderRequest
			if err := json.Unmarshal(r.Body, &back); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(*req, back); diff != "" {
				t.Errorf("sent body does not round-trip (-want +got):\n%s", diff)
			}
			for k, want := range map[string]string{
				HeaderSerial: testPubKeyID, "Content-Type": "application/json",
				"Accept": "application/json", "User-Agent": "test-agent/1",
			} {
				if got := r.Header.Get(k); got != want {
					t.Errorf("header %s = %q, want %q", k, got, want)
				}
			}
		})
	}
}

// assertNoNull fails if a JSON document holds a null anywhere.
func assertNoNull(t *testing.T, doc []byte) {
	t.Helper()
	var v any
	if err := json.Unmarshal(doc, &v); err != nil {
		t.Fatalf("body is not JSON: %v", err)
	}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch x := v.(type) {
		case nil:
			t.Errorf("JSON null at %s", path)
		case map[string]any:
			for k, e := range x {
				walk(path+"/"+k, e)
			}
		case []any:
			for i, e := range x {
				walk(path+"/"+string(rune('0'+i)), e)
			}
		}
	}
	walk("", v)
}

func TestClient_QueryAndClose(t *testing.T) {
	f := newFakeWeChat(t)
	c := newTestClient(t, f, nil)
	ctx := t.Context()

	o, err := c.QueryByOutTradeNo(ctx, testMchID, "P2015|08*06")
	if err != nil {
		t.Fatalf("QueryByOutTradeNo() = %v", err)
	}
	if got, want := f.last().RequestURI, "/v3/combine-transactions/out-trade-no/P2015%7C08%2A06"; got != want {
		t.Errorf("request target = %s, want %s (escaped once)", got, want)
	}
	if len(f.last().Body) != 0 || f.last().Header.Get("Content-Type") != "" {
		t.Errorf("GET sent a body or a Content-Type")
	}
	var want CombineOrder
	if err := json.Unmarshal([]byte(testOrderJSON), &want); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(&want, o); diff != "" {
		t.Errorf("QueryByOutTradeNo() mismatch (-want +got):\n%s", diff)
	}
	if o.SubOrders[0].TradeState != TradeStateSuccess || o.SubOrders[0].Amount.PayerAmount != 10 {
		t.Errorf("sub-order = %+v, want SUCCESS with payer amount", o.SubOrders[0])
	}

	if _, err := c.QueryByTransactionID(ctx, testMchID, "4200000001202401010000000001"); err != nil {
		t.Fatalf("QueryByTransactionID() = %v", err)
	}
	if got, want := f.last().RequestURI, "/v3/combine-transactions/id/4200000001202401010000000001"; got != want {
		t.Errorf("request target = %s, want %s", got, want)
	}

	closeReq := CloseRequestFor(validRequest(FlavourMerchant, TradeTypeApp))
	if err := c.Close(ctx, testMchID, "P2015|08*06", &closeReq); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	r := f.last()
	if r.Method != http.MethodPost || r.RequestURI != "/v3/combine-transactions/out-trade-no/P2015%7C08%2A06/close" {
		t.Errorf("close request = %s %s", r.Method, r.RequestURI)
	}
	assertNoNull(t, r.Body)
}

func TestClient_VerificationFailures(t *testing.T) {
	ks := testKeys()
	okBody := []byte(`{"prepay_id":"wx1"}`)
	tests := []struct {
		name   string
		answer func(*http.Request, []byte) (int, []byte)
		sign   func(h http.Header, body []byte)
	}{
		{"signature probe", nil, func(h http.Header, body []byte) {
			_ = SignResponseHeaders(h, ks.pubKey, testPubKeyID, time.Now().Unix(), NewNonce(), body)
			h.Set(HeaderSignature, SignTestPrefix+"dGVzdA==")
		}},
		{"stale timestamp", nil, func(h http.Header, body []byte) {
			_ = SignResponseHeaders(h, ks.pubKey, testPubKeyID, time.Now().Add(-6*time.Minute).Unix(), NewNonce(), body)
		}},
		{"unknown serial", nil, func(h http.Header, body []byte) {
			_ = SignResponseHeaders(h, ks.other, "PUB_KEY_ID_9999", time.Now().Unix(), NewNonce(), body)
		}},
		{"untrusted key under a trusted serial", nil, func(h http.Header, body []byte) {
			_ = SignResponseHeaders(h, ks.other, testPubKeyID, time.Now().Unix(), NewNonce(), body)
		}},
		{"tampered body", func(*http.Request, []byte) (int, []byte) { return 200, []byte(`{"prepay_id":"wx2"}`) }, func(h http.Header, _ []byte) {
			_ = SignResponseHeaders(h, ks.pubKey, testPubKeyID, time.Now().Unix(), NewNonce(), okBody)
		}},
		{"no signature headers on 200", nil, func(http.Header, []byte) {}},
		{"unsigned 204 close", nil, func(http.Header, []byte) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeWeChat(t)
			f.answer, f.sign = tt.answer, tt.sign
			c := newTestClient(t, f, nil)
			var err error
			if strings.Contains(tt.name, "close") {
				req := CloseRequestFor(validRequest(FlavourMerchant, TradeTypeApp))
				err = c.Close(t.Context(), testMchID, "P1", &req)
			} else {
				_, err = c.CreateCombineOrder(t.Context(), TradeTypeApp, validRequest(FlavourMerchant, TradeTypeApp))
			}
			if !errors.Is(err, ErrSignature) {
				t.Fatalf("call = %v, want ErrSignature", err)
			}
			// Never an API error; always an unknown outcome, retried with the
			// same parameters, because the order may exist.
			var apiErr *APIError
			if errors.As(err, &apiErr) {
				t.Errorf("signature failure %v is an APIError", err)
			}
			if !Retryable(err) || !UnknownOutcome(err) {
				t.Errorf("signature failure %v: Retryable = %v, UnknownOutcome = %v, want both true", err, Retryable(err), UnknownOutcome(err))
			}
			if !strings.Contains(err.Error(), "08F78BB5AF0610D302-268435456") {
				t.Errorf("error %q lacks the Request-ID", err)
			}
		})
	}
}

func TestClient_InjectedClock(t *testing.T) {
	ks := testKeys()
	old := time.Now().Add(-time.Hour)
	f := newFakeWeChat(t)
	f.sign = func(h http.Header, body []byte) {
		_ = SignResponseHeaders(h, ks.pubKey, testPubKeyID, old.Unix(), NewNonce(), body)
	}
	c := newTestClient(t, f, func(cfg *Config) { cfg.NowFunc = func() time.Time { return old } })
	if _, err := c.CreateCombineOrder(t.Context(), TradeTypeApp, validRequest(FlavourMerchant, TradeTypeApp)); err != nil {
		t.Fatalf("CreateCombineOrder() with the clock an hour back = %v, want nil", err)
	}
	a, err := ParseAuthorization(f.last().Header.Get("Authorization"))
	if err != nil || a.Timestamp != old.Unix() {
		t.Errorf("Authorization timestamp = %d (%v), want %d", a.Timestamp, err, old.Unix())
	}
}

func TestClient_ErrorAnswers(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		body      string
		sign      bool
		want      error
		retryable bool
	}{
		{"param error without signature headers", 400, `{"code":"PARAM_ERROR","message":"参数错误","detail":{"field":"/notify_url","issue":"bad"}}`, false, ErrParam, false},
		{"system error", 500, `{"code":"SYSTEM_ERROR","message":"系统错误"}`, false, ErrSystem, true},
		{"frequency limited", 429, `{"code":"FREQUENCY_LIMITED","message":"频率超限"}`, false, ErrFrequencyLimited, true},
		{"order closed", 400, `{"code":"ORDER_CLOSED","message":"订单已关闭"}`, true, ErrOrderClosed, false},
		{"bad gateway html", 502, `<html>502</html>`, false, &APIError{StatusCode: 502}, true},
		{"signed 202 userpaying", 202, `{"code":"USERPAYING","message":"用户支付中"}`, true, ErrUserPaying, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeWeChat(t)
			f.answer = func(*http.Request, []byte) (int, []byte) { return tt.status, []byte(tt.body) }
			if !tt.sign {
				f.sign = func(http.Header, []byte) {}
			}
			c := newTestClient(t, f, nil)
			_, err := c.CreateCombineOrder(t.Context(), TradeTypeApp, validRequest(FlavourMerchant, TradeTypeApp))
			if !errors.Is(err, tt.want) {
				t.Fatalf("CreateCombineOrder() = %v, want %v", err, tt.want)
			}
			if errors.Is(err, ErrSignature) {
				t.Errorf("error answer reported as a signature failure: %v", err)
			}
			var apiErr *APIError
			if !errors.As(err, &apiErr) || apiErr.RequestID != "08F78BB5AF0610D302-268435456" || apiErr.StatusCode != tt.status {
				t.Errorf("APIError = %+v, want status %d and the Request-ID", apiErr, tt.status)
			}
			if got := Retryable(err); got != tt.retryable {
				t.Errorf("Retryable(%v) = %v, want %v", err, got, tt.retryable)
			}
		})
	}
}

func TestClient_LocalFailuresSendNothing(t *testing.T) {
	f := newFakeWeChat(t)
	c := newTestClient(t, f, nil)
	ctx := t.Context()

	bad := validRequest(FlavourMerchant, TradeTypeApp)
	bad.SubOrders[1].OutTradeNo = "x"
	if _, err := c.CreateCombineOrder(ctx, TradeTypeApp, bad); !errors.Is(err, ErrInvalid) {
		t.Errorf("CreateCombineOrder(invalid) = %v, want ErrInvalid", err)
	}
	unknown := validRequest(FlavourMerchant, TradeTypeApp)
	unknown.CombineMchID = "1999999999"
	if _, err := c.CreateCombineOrder(ctx, TradeTypeApp, unknown); !errors.Is(err, ErrUnknownMerchant) {
		t.Errorf("CreateCombineOrder(unknown merchant) = %v, want ErrUnknownMerchant", err)
	}
	if _, err := c.CreateCombineOrder(ctx, TradeTypeMiniProgram, validRequest(FlavourMerchant, TradeTypeJSAPI)); !errors.Is(err, ErrInvalid) {
		t.Errorf("CreateCombineOrder(miniprogram for merchant) = %v, want ErrInvalid", err)
	}
	if _, err := c.QueryByOutTradeNo(ctx, testMchID, "a/b"); !errors.Is(err, ErrInvalid) {
		t.Errorf("QueryByOutTradeNo(a/b) = %v, want ErrInvalid", err)
	}
	if _, err := c.QueryByOutTradeNo(ctx, "1999999999", "P1"); !errors.Is(err, ErrUnknownMerchant) {
		t.Errorf("QueryByOutTradeNo(unknown merchant) = %v, want ErrUnknownMerchant", err)
	}
	if err := c.Close(ctx, testMchID, "P1", &CloseRequest{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Close(empty) = %v, want ErrInvalid", err)
	}
	if n := f.count(); n != 0 {
		t.Errorf("%d requests reached the server, want 0", n)
	}
}

func TestClient_SeveralMerchants(t *testing.T) {
	f := newFakeWeChat(t)
	c := newTestClient(t, f, nil)
	req := validRequest(FlavourMerchant, TradeTypeApp)
	req.CombineMchID = testOtherMchID
	if _, err := c.CreateCombineOrder(t.Context(), TradeTypeApp, req); err != nil {
		t.Fatalf("CreateCombineOrder() = %v", err)
	}
	a, err := ParseAuthorization(f.last().Header.Get("Authorization"))
	if err != nil || a.MchID != testOtherMchID {
		t.Errorf("Authorization mchid = %q (%v), want %s", a.MchID, err, testOtherMchID)
	}
	if m, ok := c.Merchant(testOtherMchID); !ok || m.MchID != testOtherMchID {
		t.Errorf("Merchant(%s) = %v, %v", testOtherMchID, m, ok)
	}
	if _, ok := c.Merchant("nobody"); ok {
		t.Errorf("Merchant(nobody) found a merchant")
	}
}

func TestClient_CertificateModeSerial(t *testing.T) {
	ks := testKeys()
	f := newFakeWeChat(t)
	m := newTestMerchant(testMchID)
	m.Platform.RemoveKey(testPubKeyID)
	c := newTestClient(t, f, func(cfg *Config) { cfg.Merchants = []*Merchant{m} })
	if _, err := c.CreateCombineOrder(t.Context(), TradeTypeApp, validRequest(FlavourMerchant, TradeTypeApp)); err != nil {
		t.Fatalf("CreateCombineOrder() = %v", err)
	}
	if got := f.last().Header.Get(HeaderSerial); got != ks.certSerial {
		t.Errorf("Wechatpay-Serial = %q, want the certificate serial %q", got, ks.certSerial)
	}
}

func TestClient_Timeouts(t *testing.T) {
	slow := func(d time.Duration) func(*http.Request, []byte) (int, []byte) {
		return func(r *http.Request, _ []byte) (int, []byte) {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
			}
			return 200, []byte(`{"prepay_id":"wx1"}`)
		}
	}
	t.Run("default applies without a deadline", func(t *testing.T) {
		f := newFakeWeChat(t)
		f.answer = slow(2 * time.Second)
		c := newTestClient(t, f, func(cfg *Config) { cfg.Timeout = 50 * time.Millisecond })
		_, err := c.CreateCombineOrder(context.Background(), TradeTypeApp, validRequest(FlavourMerchant, TradeTypeApp))
		var te *TransportError
		if !errors.As(err, &te) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("CreateCombineOrder() = %v, want a TransportError from the deadline", err)
		}
		if !Retryable(err) || !UnknownOutcome(err) {
			t.Errorf("a timeout must be retryable with an unknown outcome: %v", err)
		}
	})
	t.Run("caller deadline wins", func(t *testing.T) {
		f := newFakeWeChat(t)
		f.answer = slow(150 * time.Millisecond)
		c := newTestClient(t, f, func(cfg *Config) { cfg.Timeout = 20 * time.Millisecond })
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		if _, err := c.CreateCombineOrder(ctx, TradeTypeApp, validRequest(FlavourMerchant, TradeTypeApp)); err != nil {
			t.Fatalf("CreateCombineOrder() = %v, want nil under the caller's longer deadline", err)
		}
	})
	t.Run("caller cancel is not retryable", func(t *testing.T) {
		f := newFakeWeChat(t)
		f.answer = slow(2 * time.Second)
		c := newTestClient(t, f, nil)
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(30*time.Millisecond, cancel)
		_, err := c.CreateCombineOrder(ctx, TradeTypeApp, validRequest(FlavourMerchant, TradeTypeApp))
		if !errors.Is(err, context.Canceled) || Retryable(err) {
			t.Fatalf("CreateCombineOrder() = %v (retryable %v), want a non-retryable cancel", err, Retryable(err))
		}
	})
}

func TestClient_BodyLimit(t *testing.T) {
	f := newFakeWeChat(t)
	f.answer = func(*http.Request, []byte) (int, []byte) {
		return 200, []byte(`{"prepay_id":"` + strings.Repeat("x", ResponseBodyLimit) + `"}`)
	}
	c := newTestClient(t, f, nil)
	_, err := c.CreateCombineOrder(t.Context(), TradeTypeApp, validRequest(FlavourMerchant, TradeTypeApp))
	var te *TransportError
	if !errors.As(err, &te) {
		t.Fatalf("CreateCombineOrder(huge answer) = %v, want TransportError", err)
	}
}

func TestClient_VerifiedButEmptyAnswer(t *testing.T) {
	f := newFakeWeChat(t)
	f.answer = func(*http.Request, []byte) (int, []byte) { return 200, []byte(`{}`) }
	c := newTestClient(t, f, nil)
	if _, err := c.CreateCombineOrder(t.Context(), TradeTypeNative, validRequest(FlavourMerchant, TradeTypeNative)); err == nil || !strings.Contains(err.Error(), "code_url") {
		t.Fatalf("CreateCombineOrder() = %v, want a missing code_url error", err)
	}
}

func TestClient_TransportError(t *testing.T) {
	f := newFakeWeChat(t)
	c := newTestClient(t, f, nil)
	f.Close()
	_, err := c.QueryByOutTradeNo(t.Context(), testMchID, "P1")
	var te *TransportError
	if !errors.As(err, &te) || !Retryable(err) || te.Op != "GET /v3/combine-transactions/out-trade-no/P1" {
		t.Fatalf("QueryByOutTradeNo(closed server) = %v, want a retryable TransportError", err)
	}
}

func TestNew_Config(t *testing.T) {
	good := newTestMerchant(testMchID)
	broken := newTestMerchant(testOtherMchID)
	broken.APIv3Key = APIv3Key("short")
	tests := []struct {
		name string
		cfg  Config
		want string // substring of the error; "" means success
	}{
		{"defaults", Config{Merchants: []*Merchant{good}, Flavour: FlavourPartner}, ""},
		{"no merchants", Config{Flavour: FlavourPartner}, "at least one merchant"},
		{"no flavour", Config{Merchants: []*Merchant{good}}, "Flavour"},
		{"bad flavour", Config{Merchants: []*Merchant{good}, Flavour: "bank"}, "unknown flavour"},
		{"duplicate", Config{Merchants: []*Merchant{good, good}, Flavour: FlavourMerchant}, "given twice"},
		{"nil merchant", Config{Merchants: []*Merchant{nil}, Flavour: FlavourMerchant}, "is nil"},
		{"short APIv3 key", Config{Merchants: []*Merchant{broken}, Flavour: FlavourMerchant}, "APIv3 key is 5 bytes"},
		{"base URL with path", Config{BaseURL: "https://example.com/v3", Merchants: []*Merchant{good}, Flavour: FlavourMerchant}, "BaseURL"},
		{"base URL not http", Config{BaseURL: "ftp://example.com", Merchants: []*Merchant{good}, Flavour: FlavourMerchant}, "BaseURL"},
		{"negative timeout", Config{Timeout: -1, Merchants: []*Merchant{good}, Flavour: FlavourMerchant}, "Timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(tt.cfg)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("New() = %v", err)
				}
				if c.base != BaseURLDefault || c.timeout != TimeoutDefault || c.ua != UserAgentDefault || c.Flavour() != tt.cfg.Flavour {
					t.Errorf("defaults not applied: %+v", c)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestClient_PathsEscapeOnce(t *testing.T) {
	tests := map[string]string{
		QueryByOutTradeNoPath("P2015|08*06"):   "/v3/combine-transactions/out-trade-no/P2015%7C08%2A06",
		ClosePath("A-b_c"):                     "/v3/combine-transactions/out-trade-no/A-b_c/close",
		QueryByTransactionIDPath("4200000001"): "/v3/combine-transactions/id/4200000001",
	}
	for got, want := range tests {
		if got != want {
			t.Errorf("path = %s, want %s", got, want)
		}
	}
}
