package wechatsim_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/wxcombine/orderworker/wechat"
	"github.com/wxcombine/orderworker/wechat/wechatsim"
)

func TestServer_ClientEndpoints(t *testing.T) {
	for _, mode := range []wechatsim.KeyMode{wechatsim.ModeCert, wechatsim.ModePublicKey, wechatsim.ModeMigration} {
		t.Run(string(mode), func(t *testing.T) {
			e := newEnv(t, wechatsim.Config{Mode: mode})
			ctx := t.Context()
			no := newNo("E")
			req := merchantOrder(no, "")

			got, err := e.client.CreateCombineOrder(ctx, wechat.TradeTypeJSAPI, req)
			if err != nil {
				t.Fatalf("CreateCombineOrder() = %v", err)
			}
			if !strings.HasPrefix(got.PrepayID, "wx") || len(got.PrepayID) != 36 {
				t.Errorf("prepay_id = %q, want wx + 34 characters", got.PrepayID)
			}
			again, err := e.client.CreateCombineOrder(ctx, wechat.TradeTypeJSAPI, req)
			if err != nil {
				t.Fatalf("repeated CreateCombineOrder() = %v", err)
			}
			if again.PrepayID != got.PrepayID {
				t.Errorf("repeated create prepay_id = %q, want %q", again.PrepayID, got.PrepayID)
			}
			changed := merchantOrder(no, "")
			changed.SubOrders[0].Amount.TotalAmount++
			if _, err := e.client.CreateCombineOrder(ctx, wechat.TradeTypeJSAPI, changed); !errors.Is(err, wechat.ErrOutTradeNoUsed) {
				t.Errorf("create with changed amount = %v, want OUT_TRADE_NO_USED", err)
			}
			if _, err := e.client.CreateCombineOrder(ctx, wechat.TradeTypeApp, req); !errors.Is(err, wechat.ErrOutTradeNoUsed) {
				t.Errorf("create with another trade type = %v, want OUT_TRADE_NO_USED", err)
			}

			q, err := e.client.QueryByOutTradeNo(ctx, mchA, no)
			if err != nil {
				t.Fatalf("QueryByOutTradeNo() = %v", err)
			}
			if len(q.SubOrders) != 2 || q.SubOrders[0].TradeState != wechat.TradeStateNotPay || q.CombinePayerInfo != nil {
				t.Errorf("query before payment = %+v, want 2 NOTPAY sub-orders and no payer", q)
			}
			if _, err := e.sim.Pay(ctx, mchA, no); err != nil {
				t.Fatalf("Pay() = %v", err)
			}
			q, err = e.client.QueryByOutTradeNo(ctx, mchA, no)
			if err != nil {
				t.Fatalf("QueryByOutTradeNo() after payment = %v", err)
			}
			for i, so := range q.SubOrders {
				if so.TradeState != wechat.TradeStateSuccess || len(so.TransactionID) != 28 || so.SuccessTime == "" ||
					so.TradeType != "JSAPI" || so.Amount.PayerAmount != req.SubOrders[i].Amount.TotalAmount {
					t.Errorf("paid sub-order %d = %+v, want SUCCESS with transaction_id, success_time, JSAPI, payer_amount", i, so)
				}
			}
			if q.CombinePayerInfo == nil || q.CombinePayerInfo.OpenID != openID {
				t.Errorf("paid combine_payer_info = %+v, want openid %s", q.CombinePayerInfo, openID)
			}
			if _, err := e.client.CreateCombineOrder(ctx, wechat.TradeTypeJSAPI, req); !errors.Is(err, wechat.ErrInvalidRequest) {
				t.Errorf("create of a paid order = %v, want INVALID_REQUEST", err)
			}
			cr := wechat.CloseRequestFor(req)
			if err := e.client.Close(ctx, mchA, no, &cr); !errors.Is(err, wechat.ErrInvalidRequest) {
				t.Errorf("Close() of a paid order = %v, want INVALID_REQUEST", err)
			}
		})
	}
}

