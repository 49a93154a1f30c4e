package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wxcombine/orderworker/loadgen"
	"github.com/wxcombine/orderworker/loadgen/stack"
	"github.com/wxcombine/orderworker/wechat/wechatsim"
)

// The runs of the adaptive concurrency limit and the shared rate limits
// (`make bench/latency`, or part of `make bench`):
//
//   - latency_runs: the simulator answering after 100 ms and after 300 ms,
//     two workers with default settings (no WORKER_IN_FLIGHT), orders
//     published as fast as JetStream takes them. cpu_bound_orders_per_second
//     is cores ÷ the CPU per order of all the run's processes: what the
//     machine could do if the CPU were the only bound. latency_efficiency =
//     orders_per_second ÷ cpu_bound_orders_per_second, i.e. the share of both
//     cores the run's processes used. Then, at half the measured rate, the
//     p99 from publish to outcome, against 50 ms + the simulated latency.
//   - rate_limit_run: one merchant capped at 100 requests/s by
//     WECHAT_MERCHANT_QPS on two workers, the simulator answering 429
//     FREQUENCY_LIMITED above 100 requests/s for a merchant (its
//     RatePerMerchant fault), orders offered at 3 × the cap. The simulator's
//     accounting, sampled every 100 ms, gives the merchant's requests per
//     second (after the first second, up to its last request) and the
//     FREQUENCY_LIMITED answers after the first second.

// LatencyRun is one run of the slowed-down simulator with default workers.
type LatencyRun struct {
	Name           string  `json:"name"`
	SimLatencyMS   float64 `json:"sim_latency_ms"`
	Workers        int     `json:"workers"`
	WorkerSettings string  `json:"worker_settings"`
	Orders         int     `json:"orders"`
	// OrdersPerSecond is orders with an outcome per second, publishing as
	// fast as JetStream takes them.
	OrdersPerSecond float64 `json:"orders_per_second"`
	P50MS           float64 `json:"p50_ms"`
	P99MS           float64 `json:"p99_ms"`
	// CPUPerOrderMS is by process, as in Run.
	CPUPerOrderMS      map[string]float64 `json:"cpu_per_order_ms"`
	TotalCPUPerOrderMS float64            `json:"total_cpu_per_order_ms"`
	// CPUBoundOrdersPerSecond is cores ÷ TotalCPUPerOrderMS.
	CPUBoundOrdersPerSecond float64 `json:"cpu_bound_orders_per_second"`
	// LatencyEfficiency is OrdersPerSecond ÷ CPUBoundOrdersPerSecond.
	LatencyEfficiency float64 `json:"latency_efficiency"`
	// ConcurrencyLimits are the workers' adaptive limits at the end of the
	// run (orderworker_concurrency_limit).
	ConcurrencyLimits []float64 `json:"concurrency_limits"`
	// VsNoLatency is OrdersPerSecond ÷ the orders/s of the same workers
	// with the simulator answering at once (Results.NoLatencyRun), measured
	// just before: what the latency costs under the machine's load of the
	// moment, which lowers both alike.
	VsNoLatency float64 `json:"vs_no_latency"`
	// HalfRate is the run at half OrdersPerSecond.
	HalfRate   HalfRateRun `json:"half_rate"`
	Violations int         `json:"violations"`
	LoadBefore string      `json:"load_avg_before"`
	LoadAfter  string      `json:"load_avg_after"`
}

// HalfRateRun is the latency check at half the measured rate.
type HalfRateRun struct {
	OfferedRate     float64 `json:"offered_rate"`
	Orders          int     `json:"orders"`
	OrdersPerSecond float64 `json:"orders_per_second"`
	P50MS           float64 `json:"p50_ms"`
	P99MS           float64 `json:"p99_ms"`
	// P99GoalMS is 50 ms + the simulated latency.
	P99GoalMS  float64 `json:"p99_goal_ms"`
	Violations int     `json:"violations"`
}

