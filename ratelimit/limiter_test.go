package ratelimit_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/wxcombine/orderworker/internal/testenv"
	"github.com/wxcombine/orderworker/ratelimit"
)

func TestParseRates(t *testing.T) {
	r, err := ratelimit.ParseRates(" 1900000109=100, 1900000110=20.5 ,*=50,")
	if err != nil {
		t.Fatal(err)
	}
	for mch, want := range map[string]float64{"1900000109": 100, "1900000110": 20.5, "1900000111": 50} {
		if got := r.Of(mch); got != want {
			t.Errorf("rate of %s = %v, want %v", mch, got, want)
		}
	}
	if !r.Limited() {
		t.Error("Limited() = false with rates")
	}
	none, err := ratelimit.ParseRates("")
	if err != nil || none.Limited() || none.Of("1900000109") != 0 {
		t.Errorf(`ParseRates("") = %+v, %v; want no limit`, none, err)
	}
	for _, bad := range []string{"1900000109", "=5", "1900000109=0", "1900000109=-1", "1900000109=fast", "1900000109=NaN", "1900000109=Inf", "1=1,1=2", "*=1,*=2"} {
		if _, err := ratelimit.ParseRates(bad); err == nil {
			t.Errorf("ParseRates(%q) accepted", bad)
		}
	}
}

func TestBurst(t *testing.T) {
	for rate, want := range map[float64]int{0.5: 1, 1: 1, 4: 1, 5: 2, 100: 25, 1000: 250} {
		if got := ratelimit.Burst(rate); got != want {
			t.Errorf("Burst(%v) = %d, want %d", rate, got, want)
		}
	}
}

