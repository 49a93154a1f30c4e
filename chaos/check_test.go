package chaos

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/loadgen"
	"github.com/wxcombine/orderworker/wechat"
	"github.com/wxcombine/orderworker/wechat/wechatsim"
)

var (
	keyA = loadgen.OrderKey{MchID: "1900000110", OutTradeNo: "CH1A"}
	t0   = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
)

func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

// call builds a create call of keyA from start to end seconds.
func call(instance string, start, end float64, status int, ref string, delivered bool) Call {
	return Call{Order: keyA, Instance: instance, Start: at(start), End: at(end), Status: status, Ref: ref, Delivered: delivered}
}

// created answers evidence of keyA created once with prepay_id wx1 after
// calls, as the simulator counted them.
func created(calls ...Call) *Evidence {
	outcomes := map[string]int{}
	var order *wechat.CombineOrder
	for _, c := range calls {
		if c.Status == 200 {
			outcomes["ok:"+c.Ref]++
			order = simOrder(wechat.TradeStateNotPay)
		} else {
			outcomes["FAULT"]++
		}
	}
	return &Evidence{
		Keys:     []loadgen.OrderKey{keyA},
		Outcomes: map[loadgen.OrderKey][]OutcomeEvent{keyA: {{Created: true, Ref: "wx1"}}},
		Sim:      map[loadgen.OrderKey]wechatsim.OrderInfo{keyA: {CreateCalls: len(calls), Outcomes: outcomes, Order: order}},
		Calls:    calls,
		Exits:    map[string]time.Time{},
	}
}

// simOrder answers keyA as the simulator holds it, with two sub-orders in
// state; a paid one has transaction ids and payer amounts.
func simOrder(state string) *wechat.CombineOrder {
	o := &wechat.CombineOrder{CombineMchID: keyA.MchID, CombineOutTradeNo: keyA.OutTradeNo}
	for i, no := range []string{"S1", "S2"} {
		so := wechat.OrderSubOrder{MchID: keyA.MchID, OutTradeNo: no, TradeState: state, Amount: wechat.Amount{TotalAmount: int64(100 * (i + 1)), Currency: "CNY"}}
		if state == wechat.TradeStateSuccess {
			so.TransactionID = "42000000" + no
			so.Amount.PayerAmount = so.Amount.TotalAmount
		}
		o.SubOrders = append(o.SubOrders, so)
	}
	return o
}

// paymentOf answers the payment event that matches a paid simOrder.
func paymentOf(o *wechat.CombineOrder) events.PaymentSucceeded {
	p := events.PaymentSucceeded{CombineMchID: keyA.MchID, CombineOutTradeNo: keyA.OutTradeNo, CombineTransactionID: "4200COMBINE"}
	for _, so := range o.SubOrders {
		p.SubOrders = append(p.SubOrders, events.PaidSubOrder{MchID: so.MchID, OutTradeNo: so.OutTradeNo, TransactionID: so.TransactionID,
			TradeState: so.TradeState, Amount: events.PaidAmount{TotalAmount: so.Amount.TotalAmount, Currency: so.Amount.Currency, PayerAmount: so.Amount.PayerAmount}})
	}
	return p
}

