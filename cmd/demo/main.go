// Command demo shows the whole product working on one machine with nothing
// but Go installed: `make demo`, or `go run ./cmd/demo` from the repository.
//
// It builds the worker, the notifier and the WeChat Pay simulator and starts
// them as they run in production (configured through their environment
// variables), with an embedded NATS JetStream server and the JetStream KV
// idempotency store (Redis instead when REDIS_ADDRS is set). The simulator
// injects transient faults (SYSTEMERROR, BANKERROR, FREQUENCY_LIMITED, 502,
// a create whose answer is lost). The demo then submits a mixed batch of
// orders — every trade type of the flavour, duplicates inside and after the
// duplicate window, invalid and malformed jobs — pays a quarter of the
// created orders through the simulator so that its notifications flow to the
// notifier, checks every outcome, and prints a summary table.
//
// The last line is a summary a script can check:
//
//	demo: ok orders=200 prepay=186 failed=14 dead_letters=14 payments=46 violations=0
//
// It exits 0 when no violation was found. With -keep it keeps everything
// running and prints the endpoints (NATS, simulator admin, metrics) until
// interrupted.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wxcombine/orderworker/loadgen"
	"github.com/wxcombine/orderworker/loadgen/stack"
	"github.com/wxcombine/orderworker/metrics"
	"github.com/wxcombine/orderworker/wechat"
	"github.com/wxcombine/orderworker/wechat/wechatsim"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// options are the demo's flags.
type options struct {
	orders, workers int
	rate            float64
	flavour         string
	keep, noFaults  bool
	verbose         bool
	seed            uint64
	reportPath      string
	binDir          string
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.orders, "orders", 200, "distinct orders to submit")
	fs.IntVar(&o.workers, "workers", 1, "worker processes")
	fs.Float64Var(&o.rate, "rate", 100, "jobs published per second, 0 = as fast as possible")
	fs.StringVar(&o.flavour, "flavour", string(wechat.FlavourMerchant), "WeChat Pay product: merchant, partner, ecommerce or individual")
	fs.BoolVar(&o.keep, "keep", false, "keep everything running after the summary, until interrupted")
	fs.BoolVar(&o.noFaults, "no-faults", false, "turn the simulator's fault injection off")
	fs.Uint64Var(&o.seed, "seed", 0, "seed of the batch (default random, printed)")
	fs.StringVar(&o.reportPath, "report", "", "also write loadgen's JSON report to this `file`")
	fs.StringVar(&o.binDir, "bin-dir", "", "use prebuilt worker, notifier and wechatsim binaries from this `dir`")
	fs.BoolVar(&o.verbose, "v", false, "log each step")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if o.orders < 1 || o.workers < 1 {
		return nil, errors.New("-orders and -workers must be at least 1")
	}
	return o, nil
}

// faultArgs are the simulator's transient faults: every one is retried by
// the worker, so every valid order still ends created.
var faultArgs = []string{
	"-system-error-rate", "0.03", "-bank-error-rate", "0.02", "-frequency-limited-rate", "0.02",
	"-bad-502-rate", "0.02", "-timeout-after-create-rate", "0.01",
}

