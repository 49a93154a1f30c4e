package main

import (
	"context"
	"fmt"

	envconfig "github.com/wxcombine/orderworker/internal/config"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wxcombine/orderworker/concurrency"
	"github.com/wxcombine/orderworker/idempotency"
	"github.com/wxcombine/orderworker/metrics"
	"github.com/wxcombine/orderworker/pipeline"
	"github.com/wxcombine/orderworker/ratelimit"
)

// limits are the settings of the adaptive concurrency limit (package
// concurrency) and of the merchants' shared rate limits (package
// ratelimit); WORKER_IN_FLIGHT, the ceiling, is config.InFlight.
type limits struct {
	// InFlightMin is the floor of the adaptive limit.
	InFlightMin int
	// Rates are WECHAT_MERCHANT_QPS.
	Rates ratelimit.Rates
	// KVBucket holds the rate limits with the kv backend.
	KVBucket string
}

func loadLimits(l *envconfig.Loader, inFlight int) limits {
	c := limits{InFlightMin: l.Integer("WORKER_IN_FLIGHT_MIN", 1, 10_000), KVBucket: l.Str("RATELIMIT_KV_BUCKET")}
	if c.InFlightMin > inFlight && inFlight > 0 {
		l.Fail("WORKER_IN_FLIGHT_MIN", "%d is above WORKER_IN_FLIGHT %d", c.InFlightMin, inFlight)
	}
	r, err := ratelimit.ParseRates(l.Str("WECHAT_MERCHANT_QPS"))
	if err != nil {
		l.Fail("WECHAT_MERCHANT_QPS", "%v", err)
	}
	c.Rates = r
	return c
}

// openedLimits are the worker's limiters; calls is nil without rates.
type openedLimits struct {
	concurrency *concurrency.Limiter
	calls       pipeline.CallLimiter
	close       func()
}

// openLimits builds the concurrency limiter, with a gauge of its limit on
// reg, and the rate limiter on the idempotency backend's server: its own
// Redis client, or a KV bucket.
func openLimits(ctx context.Context, cfg config, js jetstream.JetStream, reg prometheus.Registerer) (openedLimits, error) {
	gauge := metrics.NewConcurrencyLimit(reg)
	lim, err := concurrency.New(concurrency.Config{Max: cfg.InFlight, Min: cfg.Limits.InFlightMin, OnChange: func(n int) { gauge.Set(float64(n)) }})
	if err != nil {
		return openedLimits{}, err
	}
	gauge.Set(float64(lim.Limit()))
	o := openedLimits{concurrency: lim, close: func() {}}
	if !cfg.Limits.Rates.Limited() {
		return o, nil
	}
	var store ratelimit.Store
	if cfg.Backend == "kv" {
		kv, err := ratelimit.NewKV(ctx, js, ratelimit.KVConfig{Bucket: cfg.Limits.KVBucket, Replicas: cfg.Replicas, Storage: cfg.Storage})
		if err != nil {
			return openedLimits{}, err
		}
		store = kv
	} else {
		rc, err := idempotency.NewRedisClient(cfg.Redis)
		if err != nil {
			return openedLimits{}, fmt.Errorf("rate limits: %w", err)
		}
		o.close = func() { _ = rc.Close() }
		store = ratelimit.NewRedis(rc, "")
	}
	rl, err := ratelimit.New(ratelimit.Config{Store: store, Rates: cfg.Limits.Rates})
	if err != nil {
		o.close()
		return openedLimits{}, err
	}
	o.calls = rl
	return o, nil
}
