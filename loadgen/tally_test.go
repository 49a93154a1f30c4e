package loadgen

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/wechat"
	"github.com/wxcombine/orderworker/wechat/wechatsim"
)

// scenario drives a tally with synthetic publications and events.
type scenario struct {
	t     *Tally
	start time.Time
}

func newScenario() *scenario {
	return &scenario{t: NewTally("RUN1"), start: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func key(n string) OrderKey { return OrderKey{MchID: "1900000109", OutTradeNo: "RUN1" + n} }

// send publishes order n of kind k, acknowledged.
func (s *scenario) send(n string, k Kind) *Job {
	j := &Job{Key: key(n), Kind: k, TradeType: "jsapi", CreatedAt: s.start}
	s.t.Sent(j)
	s.t.Acked(j, false, s.start)
	return j
}

func (s *scenario) created(n, prepay string, after time.Duration) bool {
	k := key(n)
	return s.t.Created(&events.PrepayCreated{CombineMchID: k.MchID, CombineOutTradeNo: k.OutTradeNo, PrepayID: prepay, Attempts: 1}, s.start.Add(after))
}

func (s *scenario) failed(n, code string) {
	k := key(n)
	s.t.Failed(&events.PrepayFailed{CombineMchID: k.MchID, CombineOutTradeNo: k.OutTradeNo, Code: code, Attempts: 0}, s.start.Add(time.Millisecond))
}

// failedForGood records a final failure: the order's outcome.
func (s *scenario) failedForGood(n, code string) {
	k := key(n)
	s.t.Failed(&events.PrepayFailed{CombineMchID: k.MchID, CombineOutTradeNo: k.OutTradeNo, Code: code, Final: true}, s.start.Add(time.Millisecond))
}

func (s *scenario) dead(n string) {
	k := key(n)
	s.t.DeadLettered(&events.DeadLetter{Reason: events.ReasonInvalid, CombineMchID: k.MchID, CombineOutTradeNo: k.OutTradeNo})
}

func (s *scenario) deadSeq(n string, seq uint64) {
	k := key(n)
	s.t.DeadLettered(&events.DeadLetter{Reason: events.ReasonInvalid, CombineMchID: k.MchID, CombineOutTradeNo: k.OutTradeNo, StreamSequence: seq})
}

func (s *scenario) paid(n, txn string) {
	k := key(n)
	s.t.PaymentSucceeded(&events.PaymentSucceeded{CombineMchID: k.MchID, CombineOutTradeNo: k.OutTradeNo, CombineTransactionID: txn})
}

func TestTally_Violations(t *testing.T) {
	tests := []struct {
		name     string
		play     func(s *scenario)
		creates  map[OrderKey]int
		maxCreat int
		want     map[string]int // violation counts by kind
	}{
		{"every order one outcome", func(s *scenario) {
			s.send("1", KindValid)
			s.send("2", KindValid)
			s.send("3", KindInvalid)
			s.created("1", "wx1", 10*time.Millisecond)
			s.created("2", "wx2", 20*time.Millisecond)
			s.failed("3", events.CodeInvalidJob)
			s.dead("3")
		}, nil, 0, map[string]int{}},
		{"republished identical outcome is no violation", func(s *scenario) {
			s.send("1", KindValid)
			s.send("1", KindValid) // duplicate publication
			s.created("1", "wx1", time.Millisecond)
			s.created("1", "wx1", 2*time.Millisecond)
		}, nil, 0, map[string]int{}},
		{"conflicting prepay_id", func(s *scenario) {
			s.send("1", KindValid)
			s.created("1", "wx1", time.Millisecond)
			s.created("1", "wx2", 2*time.Millisecond)
		}, nil, 0, map[string]int{ViolationConflictingPrepay: 1}},
		{"missing outcome", func(s *scenario) {
			s.send("1", KindValid)
			s.send("2", KindValid)
			s.created("1", "wx1", time.Millisecond)
		}, nil, 0, map[string]int{ViolationMissingOutcome: 1}},
		{"created and failed for good", func(s *scenario) {
			s.send("1", KindValid)
			s.created("1", "wx1", time.Millisecond)
			s.failedForGood("1", "PARAM_ERROR")
		}, nil, 0, map[string]int{ViolationMultipleOutcomes: 1}},
		{"a job refused, then the order created by another job", func(s *scenario) {
			s.send("1", KindValid)
			s.failed("1", "SIGN_ERROR")
			s.dead("1")
			s.created("1", "wx1", time.Millisecond)
		}, nil, 0, map[string]int{}},
		{"invalid job created and not dead-lettered", func(s *scenario) {
			s.send("1", KindInvalid)
			s.created("1", "wx1", time.Millisecond)
		}, nil, 0, map[string]int{ViolationUnexpectedOutcome: 1, ViolationMissingDeadLetter: 1}},
		{"valid job refused as invalid", func(s *scenario) {
			s.send("1", KindValid)
			s.failed("1", "PARAM_ERROR")
		}, nil, 0, map[string]int{ViolationUnexpectedOutcome: 1}},
		{"valid job failing at WeChat Pay is fine", func(s *scenario) {
			s.send("1", KindValid)
			s.failed("1", events.CodeRetriesExhausted)
		}, nil, 0, map[string]int{}},
		{"outcome of an order never published", func(s *scenario) {
			s.created("9", "wx9", time.Millisecond)
			// Another run's order is ignored.
			s.t.Created(&events.PrepayCreated{CombineMchID: "1", CombineOutTradeNo: "OTHER1", PrepayID: "x"}, s.start)
		}, nil, 0, map[string]int{ViolationUnknownOrder: 1}},
		{"publication never acknowledged expects nothing", func(s *scenario) {
			j := &Job{Key: key("1"), Kind: KindValid, CreatedAt: s.start}
			s.t.Sent(j)
			s.t.PublishFailed(j)
		}, nil, 0, map[string]int{}},
		{"payments: missing and duplicate", func(s *scenario) {
			for _, n := range []string{"1", "2", "3"} {
				s.send(n, KindValid)
				s.created(n, "wx"+n, time.Millisecond)
				s.t.PayRequested(key(n), nil)
			}
			s.paid("1", "T1")
			s.paid("1", "T1") // a repeated notification is one payment
			s.paid("2", "T2")
			s.paid("2", "T2b")
		}, nil, 0, map[string]int{ViolationMissingPayment: 1, ViolationDuplicatePayment: 1}},
		{"failed payment expects no event", func(s *scenario) {
			s.send("1", KindValid)
			s.created("1", "wx1", time.Millisecond)
			s.t.PayRequested(key("1"), errors.New("simulator down"))
		}, nil, 0, map[string]int{}},
		{"simulator counts", func(s *scenario) {
			s.send("1", KindValid)
			s.send("2", KindValid)
			s.send("3", KindValid)
			s.send("4", KindInvalid)
			for _, n := range []string{"1", "2", "3"} {
				s.created(n, "wx"+n, time.Millisecond)
			}
			s.failed("4", events.CodeInvalidJob)
			s.dead("4")
		}, map[OrderKey]int{key("1"): 1, key("3"): 3, key("4"): 1}, 2,
			map[string]int{ViolationSimCreateMissing: 1, ViolationSimTooManyCreates: 1, ViolationSimCreatedInvalid: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newScenario()
			tt.play(s)
			r := s.t.Report(tt.creates, tt.maxCreat)
			if diff := cmp.Diff(tt.want, r.ViolationCounts); diff != "" {
				t.Errorf("violation counts (-want +got):\n%s\nviolations: %+v", diff, r.Violations)
			}
			if got, want := r.OK, len(tt.want) == 0; got != want {
				t.Errorf("OK = %v, want %v", got, want)
			}
			if len(r.Violations) != r.ViolationTotal {
				t.Errorf("%d violations listed, total %d", len(r.Violations), r.ViolationTotal)
			}
		})
	}
}

func TestTally_Counts(t *testing.T) {
	s := newScenario()
	for i, n := range []string{"1", "2", "3", "4"} {
		s.send(n, KindValid)
		s.created(n, "wx"+n, time.Duration(i+1)*10*time.Millisecond)
	}
	dup := &Job{Key: key("1"), Kind: KindValid, CreatedAt: s.start, Duplicate: true}
	s.t.Sent(dup)
	s.t.Acked(dup, true, s.start)
	late := &Job{Key: key("2"), Kind: KindValid, CreatedAt: s.start, Duplicate: true, LateDuplicate: true}
	s.t.Sent(late)
	s.t.Acked(late, false, s.start)
	s.created("2", "wx2", time.Second) // republished by the idempotency store
	s.send("5", KindMalformed)
	s.failed("5", events.CodeMalformedJob)
	s.dead("5")

	if o, d, p := s.t.Pending(); o != 0 || d != 0 || p != 0 {
		t.Errorf("Pending() = %d, %d, %d, want 0, 0, 0", o, d, p)
	}
	r := s.t.Report(nil, 0)
	got := struct {
		Published PublishedCounts
		Outcomes  OutcomeCounts
		Latency   Latency
	}{r.Published, r.Outcomes, r.Latency}
	want := struct {
		Published PublishedCounts
		Outcomes  OutcomeCounts
		Latency   Latency
	}{
		PublishedCounts{
			Messages: 7, Orders: 5, ByKind: map[Kind]int{KindValid: 4, KindMalformed: 1},
			ByTradeType: map[wechat.TradeType]int{wechat.TradeTypeJSAPI: 5}, Duplicates: 2, LateDuplicates: 1, DroppedByJetStream: 1,
		},
		OutcomeCounts{
			Created: 4, Failed: 1, FailedByCode: map[string]int{events.CodeMalformedJob: 1},
			Events: 6, Republished: 1, DeadLetters: 1, DeadLettersByReason: map[events.Reason]int{events.ReasonInvalid: 1},
		},
		// Latencies 1, 10, 20, 30, 40 ms.
		Latency{Count: 5, MeanMS: 20.2, P50MS: 20, P90MS: 40, P99MS: 40, MaxMS: 40},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("report (-want +got):\n%s", diff)
	}
	if r.Sim != nil {
		t.Errorf("Sim = %+v without create counts, want nil", r.Sim)
	}
}

func TestTally_Pending(t *testing.T) {
	s := newScenario()
	s.send("1", KindValid)
	s.send("2", KindInvalid)
	s.created("1", "wx1", time.Millisecond)
	s.t.PayRequested(key("1"), nil)
	if o, d, p := s.t.Pending(); o != 1 || d != 1 || p != 1 {
		t.Fatalf("Pending() = %d, %d, %d, want 1, 1, 1", o, d, p)
	}
	s.failed("2", events.CodeInvalidJob)
	s.dead("2")
	s.paid("1", "T1")
	if o, d, p := s.t.Pending(); o != 0 || d != 0 || p != 0 {
		t.Errorf("Pending() = %d, %d, %d, want 0, 0, 0", o, d, p)
	}
}

func TestLatencyOf(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	got := latencyOf(ds)
	want := Latency{Count: 100, MeanMS: 50.5, P50MS: 50, P90MS: 90, P99MS: 99, MaxMS: 100}
	if got != want {
		t.Errorf("latencyOf(1..100ms) = %+v, want %+v", got, want)
	}
	if got := latencyOf(nil); got != (Latency{}) {
		t.Errorf("latencyOf(nil) = %+v, want zero", got)
	}
}

// record answers the simulator's record of order n: created with prepay_id
// wxn, two sub-orders in state (paid ones with transaction ids).
func record(n, state string) wechatsim.OrderInfo {
	k := key(n)
	o := &wechat.CombineOrder{CombineMchID: k.MchID, CombineOutTradeNo: k.OutTradeNo}
	for i, no := range []string{"A", "B"} {
		so := wechat.OrderSubOrder{MchID: k.MchID, OutTradeNo: n + no, TradeState: state, Amount: wechat.Amount{TotalAmount: int64(100 * (i + 1)), Currency: "CNY"}}
		if state == wechat.TradeStateSuccess {
			so.TransactionID, so.Amount.PayerAmount = "4200"+n+no, so.Amount.TotalAmount
		}
		o.SubOrders = append(o.SubOrders, so)
	}
	return wechatsim.OrderInfo{MchID: k.MchID, CombineOutTradeNo: k.OutTradeNo, CreateCalls: 1, Outcomes: map[string]int{"ok:wx" + n: 1}, Order: o}
}

// halfPaid answers order n paid in its first sub-order only.
func halfPaid(n string) wechatsim.OrderInfo {
	info := record(n, wechat.TradeStateSuccess)
	info.Order.SubOrders[1].TradeState = wechat.TradeStateNotPay
	return info
}

// payment answers the payment event that matches a paid record.
func payment(info wechatsim.OrderInfo) *events.PaymentSucceeded {
	p := &events.PaymentSucceeded{CombineMchID: info.MchID, CombineOutTradeNo: info.CombineOutTradeNo, CombineTransactionID: "4200C" + info.CombineOutTradeNo}
	for _, so := range info.Order.SubOrders {
		p.SubOrders = append(p.SubOrders, events.PaidSubOrder{MchID: so.MchID, OutTradeNo: so.OutTradeNo, TransactionID: so.TransactionID, TradeState: so.TradeState,
			Amount: events.PaidAmount{TotalAmount: so.Amount.TotalAmount, Currency: so.Amount.Currency, PayerAmount: so.Amount.PayerAmount}})
	}
	return p
}

// TestTally_Record covers each violation judged by WeChat Pay's record
// (ReportRecord) and by the streams' contents, one crafted record each.
func TestTally_Record(t *testing.T) {
	tests := []struct {
		name   string
		play   func(s *scenario)
		record map[OrderKey]wechatsim.OrderInfo
		want   map[string]int
	}{
		{"created as the simulator issued", func(s *scenario) {
			s.send("1", KindValid)
			s.created("1", "wx1", time.Millisecond)
		}, map[OrderKey]wechatsim.OrderInfo{key("1"): record("1", wechat.TradeStateNotPay)}, map[string]int{}},
		{"invented prepay_id", func(s *scenario) {
			s.send("1", KindValid)
			s.created("1", "wxINVENTED", time.Millisecond)
		}, map[OrderKey]wechatsim.OrderInfo{key("1"): record("1", wechat.TradeStateNotPay)}, map[string]int{ViolationPrepayNotIssued: 1}},
		{"created at WeChat Pay, reported failed for good", func(s *scenario) {
			s.send("1", KindValid)
			s.failedForGood("1", events.CodeOrderClosed)
		}, map[OrderKey]wechatsim.OrderInfo{key("1"): record("1", wechat.TradeStateNotPay)}, map[string]int{ViolationFailedButCreated: 1}},
		{"created at WeChat Pay, reported not created", func(s *scenario) {
			s.send("1", KindValid)
			s.failed("1", events.CodeOrderNotCreated)
		}, map[OrderKey]wechatsim.OrderInfo{key("1"): record("1", wechat.TradeStateNotPay)}, map[string]int{ViolationFailedButCreated: 1}},
		{"paid at WeChat Pay, reported failed", func(s *scenario) {
			s.send("1", KindValid)
			s.failedForGood("1", "INVALID_REQUEST")
			s.t.PaymentSucceeded(payment(record("1", wechat.TradeStateSuccess)))
		}, map[OrderKey]wechatsim.OrderInfo{key("1"): record("1", wechat.TradeStateSuccess)}, map[string]int{ViolationFailedButCreated: 1}},
		{"closed at WeChat Pay, reported failed", func(s *scenario) {
			s.send("1", KindValid)
			s.failedForGood("1", "ORDER_CLOSED")
		}, map[OrderKey]wechatsim.OrderInfo{key("1"): record("1", wechat.TradeStateClosed)}, map[string]int{}},
		{"payment matching every sub-order", func(s *scenario) {
			s.send("1", KindValid)
			s.created("1", "wx1", time.Millisecond)
			s.t.PaymentSucceeded(payment(record("1", wechat.TradeStateSuccess)))
		}, map[OrderKey]wechatsim.OrderInfo{key("1"): record("1", wechat.TradeStateSuccess)}, map[string]int{}},
		{"payment with another sub-order transaction id", func(s *scenario) {
			s.send("1", KindValid)
			s.created("1", "wx1", time.Millisecond)
			p := payment(record("1", wechat.TradeStateSuccess))
			p.SubOrders[1].TransactionID = "4200FORGED"
			s.t.PaymentSucceeded(p)
		}, map[OrderKey]wechatsim.OrderInfo{key("1"): record("1", wechat.TradeStateSuccess)}, map[string]int{ViolationPaymentMismatch: 1}},
		{"payment with another amount", func(s *scenario) {
			s.send("1", KindValid)
			s.created("1", "wx1", time.Millisecond)
			p := payment(record("1", wechat.TradeStateSuccess))
			p.SubOrders[0].Amount.TotalAmount = 1
			s.t.PaymentSucceeded(p)
		}, map[OrderKey]wechatsim.OrderInfo{key("1"): record("1", wechat.TradeStateSuccess)}, map[string]int{ViolationPaymentMismatch: 1}},
		{"paid means every sub-order", func(s *scenario) {
			s.send("1", KindValid)
			s.created("1", "wx1", time.Millisecond)
			s.t.PaymentSucceeded(payment(record("1", wechat.TradeStateSuccess)))
		}, map[OrderKey]wechatsim.OrderInfo{key("1"): halfPaid("1")}, map[string]int{ViolationUnpaidPayment: 1}},
		{"paid at the simulator without a payment event", func(s *scenario) {
			s.send("1", KindValid)
			s.created("1", "wx1", time.Millisecond)
		}, map[OrderKey]wechatsim.OrderInfo{key("1"): record("1", wechat.TradeStateSuccess)}, map[string]int{ViolationMissingPayment: 1}},
		{"one job dead-lettered twice", func(s *scenario) {
			s.send("1", KindInvalid)
			s.failed("1", events.CodeInvalidJob)
			s.deadSeq("1", 7)
			s.deadSeq("1", 7)
		}, map[OrderKey]wechatsim.OrderInfo{}, map[string]int{ViolationDeadLetters: 1}},
		{"a valid order dead-lettered twice for its final refusal", func(s *scenario) {
			j := s.send("1", KindValid)
			late := *j
			late.Duplicate, late.LateDuplicate = true, true
			s.t.Sent(&late)
			s.t.Acked(&late, false, s.start)
			s.failedForGood("1", "RULELIMIT")
			k := key("1")
			for _, seq := range []uint64{7, 9} {
				s.t.DeadLettered(&events.DeadLetter{Reason: events.ReasonRejected, CombineMchID: k.MchID, CombineOutTradeNo: k.OutTradeNo, StreamSequence: seq})
			}
		}, map[OrderKey]wechatsim.OrderInfo{}, map[string]int{ViolationDeadLetters: 1}},
		{"two jobs of a valid order each refused and dead-lettered", func(s *scenario) {
			j := s.send("1", KindValid)
			late := *j
			late.Duplicate, late.LateDuplicate = true, true
			s.t.Sent(&late)
			s.t.Acked(&late, false, s.start)
			s.failed("1", events.CodeOrderNotCreated)
			s.deadSeq("1", 7)
			s.deadSeq("1", 9)
		}, map[OrderKey]wechatsim.OrderInfo{}, map[string]int{}},
		{"each stored copy of an invalid job dead-lettered once", func(s *scenario) {
			j := s.send("1", KindInvalid)
			late := *j
			late.Duplicate, late.LateDuplicate = true, true
			s.t.Sent(&late)
			s.t.Acked(&late, false, s.start)
			s.failed("1", events.CodeInvalidJob)
			s.deadSeq("1", 7)
			s.deadSeq("1", 9)
		}, map[OrderKey]wechatsim.OrderInfo{}, map[string]int{}},
		{"an event that does not decode", func(s *scenario) {
			s.send("1", KindValid)
			s.created("1", "wx1", time.Millisecond)
			s.t.Undecodable(events.SubjectPrepayCreated, errors.New("invalid character"))
		}, map[OrderKey]wechatsim.OrderInfo{key("1"): record("1", wechat.TradeStateNotPay)}, map[string]int{ViolationUndecodable: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newScenario()
			tt.play(s)
			r := s.t.ReportRecord(tt.record, 0)
			if diff := cmp.Diff(tt.want, r.ViolationCounts); diff != "" {
				t.Errorf("violation counts (-want +got):\n%s\nviolations: %+v", diff, r.Violations)
			}
		})
	}
}