// workerEnv tunes the worker for a short demo: calls time out after 2s (a
// create whose answer is lost is retried sooner) and retries start after
// 100ms. Everything else is the production default.
var workerEnv = map[string]string{
	"WECHAT_CALL_TIMEOUT":    "2s",
	"RETRY_INITIAL_INTERVAL": "100ms",
	"RETRY_MAX_INTERVAL":     "1s",
	"WORKER_IN_FLIGHT":       "16",
	"WORKER_IN_FLIGHT_MIN":   "16", // a fixed level: the demo's timings stay comparable
	"REDELIVERY_DELAYS":      "500ms,1s,2s",
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "demo:", err)
		return 2
	}
	flavour, err := wechat.ParseFlavour(o.flavour)
	if err != nil {
		fmt.Fprintln(stderr, "demo:", err)
		return 2
	}
	level := slog.LevelWarn
	if o.verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	started := time.Now()
	say := func(format string, args ...any) { fmt.Fprintf(stdout, "demo: "+format+"\n", args...) }

	simArgs := []string{"-notify-speedup", "60"}
	if !o.noFaults {
		simArgs = append(simArgs, faultArgs...)
	}
	backend := "JetStream KV"
	if getenv("REDIS_ADDRS") != "" {
		backend = "Redis at " + getenv("REDIS_ADDRS")
	}
	say("building and starting embedded NATS JetStream, wechatsim, %d worker(s) and the notifier (idempotency: %s) …", o.workers, backend)
	tracingEnv := consoleTracingEnv(getenv)
	wenv := maps.Clone(workerEnv)
	maps.Copy(wenv, tracingEnv)
	prog := &progress{w: stdout, last: time.Now()}
	beat, stopBeat := context.WithCancel(ctx)
	go prog.heartbeat(beat, 10*time.Second, func(d time.Duration) string { // Owned by run: ends with stopBeat.
		if o.binDir == "" {
			return fmt.Sprintf("still building and starting (%s; the first build compiles every dependency, a minute or two)", d)
		}
		return fmt.Sprintf("still starting (%s)", d)
	})
	st, err := stack.Start(ctx, stack.Config{
		BinDir: o.binDir, RedisAddrs: getenv("REDIS_ADDRS"), Flavour: flavour,
		Workers: o.workers, WorkerEnv: wenv, NotifierEnv: tracingEnv, SimArgs: simArgs, Logger: slog.New(handler{p: prog, next: log.Handler()}),
	})
	stopBeat()
	if err != nil {
		fmt.Fprintln(stderr, "demo:", err)
		say("FAIL could not start: %v", firstLine(err))
		return 1
	}
	defer func() {
		if err := st.Close(); err != nil {
			log.Warn("stop", slog.Any("error", err))
		}
	}()
	say("started in %s; submitting %d orders (%s trade types, duplicates, invalid and malformed jobs, faults %s) …",
		time.Since(started).Round(100*time.Millisecond), o.orders, strings.Join(tradeTypeNames(flavour), "/"), onOff(!o.noFaults))

	nc, err := nats.Connect(st.NATSURL, nats.Name("demo"))
	if err != nil {
		fmt.Fprintln(stderr, "demo:", err)
		return 1
	}
	defer nc.Close()
	sim := &loadgen.SimClient{BaseURL: st.SimURL}
	rep, err := loadgen.Run(ctx, nc, loadgen.Config{
		Flavour:            flavour,
		Merchants:          st.Merchants,
		Orders:             o.orders,
		Rate:               o.rate,
		DuplicateShare:     0.2,
		LateDuplicateShare: 0.3,
		InvalidShare:       0.04,
		MalformedShare:     0.02,
		PayShare:           0.25,
		PayFunc:            sim.Pay,
		CreateCountsFunc:   sim.CreateCounts,
		Seed:               o.seed,
		Wait:               40 * time.Second,
		Logger:             log,
		ProgressFunc:       prog.run,
		ProgressInterval:   5 * time.Second,
	})
	if err != nil {
		fmt.Fprintln(stderr, "demo:", err)
		if rep == nil {
			say("FAIL %v", firstLine(err))
			return 1
		}
	}
	if o.reportPath != "" {
		if err := rep.WriteFile(o.reportPath); err != nil {
			fmt.Fprintln(stderr, "demo:", err)
		}
	}
	sum := gather(ctx, st, sim, log)
	printSummary(stdout, rep, sum)
	if tracingEnv != nil {
		time.Sleep(500 * time.Millisecond) // the exporters' last batch
		var logs []string
		for _, w := range st.Workers() {
			logs = append(logs, w.LogPath)
		}
		if err := printOrderTrace(stdout, logs); err != nil {
			say("no trace to show: %v", err)
		}
	}
	if o.keep {
		printEndpoints(stdout, st)
		say("running until interrupted (Ctrl-C) …")
		<-ctx.Done()
	}
	line := fmt.Sprintf("orders=%d prepay=%d failed=%d dead_letters=%d payments=%d violations=%d",
		rep.Published.Orders, rep.Outcomes.Created, rep.Outcomes.Failed, rep.Outcomes.DeadLetters,
		rep.Outcomes.PaymentEvents, rep.ViolationTotal)
	if err != nil || !rep.OK {
		say("FAIL %s (%.1fs)", line, time.Since(started).Seconds())
		return 1
	}
	say("ok %s (%.1fs)", line, time.Since(started).Seconds())
	return 0
}

// summary is what the services report about the run.
type summary struct {
	worker, notifier stack.Metrics
	sim              *wechatsim.Stats
}

func gather(ctx context.Context, st *stack.Stack, sim *loadgen.SimClient, log *slog.Logger) summary {
	var s summary
	for _, w := range st.Workers() {
		m, err := stack.Scrape(ctx, w.AdminURL+"/metrics")
		if err != nil {
			log.Warn("scrape worker", slog.Any("error", err))
			continue
		}
		s.worker = s.worker.Add(m)
	}
	if p := st.Process("notifier"); p != nil {
		m, err := stack.Scrape(ctx, p.AdminURL+"/metrics")
		if err != nil {
			log.Warn("scrape notifier", slog.Any("error", err))
		}
		s.notifier = m
	}
	if stats, err := sim.Stats(ctx); err == nil {
		s.sim = &stats
	} else {
		log.Warn("simulator stats", slog.Any("error", err))
	}
	return s
}

