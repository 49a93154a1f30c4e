package pipeline_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/internal/testenv"
	"github.com/wxcombine/orderworker/internal/tracing"
	"github.com/wxcombine/orderworker/pipeline"
	"github.com/wxcombine/orderworker/wechat"
	"github.com/wxcombine/orderworker/wechat/wechatsim"
)

// useTracer records every span of the test in memory. Tests that call it
// must not run in parallel: the provider is the process's.
func useTracer(t *testing.T) (*sdktrace.TracerProvider, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	tracing.SetProvider(tp)
	t.Cleanup(func() { tracing.SetProvider(nil); _ = tp.Shutdown(context.Background()) })
	return tp, exp
}

// failFirstCreate answers the simulator's SYSTEMERROR (injected for every
// call until then) to the first create, then lets the calls through.
type failFirstCreate struct {
	pipeline.Payer
	sim   *wechatsim.Server
	calls atomic.Int32
}

func (f *failFirstCreate) CreateCombineOrder(ctx context.Context, t wechat.TradeType, req *wechat.CombineOrderRequest) (*wechat.PrepayResult, error) {
	res, err := f.Payer.CreateCombineOrder(ctx, t, req)
	if f.calls.Add(1) == 1 {
		_ = f.sim.SetFaults(wechatsim.FaultConfig{})
	}
	return res, err
}

// spanTree indexes the spans of one trace.
type spanTree struct {
	t     *testing.T
	spans tracetest.SpanStubs
}

func (s spanTree) named(name string) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, sp := range s.spans {
		if sp.Name == name {
			out = append(out, sp)
		}
	}
	return out
}

func (s spanTree) one(name string) tracetest.SpanStub {
	s.t.Helper()
	got := s.named(name)
	if len(got) != 1 {
		s.t.Fatalf("%d spans named %q, want 1; spans: %v", len(got), name, s.names())
	}
	return got[0]
}

func (s spanTree) children(parent tracetest.SpanStub) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, sp := range s.spans {
		if sp.Parent.SpanID() == parent.SpanContext.SpanID() {
			out = append(out, sp)
		}
	}
	return out
}

func (s spanTree) names() []string {
	out := make([]string, len(s.spans))
	for i, sp := range s.spans {
		out[i] = sp.Name
	}
	return out
}