// budgetTest has workers Limiters, each on its own store (as pods are),
// wait for n requests of one merchant at rate, 4 goroutines each, and
// checks that every request was allowed, and not sooner than the GCRA
// permits: n requests at rate with burst need at least (n − burst)/rate.
// A slow machine only makes the run longer.
func budgetTest(t *testing.T, stores []ratelimit.Store, rate float64, n int) {
	t.Helper()
	const mch = "1900000109"
	rates := ratelimit.Rates{PerMerchant: map[string]float64{mch: rate}}
	var lims []*ratelimit.Limiter
	for _, s := range stores {
		l, err := ratelimit.New(ratelimit.Config{Store: s, Rates: rates})
		if err != nil {
			t.Fatal(err)
		}
		lims = append(lims, l)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var mu sync.Mutex
	allowed := make([]int, len(lims))
	next := 0
	var wg sync.WaitGroup
	start := time.Now()
	for i, l := range lims {
		for range 4 {
			wg.Go(func() {
				for {
					mu.Lock()
					if next == n {
						mu.Unlock()
						return
					}
					next++
					mu.Unlock()
					if err := l.Wait(ctx, mch); err != nil {
						t.Errorf("Wait: %v", err)
						return
					}
					mu.Lock()
					allowed[i]++
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	total := 0
	for _, a := range allowed {
		total += a
	}
	if total != n {
		t.Fatalf("%d requests allowed, want %d", total, n)
	}
	floor := time.Duration(float64(n-ratelimit.Burst(rate)-1) / rate * float64(time.Second))
	if elapsed < floor {
		t.Errorf("%d requests at %v/s allowed in %s, want at least %s: the budget is not shared", n, rate, elapsed, floor)
	}
	t.Logf("%d requests at %v/s over %d workers (%v each) in %s (at least %s)", n, rate, len(lims), allowed, elapsed, floor)
	// Every worker got a share: none starves behind another.
	for i, a := range allowed {
		if a == 0 {
			t.Errorf("worker %d got no request through", i)
		}
	}
}

func TestRedisBudgetIsSharedByWorkers(t *testing.T) {
	srv := testenv.StartRedis(t)
	var stores []ratelimit.Store
	for range 2 {
		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
		t.Cleanup(func() { _ = rdb.Close() })
		stores = append(stores, ratelimit.NewRedis(rdb, ""))
	}
	budgetTest(t, stores, 50, 60)
}

func testJetStream(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func TestKVBudgetIsSharedByWorkers(t *testing.T) {
	srv := testenv.StartNATS(t)
	var stores []ratelimit.Store
	for range 2 {
		s, err := ratelimit.NewKV(t.Context(), testJetStream(t, srv.URL), ratelimit.KVConfig{})
		if err != nil {
			t.Fatal(err)
		}
		stores = append(stores, s)
	}
	budgetTest(t, stores, 50, 60)
}

// storeRefuses checks that a store refuses a request beyond the burst with
// a retry-after within one interval, and allows other merchants meanwhile.
func storeRefuses(t *testing.T, s ratelimit.Store) {
	t.Helper()
	ctx := t.Context()
	// One request per 100 s: the second can never be allowed during the test.
	for i, want := range []bool{true, false} {
		ok, retry, err := s.Allow(ctx, "1900000109", 0.01, 1)
		if err != nil {
			t.Fatal(err)
		}
		if ok != want {
			t.Fatalf("request %d allowed = %v, want %v", i+1, ok, want)
		}
		if !ok && (retry <= 90*time.Second || retry > 100*time.Second) {
			t.Errorf("retry after %s, want just under 100s", retry)
		}
	}
	if ok, _, err := s.Allow(ctx, "1900000110", 0.01, 1); err != nil || !ok {
		t.Errorf("another merchant: allowed %v, %v; want its own budget", ok, err)
	}
}

func TestRedisRefusesBeyondTheBurst(t *testing.T) {
	srv := testenv.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	storeRefuses(t, ratelimit.NewRedis(rdb, ""))
}

func TestKVRefusesBeyondTheBurst(t *testing.T) {
	srv := testenv.StartNATS(t)
	s, err := ratelimit.NewKV(t.Context(), testJetStream(t, srv.URL), ratelimit.KVConfig{})
	if err != nil {
		t.Fatal(err)
	}
	storeRefuses(t, s)
	if _, _, err := s.Allow(t.Context(), "mch with spaces", 1, 1); err == nil {
		t.Error("a key a KV cannot hold was accepted")
	}
}

func TestWaitEndsWithItsContext(t *testing.T) {
	srv := testenv.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	l, err := ratelimit.New(ratelimit.Config{Store: ratelimit.NewRedis(rdb, ""), Rates: ratelimit.Rates{Default: 0.01}})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Wait(t.Context(), "1900000109"); err != nil {
		t.Fatal(err)
	}
	// The next request is 100 s away; two waiters give up with their
	// contexts, the one asking the store and the one queued behind it.
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	errs := make(chan error, 2)
	for range 2 {
		go func() { errs <- l.Wait(ctx, "1900000109") }()
	}
	for range 2 {
		if err := <-errs; !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Wait = %v, want the context's deadline", err)
		}
	}
	// A merchant with no rate never waits, and a store that fails is
	// reported.
	unlimited, _ := ratelimit.New(ratelimit.Config{Store: failing{}, Rates: ratelimit.Rates{PerMerchant: map[string]float64{"1": 5}}})
	if err := unlimited.Wait(t.Context(), "1900000109"); err != nil {
		t.Errorf("Wait for a merchant without a rate: %v", err)
	}
	if err := unlimited.Wait(t.Context(), "1"); err == nil {
		t.Error("Wait with a failing store answered nil")
	}
}

type failing struct{}

func (failing) Allow(context.Context, string, float64, int) (bool, time.Duration, error) {
	return false, 0, errors.New("store down")
}

// recording is a Store that allows everything and records the rates asked.
type recording struct {
	mu    sync.Mutex
	rates []float64
}

func (r *recording) Allow(_ context.Context, _ string, rate float64, _ int) (bool, time.Duration, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rates = append(r.rates, rate)
	return true, 0, nil
}

func TestFrequencyLimitedLowersTheRateForAWhile(t *testing.T) {
	now := time.Unix(1e9, 0)
	store := &recording{}
	l, err := ratelimit.New(ratelimit.Config{Store: store, Rates: ratelimit.Rates{PerMerchant: map[string]float64{"m": 100}}, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	step := func(d time.Duration, limited bool, want float64) {
		t.Helper()
		now = now.Add(d)
		if limited {
			l.Limited("m")
		}
		if err := l.Wait(t.Context(), "m"); err != nil {
			t.Fatal(err)
		}
		if got := store.rates[len(store.rates)-1]; got < want-1e-9 || got > want+1e-9 {
			t.Errorf("rate asked %v, want %v", got, want)
		}
	}
	step(0, false, 100)
	step(0, true, 50)                       // cut by half
	step(500*time.Millisecond, true, 52.5)  // within Hold: no second cut; 0.5 + 0.5s/20s
	step(600*time.Millisecond, true, 27.75) // past Hold: (0.5 + 1.1/20) × 0.5
	step(4*time.Second, false, 47.75)
	step(time.Minute, false, 100) // recovered
	for range 10 {
		now = now.Add(2 * time.Second)
		l.Limited("m")
	}
	if got := l.Rate("m"); got < 10 || got > 20 {
		t.Errorf("rate %v after a FREQUENCY_LIMITED every 2s, want near the floor of 10", got)
	}
	l.Limited("other") // no rate: nothing to lower
	if got := l.Rate("other"); got != 0 {
		t.Errorf("rate of a merchant without one = %v", got)
	}
}
