package pipeline

// A prepay that still works.
//
// A prepay_id (and a code_url) can be paid for 2 hours, an h5_url opened
// for 5 minutes (events.PrepayExpiry), while the order's outcome answers
// duplicate jobs for 24 hours. A duplicate job that finds the stored
// prepay.created past its expires_at (less a tenth of its validity, so the
// client has time to pay) never gets that prepay_id again. The worker asks
// WeChat Pay instead, without touching the order's record:
//
//  1. A create with the identical body. WeChat Pay answers a working
//     prepay_id for an order that is still payable (the same one while it
//     is valid, so two workers refreshing at once publish one event); it is
//     published as a prepay.created with a fresh expires_at under
//     events.RefreshedPrepayMsgID.
//  2. If WeChat Pay refuses the repeat (sources disagree on whether an
//     identical create after 2 hours is accepted; see docs/events.md), the
//     order is queried and its true state published: paid → its
//     payments.succeeded (once, by the Seen record); closed → orders.closed;
//     still open → closed at WeChat Pay, then orders.closed (reason
//     prepay_expired). Both closed cases add a prepay.failed ORDER_CLOSED
//     (Final false, retry_with_new_order_number true, under the job's own
//     id) telling the checkout to use new order numbers.
//
// The record keeps the first prepay.created: every duplicate after the
// expiry asks WeChat Pay again, which costs a create call and never hands
// out a dead prepay_id.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/idempotency"
	"github.com/wxcombine/orderworker/metrics"
	"github.com/wxcombine/orderworker/wechat"
)

// expired reports whether ev's prepay is too close to its end to hand out.
func (p *Processor) expired(ev *events.PrepayCreated) bool {
	end := ev.ExpiresAt
	if end.IsZero() {
		end = events.PrepayExpiry(ev.TradeType, ev.CreatedAt) // stored before expires_at existed
	}
	margin := end.Sub(ev.CreatedAt) / 10
	return !p.cfg.NowFunc().Before(end.Add(-margin))
}

// refreshPrepay answers a duplicate job whose stored prepay expired.
func (p *Processor) refreshPrepay(ctx context.Context, j *job, stored *events.PrepayCreated) error {
	log := j.logger().With(slog.Time("expired_at", stored.ExpiresAt))
	res, err := p.create(ctx, j)
	switch {
	case err == nil:
		return p.publishRefreshed(ctx, j, stored, res, log)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded), wechat.Retryable(err), wechat.OperatorError(err):
		log.WarnContext(ctx, "prepay expired and WeChat Pay did not answer a new one yet; job handed back", slog.String("wechat_code", CallCode(err)))
		return RetryAfter(p.RedeliveryDelay(j.d.NumDelivered), err)
	}
	log.InfoContext(ctx, "prepay expired and WeChat Pay refused the identical create; asking for the order's state", slog.String("wechat_code", CallCode(err)))
	order, qerr := p.query(ctx, j)
	if qerr != nil {
		return RetryAfter(p.RedeliveryDelay(j.d.NumDelivered), errors.Join(err, qerr))
	}
	switch stateOf(order) {
	case statePaid:
		if err := publishPaymentOnce(ctx, p.cfg.Publisher, p.cfg.Seen, p.cfg.SeenTTL, p.cfg.Subjects, events.PaymentOf(order, "", p.cfg.NowFunc())); err != nil {
			return RetryAfter(InFlightDelayMin, err)
		}
		log.InfoContext(ctx, "order found paid; payment published instead of the expired prepay")
		return nil
	case stateClosed:
		return p.closedAfterExpiry(ctx, j, events.ClosedAtWeChat, "WeChat Pay reports the order closed")
	case stateNotPaid:
		if cerr := p.close(ctx, j); cerr != nil {
			// Paid meanwhile, or the close failed: the next delivery asks again.
			return RetryAfter(p.RedeliveryDelay(j.d.NumDelivered), errors.Join(err, cerr))
		}
		p.m.AskedWeChat(metrics.TruthClosed)
		return p.closedAfterExpiry(ctx, j, events.ClosedPrepayExpired,
			fmt.Sprintf("the prepay_id expired and WeChat Pay refused a new one (%s); the order was closed so it cannot be paid", CallCode(err)))
	}
	p.m.AskedWeChat(metrics.TruthUnexpectedState)
	return p.deadLetterOnly(ctx, j, events.ReasonUnexpectedState, fmt.Errorf("prepay expired; trade states %v: %w", tradeStates(order), err))
}

// publishRefreshed publishes the working prepay WeChat Pay answered.
func (p *Processor) publishRefreshed(ctx context.Context, j *job, stored *events.PrepayCreated, res *wechat.PrepayResult, log *slog.Logger) error {
	params, err := p.payParams(j, res.PrepayID)
	if err != nil {
		log.ErrorContext(ctx, "sign pay parameters", slog.Any("error", err))
		return RetryAfter(p.RedeliveryDelay(j.d.NumDelivered), fmt.Errorf("sign pay parameters: %w", err))
	}
	ev := *stored
	ev.CorrelationID = j.job.CorrelationID
	ev.PrepayID, ev.H5URL, ev.CodeURL, ev.PayParams = res.PrepayID, res.H5URL, res.CodeURL, params
	ev.Attempts = j.attempts
	ev.CreatedAt = p.cfg.NowFunc().UTC()
	ev.ExpiresAt = events.PrepayExpiry(ev.TradeType, ev.CreatedAt)
	id := events.RefreshedPrepayMsgID(j.key.MchID, j.key.OutTradeNo, res.PrepayID+res.H5URL+res.CodeURL)
	if err := p.publish(ctx, j, p.cfg.Subjects.PrepayCreated(), id, &ev, metrics.EventPrepayCreated); err != nil {
		return RetryAfter(InFlightDelayMin, err)
	}
	log.InfoContext(ctx, "prepay expired; a working one from WeChat Pay published")
	return nil
}

// closedAfterExpiry publishes orders.closed and the failure that sends the
// checkout to new order numbers.
func (p *Processor) closedAfterExpiry(ctx context.Context, j *job, reason, why string) error {
	key := idempotency.Key{MchID: j.key.MchID, OutTradeNo: j.key.OutTradeNo}
	if err := publishClosedOnce(ctx, p.cfg.Publisher, p.cfg.Seen, p.cfg.SeenTTL, p.cfg.Subjects, &events.OrderClosed{
		Version: events.Version, CorrelationID: j.job.CorrelationID, CombineMchID: key.MchID, CombineOutTradeNo: key.OutTradeNo,
		Reason: reason, ClosedAt: p.cfg.NowFunc().UTC(),
	}, false); err != nil {
		return RetryAfter(InFlightDelayMin, err)
	}
	f := closedFailure(why)
	p.fill(j, f)
	sctx, cancel := settleCtx(ctx)
	defer cancel()
	id := events.JobFailedMsgID(j.key.MchID, j.key.OutTradeNo, cmp.Or(j.d.Stream, events.StreamJobs), j.d.Sequence)
	if err := p.publish(sctx, j, p.cfg.Subjects.PrepayFailed(), id, f, metrics.EventPrepayFailed); err != nil {
		return RetryAfter(InFlightDelayMin, err)
	}
	j.logger().WarnContext(ctx, "order closed after its prepay expired; checkout told to use new order numbers", slog.String("reason", reason))
	return nil
}
