// Command bench is `make bench`: the Go micro-benchmarks that matter and an
// end-to-end load test of the product on this machine, written to
// bench/results/latest.json and bench/results/latest.md.
//
// The end-to-end runs start a real nats-server and redis-server when they are
// on PATH (else the embedded NATS server and the JetStream KV store), the
// wechatsim binary with faults off, and worker processes built from this
// module (package loadgen/stack), then publish orders with loadgen and
// measure:
//
//   - orders per second and p50/p99 latency (job created → outcome stored),
//     with every correctness check of loadgen, the simulator's create count
//     per order included (at most 1 with faults off);
//   - CPU-seconds per order of every process, from /proc;
//   - the floor: the unavoidable CPU of one order, its RSA-2048 signs and
//     verifies (the worker signs the request and the client pay parameters
//     and verifies the answer; the simulator verifies the request and signs
//     the answer), measured here on one core, and ratio_to_floor = orders/s ÷
//     (cores ÷ floor CPU per order).
//
// Runs: 1 worker at peak, 2 workers at peak (the scale check: same machine,
// same total CPU), 2 workers at half the peak rate (latency), and, when cgo
// works, 2 workers built with GOEXPERIMENT=boringcrypto. Then, on a stack of
// its own with two workers with default settings, the runs of the adaptive
// concurrency limit at WeChat Pay's latency and of a merchant's shared rate
// limit (limits.go); `bench -only-limits` (`make bench/latency`) does just
// those and keeps the other figures of latest.json.
// Beside them, the cluster run (cluster.go): 2 workers on one nats-server (R1)
// and on a 3-node JetStream cluster (R3), into cluster.{json,md}.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/loadgen"
	"github.com/wxcombine/orderworker/loadgen/stack"
	"github.com/wxcombine/orderworker/wechat"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type options struct {
	orders, inFlight   int
	out                string
	micro, boring, e2e bool
	benchtime          string
	runs               map[string]bool

	// The limit runs (limits.go).
	limits, onlyLimits       bool
	limitLatencies           []time.Duration
	limitOrders, limitWarmup int
	halfSeconds              float64
	rateCap                  float64
	rateOrders               int
}

// wants reports whether the run name was asked for with -runs.
func (o *options) wants(name string) bool { return len(o.runs) == 0 || o.runs[name] }

// Results is the JSON report.
type Results struct {
	Date    time.Time `json:"date"`
	Machine Machine   `json:"machine"`
	Floor   Floor     `json:"floor"`
	Micro   []Micro   `json:"micro"`
	Runs    []Run     `json:"runs"`
	// LatencyRuns and RateLimitRun are the limit runs, done at LimitsDate
	// on LimitsMachine (`make bench/latency` redoes them alone, keeping
	// the other figures and their Machine).
	LimitsDate    time.Time     `json:"limits_date"`
	LimitsMachine *Machine      `json:"limits_machine,omitempty"`
	LatencyRuns   []LatencyRun  `json:"latency_runs"`
	NoLatencyRun  *Run          `json:"no_latency_run"`
	RateLimitRun  *RateLimitRun `json:"rate_limit_run"`
	Notes         []string      `json:"notes"`
}

// Machine describes where the figures were measured.
type Machine struct {
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model"`
	GoVersion string `json:"go_version"`
	OS        string `json:"os"`
	NATS      string `json:"nats"`
	Store     string `json:"idempotency_store"`
	// LoadBefore and LoadAfter are /proc/loadavg's 1, 5 and 15 minute
	// load averages when the benchmark started and ended: other work on
	// the machine lowers orders/s and raises the latencies.
	LoadBefore string `json:"load_avg_before,omitempty"`
	LoadAfter  string `json:"load_avg_after,omitempty"`
}

