package tracing

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// Calls traces one call made with retries: a span over all of it, a child
// span per attempt and one per wait between attempts. It is not safe for
// concurrent use; the retries of one call are sequential. A nil *Calls
// (tracing off) does nothing.
type Calls struct {
	span    trace.Span
	wait    trace.Span
	attempt int
	waited  time.Duration
}

// StartCalls starts the span "wechat <op>" of a call made with retries;
// the answered ctx carries it, so derive the attempts' contexts from it.
// Off, it answers ctx and nil.
func StartCalls(ctx context.Context, op string) (context.Context, *Calls) {
	if !Enabled() {
		return ctx, nil
	}
	ctx, span := Start(ctx, "wechat "+op)
	return ctx, &Calls{span: span}
}

// Attempt ends the wait before it, if any, and starts the span of the next
// attempt, numbered from 1, under ctx (derived from StartCalls's).
func (c *Calls) Attempt(ctx context.Context) (context.Context, trace.Span) {
	if c == nil {
		return ctx, idle(ctx)
	}
	c.endWait()
	c.attempt++
	ctx, span := Start(ctx, "attempt")
	if span.IsRecording() {
		span.SetAttributes(attribute.Int("wechat.attempt", c.attempt))
	}
	return ctx, span
}

// Wait starts the span of the wait of d before the next attempt.
func (c *Calls) Wait(ctx context.Context, d time.Duration, cause string) {
	if c == nil {
		return
	}
	c.endWait()
	c.waited += d
	_, c.wait = Start(trace.ContextWithSpan(ctx, c.span), "retry wait")
	if c.wait.IsRecording() {
		c.wait.SetAttributes(attribute.Int64("retry.delay_ms", d.Milliseconds()), attribute.Int("retry.after_attempt", c.attempt),
			attribute.String("retry.cause", cause))
	}
}

func (c *Calls) endWait() {
	if c.wait != nil {
		c.wait.End()
		c.wait = nil
	}
}

// End ends the call's span with the number of attempts, the time spent
// waiting between them and the final error.
func (c *Calls) End(err error) {
	if c == nil {
		return
	}
	c.endWait()
	if c.span.IsRecording() {
		c.span.SetAttributes(attribute.Int("wechat.attempts", c.attempt), attribute.Int64("retry.waited_ms", c.waited.Milliseconds()))
	}
	End(c.span, err)
}
