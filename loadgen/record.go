package loadgen

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/wechat"
	"github.com/wxcombine/orderworker/wechat/wechatsim"
)

// WeChat Pay's record: what the simulator says it did with an order
// (wechatsim.OrderInfo, read through SimClient.Orders). The tally and the
// chaos checker judge the events by it, never the other way round.

// RecordFunc answers the simulator's record of each of keys; a key no
// create named may be missing. SimClient.Orders satisfies it.
type RecordFunc func(ctx context.Context, keys []OrderKey) (map[OrderKey]wechatsim.OrderInfo, error)

// StatePartial is SimState's answer when an order's sub-orders are in
// different trade states.
const StatePartial = "PARTIAL"

// IssuedRefs answers the references (prepay_id, h5_url or code_url) the
// simulator answered to creates of the order.
func IssuedRefs(info wechatsim.OrderInfo) []string {
	var refs []string
	for k := range info.Outcomes {
		if ref, ok := strings.CutPrefix(k, "ok:"); ok && ref != "" {
			refs = append(refs, ref)
		}
	}
	if a := info.Answer; a != nil {
		if ref := cmp.Or(a.PrepayID, a.H5URL, a.CodeURL); ref != "" && !slices.Contains(refs, ref) {
			refs = append(refs, ref)
		}
	}
	slices.Sort(refs)
	return refs
}

// SimState answers the simulator's final trade state of an order: "" when
// it never created it, else NOTPAY, SUCCESS (every sub-order paid), CLOSED,
// or StatePartial when the sub-orders disagree.
func SimState(info wechatsim.OrderInfo, ok bool) string {
	if !ok || info.Order == nil || len(info.Order.SubOrders) == 0 {
		return ""
	}
	st := info.Order.SubOrders[0].TradeState
	for _, so := range info.Order.SubOrders[1:] {
		if so.TradeState != st {
			return StatePartial
		}
	}
	return st
}

// PaymentMismatch answers how a payment event differs from the simulator's
// paid order, or "" when it does not.
func PaymentMismatch(p *events.PaymentSucceeded, o *wechat.CombineOrder) string {
	if o.CombineTransactionID != "" && p.CombineTransactionID != o.CombineTransactionID {
		return fmt.Sprintf("combine_transaction_id %q, the simulator's is %q", p.CombineTransactionID, o.CombineTransactionID)
	}
	if len(p.SubOrders) != len(o.SubOrders) {
		return fmt.Sprintf("%d sub-orders, the simulator's order has %d", len(p.SubOrders), len(o.SubOrders))
	}
	type id struct{ mch, no string }
	want := make(map[id]wechat.OrderSubOrder, len(o.SubOrders))
	for _, so := range o.SubOrders {
		want[id{so.MchID, so.OutTradeNo}] = so
	}
	var diffs []string
	for _, got := range p.SubOrders {
		w, ok := want[id{got.MchID, got.OutTradeNo}]
		if !ok {
			diffs = append(diffs, fmt.Sprintf("sub-order %s/%s is not the simulator's", got.MchID, got.OutTradeNo))
			continue
		}
		delete(want, id{got.MchID, got.OutTradeNo})
		if got.TransactionID != w.TransactionID {
			diffs = append(diffs, fmt.Sprintf("sub-order %s transaction_id %q, the simulator's is %q", got.OutTradeNo, got.TransactionID, w.TransactionID))
		}
		if got.TradeState != w.TradeState {
			diffs = append(diffs, fmt.Sprintf("sub-order %s trade_state %q, the simulator's is %q", got.OutTradeNo, got.TradeState, w.TradeState))
		}
		if got.Amount.TotalAmount != w.Amount.TotalAmount || got.Amount.PayerAmount != w.Amount.PayerAmount || got.Amount.Currency != w.Amount.Currency {
			diffs = append(diffs, fmt.Sprintf("sub-order %s amount %d/%d %s, the simulator's is %d/%d %s", got.OutTradeNo,
				got.Amount.TotalAmount, got.Amount.PayerAmount, got.Amount.Currency, w.Amount.TotalAmount, w.Amount.PayerAmount, w.Amount.Currency))
		}
	}
	return strings.Join(diffs, "; ")
}