func printSummary(w io.Writer, r *loadgen.Report, s summary) {
	p, o := r.Published, r.Outcomes
	fmt.Fprintf(w, "\ndemo: summary (run %s, seed %d, flavour %s)\n", r.RunID, r.Seed, r.Flavour)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) {
		fmt.Fprintf(tw, "  %s\t%s\n", k, fmt.Sprintf(format, args...))
	}
	row("orders submitted", "%d (%s)", p.Orders, counts(p.ByKind))
	row("  by trade type", "%s", counts(p.ByTradeType))
	row("duplicates", "%d published (%d after the dedupe window): %d dropped by JetStream, %.0f answered from the idempotency store",
		p.Duplicates, p.LateDuplicates, p.DroppedByJetStream,
		s.worker.Sum("orderworker_pipeline_jobs_total", "outcome", metrics.OutcomeDuplicate))
	row("prepay events", "%d orders created", o.Created)
	row("failure events", "%d%s", o.Failed, paren(counts(o.FailedByCode)))
	retries := s.worker.Sum("orderworker_pipeline_retries_total")
	row("retries", "%.0f (%.0f in process, %.0f redeliveries) after %s",
		retries, s.worker.Sum("orderworker_pipeline_retries_total", "kind", metrics.RetryInProcess),
		s.worker.Sum("orderworker_pipeline_retries_total", "kind", metrics.RetryRedelivery), faults(s.sim))
	row("dead letters", "%d%s", o.DeadLetters, paren(counts(o.DeadLettersByReason)))
	notified := s.notifier.Sum("orderworker_notifier_notifications_total", "result", metrics.NotificationOK)
	row("payments notified", "%d paid, %.0f notifications accepted, %d payment events", o.Paid, notified, o.PaymentEvents)
	row("latency", "p50 %.1fms  p90 %.1fms  p99 %.1fms  max %.1fms (job created → outcome stored)",
		r.Latency.P50MS, r.Latency.P90MS, r.Latency.P99MS, r.Latency.MaxMS)
	row("throughput", "%.1f orders/s at the offered rate (make bench measures capacity)", r.Throughput)
	if r.Sim != nil {
		row("simulator creates", "%d for %d orders (%d orders asked again after a fault)", r.Sim.Creates, r.Sim.Orders, r.Sim.OrdersCreatedAgain)
	}
	row("violations", "%d%s", r.ViolationTotal, paren(counts(r.ViolationCounts)))
	for i, v := range r.Violations {
		if i == 10 {
			row("", "… %d more", r.ViolationTotal-10)
			break
		}
		row("", "%s %s: %s", v.Kind, v.Order, v.Detail)
	}
	_ = tw.Flush()
	fmt.Fprintln(w)
}

func printEndpoints(w io.Writer, st *stack.Stack) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "demo: endpoints")
	fmt.Fprintf(tw, "  NATS\t%s (jobs on combine.orders.create.<trade type>)\n", st.NATSURL)
	fmt.Fprintf(tw, "  wechatsim\t%s/sim/stats, POST %s/sim/pay/{mchid}/{combine_out_trade_no}, PUT %s/sim/faults\n", st.SimURL, st.SimURL, st.SimURL)
	for _, p := range st.Processes() {
		if p.Name == "wechatsim" || p.AdminURL == "" {
			continue
		}
		fmt.Fprintf(tw, "  %s\t%s/metrics, %s/readyz (log %s)\n", p.Name, p.AdminURL, p.AdminURL, p.LogPath)
	}
	fmt.Fprintf(tw, "  notifications\t%s{mchid}\n", st.NotifyBaseURL)
	fmt.Fprintf(tw, "  keys\t%s (simulator), %s (merchants)\n", st.KeysDir, st.MerchantDir)
	fmt.Fprintf(tw, "  loadgen\tgo run ./cmd/loadgen -nats-url %s -sim-url %s -sim-keys %s -notify-url '%s{mchid}' -orders 1000 -pay 0.1\n",
		st.NATSURL, st.SimURL, st.KeysDir, st.NotifyBaseURL)
	_ = tw.Flush()
}

func faults(st *wechatsim.Stats) string {
	if st == nil || len(st.Faults) == 0 {
		return "no injected fault"
	}
	return "injected faults (" + counts(st.Faults) + ")"
}

func tradeTypeNames(f wechat.Flavour) []string {
	var names []string
	for _, t := range loadgen.TradeTypesFor(f) {
		names = append(names, string(t))
	}
	return names
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}
