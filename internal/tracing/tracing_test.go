package tracing_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/wxcombine/orderworker/internal/tracing"
)

const producerParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func record(t *testing.T) *tracetest.InMemoryExporter {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	tracing.SetProvider(tp)
	t.Cleanup(func() { tracing.SetProvider(nil) })
	return exp
}

func TestConfigured(t *testing.T) {
	tests := []struct {
		env  map[string]string
		want bool
	}{
		{nil, false},
		{map[string]string{"OTEL_TRACES_EXPORTER": "none"}, false},
		{map[string]string{"OTEL_TRACES_EXPORTER": "console"}, true},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://tempo:4318"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://tempo:4318/v1/traces"}, true},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, false},
		{map[string]string{"OTEL_SERVICE_NAME": "orderworker"}, false},
	}
	for _, tt := range tests {
		if got := tracing.Configured(func(k string) string { return tt.env[k] }); got != tt.want {
			t.Errorf("Configured(%v) = %v, want %v", tt.env, got, tt.want)
		}
	}
}

func TestSetup(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "")
	stop, err := tracing.Setup(t.Context(), "test")
	if err != nil || tracing.Enabled() {
		t.Fatalf("Setup() unconfigured: enabled %v, err %v; want off", tracing.Enabled(), err)
	}
	_ = stop(t.Context())
	t.Setenv("OTEL_TRACES_EXPORTER", "console")
	stop, err = tracing.Setup(t.Context(), "test")
	if err != nil || !tracing.Enabled() {
		t.Fatalf("Setup() with console: enabled %v, err %v; want on", tracing.Enabled(), err)
	}
	if err := stop(t.Context()); err != nil || tracing.Enabled() {
		t.Errorf("shutdown: enabled %v, err %v; want off", tracing.Enabled(), err)
	}
}

// TestOff checks that with tracing off no span is made, nothing allocates,
// and the producer's context still reaches the outgoing headers.
func TestOff(t *testing.T) {
	tracing.SetProvider(nil)
	ctx := context.Background()
	if allocs := testing.AllocsPerRun(100, func() {
		c, span := tracing.Start(ctx, "x")
		span.End()
		_ = c
	}); allocs != 0 {
		t.Errorf("Start with tracing off: %v allocations, want 0", allocs)
	}
	h := nats.Header{"traceparent": {producerParent}}
	jctx, span := tracing.StartJob(ctx, "process", "combine.jobs.h5", h, nil)
	if span.IsRecording() {
		t.Error("job span records with tracing off")
	}
	msg := nats.NewMsg("combine.orders.prepay.created")
	tracing.Inject(jctx, msg)
	if got := msg.Header.Get("traceparent"); got != producerParent {
		t.Errorf("outgoing traceparent with tracing off = %q, want the producer's %q", got, producerParent)
	}
	plain := nats.NewMsg("x")
	tracing.Inject(ctx, plain)
	if len(plain.Header) != 0 {
		t.Errorf("Inject without context wrote %v", plain.Header)
	}
}

func TestStartJob(t *testing.T) {
	exp := record(t)
	for _, tt := range []struct {
		name   string
		header nats.Header
		root   bool
	}{
		{"producer context", nats.Header{"traceparent": {producerParent}, "tracestate": {"vendor=x"}}, false},
		{"none", nats.Header{}, true},
		{"malformed", nats.Header{"traceparent": {"00-zz-00f067aa0ba902b7-01"}}, true},
	} {
		exp.Reset()
		_, span := tracing.StartJob(context.Background(), "process", "combine.jobs.h5", tt.header, nil)
		span.End()
		got := exp.GetSpans()[0]
		if tt.root != !got.Parent.IsValid() {
			t.Errorf("%s: parent %v, want root %v", tt.name, got.Parent, tt.root)
		}
		if !tt.root && (got.SpanContext.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || got.Parent.SpanID().String() != "00f067aa0ba902b7" ||
			got.SpanContext.TraceState().Get("vendor") != "x") {
			t.Errorf("%s: span %s parent %s state %q, want the producer's trace, parent and state", tt.name, got.SpanContext.TraceID(), got.Parent.SpanID(), got.SpanContext.TraceState())
		}
	}
}

type recordPublisher struct{ msg *nats.Msg }

func (p *recordPublisher) Publish(_ context.Context, msg *nats.Msg) error {
	p.msg = msg
	return nil
}

