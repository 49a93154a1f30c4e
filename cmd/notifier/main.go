// Command notifier receives WeChat Pay's payment notifications for combine
// orders on POST /v3/notify/{mchid}, verifies and decrypts them, and
// publishes events.PaymentSucceeded to JetStream, answering WeChat Pay only
// once JetStream stored the event. See package notifier for the behavior
// and Config for the environment.
//
// Set each order's notify_url to https://<public host>/v3/notify/<combine_mchid>.
// The admin port serves /healthz, /readyz (NATS connected and the events
// stream reachable; the notifier creates it if no worker has yet) and
// /metrics. Payments already published are remembered in a record shared
// with the workers (seen.go). SIGINT or SIGTERM stop it gracefully:
// requests in flight finish (their publications included) within
// SHUTDOWN_GRACE.
//
// Tracing (OpenTelemetry) is configured only by the standard OTEL_*
// variables and is off unless OTEL_TRACES_EXPORTER or an OTLP endpoint is
// set; see internal/tracing and docs/operations.md#tracing.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	envconfig "github.com/wxcombine/orderworker/internal/config"
	"github.com/wxcombine/orderworker/internal/tracing"
	"github.com/wxcombine/orderworker/metrics"
	"github.com/wxcombine/orderworker/notifier"
)

// version and commit are set by the linker (-X main.version=…).
var (
	version = "dev"
	commit  = "unknown"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Getenv, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "notifier:", err)
		os.Exit(1)
	}
}

// run serves until ctx is done, then stops gracefully. Logs go to stdout as
// JSON.
func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	sc, err := loadSeenConfig(getenv)
	if err != nil {
		return err
	}
	logger := slog.New(tracing.LogHandler(envconfig.NewLogger(stdout, cfg.LogLevel).Handler()))
	stopTracing, err := tracing.Setup(ctx, "orderworker-notifier")
	if err != nil {
		return fmt.Errorf("tracing (OTEL_* environment): %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := stopTracing(sctx); err != nil {
			logger.Warn("tracing shutdown", slog.Any("error", err))
		}
	}()
	merchants, err := loadMerchants(cfg)
	if err != nil {
		return err
	}

	// The first connection is retried like every reconnection: the
	// notifier starts while NATS is down and stays unready until it answers.
	nc, err := cfg.NATS.Connect("orderworker-notifier "+version, logger)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := metrics.NewNotifier(reg)
	m.SetBuildInfo(version, commit)

	seen, closeSeen, err := openSeen(sc, js)
	if err != nil {
		return err
	}
	defer closeSeen()
	hc := cfg.handlerConfig()
	hc.Merchants, hc.Publisher, hc.Metrics, hc.Logger = merchants, js, m, logger
	hc.Seen, hc.SeenTTL, hc.Anomalies = seen, sc.TTL, metrics.NewPaymentAnomalies(reg)
	h, err := notifier.New(hc)
	if err != nil {
		return err
	}

	errLog := slog.NewLogLogger(logger.Handler(), slog.LevelWarn)
	public := notifier.NewServer(cfg.HTTPAddr, h, errLog)
	admin := &http.Server{
		Addr: cfg.AdminAddr, ErrorLog: errLog, ReadHeaderTimeout: notifier.ReadHeaderTimeout, IdleTimeout: notifier.IdleTimeout,
		Handler: notifier.AdminHandler(notifier.AdminConfig{
			Gatherer: reg,
			Ready:    notifier.EnsureStream(nc, js, sc.eventsStream(cfg.SubjectPrefix, cfg.EventsStream)),
		}),
	}
	publicL, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("HTTP_ADDR: %w", err)
	}
	adminL, err := net.Listen("tcp", cfg.AdminAddr)
	if err != nil {
		publicL.Close()
		return fmt.Errorf("ADMIN_ADDR: %w", err)
	}

	serveErr := make(chan error, 2)
	serve := func(name string, srv *http.Server, l net.Listener, tlsFiles ...string) {
		var err error
		if len(tlsFiles) == 2 && tlsFiles[0] != "" {
			err = srv.ServeTLS(l, tlsFiles[0], tlsFiles[1])
		} else {
			err = srv.Serve(l)
		}
		if !errors.Is(err, http.ErrServerClosed) {
			serveErr <- fmt.Errorf("%s server: %w", name, err)
			return
		}
		serveErr <- nil
	}
	// Both goroutines are owned by run and end when their server is shut
	// down below; run waits for both.
	go serve("notification", public, publicL, cfg.TLSCertFile, cfg.TLSKeyFile)
	go serve("admin", admin, adminL)
	logger.Info("notifier started",
		slog.String("version", version), slog.String("http_addr", publicL.Addr().String()),
		slog.String("admin_addr", adminL.Addr().String()), slog.Bool("tls", cfg.TLSCertFile != ""),
		slog.Int("merchants", len(merchants)), slog.String("events_stream", cfg.EventsStream))

	var runErr error
	pending := 2
	select {
	case <-ctx.Done():
	case runErr = <-serveErr:
		pending--
	}
	logger.Info("notifier stopping", slog.Duration("timeout", cfg.ShutdownGrace))
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer cancel()
	// Notifications in flight finish (their publications included) before
	// the connection to NATS goes.
	if err := public.Shutdown(sctx); err != nil {
		runErr = errors.Join(runErr, fmt.Errorf("notification server shutdown: %w", err))
	}
	if err := admin.Shutdown(sctx); err != nil {
		runErr = errors.Join(runErr, fmt.Errorf("admin server shutdown: %w", err))
	}
	for ; pending > 0; pending-- {
		if err := <-serveErr; err != nil {
			runErr = errors.Join(runErr, err)
		}
	}
	if err := nc.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		logger.Warn("nats drain", slog.Any("error", err))
	}
	logger.Info("notifier stopped")
	return runErr
}
