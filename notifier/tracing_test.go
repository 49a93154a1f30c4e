package notifier_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/internal/tracing"
	"github.com/wxcombine/orderworker/notifier"
)

// TestHandler_tracing sends a genuine notification and a forged one with
// tracing on: each gets a root server span with WeChat Pay's Request-ID;
// the genuine one's publish span is the payment event's traceparent, its
// log lines name the trace, and no span holds the payer's openid.
func TestHandler_tracing(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	tracing.SetProvider(tp)
	t.Cleanup(func() { tracing.SetProvider(nil); _ = tp.Shutdown(context.Background()) })
	b := setup(t, func(c *notifier.Config) { c.Logger = slog.New(tracing.LogHandler(c.Logger.Handler())) })

	n := notification(t, b.keys.pubKey, testPubKeyID, b.keys.apiV3, "EV-TRC1", paidOrder("TRC1"), time.Now())
	n.header.Set("Request-ID", "08F78BB5AF0610D302A8E8A4A0C5B5C2D4D8A401-0")
	if status, body := b.post(t, testMchID, n); status != http.StatusNoContent {
		t.Fatalf("POST = %d %s, want 204", status, body)
	}
	forged := notification(t, b.keys.pubKey, testPubKeyID, b.keys.apiV3, "EV-TRC2", paidOrder("TRC2"), time.Now())
	forged.body = append([]byte{}, forged.body...)
	forged.body[len(forged.body)-2] ^= 1 // the signature no longer covers it
	if status, body := b.post(t, testMchID, forged); status != http.StatusUnauthorized {
		t.Fatalf("forged POST = %d %s, want 401", status, body)
	}

	spans := exp.GetSpans()
	var servers []tracetest.SpanStub
	for _, sp := range spans {
		if sp.Name == "POST /v3/notify/{mchid}" {
			servers = append(servers, sp)
		}
	}
	if len(servers) != 2 {
		t.Fatalf("%d server spans, want 2; spans: %v", len(servers), spans)
	}
	ok, bad := servers[0], servers[1]
	for _, sp := range servers {
		if sp.Parent.IsValid() || sp.SpanKind != trace.SpanKindServer {
			t.Errorf("server span parent %s kind %s, want a root server span", sp.Parent.SpanID(), sp.SpanKind)
		}
	}
	wantAttrs := map[string]string{
		"wechat.request_id": "08F78BB5AF0610D302A8E8A4A0C5B5C2D4D8A401-0", "wechat.notification_id": "EV-TRC1",
		"wechat.combine_out_trade_no": "TRC1", "orderworker.notifier.result": "ok", "http.response.status_code": "204",
	}
	for k, want := range wantAttrs {
		if got := attrOf(ok, k); got != want {
			t.Errorf("genuine notification span %s = %q, want %q", k, got, want)
		}
	}
	if got := attrOf(bad, "orderworker.notifier.result"); got != string(notifier.ResultBadSignature) || bad.Status.Code != codes.Error {
		t.Errorf("forged notification span result %q status %v, want bad_signature and an error", got, bad.Status.Code)
	}
	var publish *tracetest.SpanStub
	for i, sp := range spans {
		if sp.Parent.SpanID() == bad.SpanContext.SpanID() {
			t.Errorf("forged notification has child span %q", sp.Name)
		}
		if sp.Parent.SpanID() == ok.SpanContext.SpanID() && sp.Name == "publish "+events.SubjectPaymentSucceeded {
			publish = &spans[i]
		}
	}
	if publish == nil {
		t.Fatal("no publish span under the genuine notification")
	}

	m, err := b.stream.GetLastMsgForSubject(t.Context(), events.SubjectPaymentSucceeded)
	if err != nil {
		t.Fatal(err)
	}
	sc := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), tracing.Header(m.Header)))
	if sc.TraceID() != ok.SpanContext.TraceID() || sc.SpanID() != publish.SpanContext.SpanID() {
		t.Errorf("payment event traceparent %s/%s, want %s/%s", sc.TraceID(), sc.SpanID(), ok.SpanContext.TraceID(), publish.SpanContext.SpanID())
	}

	logged := 0
	for _, l := range strings.Split(strings.TrimSpace(b.logs.String()), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(l), &rec) != nil {
			continue
		}
		logged++
		if rec["trace_id"] != ok.SpanContext.TraceID().String() && rec["trace_id"] != bad.SpanContext.TraceID().String() {
			t.Errorf("log line without its request's trace: %s", l)
		}
	}
	if logged != 2 {
		t.Errorf("%d log lines, want 2:\n%s", logged, b.logs)
	}
	for _, sp := range spans {
		for _, kv := range sp.Attributes {
			if strings.Contains(kv.Value.String(), testOpenID) {
				t.Errorf("span %q attribute %s holds the payer's openid", sp.Name, kv.Key)
			}
		}
	}
}

func attrOf(sp tracetest.SpanStub, key string) string {
	for _, kv := range sp.Attributes {
		if string(kv.Key) == key {
			return kv.Value.String()
		}
	}
	return ""
}
