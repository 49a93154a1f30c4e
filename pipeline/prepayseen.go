package pipeline

// The memory of a published prepay.
//
// The outcome record answers duplicates for IDEMPOTENCY_OUTCOME_TTL, and a
// store can lose it (a Redis restarted empty, a failover to a lagging
// replica). Past that, a duplicate job knows only what WeChat Pay says. For
// one decision that is not enough: when the order exists unpaid and not even
// a create with the identical body gets its prepay_id back, the worker closes
// the order so that nobody pays it behind the checkout's back (truth.go) —
// right when no prepay was ever published, wrong when a checkout holds one.
//
// So after a prepay.created is stored the worker writes idempotency.SeenPrepay
// in the payments-seen record (Config.Seen, SeenTTL, 72h by default: longer
// than the outcome record, and in the store the notifier shares). A worker
// that finds it never closes the order: it hands the job back with a
// non-final failure, and the order stays payable with the prepay_id the
// checkout has; reconciliation watches it as for any created order. The same
// mark keeps a late duplicate from scheduling a second reconciliation.
//
// Without a payments-seen record (PAYMENTS_SEEN_BACKEND=none) the worker
// cannot tell and closes as before; an unreadable record counts as "maybe
// published": closing cannot be undone, handing the job back can.

import (
	"context"
	"log/slog"

	"github.com/wxcombine/orderworker/idempotency"
)

// prepayState is what the payments-seen record says of an order's prepay.
type prepayState int

const (
	// noRecord: there is no payments-seen record to ask.
	noRecord prepayState = iota
	// unreadable: the record could not be read.
	unreadable
	// notPublished: the record has no prepay for the order.
	notPublished
	// published: a prepay.created of the order was stored.
	published
)

// prepayPublished asks the payments-seen record whether j's order had a
// prepay.created stored.
func (p *Processor) prepayPublished(ctx context.Context, j *job) prepayState {
	if p.cfg.Seen == nil {
		return noRecord
	}
	seen, err := p.cfg.Seen.Seen(ctx, idempotency.SeenPrepay, j.key)
	switch {
	case err != nil:
		j.logger().WarnContext(ctx, "payments-seen record unreadable", slog.Any("error", err))
		return unreadable
	case seen:
		return published
	}
	return notPublished
}

// markPrepayPublished records that j's order's prepay.created was stored. A
// failure is logged: it costs a second reconciliation schedule for a late
// duplicate, or a close avoided only while the outcome record lasts.
func (p *Processor) markPrepayPublished(ctx context.Context, j *job) {
	if p.cfg.Seen == nil {
		return
	}
	if err := p.cfg.Seen.MarkSeen(ctx, idempotency.SeenPrepay, j.key, p.cfg.SeenTTL); err != nil {
		j.logger().WarnContext(ctx, "payments-seen record not written for the prepay", slog.Any("error", err))
	}
}