// RateLimitRun is the run of a rate-limited merchant.
type RateLimitRun struct {
	Cap            float64 `json:"cap"`
	Workers        int     `json:"workers"`
	WorkerSettings string  `json:"worker_settings"`
	SimLatencyMS   float64 `json:"sim_latency_ms"`
	OfferedRate    float64 `json:"offered_rate"`
	Orders         int     `json:"orders"`
	// WeChatRequestsPerSecond is the merchant's create requests per second
	// at the simulator, from one second after its first request to its
	// last.
	WeChatRequestsPerSecond float64 `json:"wechat_requests_per_second"`
	// WithinFivePercent reports |WeChatRequestsPerSecond − Cap| ≤ 5 % of Cap.
	WithinFivePercent bool `json:"within_5_percent"`
	// FrequencyLimited counts the simulator's FREQUENCY_LIMITED answers
	// after the first second; FrequencyLimitedTotal all of them.
	FrequencyLimited      int64   `json:"frequency_limited"`
	FrequencyLimitedTotal int64   `json:"frequency_limited_total"`
	Requests              int64   `json:"wechat_requests"`
	MeasuredSeconds       float64 `json:"measured_seconds"`
	OrdersPerSecond       float64 `json:"orders_per_second"`
	P99MS                 float64 `json:"p99_ms"`
	// TotalCPUPerOrderMS and CPUBoundOrdersPerSecond are as in
	// LatencyRun: below the cap, the machine, not the limit, set the rate.
	TotalCPUPerOrderMS      float64 `json:"total_cpu_per_order_ms"`
	CPUBoundOrdersPerSecond float64 `json:"cpu_bound_orders_per_second"`
	Violations              int     `json:"violations"`
	LoadBefore              string  `json:"load_avg_before"`
	LoadAfter               string  `json:"load_avg_after"`
}

// limitRuns starts a stack with two default workers and does the latency
// runs and the rate-limit run.
func limitRuns(ctx context.Context, o *options, res *Results, log *slog.Logger, say func(string, ...any)) error {
	natsBin, cleanup, err := natsServer(ctx, say)
	if err != nil {
		return err
	}
	defer cleanup()
	redisBin, _ := exec.LookPath("redis-server")
	m := machine()
	m.NATS, m.Store = builtNATS("process"), "Redis ("+redisBin+")"
	m.LoadBefore = loadAvg()
	res.LimitsMachine = &m
	defer func() { m.LoadAfter = loadAvg() }()
	say("limits: starting a stack with 2 workers with default settings …")
	st, err := stack.Start(ctx, stack.Config{NATSServerBin: natsBin, RedisServerBin: redisBin, Workers: 2, Logger: log})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := st.Close(); cerr != nil {
			log.Warn("stop", slog.Any("error", cerr))
		}
	}()
	nc, err := nats.Connect(st.NATSURL, nats.Name("bench"))
	if err != nil {
		return err
	}
	defer nc.Close()
	sim := &loadgen.SimClient{BaseURL: st.SimURL}
	restart := func(env map[string]string) error {
		for _, w := range st.Workers() {
			if err := stack.Stop(w); err != nil {
				return err
			}
		}
		for range 2 {
			if _, err := st.AddWorker(ctx, env); err != nil {
				return err
			}
		}
		return nil
	}
	// The reference: the same default workers, the simulator answering at
	// once.
	if err := sim.SetFaults(ctx, wechatsim.FaultConfig{}); err != nil {
		return err
	}
	if _, err := measure(ctx, nc, st, sim, "sim-0ms-warmup", o.limitWarmup, 0); err != nil {
		return err
	}
	ref, err := measure(ctx, nc, st, sim, "sim-0ms-2w-defaults", o.limitOrders, 0)
	if err != nil {
		return err
	}
	ref.Build, ref.Workers, ref.InFlight = "default", 2, 0
	if res.Floor.CeilingOrdersPerSec > 0 {
		ref.RatioToFloor = round3(ref.OrdersPerSec / res.Floor.CeilingOrdersPerSec)
	}
	if ref.TotalCPUPerOrderMS > 0 {
		ref.CPURatioToFloor = round3(res.Floor.CPUPerOrderMS / ref.TotalCPUPerOrderMS)
	}
	res.NoLatencyRun = &ref
	say("  %-24s %7.1f orders/s  CPU %.2fms/order (the reference)", ref.Name, ref.OrdersPerSec, ref.TotalCPUPerOrderMS)
	for _, latency := range o.limitLatencies {
		// Fresh workers: their limiters learn the new latency.
		if err := restart(nil); err != nil {
			return err
		}
		r, err := latencyRun(ctx, o, nc, st, sim, latency, say)
		if err != nil {
			return err
		}
		if ref.OrdersPerSec > 0 {
			r.VsNoLatency = round3(r.OrdersPerSecond / ref.OrdersPerSec)
		}
		res.LatencyRuns = append(res.LatencyRuns, r)
	}
	if o.rateCap > 0 {
		mch := st.Merchants[0].MchID
		if err := restart(map[string]string{"WECHAT_MERCHANT_QPS": mch + "=" + strconv.FormatFloat(o.rateCap, 'f', -1, 64)}); err != nil {
			return err
		}
		r, err := rateLimitRun(ctx, o, nc, st, sim, say)
		if err != nil {
			return err
		}
		res.RateLimitRun = &r
	}
	return nil
}

