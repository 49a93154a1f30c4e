package pipeline

// Asking WeChat Pay when unsure.
//
// The record cannot say what happened to an order when the worker never
// got an answer it can trust (timeouts, transport errors, unverifiable
// answers, 5xx until the delivery limit), or when WeChat Pay's answer
// contradicts the record (create says the number is used, closed or paid,
// and the record was lost: a Redis restarted empty, a failover, an expired
// outcome, a dead letter replayed weeks later). Then WeChat Pay's own record
// decides: the worker queries the order by combine_out_trade_no and
// publishes its true state, never a failure that contradicts it.
//
//	query answer             after unknown outcomes (delivery limit)          after "used / closed / paid"
//	ORDER_NOT_EXIST          failure ORDER_NOT_CREATED, Final false:          the answer stands: final
//	                         publish the same job again                       failure with WeChat's code
//	every sub-order SUCCESS  payment event (the notifier's id), stored        the same
//	every sub-order CLOSED   orders.closed, final failure ORDER_CLOSED:       the same
//	                         new order numbers
//	NOTPAY (or USERPAYING)   create again with the identical body: WeChat     failure with WeChat's code,
//	                         Pay answers the same prepay_id → prepay.created; Final false (the number
//	                         if that fails too, close the order →             belongs to an order with
//	                         orders.closed, final failure ORDER_CLOSED:       other parameters)
//	                         new order numbers — unless its prepay was
//	                         published before (prepayseen.go): then it stays
//	                         open, failure RETRIES_EXHAUSTED, Final false
//	anything else (REFUND,   dead letter "unexpected_state", nothing          the same
//	PAYERROR, mixed states)  published for the order
//	query fails              failure RETRIES_EXHAUSTED, Final false:          the job is handed back while
//	                         state unknown, publish the same job again        a delivery is left; on the last,
//	                                                                          as after unknown outcomes
//
// Failures with Final false are not stored: the claim is released, so the
// same job published again (or its dead letter replayed) asks WeChat Pay
// afresh.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/internal/tracing"
	"github.com/wxcombine/orderworker/metrics"
	"github.com/wxcombine/orderworker/wechat"
)

// orderState summarises the sub-orders' trade states of a queried order.
type orderState int

const (
	stateMixed orderState = iota // sub-orders disagree, or a state the worker does not settle
	stateNotPaid
	statePaid
	stateClosed
)

func stateOf(o *wechat.CombineOrder) orderState {
	if len(o.SubOrders) == 0 {
		return stateMixed
	}
	var paid, open, closed int
	for _, s := range o.SubOrders {
		switch s.TradeState {
		case wechat.TradeStateSuccess:
			paid++
		case wechat.TradeStateNotPay, "USERPAYING":
			open++
		case wechat.TradeStateClosed:
			closed++
		}
	}
	switch n := len(o.SubOrders); n {
	case paid:
		if events.CheckPaid(o) != nil {
			return stateMixed // SUCCESS, but amounts that are no payment
		}
		return statePaid
	case open:
		return stateNotPaid
	case closed:
		return stateClosed
	}
	return stateMixed
}

