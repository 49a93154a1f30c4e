// Package concurrency finds how many jobs a worker should keep in flight: an
// adaptive limiter in the manner of Netflix's concurrency-limits (its
// gradient limiters), driven by the time each job takes, with slow start,
// and AIMD's multiplicative decrease when WeChat Pay answers
// FREQUENCY_LIMITED.
//
// # Why adaptive
//
// A job spends most of its time waiting for WeChat Pay (100–300 ms from a
// data centre in China) and about 1.5 ms of CPU on RSA signatures. By
// Little's law a pod that should create X orders/s needs X × latency jobs
// in flight: 30 at 100/s and 100 ms, 150 at 500/s and 300 ms. Too few and
// the pod idles while it waits; too many and jobs queue for the CPU, which
// adds latency and no throughput. The right number moves with WeChat Pay's
// latency and with the CPU the pod gets, so the limiter measures instead of
// being told.
//
// # Algorithm
//
// Every job that made WeChat Pay calls, all of them successful, gives one
// sample: the time from the start of the job to its end, minus the time it
// was parked waiting for its merchant's rate budget (Slot.Park). Jobs
// without a call (duplicates) or with a failed one give none. The limiter
// keeps:
//
//   - noLoad, the no-load job time: the mean sample of the last probe, or
//     the smallest mean sample of a window since (means, not single
//     samples, so that the jitter of a shared machine does not set the
//     target). A probe (as BBR's ProbeRTT) starts when a window closes
//     ProbeInterval after the last one, out of slow start: it admits only
//     max(Min, L/4) jobs until MinSamples jobs started during the probe
//     have ended (or 4 × max(noLoad, MinWindow) passed); their mean becomes
//     noLoad, and L is what it was. Without probes, under a saturated CPU
//     every sample includes a wait, noLoad would creep up with them and the
//     limit with it; with them, noLoad follows WeChat Pay's latency up
//     within ProbeInterval and down at once. A probe costs about two job
//     times of lower throughput, so a window that was app-limited (below)
//     with g = 1 stands for one: its jobs waited for nothing, and its mean
//     becomes noLoad;
//   - windows of samples: a window closes with the first sample at least
//     max(noLoad, MinWindow) after it opened and holding at least
//     MinSamples samples: about once per job time, as TCP does once per
//     round trip.
//
// When a window closes, with rtt the mean sample of the window, L the
// current limit, target = Tolerance × noLoad + Slack, and the gradient
// g = min(1, max(0.5, target / rtt)):
//
//   - a FREQUENCY_LIMITED answer in the window (Slot.Observe with
//     Overloaded): L = L × Backoff, and slow start ends;
//   - g < 1 (jobs take longer than the target: they queue, mostly for the
//     CPU): L = (L + L×g + √L) / 2, Netflix's gradient step L×g + √L
//     smoothed by half; slow start ends. Its fixed point is the L at which
//     rtt = target / (1 − 1/√L): jobs wait about (Tolerance − 1) ×
//     noLoad plus Slack, enough to keep the CPU busy however noisy the
//     machine is;
//   - g = 1 and the window was not app-limited (at least L/2 jobs were in
//     flight at its busiest): L = 2L in slow start (from the start until the
//     first g < 1 or FREQUENCY_LIMITED), else L = L + √L;
//   - otherwise L stays.
//
// L is then kept within [Min, Max]; the number of jobs admitted is ⌊L⌋.
// Slow start lets a worker reach the level of a 300 ms WeChat Pay within a
// couple of seconds.
//
// # Parameters
//
// Max is the ceiling (WORKER_IN_FLIGHT, 256 by default: 500 orders/s at
// 300 ms need 150). Min (2), Initial (16), Tolerance (2), Slack (10ms),
// Backoff (0.5), MinWindow (100ms), MinSamples (8) and ProbeInterval (30s)
// have defaults that suit WeChat Pay latencies from a few to several hundred
// milliseconds. Tolerance 2 means a job may take up to twice its no-load
// time before the limit shrinks: jitter from other work on the machine does
// not starve the worker, and at a saturated CPU the jobs wait up to about
// one no-load time more (the p99 at a saturated CPU, not at half of it).
//
// A rise of WeChat Pay's own latency beyond Tolerance × noLoad looks, until
// the next probe (at most ProbeInterval), like a queue: the
// limiter then lowers L for a while, as every delay-based limiter does.
//
// All methods are safe for concurrent use. The clock is Config.Now, so tests
// drive the limiter with synthetic job times.
package concurrency

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"
)

