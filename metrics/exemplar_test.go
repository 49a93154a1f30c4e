package metrics_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/wxcombine/orderworker/metrics"
)

// exemplars answers the trace_id of every exemplar of the histogram name.
func exemplars(t *testing.T, reg *prometheus.Registry, name string) []string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, b := range m.GetHistogram().GetBucket() {
				for _, l := range b.GetExemplar().GetLabel() {
					if l.GetName() == "trace_id" {
						out = append(out, l.GetValue())
					}
				}
			}
		}
	}
	return out
}

func TestExemplars(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	defer func() { _ = tp.Shutdown(context.Background()) }()
	traced, span := tp.Tracer("test").Start(context.Background(), "job")
	defer span.End()
	id := span.SpanContext().TraceID().String()
	// A remote context (the producer's) without a span of this process.
	remote := trace.ContextWithRemoteSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1}, SpanID: trace.SpanID{1}, TraceFlags: trace.FlagsSampled,
	}))

	reg, nreg := prometheus.NewRegistry(), prometheus.NewRegistry()
	w := metrics.NewWorker(reg)
	n := metrics.NewNotifier(nreg)
	for _, ctx := range []context.Context{context.Background(), remote, traced} {
		w.JobContext(ctx, metrics.OutcomeAck, 20*time.Millisecond)
		w.JobWaitContext(ctx, false, time.Millisecond)
		w.WeChatRequestContext(ctx, "create_jsapi", "OK", 30*time.Millisecond)
		n.PublishContext(ctx, 2*time.Millisecond)
	}
	for name, r := range map[string]*prometheus.Registry{
		"orderworker_pipeline_job_duration_seconds": reg, "orderworker_pipeline_job_wait_seconds": reg,
		"orderworker_wechat_request_duration_seconds": reg, "orderworker_notifier_publish_duration_seconds": nreg,
	} {
		if got := exemplars(t, r, name); len(got) != 1 || got[0] != id {
			t.Errorf("%s exemplars = %v, want exactly the recorded span's trace %s", name, got, id)
		}
	}
	var nilWorker *metrics.Worker
	nilWorker.JobContext(traced, metrics.OutcomeAck, time.Millisecond) // must not panic
}
