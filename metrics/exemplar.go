package metrics

// Exemplars: a latency observed inside a traced job carries the trace id
// of its span (label trace_id), so a slow bucket on a dashboard links to
// one trace of it. Only spans this process records are named — a trace
// that holds none of the service's spans would be a dead link — and an
// exemplar is exposed only in the OpenMetrics format (the admin servers
// enable it on /metrics).

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
)

// observe records v on o, with ctx's trace id as an exemplar when ctx
// holds a sampled span that this process records.
func observe(ctx context.Context, o prometheus.Observer, v float64) {
	span := trace.SpanFromContext(ctx)
	if sc := span.SpanContext(); sc.IsSampled() && span.IsRecording() {
		if e, ok := o.(prometheus.ExemplarObserver); ok {
			e.ObserveWithExemplar(v, prometheus.Labels{"trace_id": sc.TraceID().String()})
			return
		}
	}
	o.Observe(v)
}

// JobContext is Job with an exemplar from ctx.
func (w *Worker) JobContext(ctx context.Context, outcome string, d time.Duration) {
	if w == nil {
		return
	}
	w.jobs.WithLabelValues(outcome).Inc()
	observe(ctx, w.jobDuration.WithLabelValues(outcome), d.Seconds())
}

// JobWaitContext is JobWait with an exemplar from ctx.
func (w *Worker) JobWaitContext(ctx context.Context, redelivery bool, d time.Duration) {
	if w == nil {
		return
	}
	kind := DeliveryFirst
	if redelivery {
		kind = DeliveryRetry
	}
	observe(ctx, w.jobWait.WithLabelValues(kind), max(d, 0).Seconds())
}

// WeChatRequestContext is WeChatRequest with an exemplar from ctx.
func (w *Worker) WeChatRequestContext(ctx context.Context, operation, code string, d time.Duration) {
	if w == nil {
		return
	}
	w.wechatRequests.WithLabelValues(operation, code).Inc()
	observe(ctx, w.wechatDuration.WithLabelValues(operation), d.Seconds())
}

// PublishContext is Publish with an exemplar from ctx.
func (n *Notifier) PublishContext(ctx context.Context, d time.Duration) {
	if n == nil {
		return
	}
	observe(ctx, n.publishDuration, d.Seconds())
}