func latencyRun(ctx context.Context, o *options, nc *nats.Conn, st *stack.Stack, sim *loadgen.SimClient, latency time.Duration, say func(string, ...any)) (LatencyRun, error) {
	name := fmt.Sprintf("sim-%dms-2w-defaults", latency.Milliseconds())
	r := LatencyRun{Name: name, SimLatencyMS: float64(latency.Milliseconds()), Workers: 2, WorkerSettings: "defaults"}
	if err := sim.SetFaults(ctx, wechatsim.FaultConfig{Latency: latency}); err != nil {
		return r, err
	}
	// Warm up the connections and let the limiters find their level.
	if _, err := measure(ctx, nc, st, sim, name+"-warmup", o.limitWarmup, 0); err != nil {
		return r, err
	}
	r.LoadBefore = loadAvg()
	peak, err := measure(ctx, nc, st, sim, name, o.limitOrders, 0)
	if err != nil {
		return r, err
	}
	r.ConcurrencyLimits = concurrencyLimits(ctx, st)
	r.Orders, r.OrdersPerSecond, r.P50MS, r.P99MS = peak.Orders, peak.OrdersPerSec, peak.P50MS, peak.P99MS
	r.CPUPerOrderMS, r.TotalCPUPerOrderMS, r.Violations = peak.CPUPerOrderMS, peak.TotalCPUPerOrderMS, peak.Violations
	if peak.TotalCPUPerOrderMS > 0 {
		r.CPUBoundOrdersPerSecond = round1(float64(runtime.NumCPU()) / (peak.TotalCPUPerOrderMS / 1000))
		r.LatencyEfficiency = round3(r.OrdersPerSecond / r.CPUBoundOrdersPerSecond)
	}
	half := math.Round(r.OrdersPerSecond / 2)
	hr, err := measure(ctx, nc, st, sim, name+"-half", int(half*o.halfSeconds), half)
	if err != nil {
		return r, err
	}
	r.LoadAfter = loadAvg()
	r.HalfRate = HalfRateRun{OfferedRate: half, Orders: hr.Orders, OrdersPerSecond: hr.OrdersPerSec, P50MS: hr.P50MS, P99MS: hr.P99MS,
		P99GoalMS: 50 + r.SimLatencyMS, Violations: hr.Violations}
	say("  %-24s %7.1f orders/s  CPU %.2fms/order → CPU-bound %.0f/s  efficiency %.2f  limits %v  half rate %.0f/s p99 %.1fms (goal < %.0fms)  load %s → %s",
		name, r.OrdersPerSecond, r.TotalCPUPerOrderMS, r.CPUBoundOrdersPerSecond, r.LatencyEfficiency, r.ConcurrencyLimits,
		half, hr.P99MS, r.HalfRate.P99GoalMS, r.LoadBefore, r.LoadAfter)
	return r, nil
}

// concurrencyLimits scrapes each worker's orderworker_concurrency_limit.
func concurrencyLimits(ctx context.Context, st *stack.Stack) []float64 {
	var out []float64
	for _, w := range st.Workers() {
		m, err := stack.Scrape(ctx, w.AdminURL+"/metrics")
		if err != nil {
			continue
		}
		out = append(out, m.Sum("orderworker_concurrency_limit"))
	}
	return out
}

// simSample is the simulator's accounting at one time.
type simSample struct {
	at       time.Time
	creates  int64
	limited  int64
	requests int64
}

