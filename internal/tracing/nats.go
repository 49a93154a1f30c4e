package tracing

import (
	"context"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// Header is a NATS message's headers as a propagation.TextMapCarrier.
// NATS header names are case-sensitive; W3C trace context uses the
// lower-case traceparent and tracestate, as written by every OpenTelemetry
// SDK.
type Header nats.Header

// Get answers the first value of key.
func (h Header) Get(key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Set replaces the values of key.
func (h Header) Set(key, value string) { h[key] = []string{value} }

// Keys answers the header names.
func (h Header) Keys() []string {
	out := make([]string, 0, len(h))
	for k := range h {
		out = append(out, k)
	}
	return out
}

// Extract answers ctx with the remote span context of h's traceparent and
// tracestate, or ctx unchanged when h carries none (or a malformed one).
func Extract(ctx context.Context, h nats.Header) context.Context {
	if h == nil || len(h["traceparent"]) == 0 {
		return ctx
	}
	return propagator.Extract(ctx, Header(h))
}

// Inject writes the span context of ctx into msg's headers as traceparent
// (and tracestate); a context with no valid span writes nothing.
func Inject(ctx context.Context, msg *nats.Msg) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	if msg.Header == nil {
		msg.Header = nats.Header{}
	}
	propagator.Inject(ctx, Header(msg.Header))
}

// StartJob starts the consumer span of one job: a child of the context the
// producer put in h, or a new root when h carries none. op names what is
// done ("process", "settle"); md, when not nil, adds the stream position
// and delivery count.
func StartJob(ctx context.Context, op, subject string, h nats.Header, md *jetstream.MsgMetadata) (context.Context, trace.Span) {
	ctx = Extract(ctx, h)
	if !Enabled() {
		return ctx, idle(ctx)
	}
	ctx, span := Start(ctx, op+" "+subject, trace.WithSpanKind(trace.SpanKindConsumer))
	attrs := []attribute.KeyValue{
		attribute.String("messaging.system", "nats"),
		attribute.String("messaging.operation.type", "process"),
		attribute.String("messaging.destination.name", subject),
	}
	if id := Header(h).Get(nats.MsgIdHdr); id != "" {
		attrs = append(attrs, attribute.String("messaging.message.id", id))
	}
	if md != nil {
		attrs = append(attrs, attribute.String("messaging.nats.stream", md.Stream),
			attribute.String("messaging.nats.stream_sequence", strconv.FormatUint(md.Sequence.Stream, 10)),
			attribute.Int64("messaging.nats.delivery_count", int64(md.NumDelivered))) //nolint:gosec // a delivery count
	}
	span.SetAttributes(attrs...)
	return ctx, span
}

// startPublish starts the producer span of one message and injects its
// context into the message's headers.
func startPublish(ctx context.Context, msg *nats.Msg) (context.Context, trace.Span) {
	span := NoSpan
	if Enabled() {
		ctx, span = Start(ctx, "publish "+msg.Subject, trace.WithSpanKind(trace.SpanKindProducer))
	}
	if span.IsRecording() {
		span.SetAttributes(attribute.String("messaging.system", "nats"), attribute.String("messaging.operation.type", "send"),
			attribute.String("messaging.destination.name", msg.Subject), attribute.String("messaging.message.id", msg.Header.Get(nats.MsgIdHdr)))
	}
	Inject(ctx, msg)
	return ctx, span
}

// Publisher publishes a message and waits for the server's acknowledgement
// (pipeline.Publisher).
type Publisher interface {
	Publish(ctx context.Context, msg *nats.Msg) error
}

// WrapPublisher answers p with a producer span around each publish, whose
// context it writes into the message's traceparent header, so the
// consumers of outcome events and dead letters continue the trace.
func WrapPublisher(p Publisher) Publisher { return publisher{p} }

type publisher struct{ next Publisher }

func (p publisher) Publish(ctx context.Context, msg *nats.Msg) error {
	ctx, span := startPublish(ctx, msg)
	err := p.next.Publish(ctx, msg)
	End(span, err)
	return err
}

// JetStreamPublisher stores a message and answers the PubAck
// (notifier.Publisher; jetstream.JetStream satisfies it).
type JetStreamPublisher interface {
	PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

// WrapJetStream answers p with a producer span around each publish, as
// WrapPublisher does; the span also says whether JetStream took the message
// for a duplicate.
func WrapJetStream(p JetStreamPublisher) JetStreamPublisher { return jsPublisher{p} }

type jsPublisher struct{ next JetStreamPublisher }

func (p jsPublisher) PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	ctx, span := startPublish(ctx, msg)
	ack, err := p.next.PublishMsg(ctx, msg, opts...)
	if ack != nil && span.IsRecording() {
		span.SetAttributes(attribute.Bool("messaging.nats.duplicate", ack.Duplicate),
			attribute.String("messaging.nats.stream_sequence", strconv.FormatUint(ack.Sequence, 10)))
	}
	End(span, err)
	return ack, err
}

// Ack records a JetStream acknowledgement (ack, nak, term, in_progress) on
// the span in ctx: its action, and err if it failed.
func Ack(ctx context.Context, action string, err error) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	if action == "in_progress" {
		// A heartbeat while the job runs: only a failure is worth a note.
		if err != nil {
			span.AddEvent("in_progress failed", trace.WithAttributes(attribute.String("error", err.Error())))
		}
		return
	}
	span.SetAttributes(attribute.String("messaging.operation.name", action))
	Fail(span, err)
}
