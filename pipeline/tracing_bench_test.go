//go:build unix

package pipeline_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"

	"github.com/wxcombine/orderworker/internal/tracing"
	"github.com/wxcombine/orderworker/pipeline"
	"github.com/wxcombine/orderworker/wechat"
	"github.com/wxcombine/orderworker/wechat/wechatsim"
)

// cpuTime answers the user + system CPU time of the process so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// otlpReceiver is a minimal OTLP/HTTP trace receiver on loopback: it reads
// and counts each export request and accepts it.
func otlpReceiver(b *testing.B) (url string, received *atomic.Int64) {
	received = &atomic.Int64{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/v1/traces" && n > 0 {
			received.Add(1)
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	}))
	b.Cleanup(srv.Close)
	return srv.URL, received
}

// withTracing turns tracing on as mode says for the rest of the benchmark
// and answers the function that flushes and turns it off: "off", "console"
// (the console exporter, writing to /dev/null), "otlp" (OTLP/HTTP to a
// local receiver, configured through the OTEL_* environment as in
// production) or "otlp-10pct" (the same, keeping one trace in ten).
func withTracing(b *testing.B, mode string) (flush func()) {
	ctx := context.Background()
	switch mode {
	case "off":
		tracing.SetProvider(nil)
		return func() {}
	case "console":
		devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { devnull.Close() })
		exp, err := stdouttrace.New(stdouttrace.WithWriter(devnull))
		if err != nil {
			b.Fatal(err)
		}
		tp, err := tracing.NewProvider(ctx, exp, "bench")
		if err != nil {
			b.Fatal(err)
		}
		tracing.SetProvider(tp)
		return func() { _ = tp.Shutdown(ctx); tracing.SetProvider(nil) }
	default:
		url, received := otlpReceiver(b)
		b.Setenv("OTEL_TRACES_EXPORTER", "otlp")
		b.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
		b.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
		if mode == "otlp-10pct" { // the sampling of components/tracing
			b.Setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
			b.Setenv("OTEL_TRACES_SAMPLER_ARG", "0.1")
		}
		stop, err := tracing.Setup(ctx, "bench")
		if err != nil {
			b.Fatal(err)
		}
		return func() {
			_ = stop(ctx)
			if received.Load() == 0 && b.N > 1 {
				b.Fatal("the OTLP receiver got no spans")
			}
		}
	}
}

// benchTracing runs p over the deliveries next answers with tracing off,
// console and otlp (all and one in ten), and reports the process CPU per order (the simulator,
// when used, is in the process too, and counted).
func benchTracing(b *testing.B, p *pipeline.Processor, next func(b *testing.B) pipeline.Delivery) {
	for _, mode := range []string{"off", "console", "otlp", "otlp-10pct"} {
		b.Run(mode, func(b *testing.B) {
			flush := withTracing(b, mode)
			ctx := context.Background()
			b.ReportAllocs()
			start := cpuTime(b)
			for b.Loop() {
				// Each order is a job of its own trace: the Runner's
				// consumer span around Process.
				d := next(b)
				jctx, span := tracing.StartJob(ctx, "process", d.Subject, d.Header, nil)
				if err := p.Process(jctx, d); err != nil {
					b.Fatal(err)
				}
				span.End()
			}
			flush()
			b.ReportMetric(float64((cpuTime(b)-start).Microseconds())/float64(b.N), "cpu-µs/order")
		})
	}
}

// BenchmarkTracing_ProcessH5 is the pipeline alone (no WeChat Pay call, no
// store, no NATS): what tracing adds to the worker's own work per order.
func BenchmarkTracing_ProcessH5(b *testing.B) {
	log := slog.New(tracing.LogHandler(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo})))
	p, err := pipeline.New(pipeline.Config{
		Payer: benchPayer{}, Signer: fakeSigner{key: testKey}, Store: benchStore{}, Publisher: benchPublisher{},
		Flavour: wechat.FlavourMerchant, Logger: log,
	})
	if err != nil {
		b.Fatal(err)
	}
	ds := make([]pipeline.Delivery, 256)
	for i := range ds {
		ds[i] = delivery(b, newJob(wechat.TradeTypeH5, "bench"+strconv.Itoa(i)))
	}
	i := 0
	benchTracing(b, p, func(*testing.B) pipeline.Delivery { i++; return ds[i%len(ds)] })
}

// BenchmarkTracing_ProcessJSAPI is a whole jsapi order: the signed create
// call over loopback HTTP to the simulator (verified answer), the
// pay-parameter signature, the outcome encoded and published (to a
// publisher that discards it), logging at info level.
func BenchmarkTracing_ProcessJSAPI(b *testing.B) {
	p, err := wechatsim.GeneratePlatform(wechatsim.KeyBitsDefault)
	if err != nil {
		b.Fatal(err)
	}
	mc, m, err := wechatsim.GenerateMerchant(p, testMchID, testAppID)
	if err != nil {
		b.Fatal(err)
	}
	sim, err := wechatsim.New(wechatsim.Config{Merchants: []wechatsim.MerchantConfig{mc}, Platform: p})
	if err != nil {
		b.Fatal(err)
	}
	base, err := sim.Start("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(sim.Close)
	client, err := wechat.New(wechat.Config{BaseURL: base, Merchants: []*wechat.Merchant{m}, Flavour: wechat.FlavourMerchant})
	if err != nil {
		b.Fatal(err)
	}
	log := slog.New(tracing.LogHandler(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo})))
	proc, err := pipeline.New(pipeline.Config{
		Payer: client, Store: benchStore{}, Publisher: benchPublisher{}, Flavour: wechat.FlavourMerchant, Logger: log,
	})
	if err != nil {
		b.Fatal(err)
	}
	// Distinct order numbers over all the runs: the simulator answers a
	// repeated create from its record, which would make later runs cheaper.
	// Run it with a fixed count, e.g. -benchtime=2000x.
	ds := make([]pipeline.Delivery, 30000)
	for i := range ds {
		ds[i] = delivery(b, newJob(wechat.TradeTypeJSAPI, "benchj"+strconv.Itoa(i)))
	}
	i := 0
	benchTracing(b, proc, func(b *testing.B) pipeline.Delivery {
		if i == len(ds) {
			b.Fatalf("more than %d orders: run with -benchtime=2000x", len(ds))
		}
		i++
		return ds[i-1]
	})
}