// Defaults of Config.
const (
	MinDefault           = 2
	InitialDefault       = 16
	ToleranceDefault     = 2
	SlackDefault         = 10 * time.Millisecond
	BackoffDefault       = 0.5
	MinWindowDefault     = 100 * time.Millisecond
	MinSamplesDefault    = 8
	ProbeIntervalDefault = 30 * time.Second
)

// Config configures a Limiter.
type Config struct {
	// Max is the ceiling of jobs in flight. Required, at least 1.
	Max int
	// Min is the floor of the limit. Defaults to MinDefault (at most Max).
	Min int
	// Initial is the limit at start. Defaults to InitialDefault, within
	// [Min, Max].
	Initial int
	// Tolerance is how many times its no-load time a job may take before
	// the limit shrinks (with Slack); above 1. Defaults to 2.
	Tolerance float64
	// Slack is added to the target job time, for jobs of a few
	// milliseconds. Defaults to 10ms.
	Slack time.Duration
	// Backoff multiplies the limit after a window with an overloaded job
	// (FREQUENCY_LIMITED); in (0, 1). Defaults to 0.5.
	Backoff float64
	// MinWindow is the shortest sample window. Defaults to 100ms.
	MinWindow time.Duration
	// MinSamples is the fewest samples a window needs to close. Defaults
	// to 8.
	MinSamples int
	// ProbeInterval is the time between two probes of the no-load job
	// time. Defaults to 30s.
	ProbeInterval time.Duration
	// Now answers the current time. Defaults to time.Now.
	Now func() time.Time
	// OnChange, when set, is called with the new admitted limit each time
	// it changes, with the Limiter's lock held: it must not call back.
	OnChange func(limit int)
}

// Outcome is what a job's WeChat Pay call told about the load.
type Outcome int

// Outcomes reported with Slot.Observe.
const (
	// OK is a successful call.
	OK Outcome = iota + 1
	// Failed is a failed call: its job gives no sample.
	Failed
	// Overloaded is a FREQUENCY_LIMITED answer: the limit backs off.
	Overloaded
)

// Limiter admits jobs up to an adaptive limit. See the package doc.
type Limiter struct {
	cfg Config

	mu       sync.Mutex
	limit    float64
	inFlight int           // slots taken
	jobs     int           // jobs started and not done, parked ones included: at most Max
	changed  chan struct{} // closed and replaced when a slot frees or the limit rises

	slowStart bool
	// The no-load job time, and the probe that measures it again.
	noLoadRTT  time.Duration
	probing    bool
	probeStart time.Time
	probeSum   time.Duration
	probeN     int
	lastProbe  time.Time
	// The open window.
	winStart    time.Time
	winSum      time.Duration
	winN        int
	winMaxIn    int
	winOverload bool
}

// New checks cfg, applies its defaults and answers a Limiter.
func New(cfg Config) (*Limiter, error) {
	if cfg.Max < 1 {
		return nil, fmt.Errorf("concurrency: Max %d must be at least 1", cfg.Max)
	}
	cfg.Min = min(cmp.Or(cfg.Min, MinDefault), cfg.Max)
	cfg.Initial = max(min(cmp.Or(cfg.Initial, InitialDefault), cfg.Max), cfg.Min)
	cfg.Backoff = cmp.Or(cfg.Backoff, BackoffDefault)
	cfg.Tolerance = cmp.Or(cfg.Tolerance, ToleranceDefault)
	cfg.Slack = cmp.Or(cfg.Slack, SlackDefault)
	cfg.MinWindow = cmp.Or(cfg.MinWindow, MinWindowDefault)
	cfg.MinSamples = cmp.Or(cfg.MinSamples, MinSamplesDefault)
	cfg.ProbeInterval = cmp.Or(cfg.ProbeInterval, ProbeIntervalDefault)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	var errs []error
	if cfg.Min < 1 {
		errs = append(errs, fmt.Errorf("the floor Min %d must be at least 1", cfg.Min))
	}
	if cfg.Backoff <= 0 || cfg.Backoff >= 1 {
		errs = append(errs, fmt.Errorf("the back-off factor Backoff %v must be between 0 and 1", cfg.Backoff))
	}
	if cfg.Tolerance <= 1 {
		errs = append(errs, fmt.Errorf("the tolerance Tolerance %v must be above 1", cfg.Tolerance))
	}
	if cfg.MinWindow < 0 || cfg.ProbeInterval < 0 || cfg.MinSamples < 1 || cfg.Slack < 0 {
		errs = append(errs, errors.New("the windows MinWindow, ProbeInterval, MinSamples and Slack must be positive"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("concurrency: %w", err)
	}
	now := cfg.Now()
	return &Limiter{cfg: cfg, limit: float64(cfg.Initial), changed: make(chan struct{}), slowStart: true,
		lastProbe: now, winStart: now}, nil
}

// Limit answers the number of jobs admitted now.
func (l *Limiter) Limit() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.admitted()
}

// InFlight answers the number of slots taken (parked jobs do not count).
func (l *Limiter) InFlight() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inFlight
}