func rateLimitRun(ctx context.Context, o *options, nc *nats.Conn, st *stack.Stack, sim *loadgen.SimClient, say func(string, ...any)) (RateLimitRun, error) {
	const latency = 100 * time.Millisecond
	r := RateLimitRun{Cap: o.rateCap, Workers: 2, WorkerSettings: "defaults + WECHAT_MERCHANT_QPS=<mchid>=" + strconv.FormatFloat(o.rateCap, 'f', -1, 64),
		SimLatencyMS: float64(latency.Milliseconds()), OfferedRate: 3 * o.rateCap}
	// The simulator's limit is the cap itself: any request above it is
	// answered 429 FREQUENCY_LIMITED.
	if err := sim.SetFaults(ctx, wechatsim.FaultConfig{Latency: latency, RatePerMerchant: o.rateCap}); err != nil {
		return r, err
	}
	r.LoadBefore = loadAvg()
	sample := func() (simSample, error) {
		s, err := sim.Stats(ctx)
		return simSample{at: time.Now(), creates: s.Requests[wechatsim.OpCreate], limited: s.Faults[wechatsim.FaultRateLimited],
			requests: s.Requests[wechatsim.OpCreate] + s.Requests[wechatsim.OpQuery] + s.Requests[wechatsim.OpQueryByID] + s.Requests[wechatsim.OpClose]}, err
	}
	first, err := sample()
	if err != nil {
		return r, err
	}
	procs := st.Processes()
	cpuBefore := cpuSnapshot(procs)
	var mu sync.Mutex
	samples := []simSample{first}
	sctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case <-t.C:
			}
			s, err := sample()
			if err == nil {
				mu.Lock()
				samples = append(samples, s)
				mu.Unlock()
			}
		}
	})
	rep, err := loadgen.Run(ctx, nc, loadgen.Config{
		Merchants: st.Merchants[:1], Orders: o.rateOrders, Rate: r.OfferedRate, MaxInFlight: 1024,
		MaxCreatesPerOrder: 0, Wait: 120 * time.Second, Linger: 100 * time.Millisecond,
	})
	cpuAfter := cpuSnapshot(procs)
	stop()
	wg.Wait()
	if err != nil {
		return r, fmt.Errorf("rate-limit run: %w", err)
	}
	var cpu time.Duration
	for k, v := range cpuAfter {
		cpu += v - cpuBefore[k]
	}
	if n := rep.Published.Orders; n > 0 && cpu > 0 {
		r.TotalCPUPerOrderMS = round3(float64(cpu) / float64(time.Millisecond) / float64(n))
		r.CPUBoundOrdersPerSecond = round1(float64(runtime.NumCPU()) / (r.TotalCPUPerOrderMS / 1000))
	}
	last, err := sample()
	if err != nil {
		return r, err
	}
	samples = append(samples, last)
	r.LoadAfter = loadAvg()
	r.Orders, r.OrdersPerSecond, r.P99MS, r.Violations = rep.Published.Orders, round1(rep.Throughput), rep.Latency.P99MS, rep.ViolationTotal
	// The measured span: from one second after the first request reached
	// the simulator (counted from the last sample before it, so the first
	// second is if anything shorter) to the last sample in which the count
	// still grew.
	var start, end *simSample
	for i := 1; i < len(samples); i++ {
		if samples[i].requests > first.requests {
			t0 := samples[i-1].at.Add(time.Second)
			for j := i; j < len(samples); j++ {
				if !samples[j].at.Before(t0) {
					start = &samples[j]
					break
				}
			}
			break
		}
	}
	for i := len(samples) - 1; i > 0; i-- {
		if samples[i].requests > samples[i-1].requests {
			end = &samples[i]
			break
		}
	}
	if start == nil || end == nil || !end.at.After(start.at) {
		return r, errors.New("rate-limit run: the simulator saw too few requests to measure a rate")
	}
	r.Requests = last.creates - first.creates
	r.MeasuredSeconds = round3(end.at.Sub(start.at).Seconds())
	r.WeChatRequestsPerSecond = round1(float64(end.creates-start.creates) / end.at.Sub(start.at).Seconds())
	r.WithinFivePercent = math.Abs(r.WeChatRequestsPerSecond-r.Cap) <= 0.05*r.Cap
	r.FrequencyLimited = last.limited - start.limited
	r.FrequencyLimitedTotal = last.limited - first.limited
	say("  rate-limit-2w            cap %.0f/s: %.1f requests/s at the simulator over %.1fs; FREQUENCY_LIMITED %d after the first second (%d in all); %d orders, CPU %.2fms/order → CPU-bound %.0f/s, violations %d; load %s → %s",
		r.Cap, r.WeChatRequestsPerSecond, r.MeasuredSeconds, r.FrequencyLimited, r.FrequencyLimitedTotal, r.Orders, r.TotalCPUPerOrderMS,
		r.CPUBoundOrdersPerSecond, r.Violations, r.LoadBefore, r.LoadAfter)
	return r, nil
}