func TestServer_TradeTypeAnswers(t *testing.T) {
	e := newEnv(t, wechatsim.Config{})
	tests := []struct {
		tradeType wechat.TradeType
		check     func(*wechat.PrepayResult) bool
	}{
		{wechat.TradeTypeApp, func(r *wechat.PrepayResult) bool { return strings.HasPrefix(r.PrepayID, "wx") }},
		{wechat.TradeTypeJSAPI, func(r *wechat.PrepayResult) bool { return strings.HasPrefix(r.PrepayID, "wx") }},
		{wechat.TradeTypeH5, func(r *wechat.PrepayResult) bool {
			return strings.HasPrefix(r.H5URL, "https://wx.tenpay.com/cgi-bin/mmpayweb-bin/checkmweb?prepay_id=wx")
		}},
		{wechat.TradeTypeNative, func(r *wechat.PrepayResult) bool { return strings.HasPrefix(r.CodeURL, "weixin://wxpay/bizpayurl?pr=") }},
	}
	for _, tt := range tests {
		t.Run(string(tt.tradeType), func(t *testing.T) {
			req := merchantOrder(newNo("T"), "")
			switch tt.tradeType {
			case wechat.TradeTypeH5:
				req.CombinePayerInfo = nil
				req.SceneInfo.H5Info = &wechat.H5Info{Type: "Wap"}
			case wechat.TradeTypeNative:
				req.CombinePayerInfo = nil
			}
			got, err := e.client.CreateCombineOrder(t.Context(), tt.tradeType, req)
			if err != nil {
				t.Fatalf("CreateCombineOrder(%s) = %v", tt.tradeType, err)
			}
			if !tt.check(got) {
				t.Errorf("CreateCombineOrder(%s) = %+v, want the %s answer shape", tt.tradeType, got, tt.tradeType)
			}
		})
	}
}

func TestServer_PrepayValidity(t *testing.T) {
	now := time.Now()
	var clock atomic.Int64 // offset of the simulator's clock
	nowFunc := func() time.Time { return now.Add(time.Duration(clock.Load())) }
	e := newEnv(t, wechatsim.Config{NowFunc: nowFunc})
	ctx := t.Context()
	req := merchantOrder(newNo("V"), "")
	req.CombinePayerInfo = nil
	req.SceneInfo.H5Info = &wechat.H5Info{Type: "Wap"}
	first, err := e.client.CreateCombineOrder(ctx, wechat.TradeTypeH5, req)
	if err != nil {
		t.Fatalf("CreateCombineOrder() = %v", err)
	}
	// The client signs with real time; move the simulator's clock only
	// within its five-minute window.
	clock.Store(int64(4 * time.Minute))
	same, err := e.client.CreateCombineOrder(ctx, wechat.TradeTypeH5, req)
	if err != nil || same.H5URL != first.H5URL {
		t.Errorf("create after 4m = %+v, %v, want the same h5_url", same, err)
	}
	e2 := newEnv(t, wechatsim.Config{H5URLValidity: time.Minute, NowFunc: nowFunc})
	clock.Store(0)
	first, err = e2.client.CreateCombineOrder(ctx, wechat.TradeTypeH5, req)
	if err != nil {
		t.Fatalf("CreateCombineOrder() = %v", err)
	}
	clock.Store(int64(2 * time.Minute))
	fresh, err := e2.client.CreateCombineOrder(ctx, wechat.TradeTypeH5, req)
	if err != nil || fresh.H5URL == first.H5URL {
		t.Errorf("create after the h5_url expired = %+v, %v, want a fresh h5_url", fresh, err)
	}
	info, _ := e2.sim.Order(mchA, req.CombineOutTradeNo)
	if info.DistinctSuccesses() != 2 || info.CreateCalls != 2 {
		t.Errorf("Order() = %d calls, %d distinct answers, want 2 and 2", info.CreateCalls, info.DistinctSuccesses())
	}
}