// Max answers the ceiling.
func (l *Limiter) Max() int { return l.cfg.Max }

func (l *Limiter) admitted() int {
	if l.probing {
		return max(l.cfg.Min, int(l.limit/4))
	}
	return int(l.limit)
}

// notify wakes the goroutines waiting in Acquire; l.mu is held.
func (l *Limiter) notify() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// Acquire takes a slot, waiting while the limit's worth of jobs is in
// flight or Max jobs are held (parked ones included, so a job admitted
// always finds one of Max goroutines free), or answers ctx's error. The
// slot is then given to a job with Start, or back with Cancel.
func (l *Limiter) Acquire(ctx context.Context) error {
	for {
		l.mu.Lock()
		if l.inFlight < l.admitted() && l.jobs < l.cfg.Max {
			l.inFlight++
			l.jobs++
			l.winMaxIn = max(l.winMaxIn, l.inFlight)
			l.mu.Unlock()
			return nil
		}
		ch := l.changed
		l.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Cancel gives back a slot taken with Acquire that no job used.
func (l *Limiter) Cancel() {
	l.mu.Lock()
	l.jobs--
	l.release()
	l.mu.Unlock()
}

// release frees one slot; l.mu is held.
func (l *Limiter) release() {
	l.inFlight--
	l.notify()
}

// Start begins the job that holds a slot taken with Acquire, and answers
// ctx carrying its Slot (see FromContext) and the Slot. Slot.Done ends it.
func (l *Limiter) Start(ctx context.Context) (context.Context, *Slot) {
	s := &Slot{l: l, start: l.cfg.Now()}
	return context.WithValue(ctx, slotKey{}, s), s
}

// Slot is one job's hold on the limiter. Its methods are safe for
// concurrent use and do nothing on a nil Slot.
type Slot struct {
	l     *Limiter
	start time.Time

	mu       sync.Mutex
	parkedAt time.Time // zero unless parked
	parked   time.Duration
	ok       bool // a call succeeded
	failed   bool // a call failed
	overload bool // a call was FREQUENCY_LIMITED
	done     bool
}

type slotKey struct{}

// FromContext answers the Slot of the job ctx belongs to, or nil.
func FromContext(ctx context.Context) *Slot {
	s, _ := ctx.Value(slotKey{}).(*Slot)
	return s
}

// Park frees the job's slot while it waits for something that is not a
// WeChat Pay call slot (its merchant's rate budget); the wait is not part
// of its sample. Unpark takes the slot again.
func (s *Slot) Park() {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done || !s.parkedAt.IsZero() {
		return
	}
	s.parkedAt = s.l.cfg.Now()
	s.l.mu.Lock()
	s.l.release()
	s.l.mu.Unlock()
}

// Unpark ends a Park. It takes the slot back at once, even above the limit
// (the job was admitted before it parked): the overshoot lasts until jobs
// end, as Acquire admits none meanwhile.
func (s *Slot) Unpark() {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done || s.parkedAt.IsZero() {
		return
	}
	s.parked += s.l.cfg.Now().Sub(s.parkedAt)
	s.parkedAt = time.Time{}
	l := s.l
	l.mu.Lock()
	l.inFlight++
	l.winMaxIn = max(l.winMaxIn, l.inFlight)
	l.mu.Unlock()
}

// Observe records how one of the job's WeChat Pay calls ended.
func (s *Slot) Observe(o Outcome) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch o {
	case OK:
		s.ok = true
	case Failed:
		s.failed = true
	case Overloaded:
		s.overload = true
	}
}

// Done ends the job: it frees the slot (unless parked) and gives the
// limiter the job's sample. Calls after the first do nothing.
func (s *Slot) Done() {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return
	}
	s.done = true
	now := s.l.cfg.Now()
	l := s.l
	l.mu.Lock()
	defer l.mu.Unlock()
	l.jobs--
	if s.parkedAt.IsZero() {
		l.release()
	} else {
		s.parked += now.Sub(s.parkedAt)
		l.notify()
	}
	switch {
	case s.overload:
		l.winOverload = true
		l.maybeUpdate(now)
	case s.ok && !s.failed:
		l.sample(now, s.start, now.Sub(s.start)-s.parked)
	}
}