func TestCheck_creates(t *testing.T) {
	tests := []struct {
		name    string
		ev      *Evidence
		warrant string // of the second call
		bad     string // the invariant broken, "" for none
	}{
		{"one call", created(call("w1", 0, 1, 200, "wx1", true)), "", ""},
		{"retry after a 500", created(call("w1", 0, 1, 500, "", true), call("w1", 2, 3, 200, "wx1", true)), WarrantFault, ""},
		{"retry after a 429", created(call("w1", 0, 1, 429, "", true), call("w1", 2, 3, 200, "wx1", true)), WarrantFault, ""},
		{"retry after no answer", created(call("w1", 0, 3, 0, "", false), call("w1", 4, 5, 200, "wx1", true)), WarrantNoAnswer, ""},
		{"retry after a 400 is not warranted", created(call("w1", 0, 1, 400, "", true), call("w1", 2, 3, 200, "wx1", true)), Unwarranted, InvWarrantedCreates},
		{"second create after a delivered answer", created(call("w1", 0, 1, 200, "wx1", true), call("w2", 40, 41, 200, "wx1", true)), Unwarranted, InvWarrantedCreates},
		{"overlapping calls", created(call("w1", 0, 5, 0, "", false), call("w2", 4, 6, 200, "wx1", true)), Unwarranted, InvWarrantedCreates},
		{
			"worker killed after the answer",
			func() *Evidence {
				ev := created(call("w1", 0, 1, 200, "wx1", true), call("w2", 40, 41, 200, "wx1", true))
				ev.Exits["w1"] = at(1.2)
				return ev
			}(),
			WarrantWorkerExit, "",
		},
		{
			"worker killed after WeChat Pay answered that the order is paid, before asking it more",
			func() *Evidence {
				ev := created(call("w1", 0, 1, 400, "", true), call("w2", 30, 31, 200, "wx1", true))
				ev.Exits["w1"] = at(2)
				return ev
			}(),
			WarrantWorkerExit, "",
		},
		{
			"a create again after a paid answer whose worker lived",
			func() *Evidence {
				ev := created(call("w1", 0, 1, 400, "", true), call("w2", 30, 31, 200, "wx1", true))
				ev.Exits["w1"] = at(40)
				return ev
			}(),
			Unwarranted, InvWarrantedCreates,
		},
		{
			"worker killed long before the answer does not count",
			func() *Evidence {
				ev := created(call("w1", 0, 1, 200, "wx1", true), call("w2", 40, 41, 200, "wx1", true))
				ev.Exits["w1"] = at(-30)
				return ev
			}(),
			Unwarranted, InvWarrantedCreates,
		},
		{
			"a create again after a 400 whose job was released with a failure that is not the order's",
			func() *Evidence {
				ev := created(call("w1", 0, 1, 400, "", true), call("w2", 20, 21, 200, "wx1", true))
				ev.Outcomes[keyA] = append(ev.Outcomes[keyA], OutcomeEvent{Code: events.CodeRetriesExhausted})
				ev.DeadLetters = map[loadgen.OrderKey][]DeadLetterRecord{keyA: {{Reason: events.ReasonMaxDeliveries, StreamSequence: 3}}}
				return ev
			}(),
			WarrantReleased, "",
		},
		{
			"a create again after a 400 'paid' whose job was handed back (the query failed too)",
			func() *Evidence {
				ev := created(call("w1", 0, 1, 400, "", true), call("w1", 20, 21, 200, "wx1", true))
				ev.HandedBack = map[loadgen.OrderKey][]LogNote{keyA: {{Instance: "w1", At: at(4)}}}
				return ev
			}(),
			WarrantReleased, "",
		},
		{
			"a hand-back logged by another worker than the one answered 400",
			func() *Evidence {
				ev := created(call("w1", 0, 1, 400, "", true), call("w2", 20, 21, 200, "wx1", true))
				ev.HandedBack = map[loadgen.OrderKey][]LogNote{keyA: {{Instance: "w2", At: at(4)}}}
				return ev
			}(),
			Unwarranted, InvWarrantedCreates,
		},
		{
			"overlapping calls after Redis came back empty",
			func() *Evidence {
				ev := created(call("w1", 0, 5, 0, "", false), call("w2", 4, 6, 200, "wx1", true))
				ev.Outages = []Outage{{Server: "redis", Down: at(2), Up: at(3), Wiped: true}}
				return ev
			}(),
			WarrantRecordLost, "",
		},
		{
			"a create again after a 400 while the store was down (the held job starts over)",
			func() *Evidence {
				ev := created(call("w1", 0, 1, 400, "", true), call("w1", 20, 21, 200, "wx1", true))
				ev.Outages = []Outage{{Server: "redis", Down: at(2), Up: at(15)}}
				return ev
			}(),
			WarrantStoreOutage, "",
		},
		{
			"redis down while storing the outcome",
			func() *Evidence {
				ev := created(call("w1", 0, 1, 200, "wx1", true), call("w2", 40, 41, 200, "wx1", true))
				ev.Outages = []Outage{{Server: "redis", Down: at(0.5), Up: at(4)}}
				return ev
			}(),
			WarrantStoreOutage, "",
		},
		{
			"a NATS outage does not warrant a create",
			func() *Evidence {
				ev := created(call("w1", 0, 1, 200, "wx1", true), call("w2", 40, 41, 200, "wx1", true))
				ev.Outages = []Outage{{Server: "nats", Down: at(0.5), Up: at(4)}}
				return ev
			}(),
			Unwarranted, InvWarrantedCreates,
		},
		{
			"a NATS node down while storing the outcome in the KV bucket",
			func() *Evidence {
				ev := created(call("w1", 0, 1, 200, "wx1", true), call("w2", 40, 41, 200, "wx1", true))
				ev.Outages = []Outage{{Server: "chaos-nats-1", Down: at(0.5), Up: at(4), Store: true}}
				return ev
			}(),
			WarrantStoreOutage, "",
		},
		{
			"the KV bucket still without a leader after the node came back, while storing the outcome",
			func() *Evidence {
				ev := created(call("w1", 10, 11, 200, "wx1", true), call("w2", 40, 41, 200, "wx1", true))
				ev.Outages = []Outage{{Server: "chaos-nats-3", Down: at(0), Up: at(8), StoreUp: at(13), Store: true}}
				return ev
			}(),
			WarrantStoreOutage, "",
		},
		{
			"the KV bucket answering the harness's probe, but the worker's write of the outcome came after its lease",
			func() *Evidence {
				ev := created(call("w1", 20, 21, 200, "wx1", true), call("w2", 60, 61, 200, "wx1", true))
				ev.Outages = []Outage{{Server: "chaos-nats-2", Down: at(0), Up: at(8), StoreUp: at(10), Store: true}}
				ev.StoreFailures = map[loadgen.OrderKey][]LogNote{keyA: {{Instance: "w1", At: at(52)}}}
				return ev
			}(),
			WarrantStoreOutage, "",
		},
		{
			"a failed write logged by another worker than the one that got the answer",
			func() *Evidence {
				ev := created(call("w1", 20, 21, 200, "wx1", true), call("w2", 60, 61, 200, "wx1", true))
				ev.Outages = []Outage{{Server: "chaos-nats-2", Down: at(0), Up: at(8), StoreUp: at(10), Store: true}}
				ev.StoreFailures = map[loadgen.OrderKey][]LogNote{keyA: {{Instance: "w3", At: at(52)}}}
				return ev
			}(),
			Unwarranted, InvWarrantedCreates,
		},
		{
			"a failed write logged after the next create",
			func() *Evidence {
				ev := created(call("w1", 20, 21, 200, "wx1", true), call("w2", 60, 61, 200, "wx1", true))
				ev.Outages = []Outage{{Server: "chaos-nats-2", Down: at(0), Up: at(8), StoreUp: at(10), Store: true}}
				ev.StoreFailures = map[loadgen.OrderKey][]LogNote{keyA: {{Instance: "w1", At: at(62)}}}
				return ev
			}(),
			Unwarranted, InvWarrantedCreates,
		},
		{
			"a failed write logged with no disruption of the store near",
			func() *Evidence {
				ev := created(call("w1", 200, 201, 200, "wx1", true), call("w2", 240, 241, 200, "wx1", true))
				ev.Outages = []Outage{{Server: "chaos-nats-2", Down: at(0), Up: at(8), StoreUp: at(10), Store: true}}
				ev.StoreFailures = map[loadgen.OrderKey][]LogNote{keyA: {{Instance: "w1", At: at(230)}}}
				return ev
			}(),
			Unwarranted, InvWarrantedCreates,
		},
		{
			"a failed write logged while only a NATS node was down, with Redis as the store",
			func() *Evidence {
				ev := created(call("w1", 20, 21, 200, "wx1", true), call("w2", 60, 61, 200, "wx1", true))
				ev.Outages = []Outage{{Server: "chaos-nats-2", Down: at(0), Up: at(8)}}
				ev.StoreFailures = map[loadgen.OrderKey][]LogNote{keyA: {{Instance: "w1", At: at(52)}}}
				return ev
			}(),
			Unwarranted, InvWarrantedCreates,
		},
		{
			"a NATS node back, and the KV bucket answering, before the call",
			func() *Evidence {
				ev := created(call("w1", 10, 11, 200, "wx1", true), call("w2", 40, 41, 200, "wx1", true))
				ev.Outages = []Outage{{Server: "chaos-nats-3", Down: at(0), Up: at(8), StoreUp: at(8.5), Store: true}}
				return ev
			}(),
			Unwarranted, InvWarrantedCreates,
		},
		{
			"Redis came back empty between the calls",
			func() *Evidence {
				ev := created(call("w1", 0, 1, 200, "wx1", true), call("w2", 40, 41, 200, "wx1", true))
				ev.Outages = []Outage{{Server: "redis", Down: at(20), Up: at(21), Wiped: true}}
				return ev
			}(),
			WarrantRecordLost, "",
		},
		{
			"Redis came back empty while the previous call's claim was held",
			func() *Evidence {
				ev := created(call("w1", 10, 11, 200, "wx1", true), call("w2", 12, 13, 200, "wx1", true))
				ev.Outages = []Outage{{Server: "redis", Down: at(5), Up: at(6), Wiped: true}}
				return ev
			}(),
			WarrantRecordLost, "",
		},
		{
			"Redis came back empty long before both calls",
			func() *Evidence {
				ev := created(call("w1", 100, 101, 200, "wx1", true), call("w2", 102, 103, 200, "wx1", true))
				ev.Outages = []Outage{{Server: "redis", Down: at(5), Up: at(6), Wiped: true}}
				return ev
			}(),
			Unwarranted, InvWarrantedCreates,
		},
		{
			"the record expired between the calls",
			func() *Evidence {
				ev := created(call("w1", 0, 1, 200, "wx1", true), call("w2", 40, 41, 200, "wx1", true))
				ev.OutcomeTTL = 30 * time.Second
				return ev
			}(),
			WarrantRecordExpired, "",
		},
		{
			"the record had not expired yet",
			func() *Evidence {
				ev := created(call("w1", 0, 1, 200, "wx1", true), call("w2", 20, 21, 200, "wx1", true))
				ev.OutcomeTTL = 30 * time.Second
				return ev
			}(),
			Unwarranted, InvWarrantedCreates,
		},
		{
			"retry after a 401 SIGN_ERROR, once the clock is fixed",
			func() *Evidence {
				ev := created(Call{Order: keyA, Instance: "w1", Start: at(0), End: at(1), Status: 401, Code: "SIGN_ERROR", Delivered: true},
					call("w1", 30, 31, 200, "wx1", true))
				ev.Sim[keyA] = wechatsim.OrderInfo{CreateCalls: 1, Outcomes: map[string]int{"ok:wx1": 1}, Order: simOrder(wechat.TradeStateNotPay)}
				return ev
			}(),
			WarrantOperatorFix, "",
		},
		{
			"a 503 of the proxy is not counted by the simulator",
			func() *Evidence {
				ev := created(Call{Order: keyA, Instance: "w1", Start: at(0), End: at(1), Status: 503, Code: "SERVICE_UNAVAILABLE", Delivered: true, Fault: FaultServiceUnavailable},
					call("w1", 2, 3, 200, "wx1", true))
				ev.Sim[keyA] = wechatsim.OrderInfo{CreateCalls: 1, Outcomes: map[string]int{"ok:wx1": 1}, Order: simOrder(wechat.TradeStateNotPay)}
				return ev
			}(),
			WarrantFault, "",
		},
		{
			"the simulator counted a call the proxy never forwarded",
			func() *Evidence {
				ev := created(call("w1", 0, 1, 200, "wx1", true))
				ev.Sim[keyA] = wechatsim.OrderInfo{CreateCalls: 2, Outcomes: map[string]int{"ok:wx1": 2}, Order: simOrder(wechat.TradeStateNotPay)}
				return ev
			}(),
			"", InvCreateAccounting,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := Check(tt.ev)
			if tt.warrant != "" && res.Creates.Repeats[tt.warrant] != 1 {
				t.Errorf("Repeats = %v, want one %s", res.Creates.Repeats, tt.warrant)
			}
			for _, inv := range res.Invariants {
				if want := inv.Name != tt.bad; inv.OK != want {
					t.Errorf("invariant %s OK = %v, want %v (violations %v)", inv.Name, inv.OK, want, res.Violations)
				}
			}
		})
	}
}

