package wechatsim_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxcombine/orderworker/wechat"
	"github.com/wxcombine/orderworker/wechat/wechatsim"
)

// apiAnswer is a decoded error answer.
type apiAnswer struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func decodeAnswer(t *testing.T, r rawResponse) apiAnswer {
	t.Helper()
	var a apiAnswer
	if err := json.Unmarshal(r.body, &a); err != nil {
		t.Fatalf("answer %d %q is not JSON: %v", r.status, r.body, err)
	}
	return a
}

func (e *env) get(t *testing.T, target string) rawResponse {
	t.Helper()
	return do(t, signedRequest(t, e.merchant, e.url, http.MethodGet, target, nil, time.Now().Unix()))
}

func (e *env) create(t *testing.T, tt wechat.TradeType, req *wechat.CombineOrderRequest) rawResponse {
	t.Helper()
	return do(t, signedRequest(t, e.merchant, e.url, http.MethodPost, tt.Path(), mustJSON(t, req), time.Now().Unix()))
}

func TestServer_CodeSpellings(t *testing.T) {
	t.Parallel()
	e := newEnv(t, wechatsim.Config{Seed: 3})
	for _, tt := range []struct {
		spelling         string
		notExist, system []string
	}{
		{"", []string{"ORDERNOTEXIST"}, []string{"SYSTEMERROR"}},
		{wechatsim.SpellingTable, []string{"ORDERNOTEXIST"}, []string{"SYSTEMERROR"}},
		{wechatsim.SpellingCommon, []string{"ORDER_NOT_EXIST"}, []string{"SYSTEM_ERROR"}},
		{wechatsim.SpellingMixed, []string{"ORDERNOTEXIST", "ORDER_NOT_EXIST"}, []string{"SYSTEMERROR", "SYSTEM_ERROR"}},
	} {
		if err := e.sim.SetFaults(wechatsim.FaultConfig{CodeSpelling: tt.spelling}); err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for range 40 {
			r := e.get(t, "/v3/combine-transactions/out-trade-no/"+newNo("NX"))
			if r.status != http.StatusNotFound {
				t.Fatalf("query of an unknown order = %d %s, want 404", r.status, r.body)
			}
			seen[decodeAnswer(t, r).Code] = true
		}
		for _, c := range tt.notExist {
			if !seen[c] || len(seen) != len(tt.notExist) {
				t.Errorf("spelling %q: 404 codes %v, want %v", tt.spelling, seen, tt.notExist)
			}
		}
		if err := e.sim.SetFaults(wechatsim.FaultConfig{CodeSpelling: tt.spelling, SystemErrorRate: 1}); err != nil {
			t.Fatal(err)
		}
		seen = map[string]bool{}
		for range 40 {
			r := e.get(t, "/v3/combine-transactions/out-trade-no/"+newNo("NX"))
			seen[decodeAnswer(t, r).Code] = true
		}
		for _, c := range tt.system {
			if !seen[c] || len(seen) != len(tt.system) {
				t.Errorf("spelling %q: system error codes %v, want %v", tt.spelling, seen, tt.system)
			}
		}
	}
	// The client treats both spellings alike.
	_ = e.sim.SetFaults(wechatsim.FaultConfig{CodeSpelling: wechatsim.SpellingCommon})
	if _, err := e.client.QueryByOutTradeNo(t.Context(), mchA, newNo("NX")); !errors.Is(err, wechat.ErrOrderNotExist) {
		t.Errorf("client query of an unknown order = %v, want ErrOrderNotExist", err)
	}
	if err := e.sim.SetFaults(wechatsim.FaultConfig{CodeSpelling: "lower"}); err == nil {
		t.Error("SetFaults accepted an unknown code spelling")
	}
}

