package notifier_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxcombine/orderworker/notifier"
	"github.com/wxcombine/orderworker/wechat"
	"github.com/wxcombine/orderworker/wechat/wechatsim"
)

const (
	testAppID    = "wxd678efh567hg6787"
	testMchCert  = "3775B6A45ACD588826D15E583A95F5DD9C0C2F2F"
	notifySpeed  = 1000 // the 15 s first retry becomes 15 ms
	deliverLimit = 15 * time.Second
)

// simEnv is the simulator (WeChat Pay) with a client for its API.
type simEnv struct {
	sim    *wechatsim.Server
	client *wechat.Client
}

// startSim starts a simulator that signs notifications with either platform
// key at random (migration mode) and retries them 1000× faster than WeChat
// Pay.
func startSim(t *testing.T, k *testKeys, faults wechatsim.FaultConfig) *simEnv {
	t.Helper()
	mk, err := wechat.ParsePrivateKey(readTestdata(t, "merchant_key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	sim, err := wechatsim.New(wechatsim.Config{
		Merchants: []wechatsim.MerchantConfig{{
			MchID: testMchID, Serial: testMchCert, PublicKey: mk.Public(), APIv3Key: k.apiV3, AppIDs: []string{testAppID},
		}},
		Platform: &wechatsim.Platform{
			CertKey: k.certKey, CertSerial: k.certSerial, CertPEM: k.certPEM,
			PubKey: k.pubKey, PubKeyID: testPubKeyID,
		},
		Mode:          wechatsim.ModeMigration,
		NotifySpeedup: notifySpeed,
		Faults:        faults,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	base, err := sim.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := k.merchant()
	m.Serial, m.PrivateKey = testMchCert, mk
	client, err := wechat.New(wechat.Config{BaseURL: base, Flavour: wechat.FlavourMerchant, Merchants: []*wechat.Merchant{m}})
	if err != nil {
		t.Fatal(err)
	}
	return &simEnv{sim: sim, client: client}
}

// order creates a jsapi combine order whose notify_url is notifyURL and pays
// it; the simulator starts delivering the notification.
func (e *simEnv) order(t *testing.T, no, notifyURL string) *wechat.CombineOrder {
	t.Helper()
	e.create(t, no, notifyURL)
	return e.pay(t, no)
}

// create creates a jsapi combine order whose notify_url is notifyURL.
func (e *simEnv) create(t *testing.T, no, notifyURL string) {
	t.Helper()
	req := &wechat.CombineOrderRequest{
		CombineAppID:      testAppID,
		CombineMchID:      testMchID,
		CombineOutTradeNo: no,
		SceneInfo:         &wechat.SceneInfo{DeviceID: "POS1:123", PayerClientIP: "14.17.22.32"},
		SubOrders: []wechat.SubOrder{
			{MchID: testMchID, Attach: "shop 1", Amount: wechat.Amount{TotalAmount: 100, Currency: "CNY"}, OutTradeNo: no + "a", Description: "tea"},
			{MchID: testMchID, Attach: "shop 1", Amount: wechat.Amount{TotalAmount: 250, Currency: "CNY"}, OutTradeNo: no + "b", Description: "cake"},
		},
		CombinePayerInfo: &wechat.PayerInfo{OpenID: testOpenID},
		NotifyURL:        notifyURL,
	}
	if _, err := e.client.CreateCombineOrder(t.Context(), wechat.TradeTypeJSAPI, req); err != nil {
		t.Fatalf("CreateCombineOrder: %v", err)
	}
}

// pay pays order no; the simulator starts delivering the notification.
func (e *simEnv) pay(t *testing.T, no string) *wechat.CombineOrder {
	t.Helper()
	paid, err := e.sim.Pay(t.Context(), testMchID, no)
	if err != nil {
		t.Fatalf("Pay: %v", err)
	}
	return paid
}

// waitDelivered waits until the simulator's notification for no was
// answered 2xx, and answers the order's accounting.
func (e *simEnv) waitDelivered(t *testing.T, no string) wechatsim.OrderInfo {
	t.Helper()
	deadline := time.Now().Add(deliverLimit)
	for {
		info, _ := e.sim.Order(testMchID, no)
		if info.NotifyDelivered {
			return info
		}
		if time.Now().After(deadline) {
			t.Fatalf("notification for %s not delivered after %s (%d attempts)", no, deliverLimit, info.NotifyAttempts)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func notifyURL(b *bundle) string { return b.url + notifier.PathPrefix + testMchID }

// checkEvent checks that the stream holds exactly one event, for paid.
func checkEvent(t *testing.T, b *bundle, paid *wechat.CombineOrder) {
	t.Helper()
	got, _ := b.storedEvents(t)
	if len(got) != 1 {
		t.Fatalf("stored %d events, want exactly 1", len(got))
	}
	e := got[0]
	if e.CombineOutTradeNo != paid.CombineOutTradeNo || len(e.SubOrders) != len(paid.SubOrders) {
		t.Fatalf("event for %s with %d sub-orders, want %s with %d", e.CombineOutTradeNo, len(e.SubOrders), paid.CombineOutTradeNo, len(paid.SubOrders))
	}
	for i, s := range paid.SubOrders {
		g := e.SubOrders[i]
		if g.TransactionID != s.TransactionID || g.TradeState != wechat.TradeStateSuccess || g.Amount.TotalAmount != s.Amount.TotalAmount {
			t.Errorf("sub-order %d = %s %s %d, want %s SUCCESS %d", i, g.TransactionID, g.TradeState, g.Amount.TotalAmount, s.TransactionID, s.Amount.TotalAmount)
		}
	}
	if e.PayerOpenID != "" {
		t.Errorf("payer_openid = %q, want it withheld", e.PayerOpenID)
	}
}

func TestHandler_simulator_paid(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	e := startSim(t, b.keys, wechatsim.FaultConfig{})
	paid := e.order(t, "SIM1001", notifyURL(b))
	if info := e.waitDelivered(t, "SIM1001"); info.NotifyAttempts != 1 {
		t.Errorf("notify attempts = %d, want 1", info.NotifyAttempts)
	}
	checkEvent(t, b, paid)
}

// TestHandler_simulator_redelivered has a proxy in front of the notifier
// that forwards every attempt but answers WeChat Pay 500 twice, so the
// simulator delivers the same notification three times.
func TestHandler_simulator_redelivered(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	e := startSim(t, b.keys, wechatsim.FaultConfig{})
	var attempts atomic.Int32
	var statuses [3]atomic.Int32
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		target, _ := url.JoinPath(b.url, r.URL.Path)
		req, _ := http.NewRequestWithContext(r.Context(), r.Method, target, bytes.NewReader(body))
		req.Header = r.Header.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		resp.Body.Close()
		n := attempts.Add(1)
		if n <= 3 {
			statuses[n-1].Store(int32(resp.StatusCode))
		}
		if n < 3 {
			w.WriteHeader(http.StatusInternalServerError) // lost answer: WeChat Pay retries
			return
		}
		w.WriteHeader(resp.StatusCode)
	}))
	t.Cleanup(proxy.Close)

	paid := e.order(t, "SIM2001", proxy.URL+notifier.PathPrefix+testMchID)
	if info := e.waitDelivered(t, "SIM2001"); info.NotifyAttempts != 3 {
		t.Errorf("notify attempts = %d, want 3", info.NotifyAttempts)
	}
	want := []int32{http.StatusNoContent, http.StatusOK, http.StatusOK}
	for i := range want {
		if got := statuses[i].Load(); got != want[i] {
			t.Errorf("notifier answer to delivery %d = %d, want %d", i+1, got, want[i])
		}
	}
	checkEvent(t, b, paid)
}

// TestHandler_simulator_probes has the simulator precede every delivery
// with a WECHATPAY/SIGNTEST/ probe, which must be refused.
func TestHandler_simulator_probes(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	e := startSim(t, b.keys, wechatsim.FaultConfig{})
	e.create(t, "SIM3001", notifyURL(b))
	// Probes on API answers too would fail the create; start them now.
	if err := e.sim.SetFaults(wechatsim.FaultConfig{SignTestRate: 1}); err != nil {
		t.Fatal(err)
	}
	paid := e.pay(t, "SIM3001")
	e.waitDelivered(t, "SIM3001")
	st := e.sim.Stats().Notifications
	if st.Probes == 0 || st.ProbesAccepted != 0 {
		t.Errorf("probes sent %d, accepted %d; want some sent and none accepted", st.Probes, st.ProbesAccepted)
	}
	if got := b.results.count(notifier.ResultSignatureProbe); got != int(st.Probes) {
		t.Errorf("results[signature_probe] = %d, want %d", got, st.Probes)
	}
	checkEvent(t, b, paid)
}

// TestHandler_simulator_natsOutage stops NATS before the payment: every
// delivery is answered 500 and nothing is acknowledged. Once NATS is back,
// the simulator's next retry is stored, exactly once.
func TestHandler_simulator_natsOutage(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *notifier.Config) { c.PublishTimeout = 500 * time.Millisecond })
	e := startSim(t, b.keys, wechatsim.FaultConfig{})
	b.nats.Stop()
	paid := e.order(t, "SIM4001", notifyURL(b))

	deadline := time.Now().Add(deliverLimit)
	for b.results.count(notifier.ResultPublishError) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no two failed deliveries within %s", deliverLimit)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if info, _ := e.sim.Order(testMchID, "SIM4001"); info.NotifyDelivered {
		t.Fatal("notification acknowledged while NATS was down")
	}
	b.nats.Start()
	info := e.waitDelivered(t, "SIM4001")
	t.Logf("delivered after %d attempts, %d answered 500", info.NotifyAttempts, b.results.count(notifier.ResultPublishError))
	if got := b.results.count(notifier.ResultOK) + b.results.count(notifier.ResultDuplicate); got != 1 {
		t.Errorf("acknowledged %d deliveries, want 1", got)
	}
	checkEvent(t, b, paid)
}
