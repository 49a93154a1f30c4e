package wechatsim_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxcombine/orderworker/wechat"
	"github.com/wxcombine/orderworker/wechat/wechatsim"
)

// receiver is a notify_url that verifies with wechat.ParseNotification and
// fails the first failFirst deliveries.
type receiver struct {
	t         *testing.T
	merchant  *wechat.Merchant
	failFirst int

	mu       sync.Mutex
	calls    int
	probes   int
	got      []*wechat.Notification
	received chan struct{}
}

func newReceiver(t *testing.T, m *wechat.Merchant, failFirst int) (*receiver, string) {
	r := &receiver{t: t, merchant: m, failFirst: failFirst, received: make(chan struct{}, 16)}
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return r, srv.URL + "/notify"
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	n, err := wechat.ParseNotification(r.merchant, req.Header, body)
	if err != nil {
		if strings.HasPrefix(req.Header.Get(wechat.HeaderSignature), wechat.SignTestPrefix) && errors.Is(err, wechat.ErrSignature) {
			r.probes++
		} else {
			r.t.Errorf("ParseNotification() = %v", err)
		}
		http.Error(w, `{"code":"FAIL","message":"bad signature"}`, http.StatusUnauthorized)
		return
	}
	if r.failFirst > 0 {
		r.failFirst--
		http.Error(w, `{"code":"FAIL","message":"busy"}`, http.StatusInternalServerError)
		return
	}
	r.got = append(r.got, n)
	w.WriteHeader(http.StatusNoContent)
	r.received <- struct{}{}
}

func (r *receiver) wait(t *testing.T) {
	t.Helper()
	select {
	case <-r.received:
	case <-time.After(10 * time.Second):
		t.Fatal("no notification delivered within 10s")
	}
}

