// Command loadgen publishes combine-order jobs to a NATS JetStream server,
// collects their outcome events and dead letters, and reports throughput,
// end-to-end latency and correctness. It exits 1 when it finds a violation
// (an order without an outcome, two prepay_ids for one order, …) and 2 when
// it cannot run.
//
// Against the demo's servers (printed by `go run ./cmd/demo -keep`):
//
//	go run ./cmd/loadgen -nats-url nats://127.0.0.1:PORT -sim-url http://127.0.0.1:PORT \
//	    -sim-keys DIR -orders 5000 -dup 0.1 -late-dup 0.3 -invalid 0.01 -pay 0.05 \
//	    -notify-url 'http://127.0.0.1:PORT/v3/notify/{mchid}'
//
// Run with -h for every flag. NATS_URL and WECHAT_FLAVOUR give the defaults of
// -nats-url and -flavour.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/loadgen"
	"github.com/wxcombine/orderworker/wechat"
	"github.com/wxcombine/orderworker/wechat/wechatsim"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// options are the parsed flags.
type options struct {
	natsURL, prefix, flavour, mix, subOrders         string
	mchID, appID, subMchIDs, notifyURL, simURL, keys string
	reportPath, runID                                string
	setFlavour, verbose                              bool
	progress                                         string
	orders, maxInFlight, maxCreates                  int
	duration, wait, streamWait                       time.Duration
	rate, dup, lateDup, invalid, malformed, pay      float64
	seed                                             uint64
}

func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.natsURL, "nats-url", or(getenv("NATS_URL"), "nats://127.0.0.1:4222"), "NATS server `URL` (env NATS_URL)")
	fs.StringVar(&o.prefix, "subject-prefix", events.SubjectPrefixDefault, "first token of every subject")
	fs.StringVar(&o.flavour, "flavour", or(getenv("WECHAT_FLAVOUR"), string(wechat.FlavourMerchant)), "WeChat Pay product: merchant, partner, ecommerce or individual (env WECHAT_FLAVOUR)")
	fs.BoolVar(&o.setFlavour, "set-flavour", false, "write the flavour into every job instead of relying on the worker's")
	fs.StringVar(&o.keys, "sim-keys", "", "simulator keys `dir` (wechatsim.json) to take merchants and appids from")
	fs.StringVar(&o.mchID, "mchid", "", "combine_mchid (instead of -sim-keys)")
	fs.StringVar(&o.appID, "appid", "", "combine_appid bound to -mchid")
	fs.StringVar(&o.subMchIDs, "sub-mchids", "", "comma-separated sub-order merchant numbers (default: the flavour's)")
	fs.StringVar(&o.notifyURL, "notify-url", "", "notify_url of the orders; {mchid} is replaced (default "+loadgen.NotifyURLDefault+")")
	fs.StringVar(&o.simURL, "sim-url", "", "simulator `URL`: pays orders (-pay) and checks create counts per order")
	fs.IntVar(&o.orders, "orders", 0, "distinct orders to publish (default 1000 unless -duration)")
	fs.DurationVar(&o.duration, "duration", 0, "publish for this long instead of -orders")
	fs.Float64Var(&o.rate, "rate", 0, "messages per second, 0 = as fast as JetStream acknowledges")
	fs.IntVar(&o.maxInFlight, "max-inflight", loadgen.MaxInFlightDefault, "unacknowledged publishes at most")
	fs.StringVar(&o.mix, "mix", "", "trade-type weights, e.g. app=2,jsapi=1,h5,native (default: every type the flavour offers)")
	fs.StringVar(&o.subOrders, "sub-orders", "", "sub-orders per order, `N` or MIN-MAX (default: the flavour's minimum to minimum+2)")
	fs.Float64Var(&o.dup, "dup", 0, "duplicate publishes per distinct order, 0–1")
	fs.Float64Var(&o.lateDup, "late-dup", 0, "share of duplicates sent with a new Nats-Msg-Id, as after the duplicate window")
	fs.Float64Var(&o.invalid, "invalid", 0, "share of orders that break a WeChat Pay rule")
	fs.Float64Var(&o.malformed, "malformed", 0, "share of orders whose job is malformed")
	fs.Float64Var(&o.pay, "pay", 0, "share of created orders to pay through the simulator (needs -sim-url)")
	fs.IntVar(&o.maxCreates, "max-creates", 0, "flag orders the simulator created more often (1 with faults off); 0 = no check")
	fs.DurationVar(&o.wait, "wait", loadgen.WaitDefault, "how long to wait for outcomes after the last publish")
	fs.DurationVar(&o.streamWait, "stream-wait", loadgen.StreamWaitDefault, "how long to wait for the streams a worker creates")
	fs.StringVar(&o.reportPath, "report", loadgen.ReportPathDefault(), "JSON report `file`; empty for none")
	fs.StringVar(&o.runID, "run-id", "", "order-number prefix, letters and digits (default random)")
	fs.Uint64Var(&o.seed, "seed", 0, "seed of the choices (default random, printed)")
	fs.StringVar(&o.progress, "progress", "auto", "progress line: auto (when stdout is a terminal), on or off")
	fs.BoolVar(&o.verbose, "v", false, "log warnings to stderr")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	return o, nil
}

