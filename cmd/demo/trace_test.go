package main

import (
	"bytes"
	"testing"
)

// consoleLog is a worker log with console-exported spans of two jobs (the
// second with a retry) and a log line in between.
const consoleLog = `{"time":"2026-12-01T22:00:00Z","level":"INFO","msg":"worker consuming"}
{"Name":"process combine.orders.create.h5","SpanContext":{"TraceID":"aa","SpanID":"a1"},"Parent":{"TraceID":"","SpanID":"0000000000000000"},"StartTime":"2026-12-01T22:00:00Z","EndTime":"2026-12-01T22:00:00.010Z","Attributes":[{"Key":"wechat.combine_out_trade_no","Value":{"Type":"STRING","Value":"H1"}}],"Status":{"Code":"Unset"}}
{"Name":"attempt","SpanContext":{"TraceID":"bb","SpanID":"b3"},"Parent":{"TraceID":"bb","SpanID":"b2"},"StartTime":"2026-12-01T22:00:00.001Z","EndTime":"2026-12-01T22:00:00.002Z","Attributes":[{"Key":"wechat.attempt","Value":{"Type":"INT64","Value":1}},{"Key":"wechat.code","Value":{"Type":"STRING","Value":"SYSTEMERROR"}}],"Status":{"Code":"Error","Description":"500"}}
{"Name":"retry wait","SpanContext":{"TraceID":"bb","SpanID":"b4"},"Parent":{"TraceID":"bb","SpanID":"b2"},"StartTime":"2026-12-01T22:00:00.002Z","EndTime":"2026-12-01T22:00:00.502Z","Attributes":[{"Key":"retry.delay_ms","Value":{"Type":"INT64","Value":500}}],"Status":{"Code":"Unset"}}
{"Name":"attempt","SpanContext":{"TraceID":"bb","SpanID":"b5"},"Parent":{"TraceID":"bb","SpanID":"b2"},"StartTime":"2026-12-01T22:00:00.502Z","EndTime":"2026-12-01T22:00:00.503Z","Attributes":[{"Key":"wechat.attempt","Value":{"Type":"INT64","Value":2}},{"Key":"wechat.code","Value":{"Type":"STRING","Value":"OK"}}],"Status":{"Code":"Unset"}}
{"Name":"wechat create_jsapi","SpanContext":{"TraceID":"bb","SpanID":"b2"},"Parent":{"TraceID":"bb","SpanID":"b1"},"StartTime":"2026-12-01T22:00:00.001Z","EndTime":"2026-12-01T22:00:00.503Z","Status":{"Code":"Unset"}}
{"Name":"ack","SpanContext":{"TraceID":"bb","SpanID":"b6"},"Parent":{"TraceID":"bb","SpanID":"b1"},"StartTime":"2026-12-01T22:00:00.504Z","EndTime":"2026-12-01T22:00:00.505Z","Attributes":[{"Key":"messaging.operation.name","Value":{"Type":"STRING","Value":"ack"}}],"Status":{"Code":"Unset"}}
{"Name":"process combine.orders.create.jsapi","SpanContext":{"TraceID":"bb","SpanID":"b1"},"Parent":{"TraceID":"cc","SpanID":"c0"},"StartTime":"2026-12-01T22:00:00Z","EndTime":"2026-12-01T22:00:00.505Z","Status":{"Code":"Unset"}}
`

func TestPrintTree(t *testing.T) {
	spans := readSpans([]byte(consoleLog))
	if len(spans) != 7 {
		t.Fatalf("readSpans() = %d spans, want 7", len(spans))
	}
	tr := pickTrace(spans)
	if tr == nil || tr[0].SpanContext.TraceID != "bb" {
		t.Fatalf("pickTrace() chose %v, want trace bb (the one with a retry wait)", tr)
	}
	var out bytes.Buffer
	printTree(&out, tr)
	want := `demo: trace bb (6 spans)
  process combine.orders.create.jsapi  505.0ms
  ├── wechat create_jsapi  502.0ms
  │   ├── attempt  1.0ms  wechat.attempt=1 wechat.code=SYSTEMERROR error
  │   ├── retry wait  500.0ms  retry.delay_ms=500
  │   └── attempt  1.0ms  wechat.attempt=2 wechat.code=OK
  └── ack  1.0ms  messaging.operation.name=ack
`
	if got := out.String(); got != want {
		t.Errorf("printTree() =\n%s\nwant\n%s", got, want)
	}
	if consoleTracingEnv(func(string) string { return "" }) != nil {
		t.Error("console tracing on without OTEL_TRACES_EXPORTER=console")
	}
	if env := consoleTracingEnv(func(k string) string { return map[string]string{"OTEL_TRACES_EXPORTER": "console"}[k] }); env["OTEL_TRACES_EXPORTER"] != "console" {
		t.Errorf("consoleTracingEnv() = %v, want the console exporter", env)
	}
}
