package pipeline

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/wxcombine/orderworker/concurrency"
	"github.com/wxcombine/orderworker/wechat"
)

// CallLimiter paces WeChat Pay creates per merchant: a rate limit shared by
// every worker (package ratelimit). The Processor consults it before each
// create call, the retries included.
type CallLimiter interface {
	// Wait blocks until a create for merchant mchID may be sent, or answers
	// an error when ctx ends first.
	Wait(ctx context.Context, mchID string) error
	// Limited reports that WeChat Pay answered a create for mchID with
	// FREQUENCY_LIMITED (or another 429).
	Limited(mchID string)
}

// defaultLimiter gives the Runner its default Limiter and checks a given
// one against InFlight.
func (c *RunnerConfig) defaultLimiter() error {
	if c.Limiter != nil {
		if c.Limiter.Max() > c.InFlight {
			return fmt.Errorf("limiter ceiling %d must not exceed InFlight %d", c.Limiter.Max(), c.InFlight)
		}
		return nil
	}
	if c.InFlight < 1 {
		return nil // reported by NewRunner
	}
	l, err := concurrency.New(concurrency.Config{Max: c.InFlight})
	c.Limiter = l
	return err
}

// waitCall waits for the merchant's rate budget before a create call. The
// wait does not hold the job's concurrency slot (it is parked, so another
// job may call meanwhile), and it ends early enough to leave the call its
// CallTimeout before ctx's deadline. A wait cut short answers an error that
// wraps the context's; the job is then handed back.
func (p *Processor) waitCall(ctx context.Context, mchID string) error {
	if p.cfg.Limiter == nil {
		return nil
	}
	wctx := ctx
	if d, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		wctx, cancel = context.WithDeadline(ctx, d.Add(-p.cfg.CallTimeout))
		defer cancel()
	}
	slot := concurrency.FromContext(ctx)
	slot.Park()
	start := p.cfg.NowFunc()
	err := p.cfg.Limiter.Wait(wctx, mchID)
	slot.Unpark()
	if err != nil {
		return fmt.Errorf("merchant %s: no rate budget after %s: %w", mchID, p.cfg.NowFunc().Sub(start).Round(time.Millisecond), err)
	}
	return nil
}

// observeCall tells the job's concurrency slot and the CallLimiter how a
// create call ended.
func (p *Processor) observeCall(ctx context.Context, mchID string, err error) {
	slot := concurrency.FromContext(ctx)
	switch {
	case err == nil:
		slot.Observe(concurrency.OK)
	case frequencyLimited(err):
		slot.Observe(concurrency.Overloaded)
		if p.cfg.Limiter != nil {
			p.cfg.Limiter.Limited(mchID)
		}
	default:
		slot.Observe(concurrency.Failed)
	}
}

// frequencyLimited reports whether err is WeChat Pay's FREQUENCY_LIMITED
// or any 429.
func frequencyLimited(err error) bool {
	var apiErr *wechat.APIError
	return errors.Is(err, wechat.ErrFrequencyLimited) || (errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusTooManyRequests)
}
