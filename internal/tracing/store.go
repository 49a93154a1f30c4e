package tracing

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/wxcombine/orderworker/idempotency"
)

// WrapStore answers s with a span around each claim, lease renewal,
// completion and release; Ping, called outside jobs, is not traced.
func WrapStore(s idempotency.Store) idempotency.Store { return store{s} }

type store struct{ next idempotency.Store }

func (s store) Claim(ctx context.Context, key idempotency.Key, fingerprint string, lease time.Duration) (idempotency.Claim, error) {
	ctx, span := Start(ctx, "idempotency claim")
	c, err := s.next.Claim(ctx, key, fingerprint, lease)
	if err == nil && span.IsRecording() {
		span.SetAttributes(attribute.String("idempotency.state", c.State.String()))
	}
	End(span, err)
	return c, err
}

func (s store) Extend(ctx context.Context, key idempotency.Key, token uint64, lease time.Duration) error {
	ctx, span := Start(ctx, "idempotency extend")
	err := s.next.Extend(ctx, key, token, lease)
	End(span, err)
	return err
}

func (s store) Complete(ctx context.Context, key idempotency.Key, token uint64, outcome []byte, ttl time.Duration) error {
	ctx, span := Start(ctx, "idempotency complete")
	err := s.next.Complete(ctx, key, token, outcome, ttl)
	End(span, err)
	return err
}

func (s store) Release(ctx context.Context, key idempotency.Key, token uint64) error {
	ctx, span := Start(ctx, "idempotency release")
	err := s.next.Release(ctx, key, token)
	End(span, err)
	return err
}

func (s store) Ping(ctx context.Context) error { return s.next.Ping(ctx) }
