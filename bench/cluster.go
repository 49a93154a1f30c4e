package main

// The cluster run of `make bench` (and `make bench/cluster` alone): what
// replication costs per order. The same product, load and machine twice,
// 2 workers each: once on one nats-server (streams R1), once on a 3-node
// JetStream cluster of nats-server processes (streams, consumer and KV
// bucket R3, package chaos's cluster). The idempotency store is one
// redis-server both times, so that the difference is JetStream's
// replication. Written to bench/results/cluster.{json,md}, apart from
// latest.* (the single-node runs).

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wxcombine/orderworker/chaos"
	"github.com/wxcombine/orderworker/loadgen"
	"github.com/wxcombine/orderworker/loadgen/stack"
)

// clusterOptions are the cluster run's flags.
type clusterOptions struct {
	run, only bool
	orders    int
	inFlight  int
	out       string
}

var clusterOpt clusterOptions

func clusterFlags(fs *flag.FlagSet) {
	fs.BoolVar(&clusterOpt.run, "cluster", true, "also run the cluster benchmark (writes cluster.json and cluster.md)")
	fs.BoolVar(&clusterOpt.only, "cluster-only", false, "run only the cluster benchmark")
	fs.IntVar(&clusterOpt.orders, "cluster-orders", 3000, "orders per cluster-benchmark run")
	fs.IntVar(&clusterOpt.inFlight, "cluster-in-flight", 32, "WORKER_IN_FLIGHT of the cluster-benchmark runs")
	fs.StringVar(&clusterOpt.out, "cluster-out", "bench/results", "directory of cluster.json and cluster.md")
}

// ClusterResults is cluster.json.
type ClusterResults struct {
	Date    time.Time `json:"date"`
	Machine Machine   `json:"machine"`
	// Runs are the single-node run and the cluster run, in that order.
	Runs  []ClusterRun `json:"runs"`
	Notes []string     `json:"notes"`
}

// ClusterRun is one run of the cluster benchmark.
type ClusterRun struct {
	Run
	NATSNodes int `json:"nats_nodes"`
	Replicas  int `json:"replicas"`
	// NATSCPUPerOrderMS is the nats-server processes' CPU per order, all
	// nodes together; PerNodeOrdersPerSec is the orders/s one node's core
	// could carry at that cost (1000 ÷ NATSCPUPerOrderMS × nodes).
	NATSCPUPerOrderMS   float64 `json:"nats_cpu_per_order_ms"`
	PerNodeOrdersPerSec float64 `json:"per_node_orders_per_sec"`
	// WorkerOrdersPerSecPerCore is 1000 ÷ the workers' CPU per order: what
	// one worker pod with one core carries.
	WorkerOrdersPerSecPerCore float64 `json:"worker_orders_per_sec_per_core"`
}

func clusterBench(ctx context.Context, log *slog.Logger, say func(string, ...any)) error {
	redisBin, err := exec.LookPath("redis-server")
	if err != nil {
		return fmt.Errorf("cluster benchmark: %w", err)
	}
	dir, err := os.MkdirTemp("", "bench-cluster-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// Debian's nats-server is too old for the worker: build go.mod's.
	say("cluster: building nats-server at the go.mod version …")
	natsBin, err := chaos.BuildNATSServer(ctx, dir)
	if err != nil {
		return err
	}
	res := &ClusterResults{Date: time.Now().UTC(), Machine: machine()}
	res.Machine.LoadBefore = loadAvg()
	res.Machine.NATS = builtNATS("processes")
	res.Machine.Store = "Redis (" + redisBin + "), one server"

	// Single node: one nats-server, R1.
	say("cluster: single node, 2 workers, R1 …")
	single, err := chaos.StartSingleNATS(ctx, filepath.Join(dir, "single"), natsBin)
	if err != nil {
		return err
	}
	r, err := clusterRun(ctx, log, "single-node-r1-2w", single, 1, redisBin)
	single.Stop()
	if err != nil {
		return err
	}
	res.Runs = append(res.Runs, r)

	say("cluster: 3-node JetStream cluster, 2 workers, R3 …")
	cl, err := chaos.StartNATSCluster(ctx, filepath.Join(dir, "cluster"), natsBin)
	if err != nil {
		return err
	}
	r, err = clusterRun(ctx, log, "cluster-r3-2w", cl, chaos.ClusterNodes, redisBin)
	cl.Stop()
	if err != nil {
		return err
	}
	res.Runs = append(res.Runs, r)
	res.Machine.LoadAfter = loadAvg()
	res.Notes = append(res.Notes,
		"Both runs on the same machine at peak rate (as many orders as the workers take), faults off, one redis-server as the store.",
		"CPU is per order, from /proc; nats is every nats-server process together. Other work on the machine lowers orders/s, not CPU per order.")
	for _, r := range res.Runs {
		say("  %-18s %7.1f orders/s  p50 %6.1fms  p99 %7.1fms  nats CPU %.2fms/order  workers CPU %.2fms/order  violations %d",
			r.Name, r.OrdersPerSec, r.P50MS, r.P99MS, r.NATSCPUPerOrderMS, r.CPUPerOrderMS["workers"], r.Violations)
	}
	if err := os.MkdirAll(clusterOpt.out, 0o750); err != nil {
		return err
	}
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(clusterOpt.out, "cluster.json"), append(b, '\n'), 0o644); err != nil { //nolint:gosec // a report, meant to be read
		return err
	}
	if err := os.WriteFile(filepath.Join(clusterOpt.out, "cluster.md"), []byte(clusterMarkdown(res)), 0o644); err != nil { //nolint:gosec // a report, meant to be read
		return err
	}
	say("wrote %s and %s", filepath.Join(clusterOpt.out, "cluster.json"), filepath.Join(clusterOpt.out, "cluster.md"))
	for _, r := range res.Runs {
		if r.Violations > 0 {
			return fmt.Errorf("cluster run %s: %d correctness violations", r.Name, r.Violations)
		}
	}
	return nil
}

