package chaos

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wxcombine/orderworker/internal/proc"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/internal/securitytest"
	"github.com/wxcombine/orderworker/loadgen"
	"github.com/wxcombine/orderworker/wechat/wechatsim"
)

// Defaults of Config.
const (
	OrdersDefault                 = 10_000
	DuplicateShareDefault         = 0.2
	LateDuplicateShareDefault     = 0.5
	InvalidShareDefault           = 0.01
	MalformedShareDefault         = 0.005
	PayShareDefault               = 0.2
	WorkersDefault                = 3
	KillsDefault                  = 5
	TransientFaultRateDefault     = 0.30
	TimeoutAfterCreateRateDefault = 0.05
	RatePerMerchantDefault        = 45
	MerchantsDefault              = 2
	PublishRateDefault            = 80
	TimeoutDefault                = 20 * time.Minute

	// The faults of the order's one true outcome (see the package doc).
	RedisWipesDefault          = 1
	RedisOutagesDefault        = 1
	AckDropShareDefault        = 0.01
	UnknownOutcomeShareDefault = 0.01
	ClockSkewsDefault          = 1
	ClockSkewWindowDefault     = 8 * time.Second
	ClockSkewByDefault         = -10 * time.Minute
	OutcomeTTLDefault          = 45 * time.Second
	LateAfterTTLDefault        = 6
	OversizedJobsDefault       = 2
	// MaxJobBytesDefault is close to the largest MAX_JOB_BYTES whose dead
	// letter (base64, 4/3 of the job) still fits NATS's 1 MiB max_payload;
	// the worker refuses larger settings at start.
	MaxJobBytesDefault        = 740 << 10
	ServiceUnavailableDefault = 0.02
	NotifyDropDefault         = 0.3
	ReconcileScheduleDefault  = "5s,15s,30s,1m,2m,4m,8m"

	// The worker's delivery settings in a run: short, so that a job can
	// reach the delivery limit within minutes. RedeliverySchedule is the
	// worker's REDELIVERY_DELAYS; a job that keeps failing is delivered
	// MaxDeliver times, AckWait apart at most.
	MaxDeliver = 5
	AckWait    = 15 * time.Second
)

// RedeliveryDelays are the worker's REDELIVERY_DELAYS in a run.
var RedeliveryDelays = []time.Duration{time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second}

// redeliverySpan is how long the redelivery schedule takes from the first
// delivery to the last: the delays between MaxDeliver deliveries.
func redeliverySpan() time.Duration {
	var d time.Duration
	for i := range MaxDeliver - 1 {
		d += RedeliveryDelays[min(i, len(RedeliveryDelays)-1)]
	}
	return d
}