func TestServer_ServiceUnavailableAndUnsignedErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t, wechatsim.Config{Seed: 5})
	if err := e.sim.SetFaults(wechatsim.FaultConfig{ServiceUnavailableRate: 1, UnsignedErrorRate: 0.5}); err != nil {
		t.Fatal(err)
	}
	statuses := map[int]int{}
	signed, unsigned := 0, 0
	for range 60 {
		r := e.create(t, wechat.TradeTypeJSAPI, merchantOrder(newNo("SU"), ""))
		statuses[r.status]++
		if a := decodeAnswer(t, r); a.Code != "SERVICE_UNAVAILABLE" || a.Message == "" {
			t.Fatalf("answer %d %s, want a SERVICE_UNAVAILABLE JSON body", r.status, r.body)
		}
		if r.header.Get(wechat.HeaderSignature) == "" {
			unsigned++
		} else {
			signed++
		}
	}
	if statuses[502] == 0 || statuses[503] == 0 || len(statuses) != 2 {
		t.Errorf("statuses %v, want both 502 and 503 and nothing else", statuses)
	}
	if signed == 0 || unsigned == 0 {
		t.Errorf("%d signed and %d unsigned error answers at UnsignedErrorRate 0.5, want both", signed, unsigned)
	}
	if got := e.sim.Stats().Faults[wechatsim.FaultServiceUnavailable]; got != 60 {
		t.Errorf("Stats().Faults[SERVICE_UNAVAILABLE] = %d, want 60", got)
	}
	_, err := e.client.CreateCombineOrder(t.Context(), wechat.TradeTypeJSAPI, merchantOrder(newNo("SU"), ""))
	var ae *wechat.APIError
	if !errors.As(err, &ae) || ae.Code != "SERVICE_UNAVAILABLE" {
		t.Errorf("client create = %v, want an APIError with code SERVICE_UNAVAILABLE", err)
	}
}

func TestServer_RequiresAcceptAndUserAgent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, wechatsim.Config{})
	for _, tt := range []struct {
		name       string
		accept, ua string
		want       int
	}{
		{"json", "application/json", "shop/1", http.StatusNotFound},
		{"any type (the official Go SDK)", "*/*", "WechatPay-Go/0.2.21", http.StatusNotFound},
		{"json with parameters among others", "text/plain, application/json;q=0.9", "shop/1", http.StatusNotFound},
		{"no Accept", "", "shop/1", http.StatusBadRequest},
		{"html only", "text/html", "shop/1", http.StatusBadRequest},
		{"no User-Agent", "application/json", "", http.StatusBadRequest},
	} {
		req := signedRequest(t, e.merchant, e.url, http.MethodGet, "/v3/combine-transactions/out-trade-no/"+newNo("HD"), nil, time.Now().Unix())
		req.Header.Del("Accept")
		if tt.accept != "" {
			req.Header.Set("Accept", tt.accept)
		}
		req.Header.Set("User-Agent", tt.ua) // an empty value sends none
		r := do(t, req)
		if r.status != tt.want {
			t.Errorf("%s: status %d %s, want %d", tt.name, r.status, r.body, tt.want)
		}
		if tt.want == http.StatusBadRequest && decodeAnswer(t, r).Code != "INVALID_REQUEST" {
			t.Errorf("%s: %s, want INVALID_REQUEST", tt.name, r.body)
		}
	}
}