// Floor is the unavoidable CPU of one order on this machine.
type Floor struct {
	SignMS   float64 `json:"sign_ms"`
	VerifyMS float64 `json:"verify_ms"`
	// SignsPerOrder and VerifiesPerOrder are averaged over the trade-type
	// mix: h5 and native orders need no pay-parameter signature.
	SignsPerOrder    float64 `json:"signs_per_order"`
	VerifiesPerOrder float64 `json:"verifies_per_order"`
	CPUPerOrderMS    float64 `json:"cpu_per_order_ms"`
	// CeilingOrdersPerSec is cores ÷ CPUPerOrder.
	CeilingOrdersPerSec float64 `json:"ceiling_orders_per_sec"`
	// Clock is how a sign and a verify were timed: "thread CPU time" (on
	// Linux), or "wall clock", which other work on the machine inflates.
	Clock string `json:"clock"`
}

// Micro is one Go benchmark.
type Micro struct {
	Package string             `json:"package"`
	Name    string             `json:"name"`
	Build   string             `json:"build"`
	NsPerOp float64            `json:"ns_per_op"`
	Extra   map[string]float64 `json:"extra,omitempty"`
}

// Run is one end-to-end run.
type Run struct {
	Name       string  `json:"name"`
	Build      string  `json:"build"`
	Workers    int     `json:"workers"`
	InFlight   int     `json:"in_flight_per_worker"`
	Rate       float64 `json:"offered_rate"`
	SimLatency string  `json:"sim_latency"`
	Orders     int     `json:"orders"`
	// OrdersPerSec is orders with an outcome per second.
	OrdersPerSec float64 `json:"orders_per_sec"`
	P50MS        float64 `json:"p50_ms"`
	P90MS        float64 `json:"p90_ms"`
	P99MS        float64 `json:"p99_ms"`
	// CPUPerOrderMS is CPU milliseconds per order by process ("bench"
	// includes loadgen and, when embedded, the NATS server).
	CPUPerOrderMS      map[string]float64 `json:"cpu_per_order_ms"`
	TotalCPUPerOrderMS float64            `json:"total_cpu_per_order_ms"`
	// RatioToFloor is OrdersPerSec ÷ (cores ÷ the default build's floor).
	RatioToFloor float64 `json:"ratio_to_floor"`
	// CPURatioToFloor is the floor's CPU per order ÷ TotalCPUPerOrderMS:
	// what RatioToFloor would be with the cores fully used by this run,
	// which other work on the machine does not lower.
	CPURatioToFloor float64 `json:"cpu_ratio_to_floor"`
	// BoundOrdersPerSec is workers × in-flight ÷ simulator latency, when
	// the simulator is slowed down.
	BoundOrdersPerSec float64 `json:"bound_orders_per_sec,omitempty"`
	Violations        int     `json:"violations"`
	SimCreatesMax     int     `json:"sim_creates_max"`
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o := &options{}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.orders, "orders", 5000, "orders per peak run")
	fs.IntVar(&o.inFlight, "in-flight", 32, "WORKER_IN_FLIGHT of the peak runs")
	fs.StringVar(&o.out, "out", "bench/results", "directory of latest.json and latest.md")
	fs.BoolVar(&o.micro, "micro", true, "run the Go micro-benchmarks")
	fs.BoolVar(&o.e2e, "e2e", true, "run the end-to-end benchmark")
	fs.BoolVar(&o.boring, "boring", true, "also run with GOEXPERIMENT=boringcrypto when cgo works")
	fs.StringVar(&o.benchtime, "benchtime", "1s", "go test -benchtime of the micro-benchmarks")
	clusterFlags(fs) // the cluster run: cluster.go
	runs := fs.String("runs", "", "comma-separated end-to-end runs to do (peak-1w, peak-2w, half-rate-2w); default all")
	fs.BoolVar(&o.limits, "limits", true, "do the limit runs (latency_runs, rate_limit_run)")
	fs.BoolVar(&o.onlyLimits, "only-limits", false, "do only the limit runs, keeping the other figures of latest.json")
	latencies := fs.String("limit-latencies", "100ms,300ms", "simulated WeChat Pay latencies of the latency runs")
	fs.IntVar(&o.limitOrders, "limit-orders", 6000, "orders of each latency run")
	fs.IntVar(&o.limitWarmup, "limit-warmup", 1000, "orders before each latency run, while the limiters find their level")
	fs.Float64Var(&o.halfSeconds, "half-seconds", 8, "seconds of orders of each half-rate check")
	fs.Float64Var(&o.rateCap, "rate-cap", 100, "requests/s cap of the rate-limit run's merchant; 0 skips the run")
	fs.IntVar(&o.rateOrders, "rate-orders", 2000, "orders of the rate-limit run")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	for l := range strings.SplitSeq(*latencies, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(l))
		if err != nil || d <= 0 {
			return fmt.Errorf("-limit-latencies: %q is not a positive duration", l)
		}
		o.limitLatencies = append(o.limitLatencies, d)
	}
	if *runs != "" {
		o.runs = map[string]bool{}
		for r := range strings.SplitSeq(*runs, ",") {
			o.runs[strings.TrimSpace(r)] = true
		}
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	res := &Results{Date: time.Now().UTC(), Machine: machine()}
	res.Machine.LoadBefore = loadAvg()
	say := func(format string, args ...any) { fmt.Fprintf(stdout, "bench: "+format+"\n", args...) }
	if clusterOpt.only {
		return clusterBench(ctx, log, say)
	}
	if o.onlyLimits {
		mergeLatest(o.out, res)
		res.LimitsDate = time.Now().UTC()
		if err := limitRuns(ctx, o, res, log, say); err != nil {
			return err
		}
		return writeResults(o, res, stdout, say)
	}

	say("measuring the floor (RSA-2048 sign and verify on one core) …")
	floor, err := measureFloor()
	if err != nil {
		return err
	}
	res.Floor = floor
	boringOK := o.boring && cgoWorks(ctx)
	if o.micro {
		say("running the Go micro-benchmarks (-benchtime %s) …", o.benchtime)
		micro, err := runMicro(ctx, o.benchtime, nil, "./wechat/", "./wechat/wechatsim/", "./idempotency/", "./notifier/")
		if err != nil {
			return err
		}
		res.Micro = append(res.Micro, micro...)
		if boringOK {
			m, err := runMicroBench(ctx, "1s", []string{"GOEXPERIMENT=boringcrypto", "CGO_ENABLED=1"}, "^BenchmarkSign", "./wechat/")
			if err != nil {
				res.Notes = append(res.Notes, "boringcrypto micro-benchmark failed: "+err.Error())
			}
			res.Micro = append(res.Micro, m...)
		}
	}
	if o.e2e {
		if err := endToEnd(ctx, o, res, boringOK, log, say); err != nil {
			return err
		}
		if o.limits {
			res.LimitsDate = time.Now().UTC()
			if err := limitRuns(ctx, o, res, log, say); err != nil {
				return err
			}
		}
	}
	if o.e2e && clusterOpt.run {
		if err := clusterBench(ctx, log, say); err != nil {
			return err
		}
	}
	res.Machine.LoadAfter = loadAvg()
	return writeResults(o, res, stdout, say)
}

