// Command chaos runs the chaos suite (package chaos): real nats-server
// (built from the version in go.mod unless -nats-server names one),
// redis-server, wechatsim with faults on, three workers and the notifier,
// fed by the load generator while workers are SIGKILLed, the servers
// restarted, Redis wiped and kept down past the redelivery schedule, acks
// lost, answers withheld, the clock skewed, records expired, jobs oversized
// and creates answered 503; then it checks the invariants against WeChat
// Pay's record (the simulator's), prints them and writes report.json. It exits 0 when every invariant holds, 1 on a violation and
// 2 when the run could not be carried out.
//
//	go run ./cmd/chaos -orders 10000            # make chaos
//	go run ./cmd/chaos -orders 2000             # make chaos/short (CI)
//	go run ./cmd/chaos -seed 1234 -orders 2000  # replay a run's schedule
//	go run ./cmd/chaos -cluster -orders 5000    # make chaos/cluster
//	go run ./cmd/chaos -cluster -kv ...         # the JetStream KV backend
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/wxcombine/orderworker/chaos"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

type workerEnv []string

func (w *workerEnv) String() string     { return strings.Join(*w, " ") }
func (w *workerEnv) Set(v string) error { *w = append(*w, v); return nil }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cfg chaos.Config
	var env workerEnv
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Dir, "dir", "", "report directory (default reports/chaos-<time>)")
	fs.IntVar(&cfg.Orders, "orders", chaos.OrdersDefault, "distinct orders")
	fs.Float64Var(&cfg.DuplicateShare, "dup", chaos.DuplicateShareDefault, "duplicate publishes per distinct order")
	fs.Float64Var(&cfg.PayShare, "pay", chaos.PayShareDefault, "share of created orders to pay")
	fs.IntVar(&cfg.Workers, "workers", chaos.WorkersDefault, "worker processes at once")
	fs.IntVar(&cfg.Kills, "kills", chaos.KillsDefault, "worker SIGKILLs (-1: none)")
	fs.IntVar(&cfg.RedisRestarts, "redis-restarts", 1, "Redis restarts (-1: none)")
	fs.IntVar(&cfg.NATSRestarts, "nats-restarts", 1, "NATS restarts (-1: none)")
	fs.Float64Var(&cfg.TransientFaultRate, "faults", chaos.TransientFaultRateDefault, "share of WeChat Pay calls answered with a retryable error")
	fs.Float64Var(&cfg.TimeoutAfterCreateRate, "timeouts", chaos.TimeoutAfterCreateRateDefault, "share of creates that commit and never answer")
	fs.Float64Var(&cfg.RatePerMerchant, "rate-per-merchant", chaos.RatePerMerchantDefault, "simulator's per-merchant request limit per second")
	fs.Float64Var(&cfg.PublishRate, "publish-rate", chaos.PublishRateDefault, "jobs published per second")
	fs.Uint64Var(&cfg.Seed, "seed", 0, "seed of the schedule, the fault dice and the orders (default random, printed)")
	fs.DurationVar(&cfg.Timeout, "timeout", chaos.TimeoutDefault, "bound of the whole run")
	fs.Var(&env, "worker-env", "extra worker setting NAME=VALUE (repeatable)")
	fs.StringVar(&cfg.NATSServer, "nats-server", "", "nats-server binary (default: "+chaos.NATSServerModule+" built at the go.mod version)")
	fs.IntVar(&cfg.RedisWipes, "redis-wipes", chaos.RedisWipesDefault, "Redis restarts WITHOUT its data (-1: none)")
	fs.IntVar(&cfg.RedisOutages, "redis-outages", chaos.RedisOutagesDefault, "Redis outages longer than the redelivery schedule (-1: none)")
	fs.IntVar(&cfg.NotifierOutages, "notifier-outages", 1, "notifier outages longer than the reconciliation schedule's first check (-1: none)")
	fs.DurationVar(&cfg.RedisOutage, "redis-outage", 0, "length of each long Redis outage (default: the redelivery schedule + 20s)")
	fs.Float64Var(&cfg.AckDropShare, "ack-drop", chaos.AckDropShareDefault, "share of orders whose jobs' acks are lost after the outcome, to the last delivery (-1: none)")
	fs.Float64Var(&cfg.UnknownOutcomeShare, "unknown-outcomes", chaos.UnknownOutcomeShareDefault, "share of orders whose creates commit and never answer, to the delivery limit (-1: none)")
	fs.IntVar(&cfg.ClockSkews, "clock-skews", chaos.ClockSkewsDefault, "windows of a skewed worker clock (401 SIGN_ERROR), each followed by a dead-letter replay (-1: none)")
	fs.DurationVar(&cfg.ClockSkewWindow, "clock-skew-window", chaos.ClockSkewWindowDefault, "length of each clock-skew window")
	fs.DurationVar(&cfg.OutcomeTTL, "outcome-ttl", chaos.OutcomeTTLDefault, "the workers' IDEMPOTENCY_OUTCOME_TTL")
	fs.IntVar(&cfg.LateAfterTTL, "late-after-ttl", chaos.LateAfterTTLDefault, "created and paid orders published again after their record expired (-1: none)")
	fs.IntVar(&cfg.MaxJobBytes, "max-job-bytes", chaos.MaxJobBytesDefault, "the workers' MAX_JOB_BYTES")
	fs.IntVar(&cfg.OversizedJobs, "oversized", chaos.OversizedJobsDefault, "jobs of exactly MAX_JOB_BYTES, and as many one byte past it (-1: none)")
	fs.Float64Var(&cfg.ServiceUnavailableRate, "service-unavailable", chaos.ServiceUnavailableDefault, "share of create calls answered 503 SERVICE_UNAVAILABLE (-1: none)")
	fs.Float64Var(&cfg.NotifyDropRate, "notify-drop", chaos.NotifyDropDefault, "share of payments whose notification the simulator never sends (-1: none)")
	fs.StringVar(&cfg.ReconcileSchedule, "reconcile-schedule", chaos.ReconcileScheduleDefault, "the workers' RECONCILE_SCHEDULE")
	fs.BoolVar(&cfg.ServiceUnavailableFromSimulator, "service-unavailable-from-simulator", false, "ask the simulator for the 503s (its -service-unavailable-rate) instead of the recording proxy")
	fs.DurationVar(&cfg.DrainWait, "drain-wait", 0, "bound on waiting for the jobs stream to empty after the load (default: AckWait × (MaxDeliver+1) + 30s)")
	fs.BoolVar(&cfg.Cluster, "cluster", false, "run on a 3-node JetStream cluster (R3) and Redis with a replica and three Sentinels, with the cluster disruptions")
	fs.BoolVar(&cfg.KVBackend, "kv", false, "with -cluster: the JetStream KV idempotency backend (R3) instead of Redis")
	fs.IntVar(&cfg.StreamLeaderKills, "kill-stream-leader", 0, "cluster: SIGKILLs of the jobs stream's leader (default 1, -1: none)")
	fs.IntVar(&cfg.ConsumerLeaderKills, "kill-consumer-leader", 0, "cluster: SIGKILLs of the consumer's leader (default 1, -1: none)")
	fs.IntVar(&cfg.NodeRestarts, "node-restarts", 0, "cluster: nodes restarted with their store (default 1, -1: none)")
	fs.IntVar(&cfg.NodeWipes, "node-wipes", 0, "cluster: nodes restarted with their store wiped (default 1, -1: none)")
	fs.IntVar(&cfg.Partitions, "partitions", 0, "cluster: nodes cut off from the others' routes (default 1, -1: none)")
	fs.DurationVar(&cfg.PartitionFor, "partition-for", 0, "cluster: length of each partition (default "+chaos.PartitionForDefault.String()+")")
	fs.IntVar(&cfg.FailoversSynced, "failovers-synced", 0, "cluster: Redis primary killed with the replica caught up (default 1, -1: none)")
	fs.IntVar(&cfg.FailoversLagging, "failovers-lagging", 0, "cluster: Redis primary killed with the replication stream held (default 1, -1: none)")
	fs.DurationVar(&cfg.LagFor, "lag-for", 0, "cluster: how long the replication stream is held before a lagging failover (default "+chaos.LagForDefault.String()+")")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	cfg.WorkerEnv = env
	if cfg.Dir == "" {
		cfg.Dir = filepath.Join("reports", "chaos-"+time.Now().Format("20060102-150405"))
	}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		fmt.Fprintln(stderr, "chaos:", err)
		return 2
	}
	if abs, err := filepath.Abs(cfg.Dir); err == nil {
		cfg.Dir = abs
	}
	cfg.Progress = stdout
	rep, err := chaos.Run(ctx, cfg)
	if rep == nil {
		fmt.Fprintln(stderr, "chaos:", err)
		return 2
	}
	fmt.Fprintln(stdout, "chaos report:")
	_ = rep.WriteText(stdout)
	fmt.Fprintf(stdout, "  report written to %s\n", filepath.Join(rep.Dir, "report.json"))
	switch {
	case err != nil:
		fmt.Fprintln(stderr, "chaos:", err)
		return 2
	case !rep.OK:
		return 1
	}
	return 0
}