func TestCheck_outcomes(t *testing.T) {
	paid := wechatsim.OrderInfo{CreateCalls: 1, Outcomes: map[string]int{"ok:wx1": 1}, Order: simOrder(wechat.TradeStateSuccess)}
	pay := paymentOf(paid.Order)
	one := []Call{call("w1", 0, 1, 200, "wx1", true)}
	tests := []struct {
		name string
		edit func(ev *Evidence)
		bad  string
	}{
		{"created once", func(*Evidence) {}, ""},
		{"two identical outcome events", func(ev *Evidence) {
			ev.Outcomes[keyA] = append(ev.Outcomes[keyA], OutcomeEvent{Created: true, Ref: "wx1"})
		}, InvOneOutcome},
		{"two prepay_ids", func(ev *Evidence) {
			ev.Outcomes[keyA] = append(ev.Outcomes[keyA], OutcomeEvent{Created: true, Ref: "wx2"})
		}, InvOnePrepayID + "," + InvOneOutcome + "," + InvPrepayIssued},
		{"lost", func(ev *Evidence) {
			delete(ev.Outcomes, keyA)
			ev.Calls, ev.Sim = nil, nil
		}, InvNoJobLost},
		{"failed and dead-lettered", func(ev *Evidence) {
			ev.Outcomes[keyA] = []OutcomeEvent{{Code: events.CodeInvalidJob}}
			ev.DeadLetters = map[loadgen.OrderKey][]DeadLetterRecord{keyA: {{Reason: events.ReasonInvalid, StreamSequence: 3}}}
			ev.Calls, ev.Sim = nil, nil
		}, ""},
		{"failed without a dead letter", func(ev *Evidence) {
			ev.Outcomes[keyA] = []OutcomeEvent{{Code: events.CodeInvalidJob}}
			ev.Calls, ev.Sim = nil, nil
		}, InvNoJobLost},
		{"dead letter only", func(ev *Evidence) {
			delete(ev.Outcomes, keyA)
			ev.DeadLetters = map[loadgen.OrderKey][]DeadLetterRecord{keyA: {{Reason: events.ReasonMalformed, StreamSequence: 3}}}
			ev.Calls, ev.Sim = nil, nil
		}, ""},
		{"paid with one payment event", func(ev *Evidence) {
			ev.Sim[keyA] = paid
			ev.Payments = map[loadgen.OrderKey][]events.PaymentSucceeded{keyA: {pay}}
		}, ""},
		{"paid without a payment event", func(ev *Evidence) { ev.Sim[keyA] = paid }, InvOnePayment},
		{"paid with two payment events", func(ev *Evidence) {
			ev.Sim[keyA] = paid
			ev.Payments = map[loadgen.OrderKey][]events.PaymentSucceeded{keyA: {pay, pay}}
		}, InvOnePayment},
		{"payment event for an unpaid order", func(ev *Evidence) {
			ev.Payments = map[loadgen.OrderKey][]events.PaymentSucceeded{keyA: {pay}}
		}, InvOnePayment},
		{"paid means every sub-order: sub-order 0 paid alone is not paid", func(ev *Evidence) {
			o := simOrder(wechat.TradeStateSuccess)
			o.SubOrders[1].TradeState = wechat.TradeStateNotPay
			ev.Sim[keyA] = wechatsim.OrderInfo{CreateCalls: 1, Outcomes: map[string]int{"ok:wx1": 1}, Order: o}
			ev.Payments = map[loadgen.OrderKey][]events.PaymentSucceeded{keyA: {pay}}
		}, InvOnePayment + "," + InvTrueOutcome},
		// Each violation kind judged by WeChat Pay's record.
		{"invented prepay_id", func(ev *Evidence) {
			ev.Outcomes[keyA] = []OutcomeEvent{{Created: true, Ref: "wxINVENTED"}}
		}, InvPrepayIssued},
		{"prepay event for an order the simulator never created", func(ev *Evidence) {
			ev.Calls, ev.Sim = nil, nil
		}, InvPrepayIssued + "," + InvTrueOutcome},
		{"created at WeChat Pay but reported failed for good", func(ev *Evidence) {
			ev.Outcomes[keyA] = []OutcomeEvent{{Code: events.CodeOrderClosed, Final: true}}
			ev.DeadLetters = map[loadgen.OrderKey][]DeadLetterRecord{keyA: {{Reason: events.ReasonMaxDeliveries, StreamSequence: 3}}}
		}, InvNoFalseFailure},
		{"created at WeChat Pay but reported not created", func(ev *Evidence) {
			ev.Outcomes[keyA] = []OutcomeEvent{{Code: events.CodeOrderNotCreated}}
			ev.DeadLetters = map[loadgen.OrderKey][]DeadLetterRecord{keyA: {{Reason: events.ReasonMaxDeliveries, StreamSequence: 3}}}
		}, InvNoFalseFailure},
		{"a job refused for a configuration error, then the order created by another job", func(ev *Evidence) {
			ev.Outcomes[keyA] = []OutcomeEvent{{Code: "SIGN_ERROR"}, {Created: true, Ref: "wx1"}}
			ev.DeadLetters = map[loadgen.OrderKey][]DeadLetterRecord{keyA: {{Reason: events.ReasonConfiguration, StreamSequence: 3}}}
		}, ""},
		{"paid at WeChat Pay but reported failed", func(ev *Evidence) {
			ev.Sim[keyA] = paid
			ev.Payments = map[loadgen.OrderKey][]events.PaymentSucceeded{keyA: {pay}}
			ev.Outcomes[keyA] = []OutcomeEvent{{Code: "INVALID_REQUEST", Final: true}}
			ev.DeadLetters = map[loadgen.OrderKey][]DeadLetterRecord{keyA: {{Reason: events.ReasonRejected, StreamSequence: 3}}}
		}, InvNoFalseFailure},
		{"closed at WeChat Pay and reported failed", func(ev *Evidence) {
			ev.Sim[keyA] = wechatsim.OrderInfo{CreateCalls: 1, Outcomes: map[string]int{"ok:wx1": 1}, Order: simOrder(wechat.TradeStateClosed)}
			ev.Outcomes[keyA] = []OutcomeEvent{{Code: "ORDER_CLOSED", Final: true}}
			ev.DeadLetters = map[loadgen.OrderKey][]DeadLetterRecord{keyA: {{Reason: events.ReasonRejected, StreamSequence: 3}}}
			ev.Closed = map[loadgen.OrderKey]int{keyA: 1}
		}, ""},
		{"closed at WeChat Pay without orders.closed", func(ev *Evidence) {
			ev.Sim[keyA] = wechatsim.OrderInfo{CreateCalls: 1, Outcomes: map[string]int{"ok:wx1": 1}, Order: simOrder(wechat.TradeStateClosed)}
			ev.Outcomes[keyA] = []OutcomeEvent{{Code: "ORDER_CLOSED", Final: true}}
			ev.DeadLetters = map[loadgen.OrderKey][]DeadLetterRecord{keyA: {{Reason: events.ReasonRejected, StreamSequence: 3}}}
		}, InvOneClose},
		{"created and failed", func(ev *Evidence) {
			ev.Outcomes[keyA] = append(ev.Outcomes[keyA], OutcomeEvent{Code: events.CodeOrderClosed, Final: true})
			ev.DeadLetters = map[loadgen.OrderKey][]DeadLetterRecord{keyA: {{Reason: events.ReasonRejected, StreamSequence: 3}}}
		}, InvTrueOutcome + "," + InvOneOutcome + "," + InvNoFalseFailure},
		{"two different failures", func(ev *Evidence) {
			ev.Calls, ev.Sim = nil, nil
			ev.Outcomes[keyA] = []OutcomeEvent{{Code: events.CodeOrderClosed, Final: true}, {Code: "PARAM_ERROR", Final: true}}
			ev.DeadLetters = map[loadgen.OrderKey][]DeadLetterRecord{keyA: {{Reason: events.ReasonRejected, StreamSequence: 3}}}
		}, InvTrueOutcome + "," + InvOneOutcome},
		{"two failures about two jobs of one order", func(ev *Evidence) {
			ev.Calls, ev.Sim = nil, nil
			ev.Outcomes[keyA] = []OutcomeEvent{{Code: events.CodeOrderNotCreated}, {Code: "SIGN_ERROR"}}
			ev.DeadLetters = map[loadgen.OrderKey][]DeadLetterRecord{keyA: {{Reason: events.ReasonMaxDeliveries, StreamSequence: 3}, {Reason: events.ReasonConfiguration, StreamSequence: 9}}}
		}, ""},
		{"prepay event for an order the simulator closed", func(ev *Evidence) {
			ev.Sim[keyA] = wechatsim.OrderInfo{CreateCalls: 1, Outcomes: map[string]int{"ok:wx1": 1}, Order: simOrder(wechat.TradeStateClosed)}
			ev.Closed = map[loadgen.OrderKey]int{keyA: 1}
		}, InvTrueOutcome},
		{"payment event with another sub-order transaction id", func(ev *Evidence) {
			ev.Sim[keyA] = paid
			p := paymentOf(paid.Order)
			p.SubOrders[1].TransactionID = "4200FORGED"
			ev.Payments = map[loadgen.OrderKey][]events.PaymentSucceeded{keyA: {p}}
		}, InvPaymentMatches},
		{"payment event with another amount", func(ev *Evidence) {
			ev.Sim[keyA] = paid
			p := paymentOf(paid.Order)
			p.SubOrders[1].Amount.PayerAmount = 1
			ev.Payments = map[loadgen.OrderKey][]events.PaymentSucceeded{keyA: {p}}
		}, InvPaymentMatches},
		{"payment event missing a sub-order", func(ev *Evidence) {
			ev.Sim[keyA] = paid
			p := paymentOf(paid.Order)
			p.SubOrders = p.SubOrders[:1]
			ev.Payments = map[loadgen.OrderKey][]events.PaymentSucceeded{keyA: {p}}
		}, InvPaymentMatches},
		{"one job dead-lettered twice", func(ev *Evidence) {
			ev.Calls, ev.Sim = nil, nil
			ev.Outcomes[keyA] = []OutcomeEvent{{Code: events.CodeInvalidJob}}
			ev.DeadLetters = map[loadgen.OrderKey][]DeadLetterRecord{keyA: {{Reason: events.ReasonInvalid, StreamSequence: 3}, {Reason: events.ReasonInvalid, StreamSequence: 3}}}
		}, InvDeadLetters},
		{"two invalid jobs of one order each dead-lettered", func(ev *Evidence) {
			ev.Calls, ev.Sim = nil, nil
			ev.Outcomes[keyA] = []OutcomeEvent{{Code: events.CodeInvalidJob}}
			ev.DeadLetters = map[loadgen.OrderKey][]DeadLetterRecord{keyA: {{Reason: events.ReasonInvalid, StreamSequence: 3}, {Reason: events.ReasonInvalid, StreamSequence: 9}}}
		}, ""},
		{"one job dead-lettered at its limit, another job of the order settling it for good", func(ev *Evidence) {
			ev.Calls, ev.Sim = nil, nil
			ev.Outcomes[keyA] = []OutcomeEvent{{Code: events.CodeOrderNotCreated}, {Code: "PARAM_ERROR", Final: true}}
			ev.DeadLetters = map[loadgen.OrderKey][]DeadLetterRecord{keyA: {{Reason: events.ReasonMaxDeliveries, StreamSequence: 3}, {Reason: events.ReasonRejected, StreamSequence: 9}}}
		}, ""},
		{"an order dead-lettered twice for its fate", func(ev *Evidence) {
			ev.Calls, ev.Sim = nil, nil
			ev.Outcomes[keyA] = []OutcomeEvent{{Code: "PARAM_ERROR", Final: true}}
			ev.DeadLetters = map[loadgen.OrderKey][]DeadLetterRecord{keyA: {{Reason: events.ReasonRejected, StreamSequence: 3}, {Reason: events.ReasonRejected, StreamSequence: 9}}}
		}, InvDeadLetters},
		{"failure with a code WeChat Pay says to retry", func(ev *Evidence) {
			ev.Calls, ev.Sim = nil, nil
			ev.Outcomes[keyA] = []OutcomeEvent{{Code: "SERVICE_UNAVAILABLE"}}
			ev.DeadLetters = map[loadgen.OrderKey][]DeadLetterRecord{keyA: {{Reason: events.ReasonRejected, StreamSequence: 3}}}
		}, InvNoRetryableFail},
		{"replay after the fix reaches WeChat Pay", func(ev *Evidence) {
			ev.Replays = []Replay{{Order: keyA, Seq: 4, At: at(-0.5)}}
		}, ""},
		{"replay after the fix gets the stale failure back", func(ev *Evidence) {
			ev.Outcomes[keyA] = []OutcomeEvent{{Code: "SIGN_ERROR"}}
			ev.DeadLetters = map[loadgen.OrderKey][]DeadLetterRecord{keyA: {{Reason: events.ReasonConfiguration, StreamSequence: 3}}}
			ev.Replays = []Replay{{Order: keyA, Seq: 4, At: at(5)}}
		}, InvReplayReaches},
		{"replay of an order another job created meanwhile", func(ev *Evidence) {
			ev.Replays = []Replay{{Order: keyA, Seq: 4, At: at(5)}}
		}, ""},
		{"an undecodable event", func(ev *Evidence) {
			ev.Undecodable = []Undecodable{{Stream: events.StreamEvents, Subject: events.SubjectPrepayCreated, Sequence: 7, Error: "unknown field"}}
		}, InvEventsDecode},
		{"a job left in the jobs stream", func(ev *Evidence) {
			ev.Stranded = []StrandedJob{{Order: keyA, Sequence: 12, Bytes: 900 << 10}}
		}, InvJobsEnd},
		{"an acknowledged job kept in the stream, its order settled", func(ev *Evidence) {
			ev.Stranded = []StrandedJob{{Order: keyA, Sequence: 12, Bytes: 900, Acked: true}}
		}, ""},
		{"an acknowledged job kept in the stream, its order without outcome", func(ev *Evidence) {
			ev.Stranded = []StrandedJob{{Order: loadgen.OrderKey{MchID: "1900000109", OutTradeNo: "UNSETTLED"}, Sequence: 12, Bytes: 900, Acked: true}}
		}, InvJobsEnd},
		{"event of an order never published", func(ev *Evidence) {
			ev.Outcomes[loadgen.OrderKey{MchID: "1", OutTradeNo: "X"}] = []OutcomeEvent{{Code: "X"}}
		}, InvOneOutcome},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := created(one...)
			tt.edit(ev)
			res := Check(ev)
			for _, inv := range res.Invariants {
				if want := !slices.Contains(strings.Split(tt.bad, ","), inv.Name); inv.OK != want {
					t.Errorf("invariant %s OK = %v, want %v (violations %v)", inv.Name, inv.OK, want, res.Violations)
				}
			}
		})
	}
}

