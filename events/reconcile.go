package events

// Reconciliation and closing: the wire contract.
//
// After a worker settles an order with a prepay, it publishes a
// ReconcileCheck on <prefix>.orders.reconcile.<combine_mchid> (stream
// COMBINE_ORDER_RECONCILE). Reconcilers hold each check until the order's
// next query and publish what WeChat Pay reports: the order's
// PaymentSucceeded (under PaymentSucceededMsgID, the notifier's id), or,
// once an unpaid order's time is up, an OrderClosed after closing it.
//
// A checkout closes an order by publishing a CloseOrderJob on
// <prefix>.orders.close (same stream). The answer is an OrderClosed, or a
// CloseFailed that says why; an order found paid gets its PaymentSucceeded
// too.

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/wxcombine/orderworker/wechat"
)

// Reconciliation and closing subjects and stream under the default prefix.
const (
	// SubjectReconcilePrefix starts the subjects of ReconcileCheck
	// messages; the last token is the combine_mchid.
	SubjectReconcilePrefix = SubjectPrefixDefault + ".orders.reconcile"
	// SubjectCloseJob carries CloseOrderJob messages.
	SubjectCloseJob = SubjectPrefixDefault + ".orders.close"
	// SubjectOrderClosed carries OrderClosed events.
	SubjectOrderClosed = SubjectPrefixDefault + ".orders.closed"
	// SubjectCloseFailed carries CloseFailed events.
	SubjectCloseFailed = SubjectPrefixDefault + ".orders.close.failed"
	// StreamReconcile holds ReconcileCheck and CloseOrderJob messages
	// (work-queue retention): a check stays stored, held by the
	// reconcilers' consumer, until its order is settled.
	StreamReconcile = "COMBINE_ORDER_RECONCILE"
)

// Reconcile answers the subject of an order's ReconcileCheck:
// <prefix>.orders.reconcile.<combine_mchid>.
func (s Subjects) Reconcile(mchID string) string { return s.prefix() + ".orders.reconcile." + mchID }

// Reconciles answers the wildcard of every ReconcileCheck subject.
func (s Subjects) Reconciles() string { return s.prefix() + ".orders.reconcile.*" }

// CloseJob answers <prefix>.orders.close.
func (s Subjects) CloseJob() string { return s.prefix() + ".orders.close" }

// OrderClosed answers <prefix>.orders.closed.
func (s Subjects) OrderClosed() string { return s.prefix() + ".orders.closed" }

// CloseFailed answers <prefix>.orders.close.failed.
func (s Subjects) CloseFailed() string { return s.prefix() + ".orders.close.failed" }

// ReconcileSubjects answers the subjects of the reconcile stream.
func (s Subjects) ReconcileSubjects() []string { return []string{s.Reconciles(), s.CloseJob()} }

// ReconcileCheck asks reconcilers to watch an order with a prepay until it
// is paid or closed. Publish it with Nats-Msg-Id = ReconcileMsgID.
type ReconcileCheck struct {
	Version           int              `json:"version"`
	CorrelationID     string           `json:"correlation_id,omitempty"`
	TradeType         wechat.TradeType `json:"trade_type"`
	CombineMchID      string           `json:"combine_mchid"`
	CombineOutTradeNo string           `json:"combine_out_trade_no"`
	// CreatedAt is when the prepay was created: the schedule counts from it.
	CreatedAt time.Time `json:"created_at"`
	// TimeExpire is the order's own time_expire (RFC 3339), if it had one:
	// an unpaid order is closed once it has passed.
	TimeExpire string `json:"time_expire,omitempty"`
}

// CloseOrderJob asks for an unpaid order to be closed (the customer
// cancelled). Publish it on Subjects.CloseJob with Nats-Msg-Id =
// CloseJobMsgID.
type CloseOrderJob struct {
	Version           int    `json:"version"`
	CorrelationID     string `json:"correlation_id,omitempty"`
	CombineMchID      string `json:"combine_mchid"`
	CombineOutTradeNo string `json:"combine_out_trade_no"`
}