func TestServer_Close(t *testing.T) {
	e := newEnv(t, wechatsim.Config{})
	ctx := t.Context()
	no := newNo("C")
	req := merchantOrder(no, "")
	if _, err := e.client.CreateCombineOrder(ctx, wechat.TradeTypeJSAPI, req); err != nil {
		t.Fatalf("CreateCombineOrder() = %v", err)
	}
	partial := wechat.CloseRequestFor(req)
	partial.SubOrders = partial.SubOrders[1:]
	partial.SubOrders = append(partial.SubOrders, wechat.CloseSubOrder{MchID: mchA, OutTradeNo: no + "x"})
	if err := e.client.Close(ctx, mchA, no, &partial); !errors.Is(err, wechat.ErrInvalidRequest) {
		t.Errorf("Close() with other sub-orders = %v, want INVALID_REQUEST", err)
	}
	cr := wechat.CloseRequestFor(req)
	cr.SubOrders[0], cr.SubOrders[1] = cr.SubOrders[1], cr.SubOrders[0] // order does not matter
	for i := range 2 {
		if err := e.client.Close(ctx, mchA, no, &cr); err != nil {
			t.Fatalf("Close() #%d = %v, want nil (204, repeatable)", i+1, err)
		}
	}
	q, err := e.client.QueryByOutTradeNo(ctx, mchA, no)
	if err != nil || q.SubOrders[0].TradeState != wechat.TradeStateClosed {
		t.Errorf("query after close = %+v, %v, want CLOSED", q, err)
	}
	if _, err := e.client.CreateCombineOrder(ctx, wechat.TradeTypeJSAPI, req); !errors.Is(err, wechat.ErrOrderClosed) {
		t.Errorf("create after close = %v, want ORDER_CLOSED", err)
	}
	if _, err := e.sim.Pay(ctx, mchA, no); !errors.Is(err, wechatsim.ErrOrderClosed) {
		t.Errorf("Pay() of a closed order = %v, want ErrOrderClosed", err)
	}
	if err := e.client.Close(ctx, mchA, newNo("N"), &cr); !errors.Is(err, wechat.ErrOrderNotExist) {
		t.Errorf("Close() of an unknown order = %v, want ORDERNOTEXIST", err)
	}
	if _, err := e.client.QueryByOutTradeNo(ctx, mchA, newNo("N")); !errors.Is(err, wechat.ErrOrderNotExist) {
		t.Errorf("query of an unknown order = %v, want ORDERNOTEXIST", err)
	}
	// Orders belong to their merchant.
	if _, err := e.client.QueryByOutTradeNo(ctx, mchB, no); !errors.Is(err, wechat.ErrOrderNotExist) {
		t.Errorf("query of mchA's order as mchB = %v, want ORDERNOTEXIST", err)
	}
}

