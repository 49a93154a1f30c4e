package pipeline_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/wxcombine/orderworker/concurrency"
	"github.com/wxcombine/orderworker/pipeline"
	"github.com/wxcombine/orderworker/wechat"
)

// gate is a CallLimiter whose Wait blocks until the test opens it once.
type gate struct {
	waiting chan string   // a Wait started, for the merchant
	open    chan struct{} // one value lets one Wait through
	mu      sync.Mutex
	limited []string
}

func (g *gate) Wait(ctx context.Context, mchID string) error {
	g.waiting <- mchID
	select {
	case <-g.open:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *gate) Limited(mchID string) {
	g.mu.Lock()
	g.limited = append(g.limited, mchID)
	g.mu.Unlock()
}

func TestProcessorWaitsForTheRateBudgetWithoutItsSlot(t *testing.T) {
	b := setup(t, wechat.FlavourMerchant,
		payResult{err: &wechat.APIError{StatusCode: 429, Code: "FREQUENCY_LIMITED", Message: "slow down"}},
		payResult{res: &wechat.PrepayResult{PrepayID: "wx-prepay-1"}})
	g := &gate{waiting: make(chan string), open: make(chan struct{})}
	p, err := pipeline.New(pipeline.Config{
		Payer: b.payer, Signer: fakeSigner{key: testKey}, Store: b.store, Publisher: b.pub, Flavour: wechat.FlavourMerchant,
		Retry:   pipeline.RetryPolicy{InitialInterval: time.Millisecond, MaxInterval: 2 * time.Millisecond, RandomizationFactor: -1},
		Limiter: g,
	})
	if err != nil {
		t.Fatal(err)
	}
	lim, err := concurrency.New(concurrency.Config{Max: 4, Min: 1, Initial: 4, MinWindow: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := lim.Acquire(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, slot := lim.Start(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Process(ctx, delivery(t, newJob(wechat.TradeTypeApp, "order-1"))) }()
	for call := range 2 { // the first call and its retry after FREQUENCY_LIMITED
		if mch := <-g.waiting; mch != testMchID {
			t.Fatalf("waited for merchant %q, want %s", mch, testMchID)
		}
		if n := lim.InFlight(); n != 0 {
			t.Errorf("call %d: %d slots taken while the job waits for its budget, want 0", call+1, n)
		}
		g.open <- struct{}{}
	}
	if err := <-done; err != nil {
		t.Fatalf("Process = %v", err)
	}
	if b.payer.calls != 2 {
		t.Errorf("%d calls, want 2", b.payer.calls)
	}
	if len(g.limited) != 1 || g.limited[0] != testMchID {
		t.Errorf("Limited calls %v, want one for %s", g.limited, testMchID)
	}
	slot.Done()
	if got := lim.Limit(); got != 2 {
		t.Errorf("limit %d after a FREQUENCY_LIMITED job, want 4 × 0.5 = 2", got)
	}
}

func TestProcessorHandsBackAJobWhoseBudgetDoesNotCome(t *testing.T) {
	b := setup(t, wechat.FlavourMerchant)
	g := &gate{waiting: make(chan string, 1), open: make(chan struct{})}
	p, err := pipeline.New(pipeline.Config{
		Payer: b.payer, Signer: fakeSigner{key: testKey}, Store: b.store, Publisher: b.pub, Flavour: wechat.FlavourMerchant,
		Limiter: g, Redelivery: []time.Duration{7 * time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	err = p.Process(ctx, delivery(t, newJob(wechat.TradeTypeApp, "order-2")))
	var retry *pipeline.RetryError
	if !errors.As(err, &retry) || retry.After != 7*time.Second {
		t.Fatalf("Process = %v, want a retry after the redelivery delay", err)
	}
	if b.payer.calls != 0 {
		t.Errorf("%d calls without budget, want 0", b.payer.calls)
	}
	if !b.store.released {
		t.Error("the claim was not released")
	}
}