// Config configures a chaos run.
type Config struct {
	// Dir receives the report, the logs and the servers' data. Required.
	Dir string `json:"dir"`
	// Orders is how many distinct orders the load generator publishes.
	// Defaults to OrdersDefault.
	Orders int `json:"orders"`
	// DuplicateShare adds this many duplicate publishes per distinct order.
	// Defaults to DuplicateShareDefault (20%).
	DuplicateShare float64 `json:"duplicate_share"`
	// LateDuplicateShare is the share of duplicates that carry a new
	// Nats-Msg-Id, so that they reach the workers and the idempotency
	// store. Defaults to LateDuplicateShareDefault.
	LateDuplicateShare float64 `json:"late_duplicate_share"`
	// InvalidShare and MalformedShare are the shares of jobs that must be
	// dead-lettered. Default to InvalidShareDefault and
	// MalformedShareDefault.
	InvalidShare   float64 `json:"invalid_share"`
	MalformedShare float64 `json:"malformed_share"`
	// PayShare is the share of created orders paid through the simulator.
	// Defaults to PayShareDefault.
	PayShare float64 `json:"pay_share"`
	// Workers is how many worker processes run at once. Defaults to 3.
	Workers int `json:"workers"`
	// Kills is how many times a worker is SIGKILLed and replaced. Defaults
	// to 5; negative means none.
	Kills int `json:"kills"`
	// RedisRestarts and NATSRestarts are how many times each server is
	// stopped and started again. Default to 1; negative means none.
	RedisRestarts int `json:"redis_restarts"`
	NATSRestarts  int `json:"nats_restarts"`
	// TransientFaultRate is the share of WeChat Pay calls answered with a
	// retryable error (SYSTEMERROR, BANKERROR, FREQUENCY_LIMITED, 502).
	// Defaults to 30%.
	TransientFaultRate float64 `json:"transient_fault_rate"`
	// TimeoutAfterCreateRate is the share of creates that commit and never
	// answer. Defaults to 5%.
	TimeoutAfterCreateRate float64 `json:"timeout_after_create_rate"`
	// RatePerMerchant limits each merchant's calls per second at the
	// simulator. Defaults to RatePerMerchantDefault.
	RatePerMerchant float64 `json:"rate_per_merchant"`
	// Merchants is how many combine merchants orders are spread over.
	// Defaults to 2.
	Merchants int `json:"merchants"`
	// PublishRate is how many jobs per second the load generator publishes;
	// the disruptions are spread over the publishing time. Defaults to
	// PublishRateDefault.
	PublishRate float64 `json:"publish_rate"`
	// Seed drives every random choice: the disruption schedule, the
	// simulator's fault dice and the generated orders. Defaults to a random
	// seed, printed in the report.
	Seed uint64 `json:"seed"`
	// Timeout bounds the whole run. Defaults to TimeoutDefault.
	Timeout time.Duration `json:"timeout"`
	// NATSServer and RedisServer are the server binaries. NATSServer
	// defaults to github.com/nats-io/nats-server/v2 built at the version in
	// go.mod into Dir/bin (BuildNATSServer; Debian's nats-server is too
	// old for the worker), RedisServer to "redis-server" on PATH.
	NATSServer  string `json:"nats_server"`
	RedisServer string `json:"redis_server"`
	// RedisWipes is how many times Redis is restarted WITHOUT its data (the
	// append-only file removed), as after a restart without persistence or
	// a failover to an empty replica. Defaults to 1; negative means none.
	RedisWipes int `json:"redis_wipes"`
	// RedisOutages is how many times Redis is down for RedisOutage, longer
	// than the whole redelivery schedule. Defaults to 1; negative means none.
	RedisOutages int           `json:"redis_outages"`
	RedisOutage  time.Duration `json:"redis_outage"`
	// NotifierOutages is how many times the notifier is down for
	// NotifierOutage, longer than the workers' reconciliation schedule:
	// WeChat Pay's notifications of that time are lost or late, and
	// reconciliation must report their payments, each once. Defaults to 1;
	// negative means none.
	NotifierOutages int           `json:"notifier_outages"`
	NotifierOutage  time.Duration `json:"notifier_outage"`
	// AckDropShare is the share of orders whose jobs' acknowledgements are
	// all lost between the workers and NATS (AckDropper): the worker
	// publishes the outcome and JetStream never hears the ack, up to the
	// last delivery. Defaults to AckDropShareDefault; negative means none.
	AckDropShare float64 `json:"ack_drop_share"`
	// UnknownOutcomeShare is the share of orders whose every create commits
	// at the simulator and gets no answer (the proxy withholds it), until
	// the delivery limit. Defaults to UnknownOutcomeShareDefault; negative
	// means none.
	UnknownOutcomeShare float64 `json:"unknown_outcome_share"`
	// ClockSkews is how many windows of ClockSkewWindow the workers' clock
	// is off by ClockSkewBy (the proxy moves the signed timestamp; the
	// simulator answers 401 SIGN_ERROR). After each window, the dead
	// letters it caused are replayed with cmd/deadletter, as an operator
	// would after fixing the clock. Default to ClockSkewsDefault,
	// ClockSkewWindowDefault, ClockSkewByDefault; negative means none.
	ClockSkews      int           `json:"clock_skews"`
	ClockSkewWindow time.Duration `json:"clock_skew_window"`
	ClockSkewBy     time.Duration `json:"clock_skew_by"`
	// OutcomeTTL is the workers' IDEMPOTENCY_OUTCOME_TTL. LateAfterTTL
	// orders of the harness's own are created, paid, and published again
	// (a new Nats-Msg-Id) once their record expired. Default to
	// OutcomeTTLDefault and LateAfterTTLDefault; negative means none.
	OutcomeTTL   time.Duration `json:"outcome_ttl"`
	LateAfterTTL int           `json:"late_after_ttl"`
	// MaxJobBytes is the workers' MAX_JOB_BYTES; OversizedJobs jobs of
	// exactly MaxJobBytes (to be created) and as many of MaxJobBytes+1 (to
	// fail JOB_TOO_LARGE and be dead-lettered) are published. Default to
	// MaxJobBytesDefault and OversizedJobsDefault; negative means none.
	MaxJobBytes   int `json:"max_job_bytes"`
	OversizedJobs int `json:"oversized_jobs"`
	// ServiceUnavailableRate is the share of create calls answered 503
	// SERVICE_UNAVAILABLE. The recording proxy answers them (never
	// forwarded) unless ServiceUnavailableFromSimulator is set, which asks
	// the simulator for them instead (its -service-unavailable-rate, once it
	// has one). Defaults to ServiceUnavailableDefault; negative means none.
	ServiceUnavailableRate          float64 `json:"service_unavailable_rate"`
	ServiceUnavailableFromSimulator bool    `json:"service_unavailable_from_simulator"`
	// NotifyDropRate is the share of payments whose notification the
	// simulator never sends: only the workers' reconciliation can report
	// them. Defaults to NotifyDropDefault; negative means none.
	NotifyDropRate float64 `json:"notify_drop_rate"`
	// ReconcileSchedule is the workers' RECONCILE_SCHEDULE, short so that a
	// dropped notification's payment is found within the run. Defaults to
	// ReconcileScheduleDefault.
	ReconcileSchedule string `json:"reconcile_schedule"`
	// DrainWait bounds waiting, after the load generator is done, for the
	// jobs stream to empty; jobs left then are stranded. Defaults to
	// AckWait × (MaxDeliver+1) + 30s.
	DrainWait time.Duration `json:"drain_wait"`
	// Cluster runs the workload on a JetStream cluster of ClusterNodes
	// nats-server processes (streams, consumer and KV bucket R3) and a
	// replicated Redis (a primary, a replica, three Sentinels; the workers
	// use REDIS_MASTER_NAME), and disrupts those instead of the single
	// servers: RedisRestarts, NATSRestarts, RedisWipes, RedisOutages and
	// AckDropShare do not apply and are off. KVBackend uses the JetStream
	// KV backend instead of Redis (no Redis is started).
	Cluster   bool `json:"cluster,omitempty"`
	KVBackend bool `json:"kv_backend,omitempty"`
	// The cluster disruptions, each a count (default 1 in a cluster run;
	// negative means none): SIGKILL of the jobs stream's leader and of the
	// consumer's leader (restarted with their store), a node restarted
	// with its store and one with its store wiped, a node partitioned from
	// the others for PartitionFor, and a Sentinel failover with the
	// replica caught up and one after the replication stream was held for
	// LagFor (its writes lost). The failovers are 0 with KVBackend.
	StreamLeaderKills   int           `json:"stream_leader_kills,omitempty"`
	ConsumerLeaderKills int           `json:"consumer_leader_kills,omitempty"`
	NodeRestarts        int           `json:"node_restarts,omitempty"`
	NodeWipes           int           `json:"node_wipes,omitempty"`
	Partitions          int           `json:"partitions,omitempty"`
	PartitionFor        time.Duration `json:"partition_for,omitempty"`
	FailoversSynced     int           `json:"failovers_synced,omitempty"`
	FailoversLagging    int           `json:"failovers_lagging,omitempty"`
	LagFor              time.Duration `json:"lag_for,omitempty"`
	// WorkerEnv adds environment settings to every worker. Defaults to none.
	WorkerEnv []string `json:"worker_env,omitempty"`
	// Progress receives progress lines. Defaults to io.Discard.
	Progress io.Writer `json:"-"`
}

