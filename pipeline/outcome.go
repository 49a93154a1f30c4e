package pipeline

// The order's outcome record.
//
// An order has one outcome, and it lives in one place: the idempotency
// store's record of (combine_mchid, combine_out_trade_no). Every path that
// settles an order — prepay created, a final rejection, an order found
// paid or closed at WeChat Pay, the delivery limit, JetStream's
// MAX_DELIVERIES advisory — writes the outcome there under the claim's
// fencing token, and publishes what the record holds:
//
//   - first writer wins: Complete succeeds only for the live lease, so a
//     worker whose lease was taken over never overwrites the outcome; it
//     claims again, finds the record done, and publishes the stored
//     outcome instead of its own;
//   - one Nats-Msg-Id per order's outcome (events.OutcomeMsgID, the
//     payment's own id for an order found paid), so JetStream's duplicate
//     window can never store two different outcomes of one order;
//   - what is not the order's outcome (a refused job, a configuration
//     error, an order WeChat Pay does not have) is never written to the
//     record: it is published as a PrepayFailed with Final false under the
//     job's own id (events.JobFailedMsgID), so it neither masks the order's
//     outcome nor stops a later job from creating the order.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/idempotency"
	"github.com/wxcombine/orderworker/metrics"
)

// record is what the store keeps for an order with an outcome. Exactly one
// of Created, Failed and Paid is set.
type record struct {
	// Created is the prepay.created event.
	Created *events.PrepayCreated `json:"created,omitempty"`
	// Failed is a final prepay.failed event (Final true).
	Failed *events.PrepayFailed `json:"failed,omitempty"`
	// Paid is the payment of an order that WeChat Pay reported paid when
	// the worker asked (its prepay event went out before the record was
	// lost).
	Paid *events.PaymentSucceeded `json:"paid,omitempty"`
}

func (r *record) valid() bool {
	n := 0
	for _, set := range []bool{r.Created != nil, r.Failed != nil, r.Paid != nil} {
		if set {
			n++
		}
	}
	return n == 1
}

// decodeRecord reads a stored record.
func decodeRecord(data []byte) (*record, error) {
	var r record
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("stored outcome: %w", err)
	}
	if !r.valid() {
		return nil, errors.New("stored outcome holds no single outcome")
	}
	return &r, nil
}

// message answers the subject, Nats-Msg-Id, body and metrics kind of the
// record's event.
func (p *Processor) message(r *record) (subject, msgID string, v any, kind string) {
	switch {
	case r.Created != nil:
		return p.cfg.Subjects.PrepayCreated(), events.OutcomeMsgID(r.Created.CombineMchID, r.Created.CombineOutTradeNo), r.Created, metrics.EventPrepayCreated
	case r.Failed != nil:
		return p.cfg.Subjects.PrepayFailed(), events.OutcomeMsgID(r.Failed.CombineMchID, r.Failed.CombineOutTradeNo), r.Failed, metrics.EventPrepayFailed
	default:
		return p.cfg.Subjects.PaymentSucceeded(), events.PaymentSucceededMsgID(r.Paid.CombineMchID, r.Paid.CombineOutTradeNo), r.Paid, metrics.EventPaymentSucceeded
	}
}

// publishRecord publishes the record's event.
func (p *Processor) publishRecord(ctx context.Context, j *job, r *record) error {
	if r.Created != nil {
		// Watched until paid or closed, before its prepay goes out.
		if err := p.scheduleReconcile(ctx, j, r.Created); err != nil {
			return err
		}
	}
	if r.Paid != nil {
		return publishPaymentOnce(ctx, p.cfg.Publisher, p.cfg.Seen, p.cfg.SeenTTL, p.cfg.Subjects, r.Paid)
	}
	subject, id, v, kind := p.message(r)
	return p.publish(ctx, j, subject, id, v, kind)
}

// settle stores r as the order's outcome under token and publishes what the
// record then holds: r, or — if another worker's outcome got there first —
// that one. It answers nil (Ack) once the event is stored, or a Hold/Retry
// error.
func (p *Processor) settle(ctx context.Context, j *job, token uint64, r *record) error {
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode outcome: %w", err)
	}
	sctx, cancel := settleCtx(ctx)
	defer cancel()
	err = p.cfg.Store.Complete(sctx, j.key, token, data, p.cfg.OutcomeTTL)
	switch {
	case err == nil:
		p.storeResult(nil)
	case errors.Is(err, idempotency.ErrStaleToken):
		// The lease ran out and another worker took the order over. First
		// writer wins: claim again and publish what the record holds.
		j.logger().WarnContext(ctx, "lease lost before the outcome was stored; the record decides")
		if j.reclaimed {
			// Lost twice in a row: let a later attempt start afresh.
			return RetryAfter(InFlightDelayMin, fmt.Errorf("complete %s: %w", j.key, err))
		}
		j.reclaimed = true
		return p.adopt(ctx, j, r)
	default:
		p.storeResult(err)
		j.logger().WarnContext(ctx, "outcome not stored; job held until the store answers", slog.Any("error", err))
		return Hold(p.cfg.StoreRetryDelay, fmt.Errorf("complete %s: %w", j.key, err))
	}
	if err := p.publishRecord(sctx, j, r); err != nil {
		// Stored: the next attempt republishes it without a WeChat call.
		return RetryAfter(InFlightDelayMin, err)
	}
	return nil
}

// adopt is settle after a lost lease: it claims the order again and
// publishes the stored outcome, or, when nothing was stored, stores r with
// the new token.
func (p *Processor) adopt(ctx context.Context, j *job, r *record) error {
	sctx, cancel := settleCtx(ctx)
	defer cancel()
	claim, err := p.cfg.Store.Claim(sctx, j.key, j.fp, p.cfg.Lease)
	if err != nil {
		p.storeResult(err)
		return Hold(p.cfg.StoreRetryDelay, fmt.Errorf("claim %s: %w", j.key, err))
	}
	p.storeResult(nil)
	switch claim.State {
	case idempotency.StateDone:
		j.adopted = true
		return p.republish(ctx, j, claim.Outcome)
	case idempotency.StateClaimed:
		return p.settle(ctx, j, claim.Token, r)
	case idempotency.StateInFlight:
		return Hold(max(claim.ExpiresIn, InFlightDelayMin), fmt.Errorf("order %s is in flight", j.key))
	default:
		// The fingerprint cannot change under one job; a conflict means the
		// record was replaced by another order's: that order's job owns it.
		return p.refuse(ctx, j, events.ReasonConflict, conflictFailure(), errors.New("order number taken by an order with other parameters"))
	}
}

// republish publishes a stored outcome again, unchanged.
func (p *Processor) republish(ctx context.Context, j *job, data []byte) error {
	r, err := decodeRecord(data)
	if err != nil {
		j.logger().ErrorContext(ctx, "stored outcome is unreadable", slog.Any("error", err))
		return RetryAfter(p.RedeliveryDelay(j.d.NumDelivered), fmt.Errorf("order %s: %w", j.key, err))
	}
	if r.Created != nil && p.expired(r.Created) {
		// Its prepay_id no longer works: never hand it out again.
		return p.refreshPrepay(ctx, j, r.Created)
	}
	if err := p.publishRecord(ctx, j, r); err != nil {
		return RetryAfter(InFlightDelayMin, err)
	}
	j.logger().InfoContext(ctx, "order already settled; stored outcome republished")
	return nil
}