func TestWrapPublisher(t *testing.T) {
	exp := record(t)
	ctx, job := tracing.StartJob(context.Background(), "process", "combine.jobs.h5", nats.Header{"traceparent": {producerParent}}, nil)
	next := &recordPublisher{}
	msg := nats.NewMsg("combine.orders.prepay.created")
	msg.Header.Set(nats.MsgIdHdr, "prepay:1900000109:C1")
	if err := tracing.WrapPublisher(next).Publish(ctx, msg); err != nil {
		t.Fatal(err)
	}
	job.End()
	pub := exp.GetSpans()[0]
	want := "00-4bf92f3577b34da6a3ce929d0e0e4736-" + pub.SpanContext.SpanID().String() + "-01"
	if got := next.msg.Header.Get("traceparent"); got != want || pub.SpanKind != trace.SpanKindProducer {
		t.Errorf("published traceparent %q (span kind %s), want %q from the publish span", got, pub.SpanKind, want)
	}
}

func TestLogHandler(t *testing.T) {
	exp := record(t)
	var buf bytes.Buffer
	log := slog.New(tracing.LogHandler(slog.NewJSONHandler(&buf, nil))).With(slog.String("combine_out_trade_no", "C1"))
	ctx, span := tracing.Start(context.Background(), "job")
	log.InfoContext(ctx, "inside")
	span.End()
	log.InfoContext(context.Background(), "outside")
	sc := exp.GetSpans()[0].SpanContext
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	var in, out map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &in); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &out); err != nil {
		t.Fatal(err)
	}
	if in["trace_id"] != sc.TraceID().String() || in["span_id"] != sc.SpanID().String() || in["combine_out_trade_no"] != "C1" {
		t.Errorf("line inside the span = %s, want trace_id %s and span_id %s", lines[0], sc.TraceID(), sc.SpanID())
	}
	if _, ok := out["trace_id"]; ok {
		t.Errorf("line outside any span has a trace_id: %s", lines[1])
	}
}

// TestTransport checks the HTTP span and that the status and Request-ID
// also reach the caller's span, and that no request header is recorded.
func TestTransport(t *testing.T) {
	exp := record(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("traceparent") != "" {
			t.Error("trace context sent to WeChat Pay")
		}
		w.Header().Set("Request-ID", "0885E2B4B8BD06-404")
		w.WriteHeader(http.StatusNotFound)
	}))
	defer srv.Close()
	ctx, attempt := tracing.Start(context.Background(), "attempt")
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/v3/combine-transactions/out-trade-no/C1", nil)
	req.Header.Set("Authorization", `WECHATPAY2-SHA256-RSA2048 mchid="1900000109",signature="c2VjcmV0LXNpZ25hdHVyZQ=="`)
	resp, err := (&http.Client{Transport: tracing.Transport(http.DefaultTransport)}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	attempt.End()
	spans := exp.GetSpans()
	if len(spans) != 2 {
		t.Fatalf("%d spans, want the HTTP span and the attempt", len(spans))
	}
	for _, sp := range spans {
		var status, reqID string
		for _, kv := range sp.Attributes {
			switch kv.Key {
			case "http.response.status_code":
				status = kv.Value.String()
			case "wechat.request_id":
				reqID = kv.Value.String()
			}
			if strings.Contains(kv.Value.String(), "c2VjcmV0") {
				t.Errorf("span %q records the Authorization header", sp.Name)
			}
		}
		if status != "404" || reqID != "0885E2B4B8BD06-404" {
			t.Errorf("span %q: status %q request id %q, want 404 and the answer's Request-ID", sp.Name, status, reqID)
		}
	}
	if spans[0].Name != http.MethodGet || spans[0].SpanKind != trace.SpanKindClient || spans[0].Parent.SpanID() != spans[1].SpanContext.SpanID() {
		t.Errorf("HTTP span %q kind %s, want GET, a client child of the attempt", spans[0].Name, spans[0].SpanKind)
	}
}

// TestStartServer checks that a request's traceparent is linked, never
// adopted as the parent.
func TestStartServer(t *testing.T) {
	exp := record(t)
	r := httptest.NewRequest(http.MethodPost, "/v3/notify/1900000109", nil)
	r.Header.Set("traceparent", producerParent)
	r.Header.Set("Request-ID", "08F78BB5AF06")
	r, span := tracing.StartServer(r, "POST /v3/notify/{mchid}")
	span.End()
	got := exp.GetSpans()[0]
	if got.Parent.IsValid() || got.SpanContext.TraceID().String() == "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("server span adopted the sender's trace: parent %v, trace %s", got.Parent, got.SpanContext.TraceID())
	}
	if len(got.Links) != 1 || got.Links[0].SpanContext.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("links = %v, want one to the sender's trace", got.Links)
	}
	if trace.SpanFromContext(r.Context()).SpanContext().SpanID() != got.SpanContext.SpanID() {
		t.Error("the answered request does not carry the server span")
	}
}