// writeResults writes latest.json and latest.md, and fails on correctness
// violations.
func writeResults(o *options, res *Results, stdout io.Writer, say func(string, ...any)) error {
	if err := os.MkdirAll(o.out, 0o750); err != nil {
		return err
	}
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(o.out, "latest.json"), append(b, '\n'), 0o644); err != nil { //nolint:gosec // a report, meant to be read
		return err
	}
	md := markdown(res)
	if err := os.WriteFile(filepath.Join(o.out, "latest.md"), []byte(md), 0o644); err != nil { //nolint:gosec // a report, meant to be read
		return err
	}
	fmt.Fprint(stdout, "\n"+md)
	say("wrote %s and %s", filepath.Join(o.out, "latest.json"), filepath.Join(o.out, "latest.md"))
	for _, r := range res.Runs {
		if r.Violations > 0 {
			return fmt.Errorf("run %s: %d correctness violations", r.Name, r.Violations)
		}
	}
	for _, r := range res.LatencyRuns {
		if r.Violations+r.HalfRate.Violations > 0 {
			return fmt.Errorf("run %s: %d correctness violations", r.Name, r.Violations+r.HalfRate.Violations)
		}
	}
	if r := res.RateLimitRun; r != nil && r.Violations > 0 {
		return fmt.Errorf("rate-limit run: %d correctness violations", r.Violations)
	}
	return nil
}

