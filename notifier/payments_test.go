package notifier_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wxcombine/orderworker/idempotency"
	"github.com/wxcombine/orderworker/metrics"
	"github.com/wxcombine/orderworker/notifier"
	"github.com/wxcombine/orderworker/wechat"
)

// A verified notification that is not a consistent payment publishes
// nothing, is counted, and is answered 200 (WeChat Pay need not re-send it).
func TestHandler_notPaid(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *notifier.Config) { c.Anomalies = metrics.NewPaymentAnomalies(prometheus.NewRegistry()) })
	cases := map[string]func(*wechat.CombineOrder){
		"NOTPAY":          func(o *wechat.CombineOrder) { o.SubOrders[1].TradeState = wechat.TradeStateNotPay },
		"REFUND":          func(o *wechat.CombineOrder) { o.SubOrders[0].TradeState = wechat.TradeStateRefund },
		"PAYERROR":        func(o *wechat.CombineOrder) { o.SubOrders[0].TradeState = wechat.TradeStatePayError },
		"CLOSED":          func(o *wechat.CombineOrder) { o.SubOrders[0].TradeState = wechat.TradeStateClosed },
		"payer above due": func(o *wechat.CombineOrder) { o.SubOrders[0].Amount.PayerAmount = 11 },
		"no transaction":  func(o *wechat.CombineOrder) { o.SubOrders[1].TransactionID = "" },
	}
	i := 0
	for name, edit := range cases {
		tx := paidOrder("NP" + string(rune('A'+i)))
		i++
		edit(tx)
		status, body := b.post(t, testMchID, notification(t, b.keys.pubKey, testPubKeyID, b.keys.apiV3, "EV-NP-"+name, tx, time.Now()))
		if status != http.StatusOK {
			t.Errorf("%s: status %d %s, want 200", name, status, body)
		}
	}
	// A promotion paid part of it: payer_amount below total_amount is a payment.
	promo := paidOrder("NPPROMO")
	promo.SubOrders[1].Amount.PayerAmount = 2000
	if status, body := b.post(t, testMchID, notification(t, b.keys.pubKey, testPubKeyID, b.keys.apiV3, "EV-PROMO", promo, time.Now())); status != http.StatusNoContent {
		t.Errorf("promotion: status %d %s, want 204", status, body)
	}
	got, _ := b.storedEvents(t)
	if len(got) != 1 || got[0].CombineOutTradeNo != "NPPROMO" || got[0].SubOrders[1].Amount.PayerAmount != 2000 {
		t.Errorf("stored %+v, want only the promotion's payment", got)
	}
	if n := b.results.count(notifier.ResultNotPaid); n != len(cases) {
		t.Errorf("results[not_paid] = %d, want %d", n, len(cases))
	}
}

// seenRecord is an in-memory idempotency.Seen.
type seenRecord struct {
	mu   sync.Mutex
	seen map[idempotency.Key]bool
	err  error
}

func (s *seenRecord) Seen(_ context.Context, _ idempotency.SeenKind, k idempotency.Key) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[k], s.err
}

func (s *seenRecord) MarkSeen(_ context.Context, _ idempotency.SeenKind, k idempotency.Key, _ time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	s.seen[k] = true
	return nil
}

// A payment the record has (published earlier, by a notification or the
// reconciler) is not published again, however long after; a record that
// cannot be read answers 500 so WeChat Pay retries.
func TestHandler_paymentsSeen(t *testing.T) {
	t.Parallel()
	rec := &seenRecord{seen: map[idempotency.Key]bool{{MchID: testMchID, OutTradeNo: "SEEN1"}: true}}
	b := setup(t, func(c *notifier.Config) { c.Seen = rec })
	post := func(no, id string) int {
		status, _ := b.post(t, testMchID, notification(t, b.keys.pubKey, testPubKeyID, b.keys.apiV3, id, paidOrder(no), time.Now()))
		return status
	}
	if s := post("SEEN1", "EV-S1"); s != http.StatusOK {
		t.Errorf("payment already seen: status %d, want 200", s)
	}
	if s := post("SEEN2", "EV-S2"); s != http.StatusNoContent {
		t.Errorf("new payment: status %d, want 204", s)
	}
	if !rec.seen[idempotency.Key{MchID: testMchID, OutTradeNo: "SEEN2"}] {
		t.Error("new payment not recorded as seen")
	}
	rec.mu.Lock()
	rec.err = idempotency.ErrUnavailable
	rec.mu.Unlock()
	if s := post("SEEN3", "EV-S3"); s != http.StatusInternalServerError {
		t.Errorf("record unavailable: status %d, want 500", s)
	}
	got, _ := b.storedEvents(t)
	if len(got) != 1 || got[0].CombineOutTradeNo != "SEEN2" {
		t.Errorf("stored %+v, want only SEEN2", got)
	}
}