func or(s, def string) string {
	if s != "" {
		return s
	}
	return def
}

// config turns the options into a loadgen.Config.
func (o *options) config() (loadgen.Config, *loadgen.SimClient, error) {
	cfg := loadgen.Config{
		Subjects: events.Subjects{Prefix: o.prefix}, Flavour: wechat.Flavour(o.flavour), SetFlavour: o.setFlavour,
		Orders: o.orders, Duration: o.duration, Rate: o.rate, MaxInFlight: o.maxInFlight,
		DuplicateShare: o.dup, LateDuplicateShare: o.lateDup, InvalidShare: o.invalid, MalformedShare: o.malformed,
		PayShare: o.pay, MaxCreatesPerOrder: o.maxCreates, RunID: o.runID, Seed: o.seed, Wait: o.wait, StreamWait: o.streamWait,
	}
	if o.mix != "" {
		mix, err := loadgen.ParseMix(o.mix)
		if err != nil {
			return cfg, nil, err
		}
		cfg.Mix = mix
	}
	if o.subOrders != "" {
		lo, hi, found := strings.Cut(o.subOrders, "-")
		if !found {
			hi = lo
		}
		var err1, err2 error
		cfg.SubOrdersMin, err1 = strconv.Atoi(lo)
		cfg.SubOrdersMax, err2 = strconv.Atoi(hi)
		if err := errors.Join(err1, err2); err != nil || cfg.SubOrdersMin < 1 {
			return cfg, nil, fmt.Errorf("-sub-orders %q: want N or MIN-MAX", o.subOrders)
		}
	}
	var subs []string
	if o.subMchIDs != "" {
		subs = strings.Split(o.subMchIDs, ",")
	}
	switch {
	case o.keys != "":
		keys, err := wechatsim.LoadKeys(o.keys)
		if err != nil {
			return cfg, nil, err
		}
		for _, m := range keys.Merchants {
			cfg.Merchants = append(cfg.Merchants, loadgen.Merchant{MchID: m.MchID, AppID: m.AppIDs[0], SubMchIDs: or2(subs, m.SubMchIDs)})
		}
	case o.mchID != "":
		cfg.Merchants = []loadgen.Merchant{{MchID: o.mchID, AppID: o.appID, SubMchIDs: subs}}
	default:
		return cfg, nil, errors.New("name the merchants with -sim-keys DIR or -mchid and -appid")
	}
	for i := range cfg.Merchants {
		if o.notifyURL != "" {
			cfg.Merchants[i].NotifyURL = strings.ReplaceAll(o.notifyURL, "{mchid}", cfg.Merchants[i].MchID)
		}
	}
	var sim *loadgen.SimClient
	if o.simURL != "" {
		sim = &loadgen.SimClient{BaseURL: o.simURL}
		cfg.PayFunc = sim.Pay
		cfg.CreateCountsFunc = sim.CreateCounts
	} else if o.pay > 0 {
		return cfg, nil, errors.New("-pay needs -sim-url")
	}
	return cfg, sim, nil
}

func or2(a, b []string) []string {
	if len(a) > 0 {
		return a
	}
	return b
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "loadgen:", err)
		return 2
	}
	cfg, _, err := o.config()
	if err != nil {
		fmt.Fprintln(stderr, "loadgen:", err)
		return 2
	}
	level := slog.LevelError
	if o.verbose {
		level = slog.LevelWarn
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	showProgress := o.progress == "on"
	if f, ok := stdout.(*os.File); ok && o.progress == "auto" {
		showProgress = isTerminal(f)
	}
	if showProgress {
		cfg.ProgressFunc = func(p loadgen.Progress) {
			phase := "publishing"
			if !p.Publishing {
				phase = "waiting"
			}
			fmt.Fprintf(stdout, "\r\033[K%6.1fs %s: %d orders, %d outcomes, %d dead letters, %d payments",
				p.Elapsed.Seconds(), phase, p.Orders, p.Outcomes, p.DeadLetters, p.Payments)
		}
	}
	nc, err := nats.Connect(o.natsURL, nats.Name("loadgen"), nats.MaxReconnects(-1))
	if err != nil {
		fmt.Fprintf(stderr, "loadgen: connect %s: %v\n", o.natsURL, err)
		return 2
	}
	defer nc.Close()
	rep, err := loadgen.Run(ctx, nc, cfg)
	if showProgress {
		fmt.Fprint(stdout, "\r\033[K")
	}
	if rep == nil {
		fmt.Fprintln(stderr, "loadgen:", err)
		return 2
	}
	_ = rep.WriteText(stdout)
	if o.reportPath != "" {
		if werr := rep.WriteFile(o.reportPath); werr != nil {
			fmt.Fprintln(stderr, "loadgen:", werr)
			return 2
		}
		fmt.Fprintf(stdout, "  report written to %s\n", o.reportPath)
	}
	switch {
	case err != nil:
		fmt.Fprintf(stdout, "loadgen: error %s (%v)\n", rep.Line(), err)
		return 2
	case !rep.OK:
		fmt.Fprintf(stdout, "loadgen: FAIL %s\n", rep.Line())
		return 1
	}
	fmt.Fprintf(stdout, "loadgen: ok %s\n", rep.Line())
	return 0
}
