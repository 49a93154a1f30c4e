package events

import (
	"strconv"
	"strings"

	"github.com/wxcombine/orderworker/wechat"
)

// SubjectPrefixDefault is the first token of every subject.
const SubjectPrefixDefault = "combine"

// Subjects and stream subjects under the default prefix.
const (
	// SubjectJobPrefix starts the job subjects; the last token is the trade
	// type: combine.orders.create.jsapi.
	SubjectJobPrefix = SubjectPrefixDefault + ".orders.create"
	// SubjectPrepayCreated carries PrepayCreated events.
	SubjectPrepayCreated = SubjectPrefixDefault + ".orders.prepay.created"
	// SubjectPrepayFailed carries PrepayFailed events.
	SubjectPrepayFailed = SubjectPrefixDefault + ".orders.prepay.failed"
	// SubjectPaymentSucceeded carries PaymentSucceeded events, published by
	// the notifier, and by a worker that finds an order already paid.
	SubjectPaymentSucceeded = SubjectPrefixDefault + ".payments.succeeded"
	// SubjectDeadLetterPrefix starts the dead-letter subjects; the last token
	// is the reason: combine.orders.deadletter.malformed.
	SubjectDeadLetterPrefix = SubjectPrefixDefault + ".orders.deadletter"
)

// Stream names.
const (
	// StreamJobs holds CreateOrderJob messages (work-queue retention).
	StreamJobs = "COMBINE_ORDER_JOBS"
	// StreamEvents holds PrepayCreated, PrepayFailed, PaymentSucceeded,
	// OrderClosed and CloseFailed.
	StreamEvents = "COMBINE_ORDER_EVENTS"
	// StreamDeadLetters holds DeadLetter messages.
	StreamDeadLetters = "COMBINE_ORDER_DEADLETTERS"
)

// HeaderMsgID is the JetStream deduplication header.
const HeaderMsgID = "Nats-Msg-Id"

// HeaderCorrelationID carries a job's correlation id on every event it
// causes, so consumers can filter without decoding.
const HeaderCorrelationID = "Correlation-Id"

// Subjects derives every subject from one prefix. The zero value uses
// SubjectPrefixDefault.
type Subjects struct {
	// Prefix is the first token(s) of every subject. Defaults to "combine".
	Prefix string
}

func (s Subjects) prefix() string {
	if s.Prefix == "" {
		return SubjectPrefixDefault
	}
	return s.Prefix
}

// Job answers the job subject of a trade type: <prefix>.orders.create.<t>.
func (s Subjects) Job(t wechat.TradeType) string {
	return s.prefix() + ".orders.create." + string(t)
}

// Jobs answers the wildcard of every job subject: <prefix>.orders.create.*.
func (s Subjects) Jobs() string { return s.prefix() + ".orders.create.*" }

// TradeTypeOf answers the trade type a job subject names, and whether the
// subject is a job subject of a known trade type.
func (s Subjects) TradeTypeOf(subject string) (wechat.TradeType, bool) {
	rest, ok := strings.CutPrefix(subject, s.prefix()+".orders.create.")
	if !ok {
		return "", false
	}
	t := wechat.TradeType(rest)
	return t, t.Valid()
}

// PrepayCreated answers <prefix>.orders.prepay.created.
func (s Subjects) PrepayCreated() string { return s.prefix() + ".orders.prepay.created" }

// PrepayFailed answers <prefix>.orders.prepay.failed.
func (s Subjects) PrepayFailed() string { return s.prefix() + ".orders.prepay.failed" }

// PaymentSucceeded answers <prefix>.payments.succeeded.
func (s Subjects) PaymentSucceeded() string { return s.prefix() + ".payments.succeeded" }

// Events answers the subjects of the events stream.
func (s Subjects) Events() []string {
	return []string{s.prefix() + ".orders.prepay.>", s.prefix() + ".payments.>", s.OrderClosed(), s.CloseFailed()}
}

// DeadLetter answers the dead-letter subject of a reason:
// <prefix>.orders.deadletter.<reason>.
func (s Subjects) DeadLetter(r Reason) string {
	return s.prefix() + ".orders.deadletter." + string(r)
}

// DeadLetters answers the wildcard of every dead-letter subject.
func (s Subjects) DeadLetters() string { return s.prefix() + ".orders.deadletter.*" }

// JobMsgID is the Nats-Msg-Id producers must set on a job:
// "<combine_mchid>:<combine_out_trade_no>". The same order published twice
// within the jobs stream's duplicate window is stored once.
func JobMsgID(mchID, outTradeNo string) string { return mchID + ":" + outTradeNo }

// OutcomeMsgID is the Nats-Msg-Id of an order's outcome, whatever its kind
// (PrepayCreated, a final PrepayFailed, or the PaymentSucceeded of an order
// found paid): "outcome:<combine_mchid>:<combine_out_trade_no>". One id per
// order means JetStream's duplicate window can never store two different
// outcomes of one order.
func OutcomeMsgID(mchID, outTradeNo string) string {
	return "outcome:" + mchID + ":" + outTradeNo
}

// PrepayCreatedMsgID is the Nats-Msg-Id of an order's PrepayCreated event:
// its OutcomeMsgID.
func PrepayCreatedMsgID(mchID, outTradeNo string) string { return OutcomeMsgID(mchID, outTradeNo) }

// PrepayFailedMsgID is the Nats-Msg-Id of an order's final PrepayFailed
// event (Final true): its OutcomeMsgID.
func PrepayFailedMsgID(mchID, outTradeNo string) string { return OutcomeMsgID(mchID, outTradeNo) }

// JobFailedMsgID is the Nats-Msg-Id of a PrepayFailed that is not the
// order's outcome (Final false: the job was refused or the order was not
// created, and the same order number may come back):
// "prepay.failed:<combine_mchid>:<combine_out_trade_no>:<stream>:<seq>".
// It names the job, not the order, so it never masks — and is never masked
// by — the order's outcome, and a job settled twice after a crash is
// stored once.
func JobFailedMsgID(mchID, outTradeNo, stream string, seq uint64) string {
	return "prepay.failed:" + mchID + ":" + outTradeNo + ":" + stream + ":" + strconv.FormatUint(seq, 10)
}

// PaymentSucceededMsgID is the Nats-Msg-Id of the PaymentSucceeded event of
// an order: "payment:<combine_mchid>:<combine_out_trade_no>". A combine order
// is paid at most once, so the notifier (for every re-sent notification)
// and the worker (for an order it finds paid) publish one payment under one
// id, whichever reports it first.
func PaymentSucceededMsgID(mchID, outTradeNo string) string {
	return "payment:" + mchID + ":" + outTradeNo
}

// DeadLetterMsgID is the Nats-Msg-Id of the dead letter of the job stored at
// seq in stream: "deadletter:<stream>:<seq>". A job dead-lettered again after
// a crash is stored once.
func DeadLetterMsgID(stream string, seq uint64) string {
	return "deadletter:" + stream + ":" + strconv.FormatUint(seq, 10)
}
