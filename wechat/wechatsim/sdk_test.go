package wechatsim_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/wechatpay-apiv3/wechatpay-go/core"
	"github.com/wechatpay-apiv3/wechatpay-go/core/auth"
	"github.com/wechatpay-apiv3/wechatpay-go/core/auth/verifiers"
	"github.com/wechatpay-apiv3/wechatpay-go/core/notify"
	"github.com/wechatpay-apiv3/wechatpay-go/core/option"
	"github.com/wechatpay-apiv3/wechatpay-go/utils"

	"github.com/wxcombine/orderworker/wechat"
	"github.com/wxcombine/orderworker/wechat/wechatsim"
)

// TestServer_OfficialSDK drives the simulator with an implementation nobody
// here wrote: wechatpay-go's core.Client signs the requests and verifies every
// answer, and its notify.Handler verifies and decrypts the notification.
func TestServer_OfficialSDK(t *testing.T) {
	f, err := keys()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := utils.LoadCertificate(string(f.platform.CertPEM))
	if err != nil {
		t.Fatalf("LoadCertificate() = %v", err)
	}
	m := f.client[0]
	tests := []struct {
		mode     wechatsim.KeyMode
		option   core.ClientOption
		verifier auth.Verifier
	}{
		{
			wechatsim.ModePublicKey,
			option.WithWechatPayPublicKeyAuthCipher(m.MchID, m.Serial, m.PrivateKey.RSA(), f.platform.PubKeyID, f.platform.PubKey.Public()),
			verifiers.NewSHA256WithRSAPubkeyVerifier(f.platform.PubKeyID, *f.platform.PubKey.Public()),
		},
		{
			wechatsim.ModeCert,
			option.WithWechatPayAuthCipher(m.MchID, m.Serial, m.PrivateKey.RSA(), []*x509.Certificate{cert}),
			verifiers.NewSHA256WithRSAVerifier(core.NewCertificateMapWithList([]*x509.Certificate{cert})),
		},
	}
	for _, tt := range tests {
		t.Run(string(tt.mode), func(t *testing.T) {
			ctx := t.Context()
			e := newEnv(t, wechatsim.Config{Mode: tt.mode, NotifySpeedup: 1000})
			client, err := core.NewClient(ctx, tt.option, option.WithHTTPClient(&http.Client{}))
			if err != nil {
				t.Fatalf("core.NewClient() = %v", err)
			}
			handler, err := notify.NewRSANotifyHandler(string(m.APIv3Key), tt.verifier)
			if err != nil {
				t.Fatalf("NewRSANotifyHandler() = %v", err)
			}
			notified := make(chan map[string]any, 1)
			rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				var content map[string]any
				if _, err := handler.ParseNotifyRequest(context.Background(), r, &content); err != nil {
					t.Errorf("ParseNotifyRequest() = %v", err)
					w.WriteHeader(http.StatusBadRequest)
					return
				}
				w.WriteHeader(http.StatusOK)
				_, _ = io.WriteString(w, `{"code":"SUCCESS","message":""}`)
				notified <- content
			}))
			t.Cleanup(rcv.Close)

			no := newNo("SDK")
			req := merchantOrder(no, rcv.URL+"/notify")
			res, err := client.Post(ctx, e.url+wechat.TradeTypeJSAPI.Path(), req) // json.Encoder: trailing \n is signed
			if err != nil {
				t.Fatalf("SDK create = %v", err)
			}
			var prepay wechat.PrepayResult
			if err := core.UnMarshalResponse(res.Response, &prepay); err != nil || prepay.PrepayID == "" {
				t.Fatalf("SDK create answer = %+v, %v, want a prepay_id", prepay, err)
			}
			res, err = client.Post(ctx, e.url+wechat.TradeTypeJSAPI.Path(), req)
			if err != nil {
				t.Fatalf("SDK repeated create = %v", err)
			}
			var again wechat.PrepayResult
			if err := core.UnMarshalResponse(res.Response, &again); err != nil || again.PrepayID != prepay.PrepayID {
				t.Errorf("SDK repeated create = %+v, %v, want prepay_id %s", again, err, prepay.PrepayID)
			}

			res, err = client.Get(ctx, e.url+wechat.QueryByOutTradeNoPath(no))
			if err != nil {
				t.Fatalf("SDK query = %v", err)
			}
			var q wechat.CombineOrder
			if err := core.UnMarshalResponse(res.Response, &q); err != nil || q.CombineOutTradeNo != no || q.SubOrders[0].TradeState != "NOTPAY" {
				t.Errorf("SDK query = %+v, %v, want NOTPAY order %s", q, err, no)
			}

			if _, err := e.sim.Pay(ctx, mchA, no); err != nil {
				t.Fatalf("Pay() = %v", err)
			}
			got := <-notified
			if got["combine_out_trade_no"] != no {
				t.Errorf("SDK-decrypted notification = %v, want combine_out_trade_no %s", got, no)
			}

			// Close a second order: 204 with a signed empty body.
			no2 := newNo("SDK")
			req2 := merchantOrder(no2, "")
			if _, err := client.Post(ctx, e.url+wechat.TradeTypeJSAPI.Path(), req2); err != nil {
				t.Fatalf("SDK create = %v", err)
			}
			res, err = client.Post(ctx, e.url+wechat.ClosePath(no2), wechat.CloseRequestFor(req2))
			if err != nil || res.Response.StatusCode != http.StatusNoContent {
				t.Fatalf("SDK close = %v, want a verified 204", err)
			}
			_, err = client.Post(ctx, e.url+wechat.ClosePath(no2), map[string]any{"combine_appid": appA, "sub_orders": []any{}})
			var apiErr *core.APIError
			if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.Code != "PARAM_ERROR" {
				t.Errorf("SDK close without sub-orders = %v, want 400 PARAM_ERROR", err)
			}
			var detail map[string]any
			if apiErr != nil {
				_ = json.Unmarshal([]byte(apiErr.Body), &detail)
			}
			if d, _ := detail["detail"].(map[string]any); d["field"] != "/sub_orders" {
				t.Errorf("PARAM_ERROR detail = %v, want field /sub_orders", detail["detail"])
			}
		})
	}
}
