package concurrency

import (
	"container/heap"
	"context"
	"testing"
	"time"
)

// clock is a manual clock.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newLimiter(t *testing.T, c *clock, cfg Config) *Limiter {
	t.Helper()
	cfg.Now = c.now
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// tryAcquire takes a slot if one is free now.
func tryAcquire(l *Limiter) bool {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return l.Acquire(ctx) == nil
}

// server models a worker with a WeChat Pay of latency base and a CPU that
// finishes at most capacity jobs per second (0: unlimited): a job admitted
// with n jobs in flight takes base + max(0, n − capacity·base)/capacity,
// the time the jobs ahead of it in the CPU queue take.
type server struct {
	base     func(time.Time) time.Duration
	capacity float64
	outcome  func(time.Time) Outcome
}

type event struct {
	end  time.Time
	slot *Slot
}

type events []event

func (e events) Len() int           { return len(e) }
func (e events) Less(i, j int) bool { return e[i].end.Before(e[j].end) }
func (e events) Swap(i, j int)      { e[i], e[j] = e[j], e[i] }
func (e *events) Push(x any)        { *e = append(*e, x.(event)) }
func (e *events) Pop() any {
	old := *e
	x := old[len(old)-1]
	*e = old[:len(old)-1]
	return x
}

// sim drives a Limiter with a server model; the jobs in flight carry over
// from one run to the next.
type sim struct {
	l *Limiter
	c *clock
	q events
}

// run drives the limiter with srv for d of simulated time, with demand jobs
// waiting at all times (0: unlimited), and answers the jobs completed per
// second over the last half of the run.
func (m *sim) run(srv server, d time.Duration, demand int) float64 {
	l, c := m.l, m.c
	end := c.t.Add(d)
	half := c.t.Add(d / 2)
	done := 0
	for c.t.Before(end) {
		for (demand == 0 || m.q.Len() < demand) && tryAcquire(l) {
			_, s := l.Start(context.Background())
			base := srv.base(c.t)
			rtt := base
			if srv.capacity > 0 {
				if excess := float64(l.InFlight()) - srv.capacity*base.Seconds(); excess > 0 {
					rtt += time.Duration(excess / srv.capacity * float64(time.Second))
				}
			}
			heap.Push(&m.q, event{c.t.Add(rtt), s})
		}
		if m.q.Len() == 0 || m.q[0].end.After(end) {
			c.t = end
			break
		}
		e := heap.Pop(&m.q).(event)
		c.t = e.end
		o := OK
		if srv.outcome != nil {
			o = srv.outcome(c.t)
		}
		e.slot.Observe(o)
		e.slot.Done()
		if c.t.After(half) {
			done++
		}
	}
	return float64(done) / (d / 2).Seconds()
}

func fixed(d time.Duration) func(time.Time) time.Duration {
	return func(time.Time) time.Duration { return d }
}

func TestLimiterClimbsToTheCeilingWhenOnlyLatencyBinds(t *testing.T) {
	for _, base := range []time.Duration{100 * time.Millisecond, 300 * time.Millisecond} {
		c := &clock{t: time.Unix(1e9, 0)}
		l := newLimiter(t, c, Config{Max: 256})
		m := &sim{l: l, c: c}
		tput := m.run(server{base: fixed(base)}, 20*time.Second, 0)
		if got := l.Limit(); got != 256 {
			t.Errorf("base %s: limit %d after 20s, want the ceiling 256", base, got)
		}
		if want := 256 / base.Seconds() * 0.95; tput < want {
			t.Errorf("base %s: %.0f jobs/s, want at least %.0f", base, tput, want)
		}
	}
}

func TestLimiterReachesTheLevelOf300msQuickly(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	l := newLimiter(t, c, Config{Max: 256})
	m := &sim{l: l, c: c}
	m.run(server{base: fixed(300 * time.Millisecond)}, 2*time.Second, 0)
	if got := l.Limit(); got < 150 {
		t.Errorf("limit %d after 2s at 300ms, want at least 150 (slow start doubles once per window)", got)
	}
}

