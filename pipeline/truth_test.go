package pipeline_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/pipeline"
	"github.com/wxcombine/orderworker/wechat"
	"github.com/wxcombine/orderworker/wechat/wechatsim"
)

// lossyPayer calls WeChat Pay (the simulator) but loses the answers of the
// next `lose` creates, as a timeout does: after WeChat Pay acted on the
// request when reach is set, before it otherwise.
type lossyPayer struct {
	*wechat.Client
	lose  atomic.Int64
	reach bool
}

func (p *lossyPayer) CreateCombineOrder(ctx context.Context, t wechat.TradeType, req *wechat.CombineOrderRequest) (*wechat.PrepayResult, error) {
	if p.lose.Add(-1) >= 0 {
		if p.reach {
			_, _ = p.Client.CreateCombineOrder(ctx, t, req)
		}
		return nil, &wechat.TransportError{Op: "POST " + t.Path(), Err: context.DeadlineExceeded}
	}
	return p.Client.CreateCombineOrder(ctx, t, req)
}

func (e *env) state(no string) string {
	e.t.Helper()
	info, ok := e.sim.Order(testMchID, no)
	if !ok || info.Order == nil {
		return "NONE"
	}
	return info.Order.SubOrders[0].TradeState
}

// Answers lost until the delivery limit, the order exists unpaid: the
// identical body recovers WeChat Pay's prepay_id, and the order succeeds.
func TestTruth_unknownOutcomesRecovered(t *testing.T) {
	t.Parallel()
	e := newEnv(t, wechat.FlavourMerchant, wechatsim.FaultConfig{})
	p := &lossyPayer{Client: e.client, reach: true}
	p.lose.Store(8) // every call of both deliveries (4 each)
	e.startWorker(workerOpts{maxDeliver: 2, payer: p})
	e.publishJob(newJob(wechat.TradeTypeJSAPI, "TRUTH001"))
	o := e.waitFor(30*time.Second, "the recovered prepay", func(o outcomes) bool { return len(o.created["TRUTH001"]) == 1 })
	info, _ := e.sim.Order(testMchID, "TRUTH001")
	if got := o.created["TRUTH001"][0].PrepayID; info.Answer == nil || got != info.Answer.PrepayID {
		t.Errorf("prepay_id = %q, want the one WeChat Pay issued (%+v)", got, info.Answer)
	}
	if len(o.failed) != 0 || len(o.deadLetters) != 0 {
		t.Errorf("failures %v, dead letters %d, want none", o.failed, len(o.deadLetters))
	}
}

// Answers lost until the delivery limit and after: the order is closed at
// WeChat Pay, and the final failure says so.
func TestTruth_unknownOutcomesClosed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, wechat.FlavourMerchant, wechatsim.FaultConfig{})
	p := &lossyPayer{Client: e.client, reach: true}
	p.lose.Store(1 << 30)
	e.startWorker(workerOpts{maxDeliver: 2, payer: p})
	e.publishJob(newJob(wechat.TradeTypeJSAPI, "TRUTH002"))
	o := e.waitFor(30*time.Second, "the closed order's failure", func(o outcomes) bool { return len(o.failed["TRUTH002"]) == 1 })
	f := o.failed["TRUTH002"][0]
	if f.Code != events.CodeOrderClosed || !f.Final || !f.RetryWithNewOrderNumber {
		t.Errorf("failure = %+v, want a final ORDER_CLOSED asking for new order numbers", f)
	}
	if got := e.state("TRUTH002"); got != wechat.TradeStateClosed {
		t.Errorf("WeChat Pay's state = %s, want CLOSED", got)
	}
	if c := o.closed["TRUTH002"]; len(c) != 1 || c[0].Reason != events.ClosedUnrecoverable {
		t.Errorf("orders.closed = %+v, want one, unrecoverable", c)
	}
	if ids := o.ids["TRUTH002"]; len(ids) != 1 || ids[0] != events.OutcomeMsgID(testMchID, "TRUTH002") {
		t.Errorf("Nats-Msg-Id = %v, want the order's outcome id", ids)
	}
}

