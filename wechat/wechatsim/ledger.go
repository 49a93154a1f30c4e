package wechatsim

import (
	"cmp"
	"slices"
	"time"

	"github.com/wxcombine/orderworker/wechat"
)

// This file is the ledger: a read-only account, per order, of what the
// simulator issued and how each sub-order ended, for checkers that compare
// a service's events against what WeChat Pay did. It changes nothing.

// IssuedPrepay is one successful create answer: a prepay_id (app, jsapi,
// miniprogram), h5_url (h5) or code_url (native), with when it was issued
// and when it stops being answered again to an identical create.
type IssuedPrepay struct {
	PrepayID  string    `json:"prepay_id,omitempty"`
	H5URL     string    `json:"h5_url,omitempty"`
	CodeURL   string    `json:"code_url,omitempty"`
	IssuedAt  time.Time `json:"issued_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// LedgerSubOrder is one sub-order's final account.
type LedgerSubOrder struct {
	MchID            string `json:"mchid"`
	SubMchID         string `json:"sub_mchid,omitempty"`
	IndividualAuthID string `json:"individual_auth_id,omitempty"`
	OutTradeNo       string `json:"out_trade_no"`
	TradeState       string `json:"trade_state"`
	// TransactionID is set once the sub-order was paid.
	TransactionID string `json:"transaction_id,omitempty"`
	TotalAmount   int64  `json:"total_amount"`
	// PayerAmount is what the payer paid (total_amount less promotions);
	// 0 until paid.
	PayerAmount int64  `json:"payer_amount"`
	Currency    string `json:"currency"`
}

// LedgerEntry is one created order's account.
type LedgerEntry struct {
	MchID                string           `json:"mchid"`
	CombineOutTradeNo    string           `json:"combine_out_trade_no"`
	TradeType            wechat.TradeType `json:"trade_type"`
	CombineTransactionID string           `json:"combine_transaction_id"`
	CreatedAt            time.Time        `json:"created_at"`
	// Prepays lists every answer issued, oldest first; more than one only
	// when an identical create came after the previous one expired.
	Prepays   []IssuedPrepay   `json:"prepays"`
	SubOrders []LedgerSubOrder `json:"sub_orders"`
	// Notified reports a notification answered 2xx; NotificationDropped a
	// payment that sent none (dropped or skipped).
	Notified            bool `json:"notified"`
	NotificationDropped bool `json:"notification_dropped,omitempty"`
}

// ledgerLocked answers o's account; s.mu is held.
func ledgerLocked(o *order) LedgerEntry {
	l := LedgerEntry{
		MchID: o.mchID, CombineOutTradeNo: o.req.CombineOutTradeNo, TradeType: o.tradeType,
		CombineTransactionID: o.combineTxID, CreatedAt: o.createdAt, Prepays: slices.Clone(o.issued),
		SubOrders: make([]LedgerSubOrder, len(o.req.SubOrders)), Notified: o.notifyDelivered,
		NotificationDropped: o.notifyDropped,
	}
	for i, so := range o.req.SubOrders {
		ls := LedgerSubOrder{
			MchID: so.MchID, SubMchID: deref(so.SubMchID), IndividualAuthID: deref(so.IndividualAuthID),
			OutTradeNo: so.OutTradeNo, TradeState: o.states[i], TotalAmount: so.Amount.TotalAmount,
			Currency: so.Amount.Currency,
		}
		if st := o.states[i]; o.txIDs != nil && (st == wechat.TradeStateSuccess || st == wechat.TradeStateRefund) {
			ls.TransactionID, ls.PayerAmount = o.txIDs[i], o.payer[i]
		}
		l.SubOrders[i] = ls
	}
	return l
}

// Ledger answers the account of merchant mchID's order no, and false if no
// order of that number was created.
func (s *Server) Ledger(mchID, no string) (LedgerEntry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[orderKey{mchID, no}]
	if e == nil || e.order == nil {
		return LedgerEntry{}, false
	}
	return ledgerLocked(e.order), true
}

// Ledgers answers the account of every created order, ordered by merchant
// and order number.
func (s *Server) Ledgers() []LedgerEntry {
	s.mu.Lock()
	out := make([]LedgerEntry, 0, len(s.entries))
	for _, e := range s.entries {
		if e.order != nil {
			out = append(out, ledgerLocked(e.order))
		}
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b LedgerEntry) int {
		return cmp.Or(cmp.Compare(a.MchID, b.MchID), cmp.Compare(a.CombineOutTradeNo, b.CombineOutTradeNo))
	})
	return out
}