func TestServer_BusinessErrors(t *testing.T) {
	e := newEnv(t, wechatsim.Config{})
	tests := []struct {
		name   string
		mutate func(*wechat.CombineOrderRequest)
		want   error
	}{
		{"appid not bound", func(r *wechat.CombineOrderRequest) { r.CombineAppID = appB }, wechat.ErrAppIDMchIDMismatch},
		{"unknown sub-order merchant", func(r *wechat.CombineOrderRequest) { r.SubOrders[1].MchID = "1999999999" }, wechat.ErrMchNotExists},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := merchantOrder(newNo("B"), "")
			tt.mutate(req)
			if _, err := e.client.CreateCombineOrder(t.Context(), wechat.TradeTypeJSAPI, req); !errors.Is(err, tt.want) {
				t.Errorf("CreateCombineOrder() = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestServer_IndividualFlavour(t *testing.T) {
	e := newEnv(t, wechatsim.Config{Flavour: wechat.FlavourIndividual})
	ctx := t.Context()
	no := newNo("I")
	req := &wechat.CombineOrderRequest{
		CombineAppID: appA, CombineMchID: mchA, CombineOutTradeNo: no,
		CombinePayerInfo: &wechat.PayerInfo{OpenID: openID},
		SubOrders: []wechat.SubOrder{{
			MchID: mchA, IndividualAuthID: "1900000109000001", Attach: "a",
			Amount: wechat.Amount{TotalAmount: 10, Currency: "CNY"}, OutTradeNo: no + "s", Description: "used book",
		}},
		TradeScenario: "RECOMMERCE",
	}
	if _, err := e.client.CreateCombineOrder(ctx, wechat.TradeTypeMiniProgram, req); err != nil {
		t.Fatalf("CreateCombineOrder(miniprogram) = %v", err)
	}
	q, err := e.client.QueryByOutTradeNo(ctx, mchA, no)
	if err != nil || q.CombineTransactionID == "" {
		t.Fatalf("QueryByOutTradeNo() = %+v, %v, want a combine_transaction_id", q, err)
	}
	byID, err := e.client.QueryByTransactionID(ctx, mchA, q.CombineTransactionID)
	if err != nil {
		t.Fatalf("QueryByTransactionID() = %v", err)
	}
	if diff := cmp.Diff(q, byID); diff != "" {
		t.Errorf("query by id differs from query by number (-number +id):\n%s", diff)
	}
	if _, err := e.client.QueryByTransactionID(ctx, mchB, q.CombineTransactionID); !errors.Is(err, wechat.ErrOrderNotExist) {
		t.Errorf("QueryByTransactionID() as another merchant = %v, want ORDERNOTEXIST", err)
	}
	cr := wechat.CloseRequestFor(req)
	if err := e.client.Close(ctx, mchA, no, &cr); err != nil {
		t.Errorf("Close() = %v", err)
	}

	m := newEnv(t, wechatsim.Config{})
	if _, err := m.client.QueryByTransactionID(ctx, mchA, q.CombineTransactionID); !errors.Is(err, wechat.ErrNoAuth) {
		t.Errorf("QueryByTransactionID() in the merchant flavour = %v, want NOAUTH", err)
	}
}

func TestServer_Faults(t *testing.T) {
	e := newEnv(t, wechatsim.Config{Seed: 1})
	tests := []struct {
		name      string
		faults    wechatsim.FaultConfig
		want      error
		retryable bool
		kind      string
	}{
		{"system error", wechatsim.FaultConfig{SystemErrorRate: 1}, wechat.ErrSystem, true, wechatsim.FaultSystemError},
		{"bank error", wechatsim.FaultConfig{BankErrorRate: 1}, wechat.ErrBank, true, wechatsim.FaultBankError},
		{"frequency limited", wechatsim.FaultConfig{FrequencyLimitedRate: 1}, wechat.ErrFrequencyLimited, true, wechatsim.FaultFrequencyLimited},
		{"502 without body", wechatsim.FaultConfig{Bad502Rate: 1}, &wechat.APIError{StatusCode: 502}, true, wechatsim.FaultBad502},
		{"signature probe: unverified, so an unknown outcome", wechatsim.FaultConfig{SignTestRate: 1}, wechat.ErrSignature, true, wechatsim.FaultSignTest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := e.sim.SetFaults(tt.faults); err != nil {
				t.Fatal(err)
			}
			before := e.sim.Stats().Faults[tt.kind]
			ops := map[string]func(ctx context.Context) error{
				"create": func(ctx context.Context) error {
					_, err := e.client.CreateCombineOrder(ctx, wechat.TradeTypeJSAPI, merchantOrder(newNo("F"), ""))
					return err
				},
				"query": func(ctx context.Context) error {
					_, err := e.client.QueryByOutTradeNo(ctx, mchA, newNo("F"))
					return err
				},
			}
			for op, call := range ops {
				err := call(t.Context())
				if tt.kind == wechatsim.FaultSignTest && op == "query" {
					// An unknown order is a 404, which carries no probe.
					continue
				}
				if !errors.Is(err, tt.want) || wechat.Retryable(err) != tt.retryable {
					t.Errorf("%s = %v (retryable %t), want %v (retryable %t)", op, err, wechat.Retryable(err), tt.want, tt.retryable)
				}
			}
			if got := e.sim.Stats().Faults[tt.kind] - before; got < 1 {
				t.Errorf("Stats().Faults[%s] grew by %d, want at least 1", tt.kind, got)
			}
		})
	}

	t.Run("per-merchant rate limit", func(t *testing.T) {
		if err := e.sim.SetFaults(wechatsim.FaultConfig{RatePerMerchant: 2}); err != nil {
			t.Fatal(err)
		}
		var limited int
		for range 4 {
			_, err := e.client.QueryByOutTradeNo(t.Context(), mchA, newNo("R"))
			if errors.Is(err, wechat.ErrFrequencyLimited) {
				limited++
			}
		}
		if limited == 0 {
			t.Errorf("4 quick queries at 2/s: %d answered FREQUENCY_LIMITED, want at least 1", limited)
		}
		if _, err := e.client.QueryByOutTradeNo(t.Context(), mchB, newNo("R")); !errors.Is(err, wechat.ErrOrderNotExist) {
			t.Errorf("other merchant's query = %v, want ORDERNOTEXIST (own bucket)", err)
		}
	})

	t.Run("latency", func(t *testing.T) {
		if err := e.sim.SetFaults(wechatsim.FaultConfig{Latency: 300 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		_, err := e.client.QueryByOutTradeNo(ctx, mchA, newNo("L"))
		if !wechat.UnknownOutcome(err) {
			t.Errorf("query slower than the deadline = %v, want an unknown-outcome transport error", err)
		}
	})

	t.Run("timeout after create", func(t *testing.T) {
		if err := e.sim.SetFaults(wechatsim.FaultConfig{TimeoutAfterCreateRate: 1}); err != nil {
			t.Fatal(err)
		}
		req := merchantOrder(newNo("H"), "")
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		_, err := e.client.CreateCombineOrder(ctx, wechat.TradeTypeJSAPI, req)
		cancel()
		if !wechat.UnknownOutcome(err) || !wechat.Retryable(err) {
			t.Fatalf("create that never answers = %v, want a retryable unknown outcome", err)
		}
		if err := e.sim.SetFaults(wechatsim.FaultConfig{}); err != nil {
			t.Fatal(err)
		}
		got, err := e.client.CreateCombineOrder(t.Context(), wechat.TradeTypeJSAPI, req)
		if err != nil {
			t.Fatalf("retried create = %v", err)
		}
		info, _ := e.sim.Order(mchA, req.CombineOutTradeNo)
		if info.Answer == nil || got.PrepayID != info.Answer.PrepayID || info.DistinctSuccesses() != 1 {
			t.Errorf("retry got %q; order %+v, want the prepay_id created by the lost call", got.PrepayID, info)
		}
		if info.CreateCalls != 2 || info.Outcomes[wechatsim.FaultTimeoutAfterCreate] != 1 {
			t.Errorf("Order().CreateCalls = %d, outcomes %v, want 2 calls, one %s", info.CreateCalls, info.Outcomes, wechatsim.FaultTimeoutAfterCreate)
		}
	})

	t.Run("unsigned errors", func(t *testing.T) {
		if err := e.sim.SetFaults(wechatsim.FaultConfig{UnsignedErrors: true}); err != nil {
			t.Fatal(err)
		}
		no := newNo("U")
		resp := do(t, signedRequest(t, e.merchant, e.url, "GET", wechat.QueryByOutTradeNoPath(no), nil, time.Now().Unix()))
		if resp.status != 404 || resp.header.Get(wechat.HeaderSignature) != "" || !strings.HasSuffix(resp.header.Get(wechat.HeaderRequestID), "-404") {
			t.Errorf("unsigned 404 = %d, signature %q, request id %q, want 404 with no signature and a -404 request id",
				resp.status, resp.header.Get(wechat.HeaderSignature), resp.header.Get(wechat.HeaderRequestID))
		}
		if _, err := e.client.QueryByOutTradeNo(t.Context(), mchA, no); !errors.Is(err, wechat.ErrOrderNotExist) {
			t.Errorf("client on an unsigned error = %v, want ORDERNOTEXIST", err)
		}
	})
}

func TestServer_SetFaultsRejects(t *testing.T) {
	e := newEnv(t, wechatsim.Config{})
	for _, f := range []wechatsim.FaultConfig{
		{SystemErrorRate: 1.5},
		{SystemErrorRate: 0.6, BankErrorRate: 0.6},
		{RatePerMerchant: -1},
		{Latency: -time.Second},
	} {
		if err := e.sim.SetFaults(f); err == nil {
			t.Errorf("SetFaults(%+v) = nil, want an error", f)
		}
	}
}