// validateIdentity checks the version and order identity of a decoded
// ReconcileCheck or CloseOrderJob.
func validateIdentity(version int, mchID, no string) error {
	switch {
	case version != Version:
		return fmt.Errorf("%w: version %d, want %d", ErrUnsupportedVersion, version, Version)
	case mchID == "":
		return fmt.Errorf("%w: combine_mchid is empty", ErrMalformed)
	case no == "":
		return fmt.Errorf("%w: combine_out_trade_no is empty", ErrMalformed)
	}
	return nil
}

// Validate reports whether the check names an order.
func (c *ReconcileCheck) Validate() error {
	return validateIdentity(c.Version, c.CombineMchID, c.CombineOutTradeNo)
}

// Validate reports whether the job names an order.
func (j *CloseOrderJob) Validate() error {
	return validateIdentity(j.Version, j.CombineMchID, j.CombineOutTradeNo)
}

// How an order came to be closed (OrderClosed.Reason).
const (
	// ClosedUnpaid: it was still unpaid when its time_expire (or the
	// reconciler's UNPAID_CLOSE_AFTER) had passed; the reconciler closed it.
	ClosedUnpaid = "unpaid_expired"
	// ClosedOnRequest: a CloseOrderJob asked for it.
	ClosedOnRequest = "requested"
	// ClosedAtWeChat: WeChat Pay already reported it closed.
	ClosedAtWeChat = "closed_at_wechat"
	// ClosedPrepayExpired: a duplicate job came after the prepay_id
	// expired, WeChat Pay would not give a new one, and the order was
	// closed so that it can never be paid behind the checkout's back.
	ClosedPrepayExpired = "prepay_expired"
	// ClosedUnrecoverable: WeChat Pay kept failing until the delivery
	// limit and its prepay_id could not be had, so the worker closed the
	// order (the job's prepay.failed ORDER_CLOSED says so).
	ClosedUnrecoverable = "unrecoverable"
)

// OrderClosed reports that a combine order is closed at WeChat Pay: it will
// never be paid. Published on Subjects.OrderClosed with Nats-Msg-Id =
// OrderClosedMsgID.
type OrderClosed struct {
	Version           int    `json:"version"`
	CorrelationID     string `json:"correlation_id,omitempty"`
	CombineMchID      string `json:"combine_mchid"`
	CombineOutTradeNo string `json:"combine_out_trade_no"`
	// Reason is one of the Closed* constants.
	Reason string `json:"reason"`
	// ClosedAt is when the product learned or made it closed.
	ClosedAt time.Time `json:"closed_at"`
}

// Codes of CloseFailed.
const (
	// CodeOrderPaid: the order is paid, so it cannot be closed; its
	// PaymentSucceeded is published too.
	CodeOrderPaid = "ORDER_PAID"
	// CodeOrderNotExist: WeChat Pay has no such order.
	CodeOrderNotExist = "ORDER_NOT_EXIST"
	// CodeUnexpectedState: WeChat Pay reports a state that is neither open
	// nor paid nor closed (REFUND, PAYERROR, sub-orders that disagree).
	CodeUnexpectedState = "UNEXPECTED_STATE"
)