// settleWait bounds how long the load generator waits, after its last
// publish, for every outcome, dead letter and payment: a job may need the
// whole redelivery schedule (DrainWait), and a payment whose notification
// was dropped is reported by the reconciliation's last check, at the
// schedule's last step after its prepay plus a redelivery of that check.
// The wait ends as soon as nothing is missing, so a long bound costs
// nothing when every order settles; its tally then judges settled orders,
// not ones still in the jobs stream behind a throttled merchant.
//
// left is the time the run has left: the wait leaves enough of it to drain
// the jobs stream and read the streams afterwards (DrainWait + 1 minute),
// so a run that misses an outcome ends in a verdict that names it, not in
// its own timeout.
func (cfg *Config) settleWait(left time.Duration) time.Duration {
	var last time.Duration
	for _, f := range strings.Split(cfg.ReconcileSchedule, ",") {
		if d, err := time.ParseDuration(strings.TrimSpace(f)); err == nil {
			last = max(last, d)
		}
	}
	return max(min(max(5*time.Minute, cfg.DrainWait+last+AckWait*2), left-cfg.DrainWait-time.Minute), time.Minute)
}

// deadlineOf answers ctx's deadline, or a day from now without one.
func deadlineOf(ctx context.Context) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	return time.Now().Add(24 * time.Hour)
}

func (cfg *Config) applyDefaults() error {
	if cfg.Dir == "" {
		return errors.New("chaos: Config.Dir is required")
	}
	cfg.Orders = cmp.Or(cfg.Orders, OrdersDefault)
	cfg.DuplicateShare = cmp.Or(cfg.DuplicateShare, DuplicateShareDefault)
	cfg.LateDuplicateShare = cmp.Or(cfg.LateDuplicateShare, LateDuplicateShareDefault)
	cfg.InvalidShare = cmp.Or(cfg.InvalidShare, InvalidShareDefault)
	cfg.MalformedShare = cmp.Or(cfg.MalformedShare, MalformedShareDefault)
	cfg.PayShare = cmp.Or(cfg.PayShare, PayShareDefault)
	cfg.Workers = cmp.Or(cfg.Workers, WorkersDefault)
	cfg.Kills = cmp.Or(cfg.Kills, KillsDefault)
	cfg.RedisRestarts = cmp.Or(cfg.RedisRestarts, 1)
	cfg.NATSRestarts = cmp.Or(cfg.NATSRestarts, 1)
	cfg.Kills, cfg.RedisRestarts, cfg.NATSRestarts = max(cfg.Kills, 0), max(cfg.RedisRestarts, 0), max(cfg.NATSRestarts, 0)
	cfg.TransientFaultRate = cmp.Or(cfg.TransientFaultRate, TransientFaultRateDefault)
	cfg.TimeoutAfterCreateRate = cmp.Or(cfg.TimeoutAfterCreateRate, TimeoutAfterCreateRateDefault)
	cfg.RatePerMerchant = cmp.Or(cfg.RatePerMerchant, RatePerMerchantDefault)
	cfg.Merchants = cmp.Or(cfg.Merchants, MerchantsDefault)
	cfg.PublishRate = cmp.Or(cfg.PublishRate, PublishRateDefault)
	cfg.Timeout = cmp.Or(cfg.Timeout, TimeoutDefault)
	cfg.RedisWipes = max(cmp.Or(cfg.RedisWipes, RedisWipesDefault), 0)
	cfg.RedisOutages = max(cmp.Or(cfg.RedisOutages, RedisOutagesDefault), 0)
	cfg.NotifierOutages = max(cmp.Or(cfg.NotifierOutages, 1), 0)
	cfg.NotifierOutage = cmp.Or(cfg.NotifierOutage, 20*time.Second)
	cfg.RedisOutage = cmp.Or(cfg.RedisOutage, redeliverySpan()+MaxDeliver*time.Second+15*time.Second)
	cfg.AckDropShare = max(cmp.Or(cfg.AckDropShare, AckDropShareDefault), 0)
	cfg.UnknownOutcomeShare = max(cmp.Or(cfg.UnknownOutcomeShare, UnknownOutcomeShareDefault), 0)
	cfg.ClockSkews = max(cmp.Or(cfg.ClockSkews, ClockSkewsDefault), 0)
	cfg.ClockSkewWindow = cmp.Or(cfg.ClockSkewWindow, ClockSkewWindowDefault)
	cfg.ClockSkewBy = cmp.Or(cfg.ClockSkewBy, ClockSkewByDefault)
	cfg.OutcomeTTL = cmp.Or(cfg.OutcomeTTL, OutcomeTTLDefault)
	cfg.LateAfterTTL = max(cmp.Or(cfg.LateAfterTTL, LateAfterTTLDefault), 0)
	cfg.MaxJobBytes = cmp.Or(cfg.MaxJobBytes, MaxJobBytesDefault)
	cfg.OversizedJobs = max(cmp.Or(cfg.OversizedJobs, OversizedJobsDefault), 0)
	cfg.ServiceUnavailableRate = max(cmp.Or(cfg.ServiceUnavailableRate, ServiceUnavailableDefault), 0)
	cfg.NotifyDropRate = max(cmp.Or(cfg.NotifyDropRate, NotifyDropDefault), 0)
	cfg.ReconcileSchedule = cmp.Or(cfg.ReconcileSchedule, ReconcileScheduleDefault)
	cfg.DrainWait = cmp.Or(cfg.DrainWait, AckWait*(MaxDeliver+1)+30*time.Second)
	cfg.RedisServer = cmp.Or(cfg.RedisServer, "redis-server")
	cfg.clusterDefaults()
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	if cfg.Seed == 0 {
		var b [8]byte
		_, _ = rand.Read(b[:])
		cfg.Seed = binary.LittleEndian.Uint64(b[:]) | 1
	}
	switch {
	case cfg.Orders < 1:
		return errors.New("chaos: Orders must be positive")
	case cfg.Workers < 1:
		return errors.New("chaos: Workers must be positive")
	case cfg.Merchants < 1 || cfg.Merchants > 90:
		return errors.New("chaos: Merchants must be from 1 to 90")
	case cfg.TransientFaultRate+cfg.TimeoutAfterCreateRate > 1:
		return errors.New("chaos: fault rates add up to more than 1")
	case cfg.MaxJobBytes < 1024:
		return errors.New("chaos: MaxJobBytes must be at least 1024")
	}
	bins := []*string{&cfg.RedisServer}
	if cfg.NATSServer != "" {
		bins = append(bins, &cfg.NATSServer)
	}
	for _, bin := range bins {
		p, err := exec.LookPath(*bin)
		if err != nil {
			return fmt.Errorf("chaos: %s is not installed: %w", *bin, err)
		}
		*bin = p
	}
	return nil
}

