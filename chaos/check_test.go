package chaos

import (
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
	for _, c := range calls {
		if c.Status == 200 {
			outcomes["ok:"+c.Ref]++
		} else {
			outcomes["FAULT"]++
		}
	}
	return &Evidence{
		Keys:     []loadgen.OrderKey{keyA},
		Outcomes: map[loadgen.OrderKey][]OutcomeEvent{keyA: {{Created: true, Ref: "wx1"}}},
		Sim:      map[loadgen.OrderKey]wechatsim.OrderInfo{keyA: {CreateCalls: len(calls), Outcomes: outcomes}},
		Calls:    calls,
		Exits:    map[string]time.Time{},
	}
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
			"worker killed long before the answer does not count",
			func() *Evidence {
				ev := created(call("w1", 0, 1, 200, "wx1", true), call("w2", 40, 41, 200, "wx1", true))
				ev.Exits["w1"] = at(-30)
				return ev
			}(),
			Unwarranted, InvWarrantedCreates,
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
			"the simulator counted a call the proxy never forwarded",
			func() *Evidence {
				ev := created(call("w1", 0, 1, 200, "wx1", true))
				ev.Sim[keyA] = wechatsim.OrderInfo{CreateCalls: 2, Outcomes: map[string]int{"ok:wx1": 2}}
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
	paid := wechatsim.OrderInfo{CreateCalls: 1, Outcomes: map[string]int{"ok:wx1": 1}, Order: &wechat.CombineOrder{
		SubOrders: []wechat.OrderSubOrder{{TradeState: wechat.TradeStateSuccess}},
	}}
	closedOrder := wechatsim.OrderInfo{CreateCalls: 1, Outcomes: map[string]int{"ok:wx1": 1}, Order: &wechat.CombineOrder{
		SubOrders: []wechat.OrderSubOrder{{TradeState: wechat.TradeStateClosed}},
	}}
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
		}, InvOnePrepayID + "," + InvOneOutcome},
		{"lost", func(ev *Evidence) {
			delete(ev.Outcomes, keyA)
			ev.Calls, ev.Sim = nil, nil
		}, InvNoJobLost},
		{"failed and dead-lettered", func(ev *Evidence) {
			ev.Outcomes[keyA] = []OutcomeEvent{{Code: events.CodeInvalidJob}}
			ev.DeadLetters = map[loadgen.OrderKey][]events.Reason{keyA: {events.ReasonInvalid}}
			ev.Calls, ev.Sim = nil, nil
		}, ""},
		{"failed without a dead letter", func(ev *Evidence) {
			ev.Outcomes[keyA] = []OutcomeEvent{{Code: events.CodeInvalidJob}}
			ev.Calls, ev.Sim = nil, nil
		}, InvNoJobLost},
		{"dead letter only", func(ev *Evidence) {
			delete(ev.Outcomes, keyA)
			ev.DeadLetters = map[loadgen.OrderKey][]events.Reason{keyA: {events.ReasonMalformed}}
			ev.Calls, ev.Sim = nil, nil
		}, ""},
		{"paid with one payment event", func(ev *Evidence) {
			ev.Sim[keyA] = paid
			ev.Payments = map[loadgen.OrderKey][]string{keyA: {"tx1"}}
		}, ""},
		{"paid without a payment event", func(ev *Evidence) { ev.Sim[keyA] = paid }, InvOnePayment},
		{"paid with two payment events", func(ev *Evidence) {
			ev.Sim[keyA] = paid
			ev.Payments = map[loadgen.OrderKey][]string{keyA: {"tx1", "tx1"}}
		}, InvOnePayment},
		{"payment event for an unpaid order", func(ev *Evidence) {
			ev.Payments = map[loadgen.OrderKey][]string{keyA: {"tx1"}}
		}, InvOnePayment},
		{"closed with one orders.closed", func(ev *Evidence) {
			ev.Sim[keyA] = closedOrder
			ev.Closed = map[loadgen.OrderKey]int{keyA: 1}
		}, ""},
		{"closed without orders.closed", func(ev *Evidence) { ev.Sim[keyA] = closedOrder }, InvOneClose},
		{"orders.closed for an open order", func(ev *Evidence) {
			ev.Closed = map[loadgen.OrderKey]int{keyA: 1}
		}, InvOneClose},
		{"paid and closed", func(ev *Evidence) {
			ev.Sim[keyA] = paid
			ev.Payments = map[loadgen.OrderKey][]string{keyA: {"tx1"}}
			ev.Closed = map[loadgen.OrderKey]int{keyA: 1}
		}, InvOneClose},
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