// limitsMarkdown formats the limit runs for latest.md.
func limitsMarkdown(r *Results) string {
	var b strings.Builder
	if len(r.LatencyRuns) > 0 {
		fmt.Fprintf(&b, "## Latency runs (%s): 2 workers with default settings\n\n", r.LimitsDate.Format("2006-01-02 15:04 MST"))
		if m := r.LimitsMachine; m != nil {
			fmt.Fprintf(&b, "On %d × %s, %s, %s; NATS: %s; idempotency store: %s. Load average at the start: %s; at the end: %s.\n\n",
				m.CPUs, m.CPUModel, m.GoVersion, m.OS, m.NATS, m.Store, m.LoadBefore, m.LoadAfter)
		}
		b.WriteString("| run | sim latency | orders | orders/s | CPU ms/order | CPU-bound orders/s | latency_efficiency | ÷ orders/s at 0 ms | limits at the end | p99 ms | half rate: offered | p50 ms | p99 ms | p99 goal ms | violations | load avg before → after |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, l := range r.LatencyRuns {
			fmt.Fprintf(&b, "| %s | %.0f ms | %d | %.1f | %.2f | %.1f | **%.2f** | %.2f | %v | %.0f | %.0f/s | %.1f | **%.1f** | %.0f | %d | %s → %s |\n",
				l.Name, l.SimLatencyMS, l.Orders, l.OrdersPerSecond, l.TotalCPUPerOrderMS, l.CPUBoundOrdersPerSecond, l.LatencyEfficiency,
				l.VsNoLatency, l.ConcurrencyLimits, l.P99MS, l.HalfRate.OfferedRate, l.HalfRate.P50MS, l.HalfRate.P99MS, l.HalfRate.P99GoalMS,
				l.Violations+l.HalfRate.Violations, l.LoadBefore, l.LoadAfter)
		}
		if n := r.NoLatencyRun; n != nil && n.TotalCPUPerOrderMS > 0 {
			fmt.Fprintf(&b, "| %s (reference) | 0 ms | %d | %.1f | %.2f | %.1f | %.2f | 1 | | %.0f | | | | | %d | |\n",
				n.Name, n.Orders, n.OrdersPerSec, n.TotalCPUPerOrderMS, float64(r.Machine.CPUs)/(n.TotalCPUPerOrderMS/1000),
				n.OrdersPerSec/(float64(r.Machine.CPUs)/(n.TotalCPUPerOrderMS/1000)), n.P99MS, n.Violations)
		}
		b.WriteString("\nCPU-bound orders/s = cores ÷ the CPU per order of all the run's processes; latency_efficiency = orders/s ÷ that, i.e. the share of both cores the run's processes used (other work on the machine lowers it). ÷ orders/s at 0 ms compares with the same default workers and the simulator answering at once, just before, under the same load. The half-rate check offers half the run's orders/s; its goal is p99 < 50 ms + the simulated latency.\n\n")
	}
	if l := r.RateLimitRun; l != nil {
		fmt.Fprintf(&b, "## Rate-limit run: a merchant capped at %.0f requests/s, 2 workers\n\n", l.Cap)
		b.WriteString("| cap | offered | orders | WeChat requests/s at the simulator | within 5 % | FREQUENCY_LIMITED after the first second | in all | measured over | CPU ms/order | CPU-bound orders/s | violations | load avg before → after |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		fmt.Fprintf(&b, "| %.0f/s | %.0f/s | %d | **%.1f** | %v | **%d** | %d | %.1f s | %.2f | %.0f | %d | %s → %s |\n\n",
			l.Cap, l.OfferedRate, l.Orders, l.WeChatRequestsPerSecond, l.WithinFivePercent, l.FrequencyLimited, l.FrequencyLimitedTotal,
			l.MeasuredSeconds, l.TotalCPUPerOrderMS, l.CPUBoundOrdersPerSecond, l.Violations, l.LoadBefore, l.LoadAfter)
		fmt.Fprintf(&b, "Workers: %s; the simulator answers %.0f ms after each request and 429 FREQUENCY_LIMITED above the cap.\n\n", l.WorkerSettings, l.SimLatencyMS)
	}
	return b.String()
}

// mergeLatest reads the report in dir, if any, so that a run of only the
// limit runs keeps the other figures.
func mergeLatest(dir string, res *Results) {
	b, err := os.ReadFile(filepath.Join(dir, "latest.json")) //nolint:gosec // the report's own path
	if err != nil {
		return
	}
	var old Results
	if json.Unmarshal(b, &old) != nil {
		return
	}
	res.Date, res.Machine, res.Floor, res.Micro, res.Runs, res.Notes = old.Date, old.Machine, old.Floor, old.Micro, old.Runs, old.Notes
}
