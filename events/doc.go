// Package events is the contract on the wire between checkout systems, the
// order workers and the notifier: the NATS subjects and JetStream streams,
// the job and event types, their JSON and their version. It does no I/O.
//
// # Subjects
//
// With the default prefix "combine" ([SubjectPrefixDefault]):
//
//	combine.orders.create.<app|jsapi|h5|native|miniprogram>  CreateOrderJob    stream COMBINE_ORDER_JOBS
//	combine.orders.prepay.created                            PrepayCreated     stream COMBINE_ORDER_EVENTS
//	combine.orders.prepay.failed                             PrepayFailed      stream COMBINE_ORDER_EVENTS
//	combine.payments.succeeded                               PaymentSucceeded  stream COMBINE_ORDER_EVENTS
//	combine.orders.closed                                    OrderClosed       stream COMBINE_ORDER_EVENTS
//	combine.orders.close.failed                              CloseFailed       stream COMBINE_ORDER_EVENTS
//	combine.orders.deadletter.<reason>                       DeadLetter        stream COMBINE_ORDER_DEADLETTERS
//	combine.orders.reconcile.<combine_mchid>                 ReconcileCheck    stream COMBINE_ORDER_RECONCILE
//	combine.orders.close                                     CloseOrderJob     stream COMBINE_ORDER_RECONCILE
//
// [Subjects] derives every subject from another prefix.
//
// # Message IDs
//
// Producers set the Nats-Msg-Id header of a job to [JobMsgID]
// ("<combine_mchid>:<combine_out_trade_no>"), so JetStream drops a job
// published twice within the jobs stream's duplicate window. Every event is
// published with a deterministic ID, so an outcome published again after a
// crash is dropped as well: an order's outcome, whatever its kind, always
// under [OutcomeMsgID]; a failure that is not the order's outcome under
// [JobFailedMsgID]; a payment under [PaymentSucceededMsgID]; a dead letter
// under [DeadLetterMsgID]; an order's close under [OrderClosedMsgID]. [CheckPaid]
// decides what is a payment: nothing else is ever published as one.
//
// # Versions
//
// Every type carries a "version" field. [DecodeJob] accepts only [Version]
// and rejects unknown fields, trailing data and bodies over [MaxJobSize]; a
// change to the JSON that an old reader would misread gets a new version.
package events