func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	return m
}

// loadAvg answers the 1, 5 and 15 minute load averages, or "" off Linux.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// measureFloor times RSA-2048 PKCS#1 v1.5 SHA-256 signs and verifies with
// the wechat package on one goroutine.
func measureFloor() (Floor, error) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return Floor{}, err
	}
	key := wechat.NewPrivateKey(k)
	msg := wechat.RequestMessage("POST", "/v3/combine-transactions/jsapi", time.Now().Unix(), wechat.NewNonce(), []byte(`{"combine_appid":"wx1"}`))
	sig, err := wechat.Sign(key, msg)
	if err != nil {
		return Floor{}, err
	}
	// Each operation is timed by the CPU time of its thread, so that other
	// work on the machine does not inflate the floor (the wall clock would:
	// the loop shares its core). Without thread CPU time, the wall clock.
	clock := "thread CPU time"
	if _, ok := threadCPU(); !ok {
		clock = "wall clock"
	}
	time1 := func(n int, f func() error) (time.Duration, error) {
		runtime.GC()
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		cpu0, _ := threadCPU()
		start := time.Now()
		for range n {
			if err := f(); err != nil {
				return 0, err
			}
		}
		elapsed := time.Since(start)
		if cpu1, ok := threadCPU(); ok {
			elapsed = cpu1 - cpu0
		}
		return elapsed / time.Duration(n), nil
	}
	sign, err := time1(400, func() error { _, err := wechat.Sign(key, msg); return err })
	if err != nil {
		return Floor{}, err
	}
	verify, err := time1(4000, func() error { return wechat.VerifySignature(&k.PublicKey, msg, sig) })
	if err != nil {
		return Floor{}, err
	}
	// Default mix app, jsapi, h5, native: half the orders have pay
	// parameters to sign.
	f := Floor{SignMS: ms(sign), VerifyMS: ms(verify), SignsPerOrder: 2.5, VerifiesPerOrder: 2, Clock: clock}
	f.CPUPerOrderMS = round3(f.SignsPerOrder*f.SignMS + f.VerifiesPerOrder*f.VerifyMS)
	f.CeilingOrdersPerSec = round1(float64(runtime.NumCPU()) / (f.CPUPerOrderMS / 1000))
	return f, nil
}

// cgoWorks reports whether a cgo build (needed by boringcrypto) succeeds.
func cgoWorks(ctx context.Context) bool {
	if _, err := exec.LookPath("gcc"); err != nil {
		if _, err := exec.LookPath("cc"); err != nil {
			return false
		}
	}
	cmd := exec.CommandContext(ctx, "go", "env", "CGO_ENABLED")
	out, err := cmd.Output()
	return err == nil && strings.TrimSpace(string(out)) == "1"
}

func runMicro(ctx context.Context, benchtime string, env []string, pkgs ...string) ([]Micro, error) {
	var all []Micro
	for _, p := range pkgs {
		m, err := runMicroBench(ctx, benchtime, env, ".", p)
		if err != nil {
			return all, err
		}
		all = append(all, m...)
	}
	return all, nil
}

