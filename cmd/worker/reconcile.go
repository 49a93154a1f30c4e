package main

// Reconciliation, close jobs, the payments-seen record and NOTIFY_URL_BASE
// (see package pipeline, reconcile.go and notifyurl.go).
//
//	RECONCILE_ENABLED       true: every worker queries orders with a prepay on RECONCILE_SCHEDULE and closes
//	                        unpaid ones past their time; false turns it off on this worker (set it on all)
//	RECONCILE_SCHEDULE      when an order is queried after its prepay was created (default 1m,5m,15m,1h)
//	UNPAID_CLOSE_AFTER      when an unpaid order without time_expire is closed (default 2h)
//	PAYMENTS_SEEN_BACKEND   redis, kv or none; default: IDEMPOTENCY_BACKEND. Must be the notifier's.
//	PAYMENTS_SEEN_TTL       how long a payment is remembered (default 72h, at least 25h)
//	PAYMENTS_SEEN_KV_BUCKET the KV bucket of the kv backend (default orderworker_seen)
//	NOTIFY_URL_BASE         the notifier's public base URL: fills and checks notify_url
//
// A configuration that would let a replayed notification publish a second
// payment is refused: PAYMENTS_SEEN_BACKEND=none with a DUPLICATE_WINDOW
// shorter than 25h, or a PAYMENTS_SEEN_TTL shorter than 25h.

import (
	"context"
	"fmt"
	"time"

	envconfig "github.com/wxcombine/orderworker/internal/config"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/idempotency"
	"github.com/wxcombine/orderworker/pipeline"
)

// reconcileSettings are the settings of this file, appended to settings.
var reconcileSettings = []setting{
	{"RECONCILE_ENABLED", "true", "query orders with a prepay on RECONCILE_SCHEDULE and close unpaid ones past their time (false: off)"},
	{"RECONCILE_SCHEDULE", "1m,5m,15m,1h", "when an order is queried after its prepay was created, comma-separated"},
	{"UNPAID_CLOSE_AFTER", "2h", "when an unpaid order without time_expire is closed, after its prepay was created"},
	{"PAYMENTS_SEEN_BACKEND", "", "record of payments published, shared with the notifier: redis, kv or none (default: IDEMPOTENCY_BACKEND)"},
	{"PAYMENTS_SEEN_TTL", "72h", "how long a published payment is remembered; at least 25h (WeChat Pay re-sends for 24h)"},
	{"PAYMENTS_SEEN_KV_BUCKET", idempotency.SeenKVBucketDefault, "KV bucket of the payments-seen record (kv backend)"},
	{"NOTIFY_URL_BASE", "", "the notifier's public base URL: jobs without notify_url get <base>/v3/notify/<combine_mchid>, others are refused"},
}

func init() { settings = append(settings, reconcileSettings...) }

// reconcileConfig is the configuration of this file.
type reconcileConfig struct {
	Enabled          bool
	Schedule         []time.Duration
	UnpaidCloseAfter time.Duration
	SeenBackend      string
	SeenTTL          time.Duration
	SeenKVBucket     string
	NotifyURLBase    string
}

// loadReconcile reads the settings of this file; backend is
// IDEMPOTENCY_BACKEND.
func loadReconcile(l *envconfig.Loader, backend string, duplicateWindow time.Duration) reconcileConfig {
	c := reconcileConfig{
		Enabled:          l.Boolean("RECONCILE_ENABLED"),
		Schedule:         l.Durations("RECONCILE_SCHEDULE"),
		UnpaidCloseAfter: l.Duration("UNPAID_CLOSE_AFTER"),
		SeenBackend:      l.Str("PAYMENTS_SEEN_BACKEND"),
		SeenTTL:          l.Duration("PAYMENTS_SEEN_TTL"),
		SeenKVBucket:     l.Str("PAYMENTS_SEEN_KV_BUCKET"),
		NotifyURLBase:    l.Str("NOTIFY_URL_BASE"),
	}
	if c.SeenBackend == "" {
		c.SeenBackend = backend
	}
	switch c.SeenBackend {
	case "redis", "kv", "none":
	default:
		l.Fail("PAYMENTS_SEEN_BACKEND", "%q is not redis, kv or none", c.SeenBackend)
	}
	if c.SeenBackend == "redis" && backend != "redis" {
		l.Fail("PAYMENTS_SEEN_BACKEND", "redis needs IDEMPOTENCY_BACKEND=redis (its REDIS_* settings)")
	}
	if err := pipeline.CheckSchedule(c.Schedule); err != nil && len(c.Schedule) > 0 {
		l.Fail("RECONCILE_SCHEDULE", "%v", err)
	}
	if err := idempotency.CheckReplayProtection(c.SeenBackend != "none", c.SeenTTL, duplicateWindow); err != nil {
		l.Fail("PAYMENTS_SEEN_BACKEND", "%v (PAYMENTS_SEEN_TTL, DUPLICATE_WINDOW)", err)
	}
	if err := pipeline.CheckNotifyURLBase(c.NotifyURLBase); err != nil {
		l.Fail("NOTIFY_URL_BASE", "%q is not an absolute https URL without query, fragment or user", c.NotifyURLBase)
	}
	return c
}

// openSeen opens the payments-seen record (nil with "none") and answers
// the function that closes its connection.
func openSeen(ctx context.Context, cfg config, js jetstream.JetStream) (idempotency.Seen, func(), error) {
	switch cfg.Reconcile.SeenBackend {
	case "redis":
		return idempotency.OpenRedisSeen(cfg.Redis, cfg.RedisPrefix)
	case "kv":
		s, err := idempotency.NewKVSeen(ctx, js, idempotency.SeenKVConfig{Bucket: cfg.Reconcile.SeenKVBucket, TTL: cfg.Reconcile.SeenTTL,
			Replicas: cfg.Replicas, Storage: cfg.Storage})
		return s, func() {}, err
	}
	return nil, func() {}, nil
}

// newReconciler builds the reconciler of the worker.
func newReconciler(cfg config, js jetstream.JetStream, payer pipeline.Payer, seen idempotency.Seen, deps pipeline.ReconcileConfig) (*pipeline.Reconciler, error) {
	deps.JetStream, deps.Payer, deps.Publisher, deps.Seen = js, payer, pipeline.JetStreamPublisher{JetStream: js}, seen
	deps.SeenTTL, deps.Subjects, deps.Consumer = cfg.Reconcile.SeenTTL, cfg.Subjects, cfg.Consumer
	deps.Schedule, deps.UnpaidCloseAfter, deps.Disabled = cfg.Reconcile.Schedule, cfg.Reconcile.UnpaidCloseAfter, !cfg.Reconcile.Enabled
	deps.CallTimeout, deps.Replicas, deps.Storage, deps.DuplicateWindow = cfg.WeChatCallTimeout, cfg.Replicas, cfg.Storage, cfg.DuplicateWindow
	r, err := pipeline.NewReconciler(deps)
	if err != nil {
		return nil, fmt.Errorf("reconciler: %w", err)
	}
	return r, nil
}