func TestLimiterSettlesAtTheCPUSaturationPoint(t *testing.T) {
	for _, tc := range []struct {
		base     time.Duration
		capacity float64
		// maxLimit bounds the limit: about capacity × target (jobs wait
		// about Tolerance − 1 no-load times plus Slack), not Max; and
		// maxNoLoad the no-load time, which probes keep from creeping up
		// with the queue. At 2 ms even a probe's quarter of the limit
		// queues (the pipe holds 0.8 jobs), so both settle higher.
		maxLimit  float64
		maxNoLoad time.Duration
	}{
		{100 * time.Millisecond, 400, 130, 110 * time.Millisecond},
		{300 * time.Millisecond, 400, 256, 310 * time.Millisecond},
		{2 * time.Millisecond, 400, 32, 25 * time.Millisecond},
	} {
		c := &clock{t: time.Unix(1e9, 0)}
		l := newLimiter(t, c, Config{Max: 256})
		m := &sim{l: l, c: c}
		tput := m.run(server{base: fixed(tc.base), capacity: tc.capacity}, 60*time.Second, 0)
		pipe := tc.capacity * tc.base.Seconds()
		if tput < 0.95*tc.capacity {
			t.Errorf("base %s: %.0f jobs/s, want at least 95%% of the CPU's %.0f", tc.base, tput, tc.capacity)
		}
		got := float64(l.Limit())
		t.Logf("base %s, CPU for %.0f jobs/s: limit %.0f, %.0f jobs/s, no-load %s", tc.base, tc.capacity, got, tput, l.noLoad())
		if got > tc.maxLimit || got < pipe {
			t.Errorf("base %s: limit %.0f, want between the pipe's %.0f and %.0f", tc.base, got, pipe, tc.maxLimit)
		}
		if nl := l.noLoad(); nl > tc.maxNoLoad {
			t.Errorf("base %s: no-load time %s after a minute at a saturated CPU, want at most %s", tc.base, nl, tc.maxNoLoad)
		}
	}
}

func TestLimiterDoesNotGrowBeyondDemand(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	l := newLimiter(t, c, Config{Max: 256})
	m := &sim{l: l, c: c}
	m.run(server{base: fixed(100 * time.Millisecond)}, 20*time.Second, 10)
	if got := l.Limit(); got > 32 {
		t.Errorf("limit %d with 10 jobs of demand, want at most 32", got)
	}
}

func TestLimiterBacksOffMultiplicativelyOnOverload(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	l := newLimiter(t, c, Config{Max: 256})
	m := &sim{l: l, c: c}
	m.run(server{base: fixed(100 * time.Millisecond)}, 10*time.Second, 0)
	if got := l.Limit(); got != 256 {
		t.Fatalf("limit %d, want 256 before the overload", got)
	}
	overloadAt := c.t
	srv := server{base: fixed(100 * time.Millisecond), outcome: func(now time.Time) Outcome {
		if now.Sub(overloadAt) < 50*time.Millisecond {
			return Overloaded
		}
		return OK
	}}
	m.run(srv, 150*time.Millisecond, 0)
	if got := l.Limit(); got != 128 {
		t.Errorf("limit %d after one window of FREQUENCY_LIMITED answers, want 256 × 0.5 = 128", got)
	}
	// It grows back additively, not by doubling: slow start is over.
	m.run(server{base: fixed(100 * time.Millisecond)}, 350*time.Millisecond, 0)
	if got := l.Limit(); got < 129 || got > 200 {
		t.Errorf("limit %d after 3 clean windows, want an additive climb from 128", got)
	}
}

func TestLimiterFollowsALatencyRise(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	l := newLimiter(t, c, Config{Max: 256})
	m := &sim{l: l, c: c}
	start := c.t
	srv := server{base: func(now time.Time) time.Duration {
		if now.Sub(start) < 10*time.Second {
			return 100 * time.Millisecond
		}
		return 300 * time.Millisecond
	}}
	m.run(srv, 12*time.Second, 0)
	if got := l.Limit(); got >= 256 {
		t.Errorf("limit %d just after WeChat Pay slowed down, want lower: the rise looks like a queue", got)
	}
	tput := m.run(srv, 60*time.Second, 0)
	if got := l.Limit(); got != 256 {
		t.Errorf("limit %d once the no-load time follows the 300ms latency, want 256", got)
	}
	if tput < 256/0.3*0.95 {
		t.Errorf("%.0f jobs/s at 300ms, want the ceiling's 853", tput)
	}
}