// faults splits TransientFaultRate over the simulator's retryable faults:
// 40% SYSTEMERROR, 15% BANKERROR, 15% FREQUENCY_LIMITED, 30% 502.
func (cfg *Config) faults() wechatsim.FaultConfig {
	t := cfg.TransientFaultRate
	return wechatsim.FaultConfig{
		SystemErrorRate: t * 0.40, BankErrorRate: t * 0.15, FrequencyLimitedRate: t * 0.15, Bad502Rate: t * 0.30,
		TimeoutAfterCreateRate: cfg.TimeoutAfterCreateRate, RatePerMerchant: cfg.RatePerMerchant,
	}
}

// Disruption is one fault the harness caused.
type Disruption struct {
	Kind string `json:"kind"` // kill_worker, restart_redis, restart_nats
	// Target names the process.
	Target string `json:"target"`
	// PlannedAt and At are offsets from the start of publishing.
	PlannedAt float64 `json:"planned_at_s"`
	At        float64 `json:"at_s"`
	// DownSeconds is how long the target was down.
	DownSeconds float64 `json:"down_s"`
	// Replacement names the worker started after a kill.
	Replacement string `json:"replacement,omitempty"`
	// Replayed counts the dead letters replayed after a clock skew.
	Replayed int    `json:"replayed,omitempty"`
	Error    string `json:"error,omitempty"`
	// Stall is what the disruption did to the flow of outcomes (stall.go).
	Stall *Stall `json:"stall,omitempty"`
}

// Disruption kinds.
const (
	KindKillWorker   = "kill_worker"
	KindRestartRedis = "restart_redis"
	KindRestartNATS  = "restart_nats"
	// KindWipeRedis restarts Redis without its data.
	KindWipeRedis = "wipe_redis"
	// KindRedisOutage keeps Redis down longer than the redelivery schedule.
	KindRedisOutage = "redis_outage"
	// KindNotifierOutage keeps the notifier down longer than the
	// reconciliation schedule.
	KindNotifierOutage = "notifier_outage"
	// KindClockSkew skews the workers' signing clock for a window, then
	// replays the window's dead letters.
	KindClockSkew = "clock_skew"
)

// Run carries out a chaos run and answers its report. An error means the
// run could not be carried out (a server did not start, the time ran out);
// the report then holds what was gathered. Violations are in the report,
// whose OK is false when there is any.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.applyDefaults(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	rep := &Report{Seed: cfg.Seed, Config: cfg, Dir: cfg.Dir, StartedAt: time.Now(), Restarts: map[string]int{}}
	err := run(ctx, &cfg, rep)
	rep.FinishedAt = time.Now()
	rep.Seconds = rep.FinishedAt.Sub(rep.StartedAt).Seconds()
	if err != nil {
		rep.Error = err.Error()
	}
	rep.finish()
	if werr := rep.WriteFile(filepath.Join(cfg.Dir, "report.json")); werr != nil && err == nil {
		err = werr
	}
	return rep, err
}

