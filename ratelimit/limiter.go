// Package ratelimit keeps each merchant's WeChat Pay request rate within
// the limit WeChat Pay sets for it, across every worker: one GCRA (generic
// cell rate algorithm) state per merchant in a store all workers share.
//
// # Stores
//
//   - [Redis]: github.com/go-redis/redis_rate/v10, a GCRA in one Lua script
//     run on the Redis server, timed by the server's clock (TIME), so the
//     workers' clocks do not matter.
//   - [KV]: the same GCRA on a JetStream KV bucket, for the KV backend, with
//     no Redis: the merchant's theoretical arrival time (TAT) is one key,
//     read, advanced and written back with compare-and-set on its revision
//     (a lost race reads again). It is timed by the worker's clock, so
//     workers must run NTP: a worker whose clock is d ahead of the others
//     may, at a rate r, send up to r·d requests more than its share at once.
//
// # Rates and bursts
//
// Rates (WECHAT_MERCHANT_QPS) give each merchant's requests per second, and
// a default for the others (none: no limit). The GCRA allows a burst of
// ⌈rate/4⌉ requests (a quarter of a second's worth, at least 1), then one
// every 1/rate: in every window of t seconds at most burst + rate·t
// requests start. The burst keeps the full rate when the worker asking is
// late (a busy CPU) by up to a quarter second; WeChat Pay's own limit is per
// second, so requests that reach it up to 0.75 s late or early relative to
// one another still fit.
//
// # Waiting
//
// Limiter.Wait blocks a create until the merchant's budget allows it. In
// each worker, one waiter per merchant asks the store at a time (the others
// queue behind it in order, in the worker), and sleeps the retry-after the
// store answers when refused; so a worker asks the store about once per
// request it is allowed plus once per refusal, not once per waiting job per
// retry-after.
//
// # FREQUENCY_LIMITED
//
// Limiter.Limited (a FREQUENCY_LIMITED answer for a merchant) lowers that
// merchant's effective rate in this worker to Backoff (0.5) times what it
// was, at most once per Hold (1s), down to MinFactor (0.1) of the configured
// rate; the rate then climbs back linearly to the configured one over
// Recovery (20s). The lowered rate is what the worker asks the shared GCRA
// for: its own requests advance the merchant's TAT by 1/lowered-rate, so
// the whole fleet's budget for the merchant shrinks while it recovers. The
// other workers lower their own rate when they get a FREQUENCY_LIMITED
// answer too.
package ratelimit

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Rates are the request rates per merchant, in requests per second.
type Rates struct {
	// Default applies to merchants not in PerMerchant; 0 is no limit.
	Default float64
	// PerMerchant maps a combine_mchid to its rate; 0 is no limit.
	PerMerchant map[string]float64
}

// Of answers mchID's rate; 0 is no limit.
func (r Rates) Of(mchID string) float64 {
	if v, ok := r.PerMerchant[mchID]; ok {
		return v
	}
	return r.Default
}

// Limited reports whether any merchant has a rate.
func (r Rates) Limited() bool {
	if r.Default > 0 {
		return true
	}
	for _, v := range r.PerMerchant {
		if v > 0 {
			return true
		}
	}
	return false
}

// ParseRates reads "<mchid>=<requests/s>,…" with "*=<requests/s>" for the
// default, as in "1900000109=100,1900000110=20.5,*=50". Rates are positive
// numbers; "" is no limit for anyone.
func ParseRates(s string) (Rates, error) {
	r := Rates{PerMerchant: map[string]float64{}}
	seen := map[string]bool{}
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		k, v, ok := strings.Cut(item, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || k == "" {
			return Rates{}, fmt.Errorf("ratelimit: %q is not <mchid>=<requests/s>", item)
		}
		q, err := strconv.ParseFloat(v, 64)
		if err != nil || q <= 0 || math.IsInf(q, 0) || math.IsNaN(q) {
			return Rates{}, fmt.Errorf("ratelimit: %q: %q is not a positive number of requests per second", item, v)
		}
		if seen[k] {
			return Rates{}, fmt.Errorf("ratelimit: %s is given twice", k)
		}
		seen[k] = true
		if k == "*" {
			r.Default = q
		} else {
			r.PerMerchant[k] = q
		}
	}
	return r, nil
}

// Store is the shared GCRA state of every merchant.
type Store interface {
	// Allow takes one request from key's budget at rate requests/s with
	// burst, or answers false and how long until one would be allowed.
	Allow(ctx context.Context, key string, rate float64, burst int) (ok bool, retryAfter time.Duration, err error)
}

// Defaults of Config.
const (
	BackoffDefault   = 0.5
	MinFactorDefault = 0.1
	HoldDefault      = time.Second
	RecoveryDefault  = 20 * time.Second
)