func TestServer_TradeStates(t *testing.T) {
	t.Parallel()
	e := newEnv(t, wechatsim.Config{})
	for _, states := range [][]string{
		{wechat.TradeStateSuccess}, {wechat.TradeStateRefund}, {wechat.TradeStateNotPay},
		{wechat.TradeStateClosed}, {wechat.TradeStatePayError},
		{wechat.TradeStateRefund, wechat.TradeStateSuccess},
	} {
		no := newNo("TS")
		if _, err := e.client.CreateCombineOrder(t.Context(), wechat.TradeTypeJSAPI, merchantOrder(no, "")); err != nil {
			t.Fatal(err)
		}
		if err := e.sim.SetTradeState(mchA, no, states...); err != nil {
			t.Fatal(err)
		}
		o, err := e.client.QueryByOutTradeNo(t.Context(), mchA, no)
		if err != nil {
			t.Fatal(err)
		}
		for i, so := range o.SubOrders {
			want := states[min(i, len(states)-1)]
			if so.TradeState != want {
				t.Errorf("%v: sub-order %d trade_state %s, want %s", states, i, so.TradeState, want)
			}
			paid := want == wechat.TradeStateSuccess || want == wechat.TradeStateRefund
			if paid != (so.TransactionID != "") || paid != (so.Amount.PayerAmount == so.Amount.TotalAmount) {
				t.Errorf("%v: sub-order %d transaction_id %q payer_amount %d, want them exactly when paid", states, i, so.TransactionID, so.Amount.PayerAmount)
			}
		}
	}
	if err := e.sim.SetTradeState(mchA, "NOSUCHORDER1", wechat.TradeStateRefund); !errors.Is(err, wechatsim.ErrOrderNotFound) {
		t.Errorf("SetTradeState(unknown order) = %v, want ErrOrderNotFound", err)
	}
	no := newNo("TS")
	if _, err := e.client.CreateCombineOrder(t.Context(), wechat.TradeTypeJSAPI, merchantOrder(no, "")); err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][]string{{"USERPAYING"}, {"SUCCESS", "SUCCESS", "SUCCESS"}} {
		if err := e.sim.SetTradeState(mchA, no, bad...); !errors.Is(err, wechatsim.ErrBadTradeState) {
			t.Errorf("SetTradeState(%v) = %v, want ErrBadTradeState", bad, err)
		}
	}
	// The admin endpoint does the same.
	body := `{"trade_states":["PAYERROR"]}`
	req, _ := http.NewRequest(http.MethodPut, e.url+"/sim/orders/"+mchA+"/"+no+"/trade-state", strings.NewReader(body))
	if r := do(t, req); r.status != http.StatusOK || !bytes.Contains(r.body, []byte(`"trade_state": "PAYERROR"`)) {
		t.Errorf("PUT trade-state = %d %s", r.status, r.body)
	}
}