// TestReadStoreFailures reads the worker's JSON log lines of an outcome
// not stored, and nothing else.
func TestReadStoreFailures(t *testing.T) {
	dir := t.TempDir()
	lines := strings.Join([]string{
		`{"time":"2026-12-02T10:00:01.5Z","level":"WARN","msg":"lease lost before the outcome was stored; the record decides","combine_mchid":"1900000110","combine_out_trade_no":"CH1"}`,
		`{"time":"2026-12-02T10:00:02Z","level":"WARN","msg":"outcome not stored; job held until the store answers","combine_mchid":"1900000110","combine_out_trade_no":"CH2","error":"x"}`,
		`{"time":"2026-12-02T10:00:03Z","level":"INFO","msg":"prepay created","combine_mchid":"1900000110","combine_out_trade_no":"CH3"}`,
		`not json, lease lost before the outcome was stored; the record decides`,
	}, "\n")
	if err := os.WriteFile(filepath.Join(dir, "worker-2.log"), []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "notifier.log"), []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := readLogNotes(dir, storeFailureMsgs)
	if err != nil {
		t.Fatal(err)
	}
	want := map[loadgen.OrderKey][]LogNote{
		{MchID: "1900000110", OutTradeNo: "CH1"}: {{Instance: "worker-2", At: time.Date(2026, 12, 2, 10, 0, 1, 5e8, time.UTC)}},
		{MchID: "1900000110", OutTradeNo: "CH2"}: {{Instance: "worker-2", At: time.Date(2026, 12, 2, 10, 0, 2, 0, time.UTC)}},
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, w := range want {
		g := got[k]
		if len(g) != 1 || g[0].Instance != w[0].Instance || !g[0].At.Equal(w[0].At) {
			t.Errorf("%v: got %v, want %v", k, g, w)
		}
	}
}