func TestJobsWithoutASuccessfulCallGiveNoSample(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	l := newLimiter(t, c, Config{Max: 64, Initial: 8})
	m := &sim{l: l, c: c}
	// Duplicates answered from the store (no call) and failed calls take
	// 1ms; were they samples, the no-load time would fall to 1ms and every
	// 100ms job would look queued.
	for range 200 {
		var dups []*Slot
		for tryAcquire(l) {
			_, s := l.Start(context.Background())
			dups = append(dups, s)
		}
		c.advance(time.Millisecond)
		for _, s := range dups {
			s.Done()
		}
		if !tryAcquire(l) {
			t.Fatal("no slot after the jobs ended")
		}
		_, s := l.Start(context.Background())
		c.advance(time.Millisecond)
		s.Observe(OK)
		s.Observe(Failed)
		s.Done()
	}
	if got := l.noLoad(); got != 0 {
		t.Fatalf("no-load time %s from jobs without a clean call, want none", got)
	}
	m.run(server{base: fixed(100 * time.Millisecond)}, 5*time.Second, 0)
	if got := l.Limit(); got != 64 {
		t.Errorf("limit %d, want 64", got)
	}
}

func TestParkFreesTheSlotAndIsNotPartOfTheSample(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	l := newLimiter(t, c, Config{Max: 2, Min: 1, Initial: 1, MinSamples: 2, MinWindow: time.Nanosecond}) // no window closes
	if !tryAcquire(l) {
		t.Fatal("no first slot")
	}
	ctx, s := l.Start(context.Background())
	if FromContext(ctx) != s {
		t.Fatal("FromContext does not answer the job's slot")
	}
	if tryAcquire(l) {
		t.Fatal("a second slot with a limit of 1")
	}
	c.advance(10 * time.Millisecond)
	s.Park()
	s.Park() // a second Park changes nothing
	if !tryAcquire(l) {
		t.Fatal("the parked job still holds its slot")
	}
	_, other := l.Start(context.Background())
	other.Park()
	if tryAcquire(l) {
		t.Fatal("a third job with Max 2: it would find no goroutine free")
	}
	c.advance(5 * time.Second) // waiting for the merchant's budget
	s.Unpark()
	other.Unpark()
	if got := l.InFlight(); got != 2 {
		t.Fatalf("%d in flight after Unpark, want 2 (above the limit until a job ends)", got)
	}
	c.advance(90 * time.Millisecond)
	s.Observe(OK)
	s.Done()
	if got := l.winSum; got != 100*time.Millisecond {
		t.Errorf("sample %s, want 100ms: the 5s parked are not the job's time", got)
	}
	if tryAcquire(l) {
		t.Error("a slot while the other job still runs at the limit of 1")
	}
	other.Park()
	other.Done() // parked: frees its job, not a slot
	other.Done() // a second Done frees nothing more
	if got := l.InFlight(); got != 0 {
		t.Errorf("%d in flight after every job ended, want 0", got)
	}
	if !tryAcquire(l) || tryAcquire(l) {
		t.Error("want exactly one slot free again at the limit of 1")
	}
	var nilSlot *Slot
	nilSlot.Park()
	nilSlot.Unpark()
	nilSlot.Observe(OK)
	nilSlot.Done()
}

func TestAcquireWaitsForASlotOrTheContext(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	l := newLimiter(t, c, Config{Max: 1, Min: 1})
	if err := l.Acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, s := l.Start(context.Background())
	got := make(chan error, 1)
	go func() { got <- l.Acquire(context.Background()) }()
	select {
	case err := <-got:
		t.Fatalf("Acquire answered %v while the only slot is taken", err)
	case <-time.After(20 * time.Millisecond):
	}
	s.Done()
	if err := <-got; err != nil {
		t.Fatalf("Acquire after the slot freed: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { got <- l.Acquire(ctx) }()
	cancel()
	if err := <-got; err != context.Canceled { //nolint:errorlint // Acquire answers ctx.Err() itself
		t.Fatalf("Acquire with its context canceled answered %v", err)
	}
	l.Cancel()
	if got := l.InFlight(); got != 0 {
		t.Errorf("%d in flight after Cancel, want 0", got)
	}
}

func TestNewChecksTheConfig(t *testing.T) {
	for _, cfg := range []Config{{}, {Max: 4, Backoff: 1.5}, {Max: 4, MinSamples: -1}} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
	l, err := New(Config{Max: 8})
	if err != nil {
		t.Fatal(err)
	}
	if l.Limit() != 8 || l.Max() != 8 {
		t.Errorf("limit %d, max %d; want the initial 16 capped at Max 8", l.Limit(), l.Max())
	}
}
