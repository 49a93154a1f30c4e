// Command worker creates WeChat Pay combine orders from NATS JetStream jobs
// and publishes their outcomes; see package pipeline and docs/events.md.
//
// Every setting is an environment variable and also a flag (NATS_URL is
// -nats-url); `worker -h` lists them with their defaults. Merchant
// credentials are files: for each combine_mchid in WECHAT_MERCHANTS, the
// directory WECHAT_MERCHANT_DIR/<mchid>/ holds apiclient_key.pem, apiv3_key,
// serial, and wechatpay_pub_key.pem + pub_key_id and/or platform_cert*.pem.
//
// The admin server on ADMIN_ADDR (default :8081) serves /healthz, /readyz
// (NATS connected and the idempotency store reachable) and /metrics. On
// SIGTERM or SIGINT the worker stops pulling, lets in-flight jobs finish
// within SHUTDOWN_GRACE, and exits 0.
//
// Go runtime settings: unless GOGC is set, the worker collects garbage at
// GOGC=400 (gcPercentDefault) rather than Go's 100. Its live heap is a few
// megabytes while each order allocates tens of kilobytes (RSA signing, HTTP,
// JSON), so at 100 it spends several percent of its CPU in collections;
// GOMEMLIMIT, when set, still bounds the heap. With PPROF_ENABLED=true the
// admin server also serves net/http/pprof under /debug/pprof/, for
// profiling; keep it off where the admin port is reachable by others.
//
// Tracing (OpenTelemetry) is configured only by the standard OTEL_*
// variables, read by the SDK rather than listed by -h, and is off unless
// OTEL_TRACES_EXPORTER or an OTLP endpoint is set; see internal/tracing and
// docs/operations.md#tracing.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wxcombine/orderworker/idempotency"
	"github.com/wxcombine/orderworker/internal/tracing"
	"github.com/wxcombine/orderworker/metrics"
	"github.com/wxcombine/orderworker/pipeline"
	"github.com/wxcombine/orderworker/wechat"
)

// gcPercentDefault is the worker's GOGC when the environment sets none.
const gcPercentDefault = 400

// version and commit are set at build time with -ldflags -X.
var (
	version = "dev"
	commit  = "unknown"
)

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercentDefault)
	}
	getenv, err := withFlags(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}

// run wires the worker from getenv and runs it until ctx ends; logs go to
// stdout as JSON.
func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	log := slog.New(tracing.LogHandler(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: cfg.LogLevel})))
	stopTracing, err := tracing.Setup(ctx, "orderworker")
	if err != nil {
		return fmt.Errorf("tracing (OTEL_* environment): %w", err)
	}
	defer flushTraces(stopTracing, log)
	merchants, err := loadMerchants(cfg.MerchantFiles)
	if err != nil {
		return err
	}
	client, err := wechat.New(wechat.Config{
		BaseURL: cfg.WeChatBaseURL, Merchants: merchants, Flavour: cfg.Flavour, Timeout: cfg.WeChatCallTimeout,
		Logger: log.With(slog.String("component", "wechat")),
	})
	if err != nil {
		return err
	}

	nc, err := connectNATS(cfg, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	store, closeStore, err := openStore(ctx, cfg, js)
	if err != nil {
		return err
	}
	defer closeStore()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := metrics.NewWorker(reg)
	m.SetBuildInfo(version, commit)

	proc, err := pipeline.New(pipeline.Config{
		Payer: client, Store: store, Publisher: pipeline.JetStreamPublisher{JetStream: js}, Flavour: cfg.Flavour,
		Subjects: cfg.Subjects, MaxJobSize: cfg.MaxJobBytes, Lease: cfg.Lease, OutcomeTTL: cfg.OutcomeTTL,
		CallTimeout: cfg.WeChatCallTimeout, Retry: cfg.Retry, Redelivery: cfg.Redelivery, MaxDeliver: cfg.MaxDeliver,
		Metrics: m, Logger: log,
	})
	if err != nil {
		return err
	}
	runner, err := pipeline.NewRunner(pipeline.RunnerConfig{
		JetStream: js, Processor: proc, Subjects: cfg.Subjects, Consumer: cfg.Consumer, Replicas: cfg.Replicas,
		Storage: cfg.Storage, JobsMaxAge: cfg.JobsMaxAge, EventsMaxAge: cfg.EventsMaxAge, DeadLettersMaxAge: cfg.DeadLettersMaxAge,
		DuplicateWindow: cfg.DuplicateWindow, AckWait: cfg.AckWait, BackOff: cfg.ConsumerBackOff, MaxAckPending: cfg.MaxAckPending,
		InFlight: cfg.InFlight, JobTimeout: cfg.JobTimeout, ShutdownGrace: cfg.ShutdownGrace, Metrics: m, Logger: log,
	})
	if err != nil {
		return err
	}

	var stopping atomic.Bool
	admin, err := startAdmin(cfg.AdminAddr, cfg.PprofEnabled, reg, func(ctx context.Context) error {
		switch {
		case stopping.Load():
			return errors.New("shutting down")
		case !nc.IsConnected():
			return fmt.Errorf("nats: %s", nc.Status())
		}
		if err := store.Ping(ctx); err != nil {
			return fmt.Errorf("idempotency store: %w", err)
		}
		return nil
	}, log)
	if err != nil {
		return err
	}
	go func() { // Owned by run: marks the worker unready as soon as shutdown begins.
		<-ctx.Done()
		stopping.Store(true)
	}()

	log.InfoContext(ctx, "worker starting", slog.String("version", version), slog.String("flavour", string(cfg.Flavour)),
		slog.Int("merchants", len(merchants)), slog.String("admin_addr", admin.addr), slog.String("backend", cfg.Backend))
	runErr := runner.Run(ctx)

	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = admin.srv.Shutdown(sctx)
	if err := nc.Drain(); err != nil {
		log.Warn("nats drain", slog.Any("error", err))
	}
	if runErr != nil {
		return runErr
	}
	log.Info("worker exited")
	return nil
}