// waitDelivered waits until the simulator has recorded n deliveries.
func waitDelivered(t *testing.T, s *wechatsim.Server, n int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.Stats().Notifications.Delivered < n {
		if time.Now().After(deadline) {
			t.Fatalf("Stats().Notifications = %+v, want %d delivered", s.Stats().Notifications, n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestServer_Notification(t *testing.T) {
	for _, mode := range []wechatsim.KeyMode{wechatsim.ModeCert, wechatsim.ModePublicKey, wechatsim.ModeMigration} {
		t.Run(string(mode), func(t *testing.T) {
			e := newEnv(t, wechatsim.Config{Mode: mode, NotifySpeedup: 1000}) // 15s → 15ms
			rcv, url := newReceiver(t, e.merchant, 2)
			no := newNo("N")
			req := merchantOrder(no, url)
			if _, err := e.client.CreateCombineOrder(t.Context(), wechat.TradeTypeJSAPI, req); err != nil {
				t.Fatalf("CreateCombineOrder() = %v", err)
			}
			paid, err := e.sim.Pay(t.Context(), mchA, no)
			if err != nil {
				t.Fatalf("Pay() = %v", err)
			}
			rcv.wait(t)
			rcv.mu.Lock()
			n := rcv.got[0]
			calls := rcv.calls
			rcv.mu.Unlock()
			if calls != 3 {
				t.Errorf("receiver saw %d deliveries, want 3 (two refused, then accepted)", calls)
			}
			if n.Envelope.EventType != wechat.EventTransactionSuccess || n.Envelope.Summary != "支付成功" ||
				n.Envelope.Resource.AssociatedData != "transaction" || len(n.Envelope.Resource.Nonce) != 12 {
				t.Errorf("envelope = %+v, want a TRANSACTION.SUCCESS envelope", n.Envelope)
			}
			if n.Transaction.CombineOutTradeNo != no || len(n.Transaction.SubOrders) != 2 ||
				n.Transaction.SubOrders[1].TransactionID != paid.SubOrders[1].TransactionID ||
				n.Transaction.SubOrders[1].Attach != "shop B" {
				t.Errorf("decrypted transaction = %+v, want the paid order %+v", n.Transaction, paid)
			}
			if _, err := e.sim.Pay(t.Context(), mchA, no); !errors.Is(err, wechatsim.ErrOrderPaid) {
				t.Errorf("second Pay() = %v, want ErrOrderPaid", err)
			}
			waitDelivered(t, e.sim, 1)
			st := e.sim.Stats().Notifications
			if st.Delivered != 1 || st.Failed != 2 || st.Attempts != 3 {
				t.Errorf("Stats().Notifications = %+v, want 1 delivered, 2 failed, 3 attempts", st)
			}
			info, _ := e.sim.Order(mchA, no)
			if !info.NotifyDelivered || info.NotifyAttempts != 3 {
				t.Errorf("Order() notify = %d attempts, delivered %t, want 3 and true", info.NotifyAttempts, info.NotifyDelivered)
			}
		})
	}
}

func TestServer_NotificationProbe(t *testing.T) {
	e := newEnv(t, wechatsim.Config{NotifySpeedup: 1000, Faults: wechatsim.FaultConfig{SignTestRate: 1}})
	rcv, url := newReceiver(t, e.merchant, 0)
	no := newNo("S")
	if _, err := e.client.CreateCombineOrder(t.Context(), wechat.TradeTypeJSAPI, merchantOrder(no, url)); !errors.Is(err, wechat.ErrSignature) {
		t.Fatalf("create answered with a probe = %v, want ErrSignature", err)
	}
	if _, err := e.sim.Pay(t.Context(), mchA, no); err != nil {
		t.Fatalf("Pay() = %v", err)
	}
	rcv.wait(t)
	rcv.mu.Lock()
	probes := rcv.probes
	rcv.mu.Unlock()
	waitDelivered(t, e.sim, 1)
	st := e.sim.Stats().Notifications
	if probes != 1 || st.Probes != 1 || st.ProbesAccepted != 0 || st.Delivered != 1 {
		t.Errorf("receiver saw %d probes; Stats().Notifications = %+v, want 1 probe refused then 1 delivery", probes, st)
	}
}

func TestServer_NotificationStopsOnClose(t *testing.T) {
	e := newEnv(t, wechatsim.Config{}) // real schedule: the first retry waits 15s
	_, url := newReceiver(t, e.merchant, 100)
	no := newNo("X")
	if _, err := e.client.CreateCombineOrder(t.Context(), wechat.TradeTypeJSAPI, merchantOrder(no, url)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.sim.Pay(t.Context(), mchA, no); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for e.sim.Stats().Notifications.Failed == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	e.sim.Close()
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close() took %s with a retry pending, want it to return promptly", d)
	}
	if p := e.sim.Stats().Notifications.Pending; p != 0 {
		t.Errorf("Stats().Notifications.Pending = %d after Close, want 0", p)
	}
}

func TestServer_Admin(t *testing.T) {
	e := newEnv(t, wechatsim.Config{NotifySpeedup: 1000})
	rcv, url := newReceiver(t, e.merchant, 0)
	no := newNo("M")
	if _, err := e.client.CreateCombineOrder(t.Context(), wechat.TradeTypeJSAPI, merchantOrder(no, url)); err != nil {
		t.Fatal(err)
	}
	call := func(method, path, body string) (int, []byte) {
		req, err := http.NewRequest(method, e.url+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp := do(t, req)
		return resp.status, resp.body
	}
	if status, body := call("POST", "/sim/pay/"+mchA+"/"+no, ""); status != 200 || !strings.Contains(string(body), `"trade_state": "SUCCESS"`) {
		t.Fatalf("POST /sim/pay = %d %s, want 200 with the paid order", status, body)
	}
	rcv.wait(t)
	if status, _ := call("POST", "/sim/pay/"+mchA+"/"+no, ""); status != http.StatusConflict {
		t.Errorf("second POST /sim/pay = %d, want 409", status)
	}
	if status, _ := call("POST", "/sim/pay/"+mchA+"/nope", ""); status != http.StatusNotFound {
		t.Errorf("POST /sim/pay of an unknown order = %d, want 404", status)
	}
	status, body := call("GET", "/sim/orders/"+mchA+"/"+no, "")
	var info wechatsim.OrderInfo
	if err := json.Unmarshal(body, &info); status != 200 || err != nil || info.CreateCalls != 1 || info.Order == nil ||
		info.Order.SubOrders[0].TradeState != wechat.TradeStateSuccess {
		t.Errorf("GET /sim/orders = %d %s, want the paid order with 1 create call", status, body)
	}
	status, body = call("GET", "/sim/stats", "")
	var st wechatsim.Stats
	if err := json.Unmarshal(body, &st); status != 200 || err != nil || st.Orders != 1 || st.Paid != 1 || st.CreateCalls != 1 || st.Requests[wechatsim.OpCreate] != 1 {
		t.Errorf("GET /sim/stats = %d %s, want 1 order, paid, 1 create", status, body)
	}
	status, body = call("PUT", "/sim/faults", `{"system_error_rate":0.5,"latency":"20ms"}`)
	if f := e.sim.Faults(); status != 200 || f.SystemErrorRate != 0.5 || f.Latency != 20*time.Millisecond {
		t.Errorf("PUT /sim/faults = %d %s; Faults() = %+v, want rate 0.5 and latency 20ms", status, body, f)
	}
	if status, _ := call("PUT", "/sim/faults", `{"system_error_rate":2}`); status != 400 {
		t.Errorf("PUT /sim/faults with a rate of 2 = %d, want 400", status)
	}
}