// The order's prepay was published, then its record expired; a late
// duplicate gets no answer to its creates until the delivery limit, finds
// the order unpaid, and cannot have its prepay_id again. The payments-seen
// record says a checkout may hold that prepay: the order is left open (not
// closed behind the checkout's back), and the job ends with a failure that
// is not the order's.
func TestTruth_publishedPrepayKeptOpen(t *testing.T) {
	t.Parallel()
	e := newEnv(t, wechat.FlavourMerchant, wechatsim.FaultConfig{})
	p := &lossyPayer{Client: e.client, reach: true}
	e.startWorker(workerOpts{maxDeliver: 2, payer: p, outcomeTTL: time.Second, duplicateWindow: time.Second,
		reconcile: &pipeline.ReconcileConfig{Schedule: []time.Duration{time.Hour}, UnpaidCloseAfter: 2 * time.Hour}})
	job := newJob(wechat.TradeTypeJSAPI, "TRUTH010")
	e.publishJob(job)
	o := e.waitFor(15*time.Second, "the prepay", func(o outcomes) bool { return len(o.created["TRUTH010"]) == 1 })
	prepay := o.created["TRUTH010"][0].PrepayID
	time.Sleep(1500 * time.Millisecond) // past the outcome record's one second
	p.lose.Store(1 << 30)
	e.publish((events.Subjects{}).Job(job.TradeType), mustJSON(t, job), "late-TRUTH010")
	// The failure is published before the dead letter: wait for both.
	o = e.waitFor(30*time.Second, "the late duplicate's failure and dead letter", func(o outcomes) bool {
		return len(o.failed["TRUTH010"]) == 1 && len(o.deadLetters) >= 1
	})
	if f := o.failed["TRUTH010"][0]; f.Code != events.CodeRetriesExhausted || f.Final || f.RetryWithNewOrderNumber {
		t.Errorf("failure = %+v, want a non-final RETRIES_EXHAUSTED (the same job may be sent again)", f)
	}
	if got := e.state("TRUTH010"); got != wechat.TradeStateNotPay {
		t.Errorf("WeChat Pay's state = %s, want NOTPAY: the published prepay %s must stay payable", got, prepay)
	}
	if c := o.closed["TRUTH010"]; len(c) != 0 {
		t.Errorf("orders.closed = %+v, want none", c)
	}
	if len(o.deadLetters) != 1 {
		t.Errorf("%d dead letters, want the late duplicate's", len(o.deadLetters))
	}
	// Once WeChat Pay answers again, the same job gets the same prepay.
	p.lose.Store(0)
	e.publish((events.Subjects{}).Job(job.TradeType), mustJSON(t, job), "again-TRUTH010")
	o = e.waitFor(30*time.Second, "the prepay again", func(o outcomes) bool { return len(o.created["TRUTH010"]) >= 2 })
	if got := o.created["TRUTH010"][len(o.created["TRUTH010"])-1].PrepayID; got != prepay {
		t.Errorf("prepay_id %s, want the published %s", got, prepay)
	}
}

// Nothing reached WeChat Pay until the delivery limit: the failure says the
// order does not exist and the same job may be sent again, which then
// succeeds.
func TestTruth_unknownOutcomesNotCreated(t *testing.T) {
	t.Parallel()
	e := newEnv(t, wechat.FlavourMerchant, wechatsim.FaultConfig{})
	p := &lossyPayer{Client: e.client}
	p.lose.Store(8)
	e.startWorker(workerOpts{maxDeliver: 2, payer: p})
	job := newJob(wechat.TradeTypeJSAPI, "TRUTH003")
	e.publishJob(job)
	o := e.waitFor(30*time.Second, "the failure", func(o outcomes) bool { return len(o.failed["TRUTH003"]) == 1 })
	if f := o.failed["TRUTH003"][0]; f.Code != events.CodeOrderNotCreated || f.Final || f.RetryWithNewOrderNumber {
		t.Errorf("failure = %+v, want ORDER_NOT_CREATED, not final, same order number", f)
	}
	if got := e.state("TRUTH003"); got != "NONE" {
		t.Errorf("WeChat Pay's state = %s, want no order", got)
	}
	e.publish((events.Subjects{}).Job(job.TradeType), mustJSON(t, job), "again-TRUTH003")
	e.waitFor(30*time.Second, "the prepay of the job sent again", func(o outcomes) bool { return len(o.created["TRUTH003"]) == 1 })
}

