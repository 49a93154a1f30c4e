package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/internal/testenv"
	"github.com/wxcombine/orderworker/wechat"
	"github.com/wxcombine/orderworker/wechat/wechatsim"
)

// consoleSpan is the part of a span the console exporter prints that the
// test reads.
type consoleSpan struct {
	Name        string
	SpanContext struct{ TraceID, SpanID string }
	Parent      struct{ TraceID, SpanID string }
}

// TestWorker_consoleTraces runs the worker binary with
// OTEL_TRACES_EXPORTER=console, publishes a job whose traceparent names a
// producer's span, and checks that the spans printed on stdout, the outcome
// event's traceparent and the job's log lines carry the producer's trace
// id, and that /metrics (OpenMetrics) has exemplars naming it. With -v it
// prints the three ids side by side.
func TestWorker_consoleTraces(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the worker binary")
	}
	bin := filepath.Join(t.TempDir(), "worker")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ns, rs := testenv.StartNATS(t), testenv.StartRedis(t)
	p, err := wechatsim.GeneratePlatform(wechatsim.KeyBitsDefault)
	if err != nil {
		t.Fatal(err)
	}
	const mchID, appID, no = "1900000109", "wxd678efh567hg6787", "TRACE00001"
	mc, m, err := wechatsim.GenerateMerchant(p, mchID, appID)
	if err != nil {
		t.Fatal(err)
	}
	sim, err := wechatsim.New(wechatsim.Config{Merchants: []wechatsim.MerchantConfig{mc}, Platform: p})
	if err != nil {
		t.Fatal(err)
	}
	base, err := sim.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	w := startProc(t, bin, []string{
		"NATS_URL=" + ns.URL, "REDIS_ADDRS=" + rs.Addr, "IDEMPOTENCY_ALLOW_VOLATILE=true", "WECHAT_BASE_URL=" + base, "WECHAT_FLAVOUR=merchant",
		"WECHAT_MERCHANTS=" + mchID, "WECHAT_MERCHANT_DIR=" + writeMerchantDir(t, p, m), "PATH=" + os.Getenv("PATH"),
		"OTEL_TRACES_EXPORTER=console", "OTEL_SERVICE_NAME=orderworker-test", "OTEL_BSP_SCHEDULE_DELAY=100",
	})

	nc, err := nats.Connect(ns.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	const traceID = "0af7651916cd43dd8448eb211c80319c"
	traceparent := "00-" + traceID + "-b7ad6b7169203331-01"
	job := events.CreateOrderJob{
		Version: events.Version, CorrelationID: "corr-trace", CreatedAt: time.Now().UTC(), TradeType: wechat.TradeTypeNative,
		Request: wechat.CombineOrderRequest{
			CombineAppID: appID, CombineMchID: mchID, CombineOutTradeNo: no,
			SceneInfo: &wechat.SceneInfo{PayerClientIP: "14.23.150.211"},
			SubOrders: []wechat.SubOrder{
				{MchID: mchID, Attach: "a", Amount: wechat.Amount{TotalAmount: 10, Currency: "CNY"}, OutTradeNo: no + "-1", Description: "cup"},
				{MchID: mchID, Attach: "b", Amount: wechat.Amount{TotalAmount: 20, Currency: "CNY"}, OutTradeNo: no + "-2", Description: "pen"},
			},
			NotifyURL: "https://yourapp.example/wxpay/notify",
		},
	}
	msg := nats.NewMsg(events.Subjects{}.Job(job.TradeType))
	msg.Data, _ = json.Marshal(job)
	msg.Header.Set(events.HeaderMsgID, job.MsgID())
	msg.Header.Set("traceparent", traceparent)
	if _, err := js.PublishMsg(t.Context(), msg); err != nil {
		t.Fatal(err)
	}
	var event *jetstream.RawStreamMsg
	waitUntil(t, 20*time.Second, "the prepay.created event", func() bool {
		s, err := js.Stream(t.Context(), events.StreamEvents)
		if err == nil {
			event, err = s.GetLastMsgForSubject(t.Context(), events.SubjectPrepayCreated)
		}
		return err == nil
	})
	eventParent := event.Header.Get("traceparent")
	if !strings.HasPrefix(eventParent, "00-"+traceID+"-") {
		t.Errorf("outcome event traceparent = %q, want the job's trace %s", eventParent, traceID)
	}

	metrics := []string{"orderworker_pipeline_job_duration_seconds_bucket", "orderworker_wechat_request_duration_seconds_bucket"}
	exemplar := `# {trace_id="` + traceID + `"}`
	body := scrapeUntil(t, w.admin, "application/openmetrics-text; version=1.0.0", func(body string) bool {
		for _, metric := range metrics {
			if !strings.Contains(grep(body, metric), exemplar) {
				return false
			}
		}
		return true
	})
	for _, metric := range metrics {
		if !strings.Contains(grep(body, metric), exemplar) {
			t.Errorf("/metrics has no exemplar of trace %s on %s:\n%s", traceID, metric, grep(body, metric))
		}
	}

	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.done:
	case <-time.After(10 * time.Second):
		t.Fatal("worker did not exit within 10s of SIGTERM")
	}
	spans, logs := splitConsole(t, []byte(w.out.String()))
	var names []string
	for _, s := range spans {
		if s.SpanContext.TraceID != traceID {
			t.Errorf("span %q has trace id %s, want the job's %s", s.Name, s.SpanContext.TraceID, traceID)
		}
		names = append(names, s.Name)
		if s.Name == "process "+msg.Subject && s.Parent.SpanID != "b7ad6b7169203331" {
			t.Errorf("job span parent = %s, want the producer's b7ad6b7169203331", s.Parent.SpanID)
		}
		if s.Name == "publish "+events.SubjectPrepayCreated && eventParent != "00-"+traceID+"-"+s.SpanContext.SpanID+"-01" {
			t.Errorf("outcome event traceparent %q is not the publish span %s", eventParent, s.SpanContext.SpanID)
		}
	}
	for _, want := range []string{"process " + msg.Subject, "idempotency claim", "wechat create_native", "attempt", "POST", "publish " + events.SubjectPrepayCreated, "ack"} {
		if !strings.Contains(","+strings.Join(names, ",")+",", ","+want+",") {
			t.Errorf("console spans %v lack %q", names, want)
		}
	}
	jobLines := 0
	for _, rec := range logs {
		if rec["combine_out_trade_no"] == no {
			jobLines++
			if rec["trace_id"] != traceID {
				t.Errorf("job log line %v lacks trace_id %s", rec, traceID)
			}
		}
	}
	if jobLines == 0 {
		t.Error("no log line of the job")
	}
	t.Logf("job traceparent:           %s", traceparent)
	t.Logf("outcome event traceparent: %s", eventParent)
	t.Logf("console spans (%d), all with TraceID %s: %s", len(spans), traceID, strings.Join(names, ", "))
}

// splitConsole separates the worker's stdout into the console exporter's
// spans (indented JSON objects) and the JSON log lines.
func splitConsole(t *testing.T, out []byte) ([]consoleSpan, []map[string]any) {
	t.Helper()
	var spans []consoleSpan
	var logs []map[string]any
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("worker output is not JSON: %v", err)
		}
		var probe map[string]json.RawMessage
		if err := json.Unmarshal(raw, &probe); err != nil {
			t.Fatal(err)
		}
		if _, ok := probe["SpanContext"]; ok {
			var s consoleSpan
			if err := json.Unmarshal(raw, &s); err != nil {
				t.Fatal(err)
			}
			spans = append(spans, s)
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal(raw, &rec); err != nil {
			t.Fatal(err)
		}
		logs = append(logs, rec)
	}
	return spans, logs
}