// sample adds the time of a job started at start; l.mu is held.
func (l *Limiter) sample(now, start time.Time, rtt time.Duration) {
	rtt = max(rtt, time.Microsecond)
	if l.probing {
		if !start.Before(l.probeStart) {
			l.probeSum += rtt
			l.probeN++
		}
		l.maybeEndProbe(now)
		return
	}
	l.winSum += rtt
	l.winN++
	l.maybeUpdate(now)
}

// noLoad answers the no-load job time; l.mu is held.
func (l *Limiter) noLoad() time.Duration { return l.noLoadRTT }

// maybeEndProbe ends the probe when it has its samples or ran too long;
// l.mu is held.
func (l *Limiter) maybeEndProbe(now time.Time) {
	if l.probeN < l.cfg.MinSamples && now.Sub(l.probeStart) < 4*max(l.noLoad(), l.cfg.MinWindow) {
		return
	}
	if l.probeN > 0 {
		l.noLoadRTT = l.probeSum / time.Duration(l.probeN)
	}
	l.probing, l.lastProbe = false, now
	l.winStart, l.winSum, l.winN, l.winMaxIn = now, 0, 0, l.inFlight // an overload seen stays
	l.notify()
	if l.cfg.OnChange != nil {
		l.cfg.OnChange(l.admitted())
	}
}

// maybeUpdate closes the window and moves the limit when it is due; l.mu
// is held.
func (l *Limiter) maybeUpdate(now time.Time) {
	if l.probing {
		l.maybeEndProbe(now)
		return
	}
	if now.Sub(l.winStart) < max(l.noLoad(), l.cfg.MinWindow) {
		return
	}
	if l.winN < l.cfg.MinSamples && !l.winOverload {
		return
	}
	var rtt time.Duration
	if l.winN > 0 {
		rtt = l.winSum / time.Duration(l.winN)
		if l.noLoadRTT == 0 || rtt < l.noLoadRTT {
			l.noLoadRTT = rtt
		}
	}
	old := l.admitted()
	L := l.limit
	switch {
	case l.winOverload:
		L *= l.cfg.Backoff
		l.slowStart = false
	case l.winN > 0:
		target := time.Duration(l.cfg.Tolerance*float64(l.noLoad())) + l.cfg.Slack
		g := min(1, max(0.5, float64(target)/float64(rtt)))
		appLimited := float64(l.winMaxIn) < L/2
		switch {
		case g < 1:
			L = (L + L*g + math.Sqrt(L)) / 2
			l.slowStart = false
		case appLimited:
			// Few jobs in flight wait for nothing: the window is a probe.
			l.noLoadRTT, l.lastProbe = rtt, now
		case l.slowStart:
			L *= 2
		default:
			L += math.Sqrt(L)
		}
	}
	l.limit = min(max(L, float64(l.cfg.Min)), float64(l.cfg.Max))
	l.winStart, l.winSum, l.winN, l.winMaxIn, l.winOverload = now, 0, 0, l.inFlight, false
	if !l.slowStart && now.Sub(l.lastProbe) >= l.cfg.ProbeInterval {
		l.probing, l.probeStart, l.probeN = true, now, 0
	}
	if n := l.admitted(); n != old {
		if n > old {
			l.notify()
		}
		if l.cfg.OnChange != nil {
			l.cfg.OnChange(n)
		}
	}
}
