package pipeline

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/metrics"
)

// fill completes a failure event with the job's identity.
func (p *Processor) fill(j *job, f *events.PrepayFailed) {
	f.Version = events.Version
	f.CorrelationID = j.job.CorrelationID
	if j.job.TradeType.Valid() {
		f.TradeType = j.job.TradeType
	}
	f.CombineMchID, f.CombineOutTradeNo = j.key.MchID, j.key.OutTradeNo
	f.Attempts = j.attempts
	f.CreatedAt = p.cfg.NowFunc().UTC()
}

// release gives the order's claim up and refuses the job: what happened is
// not the order's outcome.
func (p *Processor) release(ctx context.Context, j *job, token uint64, reason events.Reason, f *events.PrepayFailed, cause error) error {
	if err := p.releaseClaim(ctx, j, token); err != nil {
		return err
	}
	return p.refuse(ctx, j, reason, f, cause)
}

// refuse publishes the dead letter and then, when the order can be named,
// a failure that is not the order's outcome (Final false, under the job's
// own Nats-Msg-Id), and answers Terminal. Nothing is stored for the order,
// so the same order number can still be created. If either cannot be
// published, the job is handed back so that a later delivery tries again.
// The dead letter goes first: a later delivery may end otherwise (WeChat
// Pay's record, asked again, finds the order paid), and a failure event
// must never be left without its dead letter, while a dead letter (under
// the job's sequence, so never stored twice) whose replay finds the order
// settled does no harm.
func (p *Processor) refuse(ctx context.Context, j *job, reason events.Reason, f *events.PrepayFailed, cause error) error {
	sctx, cancel := settleCtx(ctx)
	defer cancel()
	if err := p.deadLetter(sctx, j, reason, cause); err != nil {
		return RetryAfter(p.RedeliveryDelay(j.d.NumDelivered), err)
	}
	if j.key.MchID != "" && j.key.OutTradeNo != "" {
		p.fill(j, f)
		f.Final = false
		id := events.JobFailedMsgID(j.key.MchID, j.key.OutTradeNo, cmp.Or(j.d.Stream, events.StreamJobs), j.d.Sequence)
		if err := p.publish(sctx, j, p.cfg.Subjects.PrepayFailed(), id, f, metrics.EventPrepayFailed); err != nil {
			return RetryAfter(p.RedeliveryDelay(j.d.NumDelivered), err)
		}
	}
	j.logger().WarnContext(ctx, "job dead-lettered", slog.String("reason", string(reason)), slog.String("code", f.Code), slog.Any("error", cause))
	return terminal(reason, cause)
}

// deadLetterOnly dead-letters the job without publishing anything for the
// order, and answers Terminal.
func (p *Processor) deadLetterOnly(ctx context.Context, j *job, reason events.Reason, cause error) error {
	sctx, cancel := settleCtx(ctx)
	defer cancel()
	if err := p.deadLetter(sctx, j, reason, cause); err != nil {
		return RetryAfter(p.RedeliveryDelay(j.d.NumDelivered), err)
	}
	j.logger().WarnContext(ctx, "job dead-lettered", slog.String("reason", string(reason)), slog.Any("error", cause))
	return terminal(reason, cause)
}

// keptHeaders are the job headers a dead letter keeps; JetStream's own
// Nats-* bookkeeping headers are dropped.
func keptHeaders(h nats.Header) map[string][]string {
	out := map[string][]string{}
	for k, v := range h {
		if k == events.HeaderMsgID || k == events.HeaderCorrelationID || !isNatsHeader(k) {
			out[k] = v
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func isNatsHeader(k string) bool { return len(k) > 5 && k[:5] == "Nats-" }

func (p *Processor) deadLetter(ctx context.Context, j *job, reason events.Reason, cause error) error {
	stream := cmp.Or(j.d.Stream, events.StreamJobs)
	dl := events.DeadLetter{
		Version:           events.Version,
		Reason:            reason,
		Error:             cause.Error(),
		CombineMchID:      j.key.MchID,
		CombineOutTradeNo: j.key.OutTradeNo,
		CorrelationID:     j.job.CorrelationID,
		OriginalSubject:   j.d.Subject,
		OriginalHeaders:   keptHeaders(j.d.Header),
		OriginalData:      j.d.Data,
		StreamSequence:    j.d.Sequence,
		DeliveryCount:     j.d.NumDelivered,
		FirstFailedAt:     j.d.Timestamp.UTC(),
		DeadAt:            p.cfg.NowFunc().UTC(),
	}
	if err := p.publish(ctx, j, p.cfg.Subjects.DeadLetter(reason), events.DeadLetterMsgID(stream, j.d.Sequence), dl, metrics.EventDeadLetter); err != nil {
		return err
	}
	p.m.DeadLetter(string(reason))
	return nil
}

func (p *Processor) publish(ctx context.Context, j *job, subject, msgID string, v any, kind string) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", kind, err)
	}
	msg := nats.NewMsg(subject)
	msg.Data = data
	msg.Header.Set(events.HeaderMsgID, msgID)
	if j.job.CorrelationID != "" {
		msg.Header.Set(events.HeaderCorrelationID, j.job.CorrelationID)
	}
	if err := p.cfg.Publisher.Publish(ctx, msg); err != nil {
		p.m.PublishFailure(kind)
		j.logger().WarnContext(ctx, "publish failed; job handed back", slog.String("event", kind), slog.Any("error", err))
		return fmt.Errorf("publish %s: %w", kind, err)
	}
	return nil
}