// ask settles an order whose fate the worker does not know, by WeChat Pay's
// record (see the table above). cause is why it asks: the last error of the
// create calls. recoverable says the job's own body may be sent again (after
// unknown outcomes); it is false when create answered that the order number
// is taken, so the order belongs to another body or is settled.
func (p *Processor) ask(ctx context.Context, j *job, token uint64, cause error, recoverable bool) error {
	p.m.AskedWeChat(metrics.TruthQuery)
	order, err := p.query(ctx, j)
	switch {
	case errors.Is(err, wechat.ErrOrderNotExist):
		if !recoverable {
			// The refusal was about the request, not a taken number.
			return p.settleFailure(ctx, j, token, failureOf(cause), reasonOf(cause), cause)
		}
		f := &events.PrepayFailed{
			Code: events.CodeOrderNotCreated,
			Message: fmt.Sprintf("WeChat Pay kept failing (%s) until the delivery limit of %d and has no such order: publish the same job again (same order number and parameters)",
				CallCode(cause), p.cfg.MaxDeliver),
		}
		return p.release(ctx, j, token, events.ReasonMaxDeliveries, f, cause)
	case err != nil && !j.last:
		// A delivery is left: it asks again, rather than this one telling
		// the checkout to publish the job again.
		return p.retryLater(ctx, j, token, errors.Join(cause, err))
	case err != nil:
		f := &events.PrepayFailed{
			Code: events.CodeRetriesExhausted,
			Message: fmt.Sprintf("WeChat Pay kept failing (%s) and the order could not be queried (%s): its state is unknown; publish the same job again (same order number and parameters)",
				CallCode(cause), CallCode(err)),
		}
		return p.release(ctx, j, token, events.ReasonMaxDeliveries, f, errors.Join(cause, err))
	}
	switch stateOf(order) {
	case statePaid:
		j.logger().InfoContext(ctx, "WeChat Pay reports the order paid; payment published")
		return p.settle(ctx, j, token, &record{Paid: events.PaymentOf(order, "", p.cfg.NowFunc())})
	case stateClosed:
		if err := p.announceClosed(ctx, j, token, events.ClosedAtWeChat); err != nil {
			return err
		}
		return p.settleFailure(ctx, j, token, closedFailure("WeChat Pay reports the order closed"), events.ReasonRejected, cause)
	case stateNotPaid:
		if !recoverable {
			f := failureOf(cause)
			f.Message = "the order number belongs to an unpaid order with other parameters at WeChat Pay: " + f.Message
			f.RetryWithNewOrderNumber = true
			return p.release(ctx, j, token, events.ReasonConflict, f, cause)
		}
		return p.recoverOrClose(ctx, j, token, cause)
	default:
		j.logger().ErrorContext(ctx, "WeChat Pay reports the order in a state the worker does not settle; nothing published", slog.Any("trade_states", tradeStates(order)))
		p.m.AskedWeChat(metrics.TruthUnexpectedState)
		if err := p.releaseClaim(ctx, j, token); err != nil {
			return err
		}
		return p.deadLetterOnly(ctx, j, events.ReasonUnexpectedState, fmt.Errorf("trade states %v: %w", tradeStates(order), cause))
	}
}

// recoverOrClose handles an unpaid order that exists after unknown
// outcomes: a create with the identical body answers its prepay_id; if even
// that cannot be had, the order is closed so that it can never be paid
// behind the checkout's back.
func (p *Processor) recoverOrClose(ctx context.Context, j *job, token uint64, cause error) error {
	res, err := p.create(ctx, j)
	if err == nil {
		p.m.AskedWeChat(metrics.TruthRecovered)
		j.logger().InfoContext(ctx, "order found unpaid at WeChat Pay; prepay_id recovered with the identical body")
		return p.succeed(ctx, j, token, res)
	}
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return p.retryLater(ctx, j, token, err)
	}
	if st := p.prepayPublished(ctx, j); st == published || st == unreadable {
		// A checkout may hold the order's prepay (prepayseen.go): it stays
		// open and payable, and this job ends without the order's outcome.
		was := "was"
		if st == unreadable {
			was = "may have been"
		}
		f := &events.PrepayFailed{
			Code: events.CodeRetriesExhausted,
			Message: fmt.Sprintf("the order exists unpaid at WeChat Pay and its prepay %s published before, but its prepay_id could not be had again (%s): the order stays payable; publish the same job again (same order number and parameters) for its prepay_id",
				was, CallCode(err)),
		}
		p.m.AskedWeChat(metrics.TruthKeptOpen)
		j.logger().WarnContext(ctx, "order left open at WeChat Pay: its prepay "+was+" published before", slog.String("wechat_code", CallCode(err)))
		return p.release(ctx, j, token, events.ReasonMaxDeliveries, f, errors.Join(cause, err))
	}
	if err := p.close(ctx, j); err != nil {
		if order, qerr := p.query(ctx, j); qerr == nil && stateOf(order) == statePaid {
			// Paid between the query and the close.
			return p.settle(ctx, j, token, &record{Paid: events.PaymentOf(order, "", p.cfg.NowFunc())})
		}
		f := &events.PrepayFailed{
			Code: events.CodeRetriesExhausted,
			Message: fmt.Sprintf("the order exists unpaid at WeChat Pay, but neither its prepay_id (%s) nor a close (%s) could be had: publish the same job again (same order number and parameters)",
				CallCode(cause), CallCode(err)),
		}
		return p.release(ctx, j, token, events.ReasonMaxDeliveries, f, errors.Join(cause, err))
	}
	p.m.AskedWeChat(metrics.TruthClosed)
	j.logger().WarnContext(ctx, "order closed at WeChat Pay: its prepay_id could not be had", slog.String("wechat_code", CallCode(cause)))
	if err := p.announceClosed(ctx, j, token, events.ClosedUnrecoverable); err != nil {
		return err
	}
	return p.settleFailure(ctx, j, token, closedFailure(fmt.Sprintf("WeChat Pay kept failing (%s); the order was closed so it cannot be paid", CallCode(cause))),
		events.ReasonMaxDeliveries, cause)
}

