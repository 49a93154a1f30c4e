package notifier

// Tracing hooks (see internal/tracing). Each notification gets a server
// span "POST /v3/notify/{mchid}" (always a new root, linked to a proxy's
// traceparent if any) with WeChat Pay's Request-ID, then, once verified, the
// notification id and the order; its child "publish <subject>" writes the
// span's context into the payment event's traceparent header. Never the
// body, the resource or the payer.

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/wxcombine/orderworker/internal/tracing"
	"github.com/wxcombine/orderworker/wechat"
)

// traceNotification names the verified notification on the request's span.
func traceNotification(ctx context.Context, n *wechat.Notification) {
	tracing.Set(ctx, func() []attribute.KeyValue {
		return []attribute.KeyValue{
			attribute.String("wechat.notification_id", n.Envelope.ID), attribute.String("wechat.event_type", n.Envelope.EventType),
			attribute.String("wechat.combine_mchid", n.Transaction.CombineMchID),
			attribute.String("wechat.combine_out_trade_no", n.Transaction.CombineOutTradeNo),
		}
	})
}

// endSpan records the request's result and answer status; err, for a
// failure, is already free of the request's content.
func endSpan(span trace.Span, res Result, err error) {
	if !span.IsRecording() {
		return
	}
	status := http.StatusNoContent
	switch a, failed := answers[res]; {
	case failed:
		status = a.status
	case res == ResultDuplicate:
		status = http.StatusOK
	}
	span.SetAttributes(attribute.String("orderworker.notifier.result", string(res)), attribute.Int("http.response.status_code", status))
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
}