var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(-\d+)?\s+(\d+)\s+(.*)$`)

// runMicroBench runs `go test -bench pattern` in pkg and parses its lines.
func runMicroBench(ctx context.Context, benchtime string, env []string, pattern, pkg string) ([]Micro, error) {
	//nolint:gosec // G204: go test of this module's packages
	cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", pattern, "-benchtime", benchtime, "-count", "1", pkg)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("go test -bench %s %s: %w\n%s", pattern, pkg, err, out)
	}
	build := "default"
	if len(env) > 0 {
		build = "boringcrypto"
	}
	var ms []Micro
	for line := range strings.SplitSeq(string(out), "\n") {
		g := benchLine.FindStringSubmatch(strings.TrimSpace(line))
		if g == nil {
			continue
		}
		m := Micro{Package: strings.Trim(pkg, "./"), Name: g[1], Build: build, Extra: map[string]float64{}}
		f := strings.Fields(g[4])
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			if f[i+1] == "ns/op" {
				m.NsPerOp = v
			} else {
				m.Extra[f[i+1]] = v
			}
		}
		ms = append(ms, m)
	}
	return ms, nil
}

// endToEnd runs the load scenarios against a fresh stack per build.
func endToEnd(ctx context.Context, o *options, res *Results, boringOK bool, log *slog.Logger, say func(string, ...any)) error {
	natsBin, cleanup, err := natsServer(ctx, say)
	if err != nil {
		return err
	}
	defer cleanup()
	redisBin, _ := exec.LookPath("redis-server")
	res.Machine.NATS, res.Machine.Store = builtNATS("process"), "JetStream KV"
	if redisBin != "" {
		res.Machine.Store = "Redis (" + redisBin + ")"
	}
	builds := []struct {
		name string
		env  []string
	}{{"default", nil}}
	if boringOK {
		builds = append(builds, struct {
			name string
			env  []string
		}{"boringcrypto", []string{"GOEXPERIMENT=boringcrypto", "CGO_ENABLED=1"}})
	}
	for _, b := range builds {
		say("end to end, %s build: starting %s, %s, wechatsim (faults off) and 1 worker …", b.name, res.Machine.NATS, res.Machine.Store)
		st, err := stack.Start(ctx, stack.Config{
			BuildEnv: b.env, NATSServerBin: natsBin, RedisServerBin: redisBin, Workers: 1,
			WorkerEnv: map[string]string{"WORKER_IN_FLIGHT": strconv.Itoa(o.inFlight), "MAX_ACK_PENDING": "1024"},
			Logger:    log,
		})
		if err != nil {
			return err
		}
		err = scenarios(ctx, o, res, st, b.name, say)
		if cerr := st.Close(); cerr != nil {
			log.Warn("stop", slog.Any("error", cerr))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func scenarios(ctx context.Context, o *options, res *Results, st *stack.Stack, build string, say func(string, ...any)) error {
	nc, err := nats.Connect(st.NATSURL, nats.Name("bench"))
	if err != nil {
		return err
	}
	defer nc.Close()
	sim := &loadgen.SimClient{BaseURL: st.SimURL}
	load := func(name string, workers, inFlight, orders int, rate float64, latency time.Duration) (Run, error) {
		r, err := measure(ctx, nc, st, sim, name, orders, rate)
		if err != nil {
			return r, err
		}
		r.Build, r.Workers, r.InFlight, r.Rate = build, workers, inFlight, rate
		if latency > 0 {
			r.SimLatency = latency.String()
			r.BoundOrdersPerSec = round1(float64(workers*inFlight) / latency.Seconds())
		}
		r.RatioToFloor = round3(r.OrdersPerSec / res.Floor.CeilingOrdersPerSec)
		if r.TotalCPUPerOrderMS > 0 {
			r.CPURatioToFloor = round3(res.Floor.CPUPerOrderMS / r.TotalCPUPerOrderMS)
		}
		say("  %-14s %7.1f orders/s  p50 %6.1fms  p99 %7.1fms  CPU %.2fms/order  ratio_to_floor %.2f  violations %d",
			name, r.OrdersPerSec, r.P50MS, r.P99MS, r.TotalCPUPerOrderMS, r.RatioToFloor, r.Violations)
		res.Runs = append(res.Runs, r)
		return r, nil
	}
	// Warm up connections, the KV bucket or Redis scripts, and the caches.
	if _, err := measure(ctx, nc, st, sim, "warmup", 300, 0); err != nil {
		return err
	}
	if build == "default" && o.wants("peak-1w") {
		if _, err := load("peak-1w", 1, o.inFlight, o.orders, 0, 0); err != nil {
			return err
		}
	}
	if _, err := st.AddWorker(ctx, nil); err != nil {
		return err
	}
	if !o.wants("peak-2w") && build == "default" {
		return nil
	}
	peak, err := load("peak-2w", 2, o.inFlight, o.orders, 0, 0)
	if err != nil || build != "default" {
		return err
	}
	if o.wants("half-rate-2w") {
		half := math.Round(peak.OrdersPerSec / 2)
		if _, err := load("half-rate-2w", 2, o.inFlight, int(half*8), half, 0); err != nil {
			return err
		}
	}
	return nil
}

// measure publishes orders and answers the run's figures, CPU per process
// included.
func measure(ctx context.Context, nc *nats.Conn, st *stack.Stack, sim *loadgen.SimClient, name string, orders int, rate float64) (Run, error) {
	// The bench never pays its orders, so every earlier run's order would
	// be queried by reconciliation (RECONCILE_SCHEDULE, first at 1m)
	// during this one, its calls and CPU counted here, and against a
	// merchant's rate cap. Each run measures its own orders: it starts with
	// the schedule's stream empty, and lasts less than the first step.
	if err := purgeReconcile(ctx, nc); err != nil {
		return Run{}, err
	}
	procs := st.Processes()
	before := cpuSnapshot(procs)
	var after map[string]time.Duration
	rep, err := loadgen.Run(ctx, nc, loadgen.Config{
		Merchants:          st.Merchants,
		Orders:             orders,
		Rate:               rate,
		MaxInFlight:        1024,
		MaxCreatesPerOrder: 1,
		// Outcomes may trail the publishing by the whole queue (a peak
		// run publishes as fast as it can); the wait ends as soon as every
		// outcome arrived, so a long bound costs nothing, and a short one
		// would count the queue's tail as missing outcomes.
		Wait:   5 * time.Minute,
		Linger: 100 * time.Millisecond,
		CreateCountsFunc: func(ctx context.Context, keys []loadgen.OrderKey) (map[loadgen.OrderKey]int, error) {
			after = cpuSnapshot(procs) // before the simulator answers the look-ups
			return sim.CreateCounts(ctx, keys)
		},
	})
	if err != nil {
		return Run{}, fmt.Errorf("run %s: %w", name, err)
	}
	r := Run{
		Name: name, Orders: rep.Published.Orders, OrdersPerSec: round1(rep.Throughput),
		P50MS: rep.Latency.P50MS, P90MS: rep.Latency.P90MS, P99MS: rep.Latency.P99MS,
		CPUPerOrderMS: map[string]float64{}, Violations: rep.ViolationTotal,
	}
	if rep.Sim != nil {
		r.SimCreatesMax = rep.Sim.MaxPerOrder
	}
	total := 0.0
	for k, v := range after {
		d := v - before[k]
		if strings.HasPrefix(k, "worker-") {
			k = "workers"
		}
		per := float64(d) / float64(time.Millisecond) / float64(max(rep.Published.Orders, 1))
		r.CPUPerOrderMS[k] = round3(r.CPUPerOrderMS[k] + per)
		total += per
	}
	r.TotalCPUPerOrderMS = round3(total)
	return r, nil
}

// cpuSnapshot answers the CPU time of every running process and of this one.
func cpuSnapshot(procs []*stack.Process) map[string]time.Duration {
	m := map[string]time.Duration{"bench": stack.SelfCPUTime()}
	for _, p := range procs {
		if !p.Running() {
			continue
		}
		if d, err := stack.CPUTime(p.PID()); err == nil {
			m[p.Name] = d
		}
	}
	return m
}

func markdown(r *Results) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Benchmark results\n\n%s on %d × %s, %s, %s; NATS: %s; idempotency store: %s.\n\n",
		r.Date.Format("2006-01-02 15:04 MST"), r.Machine.CPUs, r.Machine.CPUModel, r.Machine.GoVersion, r.Machine.OS, r.Machine.NATS, r.Machine.Store)
	if r.Machine.LoadBefore != "" {
		fmt.Fprintf(&b, "Load average (1, 5, 15 min) at the start: %s; at the end: %s. Other work on the machine lowers orders/s and raises p99; CPU ms per order is less sensitive to it.\n\n", r.Machine.LoadBefore, r.Machine.LoadAfter)
	}
	f := r.Floor
	fmt.Fprintf(&b, "**Floor**: RSA-2048 sign %.3f ms, verify %.3f ms on one core (%s); %.1f signs + %.0f verifies per order = %.3f ms CPU per order, so %d cores allow at most **%.0f orders/s**.\n\n",
		f.SignMS, f.VerifyMS, f.Clock, f.SignsPerOrder, f.VerifiesPerOrder, f.CPUPerOrderMS, r.Machine.CPUs, f.CeilingOrdersPerSec)
	if len(r.Runs) > 0 {
		procs := map[string]bool{}
		for _, run := range r.Runs {
			for k := range run.CPUPerOrderMS {
				procs[k] = true
			}
		}
		var names []string
		for k := range procs {
			names = append(names, k)
		}
		sort.Strings(names)
		b.WriteString("## End to end\n\n| run | build | workers × in-flight | offered | orders | orders/s | p50 ms | p99 ms | CPU ms/order total (" + strings.Join(names, ", ") + ") | ratio_to_floor | floor ÷ CPU | violations |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, run := range r.Runs {
			offered := "max"
			if run.Rate > 0 {
				offered = fmt.Sprintf("%.0f/s", run.Rate)
			}
			if run.SimLatency != "" {
				offered += ", sim +" + run.SimLatency + fmt.Sprintf(" (bound %.0f/s)", run.BoundOrdersPerSec)
			}
			var per []string
			for _, k := range names {
				per = append(per, fmt.Sprintf("%.2f", run.CPUPerOrderMS[k]))
			}
			fmt.Fprintf(&b, "| %s | %s | %d × %d | %s | %d | %.1f | %.1f | %.1f | %.2f (%s) | %.2f | %.2f | %d |\n",
				run.Name, run.Build, run.Workers, run.InFlight, offered, run.Orders, run.OrdersPerSec, run.P50MS, run.P99MS,
				run.TotalCPUPerOrderMS, strings.Join(per, ", "), run.RatioToFloor, run.CPURatioToFloor, run.Violations)
		}
		b.WriteString("\nratio_to_floor = orders/s ÷ (cores ÷ floor CPU per order). floor ÷ CPU = floor CPU per order ÷ measured CPU per order of all the run's processes: the ratio the run would reach with both cores to itself.\n\n")
	}
	b.WriteString(limitsMarkdown(r))
	if len(r.Micro) > 0 {
		b.WriteString("## Go benchmarks\n\n| package | benchmark | build | ns/op | other |\n|---|---|---|---|---|\n")
		for _, m := range r.Micro {
			var extra []string
			for k, v := range m.Extra {
				extra = append(extra, fmt.Sprintf("%g %s", v, k))
			}
			sort.Strings(extra)
			fmt.Fprintf(&b, "| %s | %s | %s | %.0f | %s |\n", m.Package, m.Name, m.Build, m.NsPerOp, strings.Join(extra, ", "))
		}
		b.WriteString("\n")
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "- %s\n", n)
	}
	return b.String()
}

func ms(d time.Duration) float64 { return round3(float64(d) / float64(time.Millisecond)) }

func round1(v float64) float64 { return math.Round(v*10) / 10 }

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

// purgeReconcile empties the reconciliation schedule's stream; a stack
// whose workers have not created it yet has nothing to purge.
func purgeReconcile(ctx context.Context, nc *nats.Conn) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	s, err := js.Stream(ctx, events.StreamReconcile)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("bench: reconcile stream: %w", err)
	}
	if err := s.Purge(ctx); err != nil {
		return fmt.Errorf("bench: purge %s: %w", events.StreamReconcile, err)
	}
	return nil
}
