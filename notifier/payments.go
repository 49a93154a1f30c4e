package notifier

// The publish path: one payment event per payment, and only for payments.
//
// A verified notification is published as a PaymentSucceeded only if
// events.CheckPaid accepts its transaction: every sub-order SUCCESS with a
// transaction_id, and consistent amounts. Anything else (a sub-order
// NOTPAY, REFUND, PAYERROR or CLOSED; a payer_amount above total_amount) is
// an anomaly: nothing is published, it is logged and counted
// (ResultNotPaid, orderworker_payment_anomalies_total{source="notifier"}),
// and WeChat Pay is answered 200 so it does not re-send what will not
// change; the reconciler's queries report the order's true state.
//
// With Config.Seen (the record shared with the reconciler and the workers,
// see idempotency.Seen), a payment already published — by an earlier
// notification, however many hours ago, or by the reconciler — is not
// published again: the answer is 200 (ResultDuplicate). The record is read
// before and written after the event is stored; if it cannot be read or
// written the answer is 500 and WeChat Pay sends the notification again.

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/idempotency"
	"github.com/wxcombine/orderworker/metrics"
	"github.com/wxcombine/orderworker/wechat"
)

// ResultNotPaid is the result of a verified notification whose transaction is not a
// consistent payment: nothing published, answered 200.
const ResultNotPaid Result = metrics.NotificationNotPaid

// payments is the handler's publish path.
type payments struct {
	seen      idempotency.Seen
	seenTTL   time.Duration
	anomalies *metrics.PaymentAnomalies
}

// publishPayment publishes the payment of a verified notification once and
// writes the answer of a success; on failure the caller writes it.
func (h *Handler) publishPayment(ctx context.Context, w http.ResponseWriter, n *wechat.Notification, log **slog.Logger) (Result, error) {
	tx := &n.Transaction
	if err := events.CheckPaid(tx); err != nil {
		h.pay.anomalies.Inc(metrics.AnomalyNotifier)
		*log = (*log).With(slog.Any("trade_states", events.TradeStates(tx)))
		(*log).ErrorContext(ctx, "notification is not a consistent payment; nothing published", slog.String("reason", err.Error()))
		writeJSON(w, http.StatusOK, wireBody{Code: "SUCCESS", Message: "received"})
		return ResultNotPaid, nil
	}
	key := idempotency.Key{MchID: tx.CombineMchID, OutTradeNo: tx.CombineOutTradeNo}
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	if h.pay.seen != nil {
		seen, err := h.pay.seen.Seen(ctx, idempotency.SeenPayment, key)
		if err != nil {
			return ResultPublishError, fmt.Errorf("payments seen: %w", err)
		}
		if seen {
			*log = (*log).With(slog.Bool("duplicate", true), slog.Bool("seen", true))
			writeJSON(w, http.StatusOK, wireBody{Code: "SUCCESS", Message: "duplicate notification"})
			return ResultDuplicate, nil
		}
	}
	data, err := json.Marshal(h.event(n))
	if err != nil {
		return ResultMalformed, fmt.Errorf("encode event: %w", err)
	}
	msg := nats.NewMsg(h.subject)
	msg.Data = data
	msg.Header.Set(events.HeaderMsgID, events.PaymentSucceededMsgID(key.MchID, key.OutTradeNo))
	pubStart := time.Now()
	ack, err := h.pub.PublishMsg(ctx, msg, jetstream.WithExpectStream(h.stream))
	h.metrics.Publish(time.Since(pubStart))
	if err != nil {
		return ResultPublishError, fmt.Errorf("publish %s: %w", h.subject, err)
	}
	*log = (*log).With(slog.Uint64("stream_seq", ack.Sequence), slog.Bool("duplicate", ack.Duplicate))
	if h.pay.seen != nil {
		if err := h.pay.seen.MarkSeen(ctx, idempotency.SeenPayment, key, h.pay.seenTTL); err != nil {
			// Stored, not recorded: the re-sent notification is a duplicate
			// within the stream's window and records it then.
			return ResultPublishError, fmt.Errorf("record payment seen: %w", err)
		}
	}
	if ack.Duplicate {
		writeJSON(w, http.StatusOK, wireBody{Code: "SUCCESS", Message: "duplicate notification"})
		return ResultDuplicate, nil
	}
	w.WriteHeader(http.StatusNoContent)
	return ResultOK, nil
}