func (cfg *Config) logf(format string, args ...any) {
	fmt.Fprintf(cfg.Progress, "%s chaos: "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func run(ctx context.Context, cfg *Config, rep *Report) error {
	c := &cluster{cfg: cfg, dir: cfg.Dir, logs: filepath.Join(cfg.Dir, "logs"), exits: map[string]time.Time{}}
	rep.Logs = c.logs
	if err := os.MkdirAll(c.logs, 0o750); err != nil {
		return fmt.Errorf("chaos: %w", err)
	}
	defer c.shutdown()
	rng := mrand.New(mrand.NewPCG(cfg.Seed, cfg.Seed^0x5eed))

	cfg.logf("building worker, notifier and wechatsim")
	bins, err := Build(ctx, filepath.Join(cfg.Dir, "bin"))
	if err != nil {
		return err
	}
	c.bins = bins
	if cfg.NATSServer == "" {
		cfg.logf("building nats-server from %s at the version in go.mod", NATSServerModule)
		if cfg.NATSServer, err = BuildNATSServer(ctx, filepath.Join(cfg.Dir, "bin")); err != nil {
			return err
		}
	}
	for i := range cfg.Merchants {
		c.mchIDs = append(c.mchIDs, fmt.Sprintf("19000001%02d", 10+i))
	}
	keysDir := filepath.Join(cfg.Dir, "keys")
	c.merchantDir = keysDir // the simulator writes the services' layout
	keys, err := GenerateKeys(keysDir, 1024, c.mchIDs...)
	if err != nil {
		return err
	}
	for _, port := range []*int{&c.natsPort, &c.natsMonPort, &c.redisPort} {
		if *port, err = proc.FreePort(); err != nil {
			return err
		}
	}
	if err := c.startServers(ctx); err != nil {
		return err
	}
	if err := c.startSim(ctx, keysDir, int64(rng.Uint64()>>1)); err != nil {
		return err
	}
	c.recorder = NewRecorder(c.simURL)
	pf := ProxyFaults{Withhold: selector(cfg.Seed, "unknown", cfg.UnknownOutcomeShare)}
	if !cfg.ServiceUnavailableFromSimulator {
		pf.ServiceUnavailable = chance(cfg.Seed^0x503, cfg.ServiceUnavailableRate)
	}
	c.recorder.SetFaults(pf)
	if drop := selector(cfg.Seed, "ackdrop", cfg.AckDropShare); drop != nil {
		if c.ackDropper, err = NewAckDropper(proc.Addr(c.natsPort), drop); err != nil {
			return err
		}
	}
	cfg.logf("starting %d workers and the notifier", cfg.Workers)
	for i := range cfg.Workers {
		if _, err := c.startWorker(ctx); err != nil {
			return err
		}
		if i == 0 && cfg.Cluster {
			// nats-server 2.15 leaves some of several concurrent creates of
			// one R3 stream unanswered (the caller times out), which fails
			// the worker's start: let the first worker create them.
			if err := c.waitSetup(ctx); err != nil {
				return err
			}
		}
	}
	if err := c.startNotifier(ctx); err != nil {
		return err
	}

	var merchants []loadgen.Merchant
	for _, id := range c.mchIDs {
		merchants = append(merchants, loadgen.Merchant{MchID: id, AppID: AppIDOf(id), NotifyURL: c.notifierURL + "/v3/notify/" + id})
	}
	sim := &loadgen.SimClient{BaseURL: c.simURL}
	var (
		keysMu  sync.Mutex
		runKeys []loadgen.OrderKey
		infos   map[loadgen.OrderKey]wechatsim.OrderInfo
		simErr  error
	)
	var progress atomic.Pointer[loadgen.Progress]
	var lastPrint time.Time
	lgSeed := rng.Uint64() | 1
	lcfg := loadgen.Config{
		Merchants: merchants, Orders: cfg.Orders, Rate: cfg.PublishRate,
		DuplicateShare: cfg.DuplicateShare, LateDuplicateShare: cfg.LateDuplicateShare,
		InvalidShare: cfg.InvalidShare, MalformedShare: cfg.MalformedShare, PayShare: cfg.PayShare,
		PayFunc: sim.Pay, RunID: fmt.Sprintf("CH%08d", rng.Uint64()%100_000_000), Seed: lgSeed,
		Linger: 2 * time.Second, StreamWait: 30 * time.Second,
		RecordFunc: func(ctx context.Context, keys []loadgen.OrderKey) (map[loadgen.OrderKey]wechatsim.OrderInfo, error) {
			got, err := sim.Orders(ctx, keys)
			keysMu.Lock()
			runKeys, infos, simErr = keys, got, err
			keysMu.Unlock()
			return got, err
		},
		ProgressFunc: func(p loadgen.Progress) {
			progress.Store(&p)
			if time.Since(lastPrint) >= 10*time.Second {
				lastPrint = time.Now()
				phase := "publishing"
				if !p.Publishing {
					phase = "waiting"
				}
				cfg.logf("%5.0fs %s: %d orders, %d outcomes, %d dead letters, %d payments",
					p.Elapsed.Seconds(), phase, p.Orders, p.Outcomes, p.DeadLetters, p.Payments)
			}
		},
	}
	rep.RunID = lcfg.RunID
	// The load generator's warnings (a publish repeated, and with what
	// answer; a publish given up) go beside the servers' logs.
	lglog, err := os.OpenFile(filepath.Join(c.logs, "loadgen.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600) //nolint:gosec // G304: the harness's own log directory
	if err != nil {
		return fmt.Errorf("chaos: %w", err)
	}
	defer lglog.Close()
	lcfg.Logger = slog.New(slog.NewJSONHandler(lglog, nil))
	nc, err := nats.Connect(c.natsURL(), nats.Name("chaos-loadgen"), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
	if err != nil {
		return fmt.Errorf("chaos: connect: %w", err)
	}
	defer nc.Close()

	messages := float64(cfg.Orders) * (1 + cfg.DuplicateShare)
	publishFor := time.Duration(messages / cfg.PublishRate * float64(time.Second))
	plan := schedule(rng, cfg, publishFor)
	lcfg.Wait = cfg.settleWait(time.Until(deadlineOf(ctx)) - publishFor) // counted from the last publish
	cfg.logf("seed %d: publishing %d orders (+%.0f%% duplicates) over ~%s; %d disruptions planned",
		cfg.Seed, cfg.Orders, cfg.DuplicateShare*100, publishFor.Round(time.Second), len(plan))

	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("chaos: jetstream: %w", err)
	}
	c.js = js
	jobs, err := watchJobs(nc)
	if err != nil {
		return fmt.Errorf("chaos: watch jobs: %w", err)
	}
	own := &ownFaults{c: c, js: js, nc: nc, sim: sim, runID: lcfg.RunID, merch: merchants[0], counts: map[string]int{}}
	chaosCtx, stopChaos := context.WithCancel(ctx)
	chaosDone := make(chan []Disruption, 1)
	planDone := make(chan struct{})
	ownDone := make(chan struct{})
	start := time.Now()
	go func() { // Owned by run; ends when chaosCtx ends.
		chaosDone <- c.disrupt(chaosCtx, rng, plan, start, planDone)
	}()
	go func() { // Owned by run; ends when its jobs are published or ctx ends.
		defer close(ownDone)
		own.oversized(ctx)
		own.lateAfterTTL(ctx)
	}()
	lrep, lerr := loadgen.Run(ctx, nc, lcfg)
	time.Sleep(2 * time.Second) // late events get a chance to show up
	<-ownDone
	// The disruptions go one at a time, and long ones (a Redis outage, the
	// notifier's, a clock skew and its replay) can push the rest past the
	// load's last outcome on a fast machine. The run is over when both are:
	// the late ones still meet the reconciliation checks, late duplicates
	// and payments under way, and the drain and the checks come after.
	select {
	case <-planDone:
	default:
		cfg.logf("load done; waiting for the planned disruptions still to come")
		select {
		case <-planDone:
		case <-ctx.Done():
		}
	}
	stopChaos()
	rep.Disruptions = <-chaosDone
	rep.Loadgen = lrep
	if lerr != nil {
		return fmt.Errorf("chaos: load generator: %w", lerr)
	}
	cfg.logf("waiting up to %s for the jobs stream to empty", cfg.DrainWait)
	stranded, err := drainJobs(ctx, js, cfg.DrainWait, cfg.logf)
	if err != nil {
		return err
	}
	keysMu.Lock()
	defer keysMu.Unlock()
	if simErr != nil {
		return fmt.Errorf("chaos: simulator orders: %w", simErr)
	}
	c.reap()

	cfg.logf("load generator done: %s", lrep.Line())
	cfg.logf("reading the event and dead-letter streams")
	own.mu.Lock()
	ownKeys, ownErrs := slices.Clone(own.keys), slices.Clone(own.errs)
	rep.Faults = own.counts
	own.mu.Unlock()
	// WeChat Pay's record is read again now that every job has ended: the
	// load generator's copy predates the last settlements (a job settled
	// from its delivery limit may have closed its order since).
	infos, err = sim.Orders(ctx, append(slices.Clone(runKeys), ownKeys...))
	if err != nil {
		return fmt.Errorf("chaos: simulator orders: %w", err)
	}
	rep.HarnessErrors = ownErrs
	ev := &Evidence{Keys: append(slices.Clone(runKeys), ownKeys...), PublishErrors: lrep.Published.Errors, Sim: infos,
		Calls: c.recorder.Calls(), Stranded: stranded, HarnessErrors: ownErrs}
	if err := readStreams(ctx, nc, ev); err != nil {
		return err
	}
	measureStalls(rep.Disruptions, start, ev.OutcomeAt, jobs.snapshot())
	maps.Copy(rep.Faults, c.recorder.FaultCounts())
	if c.ackDropper != nil {
		rep.Faults[FaultAcksDropped], rep.Faults[FaultAckDropOrders] = c.ackDropper.Dropped()
	}
	c.mu.Lock()
	ev.Outages = slices.Clone(c.outages)
	ev.Exits = c.exits
	ev.Replays = slices.Clone(c.replays)
	ev.OutcomeTTL = cfg.OutcomeTTL
	ev.SkewWindows = slices.Clone(c.skews)
	rep.Faults[FaultReplayed] = len(c.replays)
	rep.UnexpectedExits = slices.Clone(c.unexpect)
	rep.WorkersStarted = c.started
	c.mu.Unlock()
	if st, err := sim.Stats(ctx); err == nil {
		rep.Sim = &st
	}
	if ev.StoreFailures, err = readLogNotes(c.logs, storeFailureMsgs); err != nil {
		return err
	}
	if ev.HandedBack, err = readLogNotes(c.logs, handBackMsgs); err != nil {
		return err
	}
	rep.Check = Check(ev)
	rep.Outages = ev.Outages
	if data, err := json.Marshal(ev.Calls); err == nil {
		_ = os.WriteFile(filepath.Join(cfg.Dir, "create-calls.json"), data, 0o600)
	}

	c.shutdown() // flush every log before scanning them
	sc := securitytest.NewScanner()
	for i, m := range keys.Merchants {
		pem, err := os.ReadFile(keys.Files[i].PrivateKeyFile)
		if err != nil {
			return fmt.Errorf("chaos: %w", err)
		}
		if err := sc.AddPrivateKeyPEM("merchant "+m.MchID+" private key", pem); err != nil {
			return err
		}
		sc.AddAPIv3Key("merchant "+m.MchID+" APIv3 key", string(m.APIv3Key))
	}
	findings, err := sc.ScanDir(c.logs)
	if err != nil {
		return err
	}
	rep.SecretFindings = findings
	return nil
}

// planned is one disruption of the schedule.
type planned struct {
	kind string
	at   time.Duration
}

// schedule spreads the disruptions at random over [8%, 92%] of the
// publishing time.
func schedule(rng *mrand.Rand, cfg *Config, publishFor time.Duration) []planned {
	var kinds []string
	for range cfg.Kills {
		kinds = append(kinds, KindKillWorker)
	}
	for range cfg.RedisRestarts {
		kinds = append(kinds, KindRestartRedis)
	}
	for range cfg.NATSRestarts {
		kinds = append(kinds, KindRestartNATS)
	}
	for range cfg.RedisWipes {
		kinds = append(kinds, KindWipeRedis)
	}
	for range cfg.RedisOutages {
		kinds = append(kinds, KindRedisOutage)
	}
	for range cfg.ClockSkews {
		kinds = append(kinds, KindClockSkew)
	}
	for range cfg.NotifierOutages {
		kinds = append(kinds, KindNotifierOutage)
	}
	kinds = append(kinds, cfg.clusterKinds()...)
	plan := make([]planned, len(kinds))
	for i, k := range kinds {
		f := 0.08 + 0.84*rng.Float64()
		plan[i] = planned{kind: k, at: time.Duration(f * float64(publishFor))}
	}
	slices.SortFunc(plan, func(a, b planned) int { return cmp.Compare(a.at, b.at) })
	return lagFirst(plan)
}

// disrupt carries out the plan, one disruption at a time, closes planDone
// when the last one is over, and replaces workers that die on their own
// until ctx ends.
func (c *cluster) disrupt(ctx context.Context, rng *mrand.Rand, plan []planned, start time.Time, planDone chan<- struct{}) []Disruption {
	var done []Disruption
	closed := false
	defer func() {
		if !closed {
			close(planDone)
		}
	}()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	lastEnd := time.Time{}
	for len(plan) > 0 || ctx.Err() == nil {
		select {
		case <-ctx.Done():
			for _, p := range plan {
				done = append(done, Disruption{Kind: p.kind, PlannedAt: p.at.Seconds(), At: -1, Error: "not performed: the run ended first"})
			}
			return done
		case <-tick.C:
		}
		if n := c.reap(); n > 0 {
			c.cfg.logf("%d worker(s) exited on their own; starting replacements", n)
			for range n {
				if _, err := c.startWorker(ctx); err != nil {
					c.cfg.logf("replacement worker: %v", err)
				}
			}
		}
		if len(plan) == 0 && !closed {
			close(planDone)
			closed = true
		}
		if len(plan) == 0 || time.Since(start) < plan[0].at || time.Since(lastEnd) < time.Second {
			continue
		}
		p := plan[0]
		plan = plan[1:]
		d := Disruption{Kind: p.kind, PlannedAt: p.at.Seconds(), At: time.Since(start).Seconds()}
		switch p.kind {
		case KindKillWorker:
			c.mu.Lock()
			n := len(c.workers)
			c.mu.Unlock()
			if n == 0 {
				d.Error = "no live worker"
				break
			}
			d.Target = c.killWorker(rng.IntN(n))
			down := time.Now()
			sleepCtx(ctx, time.Duration(500+rng.IntN(1500))*time.Millisecond)
			w, err := c.startWorker(ctx)
			if w != nil {
				d.Replacement = w.Name
			}
			if err != nil {
				d.Error = err.Error()
			}
			d.DownSeconds = time.Since(down).Seconds()
			c.cfg.logf("SIGKILLed %s; %s took over", d.Target, d.Replacement)
		case KindRestartRedis:
			d.Target = "redis"
			d.DownSeconds, d.Error = c.restart(ctx, "redis", time.Duration(2000+rng.IntN(3000))*time.Millisecond)
			c.cfg.logf("restarted redis-server (down %.1fs)", d.DownSeconds)
		case KindRestartNATS:
			d.Target = "nats"
			d.DownSeconds, d.Error = c.restart(ctx, "nats", time.Duration(2000+rng.IntN(2000))*time.Millisecond)
			c.cfg.logf("restarted nats-server (down %.1fs)", d.DownSeconds)
		case KindWipeRedis:
			d.Target = "redis"
			d.DownSeconds, d.Error = c.restartWith(ctx, "redis", time.Second, c.wipeRedis)
			c.markWiped()
			c.cfg.logf("restarted redis-server WITHOUT its data (down %.1fs)", d.DownSeconds)
		case KindRedisOutage:
			d.Target = "redis"
			d.DownSeconds, d.Error = c.restart(ctx, "redis", c.cfg.RedisOutage)
			c.cfg.logf("redis-server was down %.1fs, longer than the redelivery schedule (%s)", d.DownSeconds, redeliverySpan())
		case KindNotifierOutage:
			d.Target = "notifier"
			d.DownSeconds, d.Error = c.notifierOutage(ctx, c.cfg.NotifierOutage)
			c.cfg.logf("notifier was down %.1fs, longer than the reconciliation schedule's first check", d.DownSeconds)
		case KindClockSkew:
			d.Target = "workers' clock"
			d.DownSeconds, d.Replayed, d.Error = c.clockSkew(ctx)
			c.cfg.logf("workers' clock skewed by %s for %.1fs; %d dead letters replayed", c.cfg.ClockSkewBy, d.DownSeconds, d.Replayed)
		default:
			c.clusterDisruption(ctx, rng, &d)
		}
		done = append(done, d)
		lastEnd = time.Now()
	}
	return done
}

// restart stops a server, waits, starts it again and records the outage.
func (c *cluster) restart(ctx context.Context, which string, pause time.Duration) (float64, string) {
	return c.restartWith(ctx, which, pause, nil)
}

// restartWith is restart with whileDown run while the server is stopped.
func (c *cluster) restartWith(ctx context.Context, which string, pause time.Duration, whileDown func() error) (float64, string) {
	c.mu.Lock()
	p := c.redis
	if which == "nats" {
		p = c.nats
	}
	c.mu.Unlock()
	o := Outage{Server: which, Down: time.Now()}
	p.Stop(15 * time.Second)
	var downErr error
	if whileDown != nil {
		downErr = whileDown()
	}
	sleepCtx(ctx, pause)
	var err error
	if which == "nats" {
		err = c.startNATS(ctx)
	} else {
		err = c.startRedis(ctx)
	}
	o.Up = time.Now()
	c.mu.Lock()
	c.outages = append(c.outages, o)
	c.mu.Unlock()
	err = cmp.Or(downErr, err)
	if err != nil {
		return o.Up.Sub(o.Down).Seconds(), err.Error()
	}
	return o.Up.Sub(o.Down).Seconds(), ""
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// readStreams reads every stored event and dead letter of the run. Each is
// decoded strictly (unknown fields refused) into the type of its subject;
// one that does not decode is recorded in ev.Undecodable, never dropped.
func readStreams(ctx context.Context, nc *nats.Conn, ev *Evidence) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("chaos: jetstream: %w", err)
	}
	ev.Outcomes = map[loadgen.OrderKey][]OutcomeEvent{}
	ev.DeadLetters = map[loadgen.OrderKey][]DeadLetterRecord{}
	ev.Payments = map[loadgen.OrderKey][]events.PaymentSucceeded{}
	ev.Closed = map[loadgen.OrderKey]int{}
	s := events.Subjects{}
	undecodable := func(stream string, m jetstream.Msg, err error) {
		u := Undecodable{Stream: stream, Subject: m.Subject(), Error: err.Error()}
		if md, merr := m.Metadata(); merr == nil {
			u.Sequence = md.Sequence.Stream
		}
		ev.Undecodable = append(ev.Undecodable, u)
	}
	ev.OutcomeAt = map[loadgen.OrderKey]time.Time{}
	stored := func(k loadgen.OrderKey, m jetstream.Msg) {
		md, err := m.Metadata()
		if err != nil {
			return
		}
		if t, ok := ev.OutcomeAt[k]; !ok || md.Timestamp.Before(t) {
			ev.OutcomeAt[k] = md.Timestamp
		}
	}
	err = readAll(ctx, js, events.StreamEvents, func(m jetstream.Msg) {
		switch m.Subject() {
		case s.PrepayCreated():
			var e events.PrepayCreated
			if err := decodeStrict(m.Data(), &e); err != nil {
				undecodable(events.StreamEvents, m, err)
				return
			}
			k := loadgen.OrderKey{MchID: e.CombineMchID, OutTradeNo: e.CombineOutTradeNo}
			ev.Outcomes[k] = append(ev.Outcomes[k], OutcomeEvent{Created: true, Ref: firstNonEmpty(e.PrepayID, e.H5URL, e.CodeURL)})
			stored(k, m)
		case s.PrepayFailed():
			var e events.PrepayFailed
			if err := decodeStrict(m.Data(), &e); err != nil {
				undecodable(events.StreamEvents, m, err)
				return
			}
			k := loadgen.OrderKey{MchID: e.CombineMchID, OutTradeNo: e.CombineOutTradeNo}
			ev.Outcomes[k] = append(ev.Outcomes[k], OutcomeEvent{Code: e.Code, Final: e.Final})
			stored(k, m)
		case s.PaymentSucceeded():
			var e events.PaymentSucceeded
			if err := decodeStrict(m.Data(), &e); err != nil {
				undecodable(events.StreamEvents, m, err)
				return
			}
			k := loadgen.OrderKey{MchID: e.CombineMchID, OutTradeNo: e.CombineOutTradeNo}
			ev.Payments[k] = append(ev.Payments[k], e)
		case s.OrderClosed():
			var e events.OrderClosed
			if err := decodeStrict(m.Data(), &e); err != nil {
				undecodable(events.StreamEvents, m, err)
				return
			}
			ev.Closed[loadgen.OrderKey{MchID: e.CombineMchID, OutTradeNo: e.CombineOutTradeNo}]++
		default:
			undecodable(events.StreamEvents, m, errors.New("subject of no event type"))
		}
	})
	if err != nil {
		return err
	}
	return readAll(ctx, js, events.StreamDeadLetters, func(m jetstream.Msg) {
		var dl events.DeadLetter
		if err := decodeStrict(m.Data(), &dl); err != nil {
			undecodable(events.StreamDeadLetters, m, err)
			return
		}
		k := loadgen.OrderKey{MchID: dl.CombineMchID, OutTradeNo: dl.CombineOutTradeNo}
		if k.OutTradeNo == "" {
			k = jobKey(dl.OriginalData)
		}
		if k.OutTradeNo == "" {
			ev.UnkeyedDeadLetters++
			return
		}
		ev.DeadLetters[k] = append(ev.DeadLetters[k], DeadLetterRecord{Reason: dl.Reason, StreamSequence: dl.StreamSequence})
	})
}

// jobKey reads the order of a job body leniently, as a malformed job may
// still name it.
func jobKey(data []byte) loadgen.OrderKey {
	var job struct {
		Request struct {
			MchID      string `json:"combine_mchid"`
			OutTradeNo string `json:"combine_out_trade_no"`
		} `json:"request"`
	}
	_ = json.Unmarshal(data, &job)
	return loadgen.OrderKey{MchID: job.Request.MchID, OutTradeNo: job.Request.OutTradeNo}
}

// decodeStrict decodes one JSON value into v, refusing unknown fields and
// trailing data.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

// readAll hands every message of a stream to f, in order, once. A read
// that fails (a stream without a leader yet, after the cluster's last
// disruption: "no responders") is resumed after the last message handed
// to f, for up to electionRetryFor.
func readAll(ctx context.Context, js jetstream.JetStream, stream string, f func(jetstream.Msg)) error {
	next := uint64(1)
	return retryFor(ctx, electionRetryFor, func() error {
		return readFrom(ctx, js, stream, &next, f)
	})
}

// readFrom hands the messages of a stream from sequence *next to its last
// to f, advancing *next past each.
func readFrom(ctx context.Context, js jetstream.JetStream, stream string, next *uint64, f func(jetstream.Msg)) error {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("chaos: stream %s: %w", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return fmt.Errorf("chaos: stream %s: %w", stream, err)
	}
	last := info.State.LastSeq
	if info.State.Msgs == 0 || *next > last {
		return nil
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: *next})
	if err != nil {
		return fmt.Errorf("chaos: stream %s: %w", stream, err)
	}
	for {
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return fmt.Errorf("chaos: read %s: %w", stream, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("chaos: read %s: %w", stream, err)
			}
			if md.Sequence.Stream < *next {
				continue
			}
			f(m)
			*next = md.Sequence.Stream + 1
			if md.Sequence.Stream >= last {
				return nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return fmt.Errorf("chaos: read %s: %w", stream, err)
		}
		if n == 0 {
			return fmt.Errorf("chaos: read %s: stopped before sequence %d", stream, last)
		}
	}
}