// Config configures a Limiter.
type Config struct {
	// Store holds the shared state. Required.
	Store Store
	// Rates are the merchants' rates.
	Rates Rates
	// Backoff multiplies the effective rate on FREQUENCY_LIMITED. Defaults
	// to 0.5.
	Backoff float64
	// MinFactor is the lowest effective rate, as a fraction of the
	// configured one. Defaults to 0.1.
	MinFactor float64
	// Hold is the shortest time between two cuts. Defaults to 1s.
	Hold time.Duration
	// Recovery is how long the effective rate takes to climb from 0 back
	// to the configured rate. Defaults to 20s.
	Recovery time.Duration
	// Now answers the current time. Defaults to time.Now.
	Now func() time.Time
}

// Limiter paces each merchant's requests; it satisfies pipeline.CallLimiter.
// It is safe for concurrent use.
type Limiter struct {
	cfg Config

	mu        sync.Mutex
	merchants map[string]*merchant
}

type merchant struct {
	turn chan struct{} // held by the waiter that asks the store

	// The effective rate is rate × factor(now): cut at cutAt to cutFactor,
	// then climbing back by 1/Recovery per second.
	cutAt     time.Time
	cutFactor float64
}

// New checks cfg, applies its defaults and answers a Limiter.
func New(cfg Config) (*Limiter, error) {
	cfg.Backoff = cmp.Or(cfg.Backoff, BackoffDefault)
	cfg.MinFactor = cmp.Or(cfg.MinFactor, MinFactorDefault)
	cfg.Hold = cmp.Or(cfg.Hold, HoldDefault)
	cfg.Recovery = cmp.Or(cfg.Recovery, RecoveryDefault)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	var errs []error
	if cfg.Store == nil {
		errs = append(errs, errors.New("missing Store"))
	}
	if cfg.Backoff <= 0 || cfg.Backoff >= 1 || cfg.MinFactor <= 0 || cfg.MinFactor > 1 {
		errs = append(errs, errors.New("the factors Backoff must be in (0, 1) and MinFactor in (0, 1]"))
	}
	if cfg.Hold < 0 || cfg.Recovery <= 0 {
		errs = append(errs, errors.New("the durations Hold and Recovery must be positive"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("ratelimit: %w", err)
	}
	return &Limiter{cfg: cfg, merchants: map[string]*merchant{}}, nil
}

func (l *Limiter) merchant(mchID string) *merchant {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.merchants[mchID]
	if m == nil {
		m = &merchant{turn: make(chan struct{}, 1), cutFactor: 1}
		l.merchants[mchID] = m
	}
	return m
}

// factor answers m's effective fraction of its rate at now; l.mu is held.
func (l *Limiter) factor(m *merchant, now time.Time) float64 {
	if m.cutFactor >= 1 {
		return 1
	}
	return min(1, m.cutFactor+now.Sub(m.cutAt).Seconds()/l.cfg.Recovery.Seconds())
}

// Rate answers mchID's effective rate now, in requests per second; 0 is no
// limit.
func (l *Limiter) Rate(mchID string) float64 {
	r := l.cfg.Rates.Of(mchID)
	if r <= 0 {
		return 0
	}
	m := l.merchant(mchID)
	l.mu.Lock()
	defer l.mu.Unlock()
	return r * l.factor(m, l.cfg.Now())
}

// Burst answers the burst of a rate: a quarter of a second's worth, at
// least 1.
func Burst(rate float64) int { return max(1, int(math.Ceil(rate/4))) }

// Wait blocks until a request of mchID may be sent, or answers ctx's error,
// or the store's.
func (l *Limiter) Wait(ctx context.Context, mchID string) error {
	if l.cfg.Rates.Of(mchID) <= 0 {
		return nil
	}
	m := l.merchant(mchID)
	select {
	case m.turn <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-m.turn }()
	for {
		rate := l.Rate(mchID)
		ok, retry, err := l.cfg.Store.Allow(ctx, mchID, rate, Burst(rate))
		if err != nil {
			return fmt.Errorf("ratelimit: %w", err)
		}
		if ok {
			return nil
		}
		t := time.NewTimer(max(retry, time.Millisecond))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}

// Limited lowers mchID's effective rate after a FREQUENCY_LIMITED answer;
// see the package doc.
func (l *Limiter) Limited(mchID string) {
	if l.cfg.Rates.Of(mchID) <= 0 {
		return
	}
	m := l.merchant(mchID)
	now := l.cfg.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if m.cutFactor < 1 && now.Sub(m.cutAt) < l.cfg.Hold {
		return
	}
	m.cutFactor = max(l.factor(m, now)*l.cfg.Backoff, l.cfg.MinFactor)
	m.cutAt = now
}
