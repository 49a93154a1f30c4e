// Command worker creates WeChat Pay combine orders from NATS JetStream jobs
// and publishes their outcomes; see package pipeline and docs/events.md.
//
// Every setting is an environment variable and also a flag (NATS_URL is
// -nats-url); `worker -h` lists them with their defaults. Merchant
// credentials are files: for each combine_mchid in WECHAT_MERCHANTS, the
// directory WECHAT_MERCHANT_DIR/<mchid>/ holds apiclient_key.pem, apiv3_key,
// serial, and wechatpay_pub_key.pem + pub_key_id and/or platform_cert*.pem.
//
// Every worker also reconciles orders with WeChat Pay and serves close jobs
// (see reconcile.go and package pipeline); RECONCILE_ENABLED=false turns
// reconciliation off.
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
	"crypto/tls"
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
	"github.com/redis/go-redis/v9"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/idempotency"
	envconfig "github.com/wxcombine/orderworker/internal/config"
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
	log := slog.New(tracing.LogHandler(envconfig.NewLogger(stdout, cfg.LogLevel).Handler()))
	idempotency.LogRedisTo(log)
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

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reasons := make([]string, len(events.Reasons))
	for i, r := range events.Reasons {
		reasons[i] = string(r)
	}
	mchIDs := make([]string, len(merchants))
	for i, mc := range merchants {
		mchIDs[i] = mc.MchID
	}
	m := metrics.NewWorkerWith(reg, metrics.WorkerConfig{DeadLetterReasons: reasons, Merchants: mchIDs})
	m.SetBuildInfo(version, commit)

	// The admin server answers before NATS does: /healthz at once, /readyz
	// 503 with the reason until the worker consumes.
	var (
		stopping atomic.Bool
		state    atomic.Pointer[string] // why the worker is not ready yet; nil once it consumes
		live     atomic.Pointer[readyDeps]
	)
	setState := func(s string) { state.Store(&s) }
	setState("connecting to NATS")
	admin, err := startAdmin(cfg.AdminAddr, cfg.PprofEnabled, reg, func(ctx context.Context) (string, error) {
		if stopping.Load() {
			return "", errors.New("shutting down")
		}
		if s := state.Load(); s != nil {
			return "", errors.New(*s)
		}
		d := live.Load()
		if !d.nc.IsConnected() {
			return "", fmt.Errorf("nats: %s", d.nc.Status())
		}
		if err := d.store.Ping(ctx); err != nil {
			return "", fmt.Errorf("idempotency store: %w", err)
		}
		if d.pause != nil && d.pause.Paused() {
			return "paused", nil
		}
		return "ready", nil
	}, log)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = admin.srv.Shutdown(sctx)
	}()
	go func() { // Owned by run: marks the worker unready as soon as shutdown begins.
		<-ctx.Done()
		stopping.Store(true)
	}()

	// The first connection is retried like every reconnection: a worker
	// started while NATS is down or being upgraded waits, unready, instead
	// of exiting into CrashLoopBackOff.
	nc, err := cfg.NATS.Connect("orderworker "+version, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	if err := envconfig.WaitConnected(ctx, nc); err != nil {
		if ctx.Err() != nil {
			log.Info("worker exited before NATS answered")
			return nil
		}
		return err
	}
	if err := checkServer(nc, cfg.Backend); err != nil {
		return err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	setState("opening the idempotency store")
	store, closeStore, err := retryOpen(ctx, "opening the idempotency store", log, func(ctx context.Context) (idempotency.Store, func(), error) {
		return openStore(ctx, cfg, js)
	})
	if err != nil {
		return err
	}
	defer closeStore()
	// A store that is down or failing over when the pod starts is waited
	// for as long as it takes, like NATS: the pod stays unready instead of
	// crash-looping through the outage. One that refuses us (a wrong
	// password) fails at once.
	setState("reaching the idempotency store")
	if err := retryWithin(ctx, 0, "reaching the idempotency store", log, storeUnreachable, store.Ping); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("idempotency store: %w", err)
	}
	if err := checkDurability(ctx, store, cfg.AllowVolatileStore, log); err != nil {
		return err
	}
	if cfg.OutcomeTTL < cfg.JobsMaxAge {
		log.Warn("IDEMPOTENCY_OUTCOME_TTL is shorter than JOBS_MAX_AGE: a job can outlive its order's record, and each such job asks WeChat Pay for the order's state",
			slog.Duration("outcome_ttl", cfg.OutcomeTTL), slog.Duration("jobs_max_age", cfg.JobsMaxAge))
	}
	seen, closeSeen, err := retryOpen(ctx, "opening the payments-seen record", log, func(ctx context.Context) (idempotency.Seen, func(), error) {
		return openSeen(ctx, cfg, js)
	})
	if err != nil {
		return err
	}
	defer closeSeen()
	lims, err := openLimits(ctx, cfg, js, reg)
	if err != nil {
		return err
	}
	defer lims.close()

	proc, err := pipeline.New(pipeline.Config{
		Payer: meteredPayer{Payer: client, m: m}, Signer: client, Store: store, Publisher: pipeline.JetStreamPublisher{JetStream: js}, Flavour: cfg.Flavour,
		Subjects: cfg.Subjects, MaxJobSize: cfg.MaxJobBytes, Lease: cfg.Lease, OutcomeTTL: cfg.OutcomeTTL,
		CallTimeout: cfg.WeChatCallTimeout, Retry: cfg.Retry, Redelivery: cfg.Redelivery, MaxDeliver: cfg.MaxDeliver,
		Limiter: lims.calls, Metrics: m, Logger: log,
		Reconcile: cfg.Reconcile.Enabled, Seen: seen, SeenTTL: cfg.Reconcile.SeenTTL, NotifyURLBase: cfg.Reconcile.NotifyURLBase,
	})
	if err != nil {
		return err
	}
	runner, err := pipeline.NewRunner(pipeline.RunnerConfig{
		JetStream: js, Processor: proc, Subjects: cfg.Subjects, Consumer: cfg.Consumer, Replicas: cfg.Replicas,
		JobsStream: cfg.JobsStream, EventsStream: cfg.EventsStream, DeadLettersStream: cfg.DeadLettersStream,
		StreamsManage: cfg.StreamsManage, MaxJobBytes: cfg.MaxJobBytes,
		Storage: cfg.Storage, JobsMaxAge: cfg.JobsMaxAge, EventsMaxAge: cfg.EventsMaxAge, DeadLettersMaxAge: cfg.DeadLettersMaxAge,
		DuplicateWindow: cfg.DuplicateWindow, AckWait: cfg.AckWait, BackOff: cfg.ConsumerBackOff, MaxAckPending: cfg.MaxAckPending,
		InFlight: cfg.InFlight, Limiter: lims.concurrency, JobTimeout: cfg.JobTimeout, ShutdownGrace: cfg.ShutdownGrace, Metrics: m, Logger: log,
	})
	if err != nil {
		return err
	}

	setState("reading the pause switch")
	var pause *pipeline.Pause
	err = retrySetup(ctx, "reading the pause switch", log, jetStreamUnavailable, func(ctx context.Context) (err error) {
		pause, err = pipeline.NewPause(ctx, pipeline.PauseConfig{
			JetStream: js, Bucket: cfg.PauseBucket, Stream: cfg.JobsStream, Consumer: cfg.Consumer, Replicas: cfg.Replicas,
			OnChange: func(st pipeline.PauseState) {
				m.Paused(st.Paused)
				if st.Paused {
					log.Warn("consumption paused by an operator", slog.String("reason", st.Reason), slog.String("by", st.By), slog.Time("at", st.At))
				} else {
					log.Info("consumption running")
				}
			},
		})
		return err
	})
	if err != nil {
		return err
	}
	defer pause.Stop()
	// Ready only once the streams and the consumer are in place (created
	// or verified, STREAMS_MANAGE); Run repeats the cheap check.
	setState("setting up the streams and the consumer")
	if err := retrySetup(ctx, "setting up the streams", log, anyError, func(ctx context.Context) error {
		_, err := runner.Setup(ctx)
		return err
	}); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	setState("setting up reconciliation")
	reconciler, err := newReconciler(cfg, js, client, seen, pipeline.ReconcileConfig{
		Metrics: metrics.NewReconcile(reg), Anomalies: metrics.NewPaymentAnomalies(reg), Logger: log.With(slog.String("component", "reconcile")),
	})
	if err != nil {
		return err
	}
	// The reconcile stream exists before the first prepay asks for a check.
	if err := retrySetup(ctx, "setting up reconciliation", log, anyError, reconciler.Setup); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	live.Store(&readyDeps{nc: nc, store: store, pause: pause})
	state.Store(nil)

	log.InfoContext(ctx, "worker starting", slog.String("version", version), slog.String("flavour", string(cfg.Flavour)),
		slog.Int("merchants", len(merchants)), slog.String("admin_addr", admin.addr), slog.String("backend", cfg.Backend))
	reconcileErr := make(chan error, 1)
	go func() { reconcileErr <- reconciler.Run(ctx) }() // Owned by run: ends when ctx ends; waited for below.
	runErr := errors.Join(consume(ctx, runner, pause, log), <-reconcileErr)

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

// consume runs the runner until ctx ends, stopping it while an operator
// pauses consumption: a pause drains the runner as a SIGTERM would (the
// jobs in flight finish within SHUTDOWN_GRACE, nothing new is pulled), and
// the resume starts it again. The runner's own loop will call pause.Wait
// before each pull; until then this is where the pause takes effect.
func consume(ctx context.Context, runner *pipeline.Runner, pause *pipeline.Pause, log *slog.Logger) error {
	for {
		_ = pause.Wait(ctx) // fails only when ctx ends: stopped while paused
		select {
		case <-ctx.Done():
			return nil
		default:
		}
		runCtx, cancel := context.WithCancel(ctx)
		pausing := pause.Pausing()
		go func() { // Owned by consume: ends when this run does.
			select {
			case <-pausing:
				log.Info("draining for the pause")
				cancel()
			case <-runCtx.Done():
			}
		}()
		err := runner.Run(runCtx)
		if runCtx.Err() != nil {
			err = nil // paused or stopping, perhaps during setup: not a failure
		}
		cancel()
		if err != nil {
			return err
		}
	}
}

// The oldest nats-server the worker works with, and why.
const (
	// serverVersionMin: the runner terminates dead-lettered jobs with
	// TermWithReason ("+TERM <reason>"), which servers before 2.10.4 do not
	// parse as a termination; consumer BackOff, pull heartbeats and
	// stream metadata are older.
	serverVersionMin = "2.10.4"
	serverNeeds      = "TermWithReason"
	// kvServerVersionMin: the JetStream KV idempotency store gives each
	// record its own TTL (per-message TTL: KeyTTL, LimitMarkerTTL,
	// PurgeTTL), new in 2.11.0.
	kvServerVersionMin = "2.11.0"
	kvServerNeeds      = "per-message TTL of the KV idempotency store"
)

// checkServer refuses a NATS server older than what the worker relies on.
func checkServer(nc *nats.Conn, backend string) error {
	if backend == "kv" {
		return envconfig.CheckServerVersion(nc, kvServerVersionMin, kvServerNeeds)
	}
	return envconfig.CheckServerVersion(nc, serverVersionMin, serverNeeds)
}

// readyDeps are what /readyz checks once the worker is connected.
type readyDeps struct {
	nc    *nats.Conn
	store idempotency.Store
	pause *pipeline.Pause
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

// setupRetryFor is how long a worker keeps trying to set up its streams:
// a cluster without a meta leader (a partition, a restarting node) answers
// "JetStream system temporarily unavailable", and several workers creating
// the same replicated stream at once may get no answer at all.
const setupRetryFor = 2 * time.Minute

// retrySetup runs step (one setup step that talks to JetStream: opening a
// KV bucket, creating the streams) until it succeeds, ctx ends or
// setupRetryFor passes, each attempt bounded by 15 s. A replicated cluster
// answers "JetStream system temporarily unavailable" while it has no leader
// for the asset (a node killed, restarting or partitioned): a pod that
// starts then waits it out instead of exiting.
//
// retry says which errors are worth another attempt: anyError for the
// streams (several workers creating one replicated stream at once may get
// no answer at all), jetStreamUnavailable for the KV buckets, so that a
// mistake in the configuration still fails at once.
func retrySetup(ctx context.Context, what string, log *slog.Logger, retry func(error) bool, step func(context.Context) error) error {
	return retryWithin(ctx, setupRetryFor, what, log, retry, step)
}

// retryWithin is retrySetup for up to within; 0 retries until ctx ends.
func retryWithin(ctx context.Context, within time.Duration, what string, log *slog.Logger, retry func(error) bool, step func(context.Context) error) error {
	deadline := time.Now().Add(within)
	for delay := time.Second; ; delay = min(2*delay, 10*time.Second) {
		sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err := step(sctx)
		cancel()
		if err == nil || ctx.Err() != nil || (within > 0 && time.Now().After(deadline)) || !retry(err) {
			return err
		}
		log.Warn(what+" failed; retrying", slog.Duration("retry_in", delay), slog.Any("error", err))
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// retryOpen is retrySetup for a step that opens something on JetStream
// (a KV bucket) and answers it with the function that closes it; only an
// unavailable cluster is retried.
func retryOpen[T any](ctx context.Context, what string, log *slog.Logger, open func(context.Context) (T, func(), error)) (T, func(), error) {
	var (
		v       T
		closeFn func()
	)
	err := retrySetup(ctx, what, log, jetStreamUnavailable, func(ctx context.Context) (err error) {
		v, closeFn, err = open(ctx)
		return err
	})
	return v, closeFn, err
}

// anyError retries every error.
func anyError(error) bool { return true }

// jetStreamUnavailable reports whether err is JetStream's answer while a
// replicated asset has no leader (503, "JetStream system temporarily
// unavailable"), or no answer at all.
func jetStreamUnavailable(err error) bool {
	var api *jetstream.APIError
	if errors.As(err, &api) && api.Code == http.StatusServiceUnavailable {
		return true
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabled)
}

// storeUnreachable reports whether err says the idempotency store could not
// be reached (no connection, no answer, a primary failing over) rather than
// that it refused the worker: a wrong password, a missing permission or a
// TLS certificate that does not verify is a configuration mistake, which
// retrying does not mend.
func storeUnreachable(err error) bool {
	var cert *tls.CertificateVerificationError
	var record tls.RecordHeaderError
	if redis.IsAuthError(err) || redis.IsPermissionError(err) || errors.As(err, &cert) || errors.As(err, &record) {
		return false
	}
	return errors.Is(err, idempotency.ErrUnavailable) || jetStreamUnavailable(err)
}

// checkDurability refuses a store that keeps nothing across a restart,
// unless the operator opted in: the outcomes stay true (a job whose record
// is gone asks WeChat Pay), but every restart then costs WeChat Pay calls
// and opens a window in which two workers can race on one order.
func checkDurability(ctx context.Context, store idempotency.Store, allowVolatile bool, log *slog.Logger) error {
	ds, ok := store.(interface {
		Durability(context.Context) (idempotency.Durability, error)
	})
	if !ok {
		return nil
	}
	d, err := ds.Durability(ctx)
	switch {
	case err != nil:
		return fmt.Errorf("idempotency store: %w", err)
	case !d.Verified:
		log.Warn("cannot tell whether the idempotency store keeps its records across a restart; it must (Redis: appendonly yes or RDB snapshots; KV: file storage)",
			slog.String("detail", d.Detail))
	case d.Persistent:
		log.Info("idempotency store keeps its records across restarts", slog.String("detail", d.Detail))
	case !allowVolatile:
		return fmt.Errorf("idempotency store keeps nothing across a restart (%s): every restart forgets every order's outcome, so duplicates cost WeChat Pay calls and workers can race on an order; "+
			"enable persistence (Redis: appendonly yes; KV: STREAM_STORAGE=file), or set IDEMPOTENCY_ALLOW_VOLATILE=true to run anyway", d.Detail)
	default:
		log.Warn("RISK: the idempotency store keeps nothing across a restart (IDEMPOTENCY_ALLOW_VOLATILE=true): after a restart every duplicate asks WeChat Pay, and two workers can race on one order",
			slog.String("detail", d.Detail))
	}
	return nil
}

type adminServer struct {
	srv  *http.Server
	addr string
}

// startAdmin serves /healthz, /readyz and /metrics on addr. ready answers
// the readiness body ("ready", or "paused" while an operator paused
// consumption: the worker is healthy and must not page anyone), or why the
// worker is not ready (503).
func startAdmin(addr string, withPprof bool, reg *prometheus.Registry, ready func(context.Context) (string, error), log *slog.Logger) (*adminServer, error) {
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
		status, err := ready(ctx)
		if err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, status+"\n")
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