// The record is lost (Redis restarted without persistence) after the order
// was paid: a late duplicate gets the payment, never a failure.
func TestTruth_recordLostPaid(t *testing.T) {
	t.Parallel()
	e := newEnv(t, wechat.FlavourMerchant, wechatsim.FaultConfig{})
	e.startWorker(workerOpts{})
	job := newJob(wechat.TradeTypeJSAPI, "TRUTH004")
	e.publishJob(job)
	e.waitFor(15*time.Second, "the prepay", func(o outcomes) bool { return len(o.created["TRUTH004"]) == 1 })
	if _, err := e.sim.Pay(t.Context(), testMchID, "TRUTH004"); err != nil {
		t.Fatal(err)
	}
	e.redis.Stop()
	e.redis.Start() // empty: no persistence
	e.publish((events.Subjects{}).Job(job.TradeType), mustJSON(t, job), "late-TRUTH004")
	o := e.waitFor(30*time.Second, "the payment", func(o outcomes) bool { return len(o.payments["TRUTH004"]) == 1 })
	pay := o.payments["TRUTH004"][0]
	info, _ := e.sim.Order(testMchID, "TRUTH004")
	for i, s := range pay.SubOrders {
		want := info.Order.SubOrders[i]
		if s.TradeState != wechat.TradeStateSuccess || s.TransactionID != want.TransactionID || s.Amount.TotalAmount != want.Amount.TotalAmount {
			t.Errorf("sub-order %d = %+v, want WeChat Pay's %+v", i, s, want)
		}
	}
	time.Sleep(300 * time.Millisecond) // anything else the duplicate published is stored by now
	if o := e.read(); len(o.failed) != 0 || len(o.deadLetters) != 0 {
		t.Errorf("failures %v, dead letters %d, want none for a paid order", o.failed, len(o.deadLetters))
	}
}

// createAtWeChat creates the order straight at WeChat Pay, as a job whose
// record was lost did.
func (e *env) createAtWeChat(job events.CreateOrderJob) {
	e.t.Helper()
	if _, err := e.client.CreateCombineOrder(e.t.Context(), job.TradeType, &job.Request); err != nil {
		e.t.Fatal(err)
	}
}

// The order was created and closed, and the record is gone: create answers
// ORDER_CLOSED, WeChat Pay confirms, and the failure is final.
func TestTruth_recordLostClosed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, wechat.FlavourMerchant, wechatsim.FaultConfig{})
	job := newJob(wechat.TradeTypeJSAPI, "TRUTH005")
	e.createAtWeChat(job)
	req := wechat.CloseRequestFor(&job.Request)
	if err := e.client.Close(t.Context(), testMchID, "TRUTH005", &req); err != nil {
		t.Fatal(err)
	}
	e.startWorker(workerOpts{})
	e.publishJob(job)
	o := e.waitFor(15*time.Second, "the failure", func(o outcomes) bool { return len(o.failed["TRUTH005"]) == 1 })
	if f := o.failed["TRUTH005"][0]; f.Code != events.CodeOrderClosed || !f.Final || !f.RetryWithNewOrderNumber {
		t.Errorf("failure = %+v, want a final ORDER_CLOSED", f)
	}
	if c := o.closed["TRUTH005"]; len(c) != 1 || c[0].Reason != events.ClosedAtWeChat {
		t.Errorf("orders.closed = %+v, want one, closed_at_wechat", c)
	}
}

// The number belongs to an unpaid order with other parameters whose record
// is gone: the job is refused as a conflict, and nothing is stored as the
// order's outcome.
func TestTruth_recordLostOtherParameters(t *testing.T) {
	t.Parallel()
	e := newEnv(t, wechat.FlavourMerchant, wechatsim.FaultConfig{})
	first := newJob(wechat.TradeTypeJSAPI, "TRUTH006")
	e.createAtWeChat(first)
	other := newJob(wechat.TradeTypeJSAPI, "TRUTH006")
	other.Request.SubOrders[0].Amount.TotalAmount++
	e.startWorker(workerOpts{})
	e.publishJob(other)
	o := e.waitFor(15*time.Second, "the refusal", func(o outcomes) bool { return len(o.failed["TRUTH006"]) == 1 && len(o.deadLetters) == 1 })
	if f := o.failed["TRUTH006"][0]; f.Code != "OUT_TRADE_NO_USED" || f.Final || !f.RetryWithNewOrderNumber {
		t.Errorf("failure = %+v, want OUT_TRADE_NO_USED, not final, new order number", f)
	}
	if dl := o.deadLetters[0]; dl.Reason != events.ReasonConflict {
		t.Errorf("dead letter reason = %s, want conflict", dl.Reason)
	}
	if got := e.state("TRUTH006"); got != wechat.TradeStateNotPay {
		t.Errorf("WeChat Pay's state = %s, want the first order still NOTPAY", got)
	}
	// The first job, sent now, still gets its order's prepay_id.
	e.publish((events.Subjects{}).Job(first.TradeType), mustJSON(t, first), "first-TRUTH006")
	e.waitFor(15*time.Second, "the first job's prepay", func(o outcomes) bool { return len(o.created["TRUTH006"]) == 1 })
}

var _ pipeline.Payer = (*lossyPayer)(nil)