// flushTraces exports the spans still buffered, within five seconds.
func flushTraces(stop func(context.Context) error, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := stop(ctx); err != nil {
		log.Warn("tracing shutdown", slog.Any("error", err))
	}
}

// loadMerchants loads every merchant and reports every failure at once.
func loadMerchants(files []wechat.MerchantFiles) ([]*wechat.Merchant, error) {
	var ms []*wechat.Merchant
	var errs []string
	for _, f := range files {
		m, err := wechat.LoadMerchant(f)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		ms = append(ms, m)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("merchant credentials: %d problem(s):\n  %s", len(errs), strings.Join(errs, "\n  "))
	}
	return ms, nil
}

func connectNATS(cfg config, log *slog.Logger) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name("orderworker"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", slog.Any("error", err))
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) { log.Info("nats reconnected") }),
	}
	if cfg.NATSCredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.NATSCredsFile))
	}
	if cfg.NATSCAFile != "" {
		opts = append(opts, nats.RootCAs(cfg.NATSCAFile))
	}
	if cfg.NATSCertFile != "" {
		opts = append(opts, nats.ClientCert(cfg.NATSCertFile, cfg.NATSKeyFile))
	}
	nc, err := nats.Connect(cfg.NATSURL, opts...)
	if err != nil {
		return nil, fmt.Errorf("nats: connect: %w", err)
	}
	return nc, nil
}

func openStore(ctx context.Context, cfg config, js jetstream.JetStream) (idempotency.Store, func(), error) {
	if cfg.Backend == "kv" {
		kv, err := idempotency.NewKV(ctx, js, idempotency.KVConfig{Bucket: cfg.KVBucket, Replicas: cfg.Replicas, Storage: cfg.Storage})
		if err != nil {
			return nil, nil, err
		}
		return kv, func() {}, nil
	}
	rc, err := idempotency.NewRedisClient(cfg.Redis)
	if err != nil {
		return nil, nil, err
	}
	st, err := idempotency.NewRedis(rc, idempotency.RedisConfig{Prefix: cfg.RedisPrefix})
	if err != nil {
		_ = rc.Close()
		return nil, nil, err
	}
	return st, func() { _ = rc.Close() }, nil
}

type adminServer struct {
	srv  *http.Server
	addr string
}

// startAdmin serves /healthz, /readyz and /metrics on addr.
func startAdmin(addr string, withPprof bool, reg *prometheus.Registry, ready func(context.Context) error, log *slog.Logger) (*adminServer, error) {
	mux := http.NewServeMux()
	if withPprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := ready(ctx); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ready\n")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, EnableOpenMetrics: true})) // exemplars
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin: listen %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { // Owned by run: ends when run shuts srv down.
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin server", slog.Any("error", err))
		}
	}()
	return &adminServer{srv: srv, addr: l.Addr().String()}, nil
}