// announceClosed publishes the orders.closed of an order the worker closed
// or found closed, once (by the Seen record), before its final failure: every
// order closed at WeChat Pay has one. On failure the claim is released and
// the job handed back; the next delivery finds the order closed and
// publishes both.
func (p *Processor) announceClosed(ctx context.Context, j *job, token uint64, reason string) error {
	err := publishClosedOnce(ctx, p.cfg.Publisher, p.cfg.Seen, p.cfg.SeenTTL, p.cfg.Subjects, &events.OrderClosed{
		Version: events.Version, CorrelationID: j.job.CorrelationID, CombineMchID: j.key.MchID, CombineOutTradeNo: j.key.OutTradeNo,
		Reason: reason, ClosedAt: p.cfg.NowFunc().UTC(),
	}, true)
	if err == nil {
		return nil
	}
	if rerr := p.releaseClaim(ctx, j, token); rerr != nil {
		return rerr
	}
	return RetryAfter(InFlightDelayMin, err)
}

// closedFailure is the final failure of a closed order.
func closedFailure(why string) *events.PrepayFailed {
	return &events.PrepayFailed{
		Code:                    events.CodeOrderClosed,
		Message:                 why + ": publish it again under new order numbers",
		RetryWithNewOrderNumber: true,
	}
}

func tradeStates(o *wechat.CombineOrder) []string {
	out := make([]string, len(o.SubOrders))
	for i, s := range o.SubOrders {
		out[i] = s.TradeState
	}
	return out
}

// query asks WeChat Pay for the order, retrying what may be retried.
func (p *Processor) query(ctx context.Context, j *job) (*wechat.CombineOrder, error) {
	return retryCall(ctx, p, j, "query", nil, func(ctx context.Context) (*wechat.CombineOrder, error) {
		return p.cfg.Payer.QueryByOutTradeNo(ctx, j.key.MchID, j.key.OutTradeNo)
	})
}

// close closes the order at WeChat Pay, retrying what may be retried.
func (p *Processor) close(ctx context.Context, j *job) error {
	req := wechat.CloseRequestFor(&j.job.Request)
	_, err := retryCall(ctx, p, j, "close", nil, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, p.cfg.Payer.Close(ctx, j.key.MchID, j.key.OutTradeNo, &req)
	})
	return err
}

// retryCall makes one WeChat Pay call with the in-process retry policy.
// wait, when set, runs before each attempt, outside its timeout (the
// merchant's rate budget); its error ends the retries.
func retryCall[T any](ctx context.Context, p *Processor, j *job, op string, wait func() error, call func(context.Context) (T, error)) (T, error) {
	retries := uint64(max(p.cfg.Retry.MaxAttempts-1, 0)) //nolint:gosec // not negative
	b := backoff.WithContext(backoff.WithMaxRetries(p.cfg.Retry.backOff(), retries), ctx)
	ctx, calls := tracing.StartCalls(ctx, op)
	v, err := backoff.RetryNotifyWithData(func() (T, error) {
		if wait != nil {
			if err := wait(); err != nil {
				var zero T
				return zero, backoff.Permanent(err)
			}
		}
		callCtx, cancel := context.WithTimeout(ctx, p.cfg.CallTimeout)
		defer cancel()
		callCtx, span := calls.Attempt(callCtx)
		start := p.cfg.NowFunc()
		v, err := call(callCtx)
		code := CallCode(err)
		p.m.WeChatRequestContext(callCtx, op, code, p.cfg.NowFunc().Sub(start))
		endAttempt(span, code, err)
		if err != nil && !wechat.Retryable(err) {
			return v, backoff.Permanent(err)
		}
		return v, err
	}, b, func(err error, next time.Duration) {
		p.m.Retry(metrics.RetryInProcess)
		calls.Wait(ctx, next, CallCode(err))
		j.logger().WarnContext(ctx, "wechat call will be retried", slog.String("op", op), slog.String("wechat_code", CallCode(err)),
			slog.Duration("retry_in", next), slog.Any("error", err))
	})
	calls.End(err)
	return v, err
}