// natsProcs is a NATS deployment the benchmark measures.
type natsProcs interface {
	URL() string
	PIDs() map[string]int
}

func clusterRun(ctx context.Context, log *slog.Logger, name string, n natsProcs, replicas int, redisBin string) (ClusterRun, error) {
	st, err := stack.Start(ctx, stack.Config{
		NATSURL: n.URL(), RedisServerBin: redisBin, Workers: 1,
		WorkerEnv: map[string]string{
			"WORKER_IN_FLIGHT": strconv.Itoa(clusterOpt.inFlight), "MAX_ACK_PENDING": "1024",
			"STREAM_REPLICAS": strconv.Itoa(replicas),
		},
		Logger: log,
	})
	if err != nil {
		return ClusterRun{}, err
	}
	defer st.Close()
	nc, err := nats.Connect(n.URL(), nats.Name("bench-cluster"))
	if err != nil {
		return ClusterRun{}, err
	}
	defer nc.Close()
	sim := &loadgen.SimClient{BaseURL: st.SimURL}
	if _, err := measure(ctx, nc, st, sim, "warmup", 300, 0); err != nil {
		return ClusterRun{}, err
	}
	// The second worker once the first has created the streams: nats-server
	// 2.15 leaves some concurrent creates of one R3 stream unanswered.
	if _, err := st.AddWorker(ctx, nil); err != nil {
		return ClusterRun{}, err
	}
	if _, err := measure(ctx, nc, st, sim, "warmup-2w", 200, 0); err != nil {
		return ClusterRun{}, err
	}
	before := natsCPU(n)
	r, err := measure(ctx, nc, st, sim, name, clusterOpt.orders, 0)
	if err != nil {
		return ClusterRun{}, err
	}
	after := natsCPU(n)
	r.Build, r.Workers, r.InFlight = "default", 2, clusterOpt.inFlight
	cr := ClusterRun{Run: r, NATSNodes: len(n.PIDs()), Replicas: replicas}
	cr.NATSCPUPerOrderMS = round3(float64(after-before) / float64(time.Millisecond) / float64(max(r.Orders, 1)))
	cr.TotalCPUPerOrderMS = round3(cr.TotalCPUPerOrderMS + cr.NATSCPUPerOrderMS)
	if cr.NATSCPUPerOrderMS > 0 {
		cr.PerNodeOrdersPerSec = round1(1000 / cr.NATSCPUPerOrderMS * float64(cr.NATSNodes))
	}
	if w := r.CPUPerOrderMS["workers"]; w > 0 {
		cr.WorkerOrdersPerSecPerCore = round1(1000 / w)
	}
	return cr, nil
}

// natsCPU answers the CPU time of every nats-server process together.
func natsCPU(n natsProcs) time.Duration {
	var d time.Duration
	for _, pid := range n.PIDs() {
		if t, err := stack.CPUTime(pid); err == nil {
			d += t
		}
	}
	return d
}

func clusterMarkdown(res *ClusterResults) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Cluster benchmark (%s)\n\n", res.Date.Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "Machine: %d CPUs (%s), %s, %s; store %s. Load average before %s, after %s.\n\n",
		res.Machine.CPUs, res.Machine.CPUModel, res.Machine.GoVersion, res.Machine.NATS, res.Machine.Store,
		res.Machine.LoadBefore, res.Machine.LoadAfter)
	b.WriteString("| run | NATS nodes | replicas | workers | orders | orders/s | p50 ms | p99 ms | nats CPU ms/order | workers CPU ms/order | total CPU ms/order | orders/s per worker core | orders/s per NATS node core | violations |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range res.Runs {
		w := r.CPUPerOrderMS["workers"]
		fmt.Fprintf(&b, "| %s | %d | R%d | %d | %d | %.1f | %.1f | %.1f | %.3f | %.3f | %.3f | %.1f | %.1f | %d |\n",
			r.Name, r.NATSNodes, r.Replicas, r.Workers, r.Orders, r.OrdersPerSec, r.P50MS, r.P99MS,
			r.NATSCPUPerOrderMS, w, r.TotalCPUPerOrderMS, r.WorkerOrdersPerSecPerCore, r.PerNodeOrdersPerSec, r.Violations)
	}
	b.WriteString("\n")
	for _, n := range res.Notes {
		b.WriteString("- " + n + "\n")
	}
	return b.String()
}