// CloseFailed reports that a CloseOrderJob did not close its order, and
// why. Published on Subjects.CloseFailed with Nats-Msg-Id =
// CloseFailedMsgID.
type CloseFailed struct {
	Version           int    `json:"version"`
	CorrelationID     string `json:"correlation_id,omitempty"`
	CombineMchID      string `json:"combine_mchid"`
	CombineOutTradeNo string `json:"combine_out_trade_no"`
	// Code is one of CodeOrderPaid, CodeOrderNotExist,
	// CodeUnexpectedState, CodeMalformedJob, CodeRetriesExhausted, or
	// WeChat Pay's code.
	Code    string `json:"code"`
	Message string `json:"message"`
	// TradeStates are the sub-orders' states as WeChat Pay reported them,
	// when it answered.
	TradeStates []string  `json:"trade_states,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
}

// ReconcileMsgID is the Nats-Msg-Id of an order's ReconcileCheck:
// "reconcile:<combine_mchid>:<combine_out_trade_no>".
func ReconcileMsgID(mchID, outTradeNo string) string {
	return "reconcile:" + mchID + ":" + outTradeNo
}

// CloseJobMsgID is the Nats-Msg-Id a checkout sets on a CloseOrderJob:
// "close:<combine_mchid>:<combine_out_trade_no>".
func CloseJobMsgID(mchID, outTradeNo string) string { return "close:" + mchID + ":" + outTradeNo }

// OrderClosedMsgID is the Nats-Msg-Id of an order's OrderClosed:
// "closed:<combine_mchid>:<combine_out_trade_no>". An order is closed once,
// whoever closes it.
func OrderClosedMsgID(mchID, outTradeNo string) string { return "closed:" + mchID + ":" + outTradeNo }

// CloseFailedMsgID is the Nats-Msg-Id of the CloseFailed of the close job
// stored at seq in stream.
func CloseFailedMsgID(mchID, outTradeNo, stream string, seq uint64) string {
	return "close.failed:" + mchID + ":" + outTradeNo + ":" + stream + ":" + strconv.FormatUint(seq, 10)
}

// RefreshedPrepayMsgID is the Nats-Msg-Id of a PrepayCreated that carries a
// new prepay_id for an order whose first one expired:
// "prepay:<combine_mchid>:<combine_out_trade_no>:<prepay_id, h5_url or
// code_url>". WeChat Pay answers identical creates with one prepay_id while
// it is valid, so two workers refreshing at once publish one event.
func RefreshedPrepayMsgID(mchID, outTradeNo, answer string) string {
	return "prepay:" + mchID + ":" + outTradeNo + ":" + answer
}

// Validity of what a create answers, as WeChat Pay documents it.
const (
	// PrepayValidity is how long a prepay_id (and a code_url) can be paid.
	PrepayValidity = 2 * time.Hour
	// H5URLValidity is how long an h5_url can be opened.
	H5URLValidity = 5 * time.Minute
)

// PrepayExpiry answers when what a create of trade type t answered at
// createdAt stops working.
func PrepayExpiry(t wechat.TradeType, createdAt time.Time) time.Time {
	if t == wechat.TradeTypeH5 {
		return createdAt.Add(H5URLValidity)
	}
	return createdAt.Add(PrepayValidity)
}

// ErrNotPaid reports an order, from a query answer or a notification, that
// is not entirely and consistently paid.
var ErrNotPaid = errors.New("events: order not paid")

// CheckPaid reports whether o, as WeChat Pay reported it, is a payment:
// at least one sub-order, every sub-order's trade_state SUCCESS with a
// transaction_id, and consistent amounts (a positive total_amount with a
// currency, 0 ≤ payer_amount ≤ total_amount — less when a promotion paid
// part of it — and a payer_currency, when given, that is a currency). Any
// other answer is an error matching ErrNotPaid that names what is wrong;
// it must never be published as a PaymentSucceeded.
func CheckPaid(o *wechat.CombineOrder) error {
	if len(o.SubOrders) == 0 {
		return fmt.Errorf("%w: no sub-orders", ErrNotPaid)
	}
	for i, s := range o.SubOrders {
		a := s.Amount
		switch {
		case s.TradeState != wechat.TradeStateSuccess:
			return fmt.Errorf("%w: sub_orders[%d] trade_state %s", ErrNotPaid, i, s.TradeState)
		case s.TransactionID == "":
			return fmt.Errorf("%w: sub_orders[%d] has no transaction_id", ErrNotPaid, i)
		case a.TotalAmount <= 0 || a.Currency == "":
			return fmt.Errorf("%w: sub_orders[%d] total_amount %d %q", ErrNotPaid, i, a.TotalAmount, a.Currency)
		case a.PayerAmount < 0 || a.PayerAmount > a.TotalAmount:
			return fmt.Errorf("%w: sub_orders[%d] payer_amount %d outside 0..total_amount %d", ErrNotPaid, i, a.PayerAmount, a.TotalAmount)
		}
	}
	return nil
}

// TradeStates lists o's sub-order trade states, for logs and CloseFailed.
func TradeStates(o *wechat.CombineOrder) []string {
	out := make([]string, len(o.SubOrders))
	for i, s := range o.SubOrders {
		out[i] = s.TradeState
	}
	return out
}