func TestServer_PromotionAndNotificationControl(t *testing.T) {
	t.Parallel()
	var hits atomic.Int64
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(recv.Close)
	e := newEnv(t, wechatsim.Config{Seed: 9})
	no := newNo("PD")
	if _, err := e.client.CreateCombineOrder(t.Context(), wechat.TradeTypeJSAPI, merchantOrder(no, recv.URL+"/notify")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.sim.PayWith(t.Context(), mchA, no, wechatsim.PayOptions{Discount: 30, SkipNotification: true}); err != nil {
		t.Fatal(err)
	}
	o, err := e.client.QueryByOutTradeNo(t.Context(), mchA, no)
	if err != nil {
		t.Fatal(err)
	}
	for i, so := range o.SubOrders {
		a := so.Amount
		if a.PayerAmount != a.TotalAmount-30 || len(so.PromotionDetail) != 1 || so.PromotionDetail[0].Amount != 30 {
			t.Errorf("sub-order %d: amount %+v promotions %+v, want payer_amount 30 below total_amount and one 30-fen promotion", i, a, so.PromotionDetail)
		}
	}
	// Paid without a notification: nothing arrives, the ledger says so.
	time.Sleep(200 * time.Millisecond)
	st := e.sim.Stats().Notifications
	if hits.Load() != 0 || st.Attempts != 0 || st.Skipped != 1 {
		t.Errorf("receiver hits %d, stats %+v, want no attempt and one skipped", hits.Load(), st)
	}
	l, ok := e.sim.Ledger(mchA, no)
	if !ok || !l.NotificationDropped || l.Notified || l.SubOrders[0].PayerAmount != l.SubOrders[0].TotalAmount-30 || l.SubOrders[0].TransactionID == "" {
		t.Errorf("Ledger() = %+v, %v", l, ok)
	}
	// A drop rate of 1 loses every notification.
	if err := e.sim.SetFaults(wechatsim.FaultConfig{NotifyDropRate: 1}); err != nil {
		t.Fatal(err)
	}
	no2 := newNo("PD")
	if _, err := e.client.CreateCombineOrder(t.Context(), wechat.TradeTypeJSAPI, merchantOrder(no2, recv.URL+"/notify")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.sim.Pay(t.Context(), mchA, no2); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if st := e.sim.Stats(); hits.Load() != 0 || st.Notifications.Dropped != 1 || st.Faults[wechatsim.FaultNotifyDropped] != 1 {
		t.Errorf("receiver hits %d, stats %+v, want one dropped notification and no hit", hits.Load(), st.Notifications)
	}
	// Without faults a payment notifies (the admin endpoint, notify=true).
	_ = e.sim.SetFaults(wechatsim.FaultConfig{})
	no3 := newNo("PD")
	if _, err := e.client.CreateCombineOrder(t.Context(), wechat.TradeTypeJSAPI, merchantOrder(no3, recv.URL+"/notify")); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, e.url+"/sim/pay/"+mchA+"/"+no3+"?notify=true&discount=5", nil)
	if r := do(t, req); r.status != http.StatusOK || !bytes.Contains(r.body, []byte(`"promotion_detail"`)) {
		t.Fatalf("POST /sim/pay = %d %s", r.status, r.body)
	}
	deadline := time.Now().Add(10 * time.Second)
	for hits.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if hits.Load() != 1 {
		t.Errorf("receiver hits %d, want 1", hits.Load())
	}
}

func TestServer_QueryAndCloseAnswers(t *testing.T) {
	t.Parallel()
	e := newEnv(t, wechatsim.Config{})
	no := newNo("QC")
	req := merchantOrder(no, "")
	if _, err := e.client.CreateCombineOrder(t.Context(), wechat.TradeTypeJSAPI, req); err != nil {
		t.Fatal(err)
	}
	closeReq := wechat.CloseRequestFor(req)
	for range 2 { // close is re-entrant
		if err := e.client.Close(t.Context(), mchA, no, &closeReq); err != nil {
			t.Fatalf("Close() = %v", err)
		}
	}
	paid := newNo("QC")
	preq := merchantOrder(paid, "")
	if _, err := e.client.CreateCombineOrder(t.Context(), wechat.TradeTypeJSAPI, preq); err != nil {
		t.Fatal(err)
	}
	if _, err := e.sim.PayWith(t.Context(), mchA, paid, wechatsim.PayOptions{SkipNotification: true}); err != nil {
		t.Fatal(err)
	}
	pclose := wechat.CloseRequestFor(preq)
	r := do(t, signedRequest(t, e.merchant, e.url, http.MethodPost, "/v3/combine-transactions/out-trade-no/"+paid+"/close", mustJSON(t, &pclose), time.Now().Unix()))
	if a := decodeAnswer(t, r); r.status != http.StatusBadRequest || a.Code != "INVALID_REQUEST" || a.Message != "订单已支付" {
		t.Errorf("close of a paid order = %d %s, want 400 INVALID_REQUEST 订单已支付", r.status, r.body)
	}
	unknown := wechat.CloseRequestFor(merchantOrder("NOSUCH0001", ""))
	r = do(t, signedRequest(t, e.merchant, e.url, http.MethodPost, "/v3/combine-transactions/out-trade-no/NOSUCH0001/close", mustJSON(t, &unknown), time.Now().Unix()))
	if a := decodeAnswer(t, r); r.status != http.StatusNotFound || a.Code != "ORDERNOTEXIST" {
		t.Errorf("close of an unknown order = %d %s, want 404 ORDERNOTEXIST", r.status, r.body)
	}
}

func TestServer_PrepayExpiryAndClock(t *testing.T) {
	t.Parallel()
	e := newEnv(t, wechatsim.Config{})
	no := newNo("PX")
	req := merchantOrder(no, "")
	first, err := e.client.CreateCombineOrder(t.Context(), wechat.TradeTypeJSAPI, req)
	if err != nil {
		t.Fatal(err)
	}
	e.sim.Advance(time.Hour + 59*time.Minute)
	again, err := e.client.CreateCombineOrder(t.Context(), wechat.TradeTypeJSAPI, req)
	if err != nil || again.PrepayID != first.PrepayID {
		t.Fatalf("identical create within 2h = %+v, %v; want the same prepay_id %s", again, err, first.PrepayID)
	}
	// Past 2 h the prepay_id has expired: the same create answers a new one.
	r, _ := http.NewRequest(http.MethodPost, e.url+"/sim/clock", strings.NewReader(`{"advance":"2m"}`))
	if resp := do(t, r); resp.status != http.StatusOK {
		t.Fatalf("POST /sim/clock = %d %s", resp.status, resp.body)
	}
	fresh, err := e.client.CreateCombineOrder(t.Context(), wechat.TradeTypeJSAPI, req)
	if err != nil || fresh.PrepayID == first.PrepayID || fresh.PrepayID == "" {
		t.Fatalf("identical create after 2h = %+v, %v; want a new prepay_id", fresh, err)
	}
	l, _ := e.sim.Ledger(mchA, no)
	if len(l.Prepays) != 2 || l.Prepays[0].PrepayID != first.PrepayID || l.Prepays[1].PrepayID != fresh.PrepayID ||
		!l.Prepays[0].ExpiresAt.Equal(l.Prepays[0].IssuedAt.Add(2*time.Hour)) {
		t.Errorf("ledger prepays %+v, want the two prepay_ids, each valid 2h", l.Prepays)
	}
	// Past the order's 7-day lifetime the order itself has expired.
	e.sim.SetNow(e.sim.Now().Add(7 * 24 * time.Hour))
	_, err = e.client.CreateCombineOrder(t.Context(), wechat.TradeTypeJSAPI, req)
	var ae *wechat.APIError
	if !errors.As(err, &ae) || ae.Code != "ORDER_CLOSED" {
		t.Errorf("identical create after 7 days = %v, want ORDER_CLOSED", err)
	}
	if _, err := e.sim.Pay(t.Context(), mchA, no); !errors.Is(err, wechatsim.ErrOrderExpired) {
		t.Errorf("Pay() after 7 days = %v, want ErrOrderExpired", err)
	}
	var all []wechatsim.LedgerEntry
	lr, _ := http.NewRequest(http.MethodGet, e.url+"/sim/ledger", nil)
	if resp := do(t, lr); resp.status != http.StatusOK || json.Unmarshal(resp.body, &all) != nil || len(all) != 1 {
		t.Errorf("GET /sim/ledger = %d %s", resp.status, resp.body)
	}
}

// TestServer_AdminFaultsNewFields: the new fault settings travel through
// PUT and GET /sim/faults like the others.
func TestServer_AdminFaultsNewFields(t *testing.T) {
	t.Parallel()
	e := newEnv(t, wechatsim.Config{})
	body := `{"service_unavailable_rate":0.25,"unsigned_error_rate":0.5,"notify_drop_rate":0.1,"code_spelling":"mixed"}`
	req, _ := http.NewRequest(http.MethodPut, e.url+"/sim/faults", strings.NewReader(body))
	if r := do(t, req); r.status != http.StatusOK {
		t.Fatalf("PUT /sim/faults = %d %s", r.status, r.body)
	}
	f := e.sim.Faults()
	if f.ServiceUnavailableRate != 0.25 || f.UnsignedErrorRate != 0.5 || f.NotifyDropRate != 0.1 || f.CodeSpelling != wechatsim.SpellingMixed {
		t.Errorf("Faults() = %+v after PUT %s", f, body)
	}
	bad, _ := http.NewRequest(http.MethodPut, e.url+"/sim/faults", strings.NewReader(`{"notify_drop_rate":2}`))
	if r := do(t, bad); r.status != http.StatusBadRequest {
		t.Errorf("PUT /sim/faults with a rate of 2 = %d, want 400", r.status)
	}
}
