package pipeline

// Tracing hooks (see internal/tracing). A job's span tree:
//
//	process <subject>                 consumer span, child of the producer's traceparent (or a new root)
//	├── idempotency claim             idempotency.state
//	├── wechat <op>                   wechat.attempts, retry.waited_ms
//	│   ├── attempt                   wechat.attempt, wechat.code, http.response.status_code, wechat.request_id
//	│   │   └── POST                  the HTTP exchange (wechat.Client's transport)
//	│   ├── retry wait                retry.delay_ms, retry.cause
//	│   └── attempt …
//	├── sign pay parameters           jsapi, miniprogram and app only
//	├── idempotency complete / release / extend
//	├── publish <subject>             producer span; its context is the event's traceparent
//	└── ack                           messaging.operation.name: ack, nak or term
//
// A job settled at the delivery limit (advisory or sweep) gets a
// "settle <subject>" span instead of "process", with the same children.

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/wxcombine/orderworker/internal/tracing"
	"github.com/wxcombine/orderworker/wechat"
)

// traceJob names the order on the job's span once the job is decoded.
func traceJob(ctx context.Context, j *job) {
	tracing.Set(ctx, func() []attribute.KeyValue {
		return []attribute.KeyValue{
			attribute.String("wechat.combine_mchid", j.key.MchID), attribute.String("wechat.combine_out_trade_no", j.key.OutTradeNo),
			attribute.String("orderworker.correlation_id", j.job.CorrelationID), attribute.String("wechat.trade_type", string(j.job.TradeType)),
		}
	})
}

// startSign starts the span of the pay-parameter signature, for the trade
// types that have one (not h5 and native).
func startSign(ctx context.Context, t wechat.TradeType) trace.Span {
	if t == wechat.TradeTypeH5 || t == wechat.TradeTypeNative {
		return tracing.NoSpan // nothing to sign
	}
	_, span := tracing.Start(ctx, "sign pay parameters")
	return span
}

// endAttempt ends the span of one WeChat Pay call with its code and, for
// an error answer, its status and Request-ID (a successful answer's come
// from the transport).
func endAttempt(span trace.Span, code string, err error) {
	if span.IsRecording() {
		span.SetAttributes(attribute.String("wechat.code", code))
		if apiErr, ok := errors.AsType[*wechat.APIError](err); ok {
			span.SetAttributes(attribute.Int("http.response.status_code", apiErr.StatusCode))
			if apiErr.RequestID != "" {
				span.SetAttributes(attribute.String("wechat.request_id", apiErr.RequestID))
			}
		}
	}
	tracing.End(span, err)
}
