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
//     outcome nor stops a later job from creating the order;
//   - a final failure's record also names the dead letter its job owes,
//     so that a dead letter whose publish failed after the failure's is
//     published by the job's redelivery (owedDeadLetter).

import (
	"cmp"
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
	// DeadLetter, beside a final failure, is the dead letter that failure's
	// own job owes. It is published after the failure; if that publish
	// fails, the job is handed back, and its redelivery finds the order
	// settled: republish then publishes the dead letter again (the same
	// Nats-Msg-Id, so a copy that did get through stays one within the
	// duplicate window), where it would otherwise be lost for good. The
	// record cannot tell whether the first copy got through, so a
	// redelivery after the window (a lost ack settled by the sweep) may
	// store a second copy: a replayed second copy is a duplicate job, which
	// the record answers; a lost dead letter would be a silent one.
	DeadLetter *owedDeadLetter `json:"dead_letter,omitempty"`
}

// owedDeadLetter names the job a final failure dead-letters, and why.
type owedDeadLetter struct {
	Reason events.Reason `json:"reason"`
	Error  string        `json:"error"`
	Stream string        `json:"stream"`
	Seq    uint64        `json:"seq"`
}

// owes answers whether r's dead letter is the one of job j.
func (r *record) owes(j *job) bool {
	dl := r.DeadLetter
	return r.Failed != nil && dl != nil && dl.Seq == j.d.Sequence && dl.Stream == cmp.Or(j.d.Stream, events.StreamJobs)
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

// publishRecord publishes the record's event; again says the record was
// stored earlier (a duplicate republishing it).
//
// A prepay is watched until paid or closed: its ReconcileCheck goes out
// before it, and the payments-seen record notes it after (prepayseen.go).
// Only a republished prepay asks that record first: if it was noted, its
// check exists and is not scheduled again, which past the stream's
// duplicate window only the record can tell. A first settle skips the
// read, and a republished prepay already noted skips the check and the
// write: the per-order path costs one record write.
func (p *Processor) publishRecord(ctx context.Context, j *job, r *record, again bool) error {
	if r.Paid != nil {
		return publishPaymentOnce(ctx, p.cfg.Publisher, p.cfg.Seen, p.cfg.SeenTTL, p.cfg.Subjects, r.Paid)
	}
	noted := r.Created != nil && again && p.prepayPublished(ctx, j) == published
	if r.Created != nil && !noted {
		if err := p.scheduleReconcile(ctx, j, r.Created); err != nil {
			return err
		}
	}
	subject, id, v, kind := p.message(r)
	if err := p.publish(ctx, j, subject, id, v, kind); err != nil {
		return err
	}
	if r.Created != nil && !noted {
		p.markPrepayPublished(ctx, j)
	}
	return nil
}

// settle stores r as the order's outcome under token and publishes what the
// record then holds: r, or — if another worker's outcome got there first —
// that one. It answers nil (Ack) once the event is stored, or a Hold/Retry
// error. Its two warnings of a write that did not take are read by the
// chaos suite (chaos/storelogs.go): keep their wording in step.
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
	if err := p.publishRecord(sctx, j, r, false); err != nil {
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
	if err := p.publishRecord(ctx, j, r, true); err != nil {
		return RetryAfter(InFlightDelayMin, err)
	}
	if r.owes(j) {
		sctx, cancel := settleCtx(ctx)
		defer cancel()
		if err := p.deadLetter(sctx, j, r.DeadLetter.Reason, errors.New(r.DeadLetter.Error)); err != nil {
			return RetryAfter(p.RedeliveryDelay(j.d.NumDelivered), err)
		}
		j.logger().InfoContext(ctx, "order already settled; stored failure and its job's dead letter republished")
		return nil
	}
	j.logger().InfoContext(ctx, "order already settled; stored outcome republished")
	return nil
}