func attr(sp tracetest.SpanStub, key string) (attribute.Value, bool) {
	for _, kv := range sp.Attributes {
		if string(kv.Key) == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

// waitTrace waits until the trace holds a span named last, and answers its
// spans.
func waitTrace(t *testing.T, exp *tracetest.InMemoryExporter, id trace.TraceID, last string) spanTree {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var spans tracetest.SpanStubs
		done := false
		for _, sp := range exp.GetSpans() {
			if sp.SpanContext.TraceID() == id {
				spans = append(spans, sp)
				done = done || sp.Name == last
			}
		}
		if done {
			return spanTree{t: t, spans: spans}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no span %q in trace %s within 15s; got %v", last, id, spanTree{spans: spans}.names())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lastMsg waits for the last message on subject and answers it.
func lastMsg(t *testing.T, js jetstream.JetStream, stream, subject string) *jetstream.RawStreamMsg {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		s, err := js.Stream(t.Context(), stream)
		if err != nil {
			t.Fatal(err)
		}
		m, err := s.GetLastMsgForSubject(t.Context(), subject)
		if err == nil {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("no message on %s within 15s: %v", subject, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func traceparentOf(t *testing.T, h nats.Header) trace.SpanContext {
	t.Helper()
	ctx := propagation.TraceContext{}.Extract(context.Background(), tracing.Header(h))
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		t.Fatalf("no valid traceparent in headers %v", h)
	}
	return sc
}

// TestTracing_jobSpanTree publishes a jsapi job carrying a producer's
// traceparent through a real NATS and the simulator, whose first create
// answer is SYSTEMERROR, and checks the span tree under the producer's
// trace, the outcome event's traceparent and the job's log lines.
func TestTracing_jobSpanTree(t *testing.T) {
	tp, exp := useTracer(t)
	e := newEnv(t, wechat.FlavourMerchant, wechatsim.FaultConfig{SystemErrorRate: 1})
	logs := &testenv.Buffer{}
	e.startWorker(workerOpts{payer: &failFirstCreate{Payer: e.client, sim: e.sim}, logger: newJSONLogger(logs)})

	// The producer: a checkout span, its context in the job's headers.
	pctx, checkout := tp.Tracer("checkout").Start(context.Background(), "checkout", trace.WithSpanKind(trace.SpanKindProducer))
	job := newJob(wechat.TradeTypeJSAPI, orderNo("TRC", 1))
	msg := nats.NewMsg(events.Subjects{}.Job(job.TradeType))
	msg.Data = mustJSON(t, job)
	msg.Header.Set(events.HeaderMsgID, job.MsgID())
	propagation.TraceContext{}.Inject(pctx, tracing.Header(msg.Header))
	if _, err := e.js.PublishMsg(t.Context(), msg); err != nil {
		t.Fatal(err)
	}
	checkout.End()
	producer := checkout.SpanContext()

	event := lastMsg(t, e.js, events.StreamEvents, events.SubjectPrepayCreated)
	tree := waitTrace(t, exp, producer.TraceID(), "ack")

	jobSpan := tree.one("process " + msg.Subject)
	if jobSpan.Parent.SpanID() != producer.SpanID() || jobSpan.SpanKind != trace.SpanKindConsumer {
		t.Errorf("job span parent %s kind %s, want the producer's span %s, consumer", jobSpan.Parent.SpanID(), jobSpan.SpanKind, producer.SpanID())
	}
	if v, _ := attr(jobSpan, "wechat.combine_out_trade_no"); v.AsString() != job.Request.CombineOutTradeNo {
		t.Errorf("job span combine_out_trade_no = %q, want %q", v.AsString(), job.Request.CombineOutTradeNo)
	}
	var children []string
	for _, c := range tree.children(jobSpan) {
		children = append(children, c.Name)
	}
	want := []string{"idempotency claim", "wechat create_jsapi", "sign pay parameters", "idempotency complete", "publish " + events.SubjectPrepayCreated, "ack"}
	if strings.Join(children, ", ") != strings.Join(want, ", ") {
		t.Errorf("job span children = %v, want %v", children, want)
	}
	if v, _ := attr(tree.one("idempotency claim"), "idempotency.state"); v.AsString() != "claimed" {
		t.Errorf("claim state = %q, want claimed", v.AsString())
	}
	if v, _ := attr(tree.one("ack"), "messaging.operation.name"); v.AsString() != "ack" {
		t.Errorf("ack action = %q, want ack", v.AsString())
	}

	// The create: two attempts, a wait between them, each with its HTTP exchange.
	create := tree.one("wechat create_jsapi")
	var steps []string
	for _, c := range tree.children(create) {
		steps = append(steps, c.Name)
	}
	if strings.Join(steps, ", ") != "attempt, retry wait, attempt" {
		t.Fatalf("create children = %v, want attempt, retry wait, attempt", steps)
	}
	attempts := tree.named("attempt")
	for i, w := range []struct {
		code   string
		status int64
	}{{"SYSTEMERROR", 500}, {"OK", 200}} {
		a := attempts[i]
		n, _ := attr(a, "wechat.attempt")
		code, _ := attr(a, "wechat.code")
		status, _ := attr(a, "http.response.status_code")
		reqID, _ := attr(a, "wechat.request_id")
		if n.AsInt64() != int64(i+1) || code.AsString() != w.code || status.AsInt64() != w.status || reqID.AsString() == "" {
			t.Errorf("attempt %d: number %d, code %q, status %d, request id %q; want %d, %q, %d and a request id",
				i+1, n.AsInt64(), code.AsString(), status.AsInt64(), reqID.AsString(), i+1, w.code, w.status)
		}
		if http := tree.children(a); len(http) != 1 || http[0].Name != "POST" || http[0].SpanKind != trace.SpanKindClient {
			t.Errorf("attempt %d children = %v, want one POST client span", i+1, spanTree{spans: http}.names())
		}
	}
	if d, _ := attr(tree.one("retry wait"), "retry.delay_ms"); d.AsInt64() <= 0 {
		t.Errorf("retry wait delay = %dms, want > 0", d.AsInt64())
	}
	if n, _ := attr(create, "wechat.attempts"); n.AsInt64() != 2 {
		t.Errorf("create attempts = %d, want 2", n.AsInt64())
	}

	// The outcome event continues the trace from its publish span.
	ev := traceparentOf(t, event.Header)
	publish := tree.one("publish " + events.SubjectPrepayCreated)
	if ev.TraceID() != producer.TraceID() || ev.SpanID() != publish.SpanContext.SpanID() {
		t.Errorf("event traceparent %s/%s, want %s/%s (the publish span)", ev.TraceID(), ev.SpanID(), producer.TraceID(), publish.SpanContext.SpanID())
	}

	// Every log line of the job names the trace.
	lines := 0
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(l), &rec) != nil || rec["combine_out_trade_no"] != job.Request.CombineOutTradeNo {
			continue
		}
		lines++
		if rec["trace_id"] != producer.TraceID().String() || rec["span_id"] == nil || rec["span_id"] == "" {
			t.Errorf("log line without the job's trace: %s", l)
		}
	}
	if lines < 2 { // the retry warning and "prepay created"
		t.Errorf("%d log lines of the job, want at least 2:\n%s", lines, logs)
	}
	noPayerInSpans(t, tree.spans, job.Request.CombinePayerInfo.OpenID)
}

// TestTracing_newRootAndDeadLetter checks that a job without trace context
// gets a root span whose trace the outcome event continues, and that a
// dead letter carries the producer's context on.
func TestTracing_newRootAndDeadLetter(t *testing.T) {
	tp, exp := useTracer(t)
	e := newEnv(t, wechat.FlavourMerchant, wechatsim.FaultConfig{})
	e.startWorker(workerOpts{})

	job := newJob(wechat.TradeTypeH5, orderNo("TRC", 2))
	e.publishJob(job)
	event := lastMsg(t, e.js, events.StreamEvents, events.SubjectPrepayCreated)
	ev := traceparentOf(t, event.Header)
	tree := waitTrace(t, exp, ev.TraceID(), "ack")
	root := tree.one("process " + events.Subjects{}.Job(job.TradeType))
	if root.Parent.IsValid() {
		t.Errorf("job without context has parent %s, want a new root", root.Parent.SpanID())
	}

	// A malformed job: failure event and dead letter, both in the trace.
	pctx, producer := tp.Tracer("checkout").Start(context.Background(), "checkout")
	producer.End()
	msg := nats.NewMsg(events.Subjects{}.Job(wechat.TradeTypeH5))
	msg.Data = []byte(`{"version":1,"trade_type":"h5","request":{"combine_mchid":"` + testMchID + `","combine_out_trade_no":"TRCBAD1"},"unknown":true}`)
	propagation.TraceContext{}.Inject(pctx, tracing.Header(msg.Header))
	if _, err := e.js.PublishMsg(t.Context(), msg); err != nil {
		t.Fatal(err)
	}
	dl := lastMsg(t, e.js, events.StreamDeadLetters, events.Subjects{}.DeadLetter(events.ReasonMalformed))
	if got := traceparentOf(t, dl.Header); got.TraceID() != producer.SpanContext().TraceID() {
		t.Errorf("dead letter trace %s, want the producer's %s", got.TraceID(), producer.SpanContext().TraceID())
	}
	tree = waitTrace(t, exp, producer.SpanContext().TraceID(), "ack")
	if v, _ := attr(tree.one("ack"), "messaging.operation.name"); v.AsString() != "term" {
		t.Errorf("malformed job ack action = %q, want term", v.AsString())
	}
	if n := len(tree.named("publish " + events.Subjects{}.DeadLetter(events.ReasonMalformed))); n != 1 {
		t.Errorf("%d dead-letter publish spans, want 1", n)
	}
}

// noPayerInSpans fails if openid appears in any attribute or event of spans.
func noPayerInSpans(t *testing.T, spans tracetest.SpanStubs, openid string) {
	t.Helper()
	for _, sp := range spans {
		kvs := append([]attribute.KeyValue{}, sp.Attributes...)
		for _, ev := range sp.Events {
			kvs = append(kvs, ev.Attributes...)
		}
		for _, kv := range kvs {
			if strings.Contains(kv.Value.String(), openid) {
				t.Errorf("span %q attribute %s holds the payer's openid", sp.Name, kv.Key)
			}
		}
		if strings.Contains(sp.Status.Description, openid) {
			t.Errorf("span %q status holds the payer's openid", sp.Name)
		}
	}
}

// newJSONLogger logs JSON at debug level to w, with the worker's trace ids.
func newJSONLogger(w *testenv.Buffer) *slog.Logger {
	return slog.New(tracing.LogHandler(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})))
}
