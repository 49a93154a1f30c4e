package notifier

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ReadyTimeoutDefault bounds one readiness check.
const ReadyTimeoutDefault = 2 * time.Second

// AdminConfig configures AdminHandler.
type AdminConfig struct {
	// Gatherer is served on /metrics. Defaults to nil: /metrics answers 404.
	Gatherer prometheus.Gatherer
	// Ready reports whether the notifier can store events; /readyz answers
	// 503 with its error otherwise. Defaults to nil: always ready.
	Ready func(ctx context.Context) error
	// ReadyTimeout bounds one Ready call. Defaults to ReadyTimeoutDefault.
	ReadyTimeout time.Duration
}

// AdminHandler serves the admin port: /healthz (200 while the process runs),
// /readyz (200 when cfg.Ready succeeds, else 503) and /metrics.
func AdminHandler(cfg AdminConfig) http.Handler {
	timeout := cmp.Or(cfg.ReadyTimeout, ReadyTimeoutDefault)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if cfg.Ready != nil {
			ctx, cancel := context.WithTimeout(r.Context(), timeout)
			defer cancel()
			if err := cfg.Ready(ctx); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = fmt.Fprintf(w, "not ready: %v\n", err)
				return
			}
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	if cfg.Gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{EnableOpenMetrics: true})) // exemplars
	}
	return mux
}

// StreamReady answers a readiness check: nc is connected and the stream
// answers an info request, so a publish can be stored.
func StreamReady(nc *nats.Conn, js jetstream.JetStream, stream string) func(context.Context) error {
	return func(ctx context.Context) error {
		if s := nc.Status(); s != nats.CONNECTED {
			return fmt.Errorf("nats: %s", s)
		}
		if js == nil {
			return errors.New("no JetStream context")
		}
		if _, err := js.Stream(ctx, stream); err != nil {
			return fmt.Errorf("stream %s: %w", stream, err)
		}
		return nil
	}
}
