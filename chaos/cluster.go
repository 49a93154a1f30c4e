package chaos

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/internal/proc"

	"github.com/wxcombine/orderworker/wechat"
	"github.com/wxcombine/orderworker/wechat/wechatsim"
)

// GenerateKeys generates a platform and one merchant per mchID (each bound
// to appID "wx" + mchID + "chaos"), writes them into dir with
// wechatsim.WriteKeys — which is also the services' WECHAT_MERCHANT_DIR —
// and answers the keys. The platform key has platformBits bits (1024 signs
// answers faster).
func GenerateKeys(dir string, platformBits int, mchIDs ...string) (*wechatsim.Keys, error) {
	p, err := wechatsim.GeneratePlatform(platformBits)
	if err != nil {
		return nil, err
	}
	var (
		sims    []wechatsim.MerchantConfig
		clients []*wechat.Merchant
	)
	for _, id := range mchIDs {
		mc, m, err := wechatsim.GenerateMerchant(p, id, AppIDOf(id))
		if err != nil {
			return nil, err
		}
		sims, clients = append(sims, mc), append(clients, m)
	}
	if err := wechatsim.WriteKeys(dir, p, sims, clients); err != nil {
		return nil, err
	}
	return wechatsim.LoadKeys(dir)
}

// AppIDOf answers the appid GenerateKeys binds to mchID.
func AppIDOf(mchID string) string { return "wx" + mchID + "chaos" }

// cluster is the set of processes of one run.
type cluster struct {
	cfg  *Config
	bins map[string]string
	dir  string // run directory
	logs string // log directory

	natsPort, natsMonPort, redisPort int
	simURL                           string
	notifierURL                      string
	merchantDir                      string
	mchIDs                           []string
	recorder                         *Recorder

	mu       sync.Mutex
	nats     *proc.Proc
	redis    *proc.Proc
	sim      *proc.Proc
	notifier *proc.Proc
	// notifierPort and notifierAdminPort are the notifier's addresses,
	// kept across its restarts.
	notifierPort, notifierAdminPort int
	workers                         []*proc.Proc // live workers
	all                             []*proc.Proc // every process ever started
	started                         int          // workers started
	exits                           map[string]time.Time
	outages                         []Outage
	unexpect                        []string
	skews                           []SkewWindow
	replays                         []Replay
	// ackDropper, when set, sits between the workers and NATS.
	ackDropper *AckDropper

	// A cluster run's JetStream cluster and replicated Redis (jscluster.go,
	// sentinel.go); js is the harness's JetStream client, for leaders.
	nodes  []*natsNode
	routes *routeProxy
	sent   *sentinelSet
	js     jetstream.JetStream
}

func (c *cluster) natsURL() string {
	if c.cfg.Cluster {
		return c.clusterURL()
	}
	return "nats://" + proc.Addr(c.natsPort)
}

// workerNATSURL is the workers' NATS_URL: through the ack dropper when
// there is one.
func (c *cluster) workerNATSURL() string {
	if c.ackDropper != nil {
		return c.ackDropper.URL()
	}
	return c.natsURL()
}

// Binaries are the module's commands a run builds, by name.
var Binaries = []string{"worker", "notifier", "wechatsim", "deadletter"}

// NATSServerModule is the nats-server a run uses by default, built at the
// version go.mod requires.
const NATSServerModule = "github.com/nats-io/nats-server/v2"

// BuildNATSServer builds NATSServerModule at the version in go.mod into
// dir/nats-server (offline from the module cache when it is there) and
// answers its path.
func BuildNATSServer(ctx context.Context, dir string) (string, error) {
	root, err := proc.ModuleRoot(ctx)
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "nats-server")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, NATSServerModule) //nolint:gosec // G204: fixed arguments
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("chaos: build %s: %w: %s", NATSServerModule, err, strings.TrimSpace(string(b)))
	}
	return out, nil
}

// Build compiles Binaries into dir as static binaries and answers each
// path by name.
func Build(ctx context.Context, dir string) (map[string]string, error) {
	return proc.Build(ctx, "", dir, []string{"CGO_ENABLED=0"}, Binaries...)
}

// Start starts a process whose environment is exactly env plus PATH and
// HOME, with its output appended to logPath; it dies with the harness.
func Start(name, logPath string, env []string, bin string, args ...string) (*proc.Proc, error) {
	return proc.Start(proc.Spec{
		Name: name, LogPath: logPath, Bin: bin, Args: args,
		Env: append(proc.InheritEnv("PATH", "HOME"), env...),
	})
}

func (c *cluster) track(p *proc.Proc) {
	c.mu.Lock()
	c.all = append(c.all, p)
	c.mu.Unlock()
}

func (c *cluster) startNATS(ctx context.Context) error {
	// max_payload carries the dead letter of a job of MaxJobBytes (the
	// worker refuses to start otherwise); it has no command-line flag.
	conf := filepath.Join(c.dir, "nats.conf")
	if err := os.WriteFile(conf, []byte("max_payload: 4MB\n"), 0o600); err != nil {
		return fmt.Errorf("chaos: %w", err)
	}
	p, err := Start("nats", filepath.Join(c.logs, "nats.log"), nil, c.cfg.NATSServer, "-c", conf,
		"-js", "-sd", filepath.Join(c.dir, "nats"), "-a", "127.0.0.1",
		"-p", strconv.Itoa(c.natsPort), "-m", strconv.Itoa(c.natsMonPort))
	if err != nil {
		return err
	}
	c.track(p)
	c.mu.Lock()
	c.nats = p
	c.mu.Unlock()
	return proc.WaitHTTP(ctx, p, "http://"+proc.Addr(c.natsMonPort)+"/healthz", 30*time.Second)
}

func (c *cluster) startRedis(ctx context.Context) error {
	dir := filepath.Join(c.dir, "redis")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("chaos: %w", err)
	}
	// Persistence on, as in production: a restart must not forget the
	// idempotency keys.
	p, err := Start("redis", filepath.Join(c.logs, "redis.log"), nil, c.cfg.RedisServer,
		"--port", strconv.Itoa(c.redisPort), "--bind", "127.0.0.1", "--dir", dir,
		"--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--logfile", "")
	if err != nil {
		return err
	}
	c.track(p)
	c.mu.Lock()
	c.redis = p
	c.mu.Unlock()
	return proc.WaitTCP(ctx, p, proc.Addr(c.redisPort), 30*time.Second)
}

func (c *cluster) startSim(ctx context.Context, keysDir string, seed int64) error {
	port, err := proc.FreePort()
	if err != nil {
		return err
	}
	f := c.cfg.faults()
	args := []string{
		"-listen", proc.Addr(port), "-keys-dir", keysDir, "-flavour", "merchant", "-key-mode", "pubkey",
		"-seed", strconv.FormatInt(seed, 10), "-notify-speedup", "60",
		"-system-error-rate", fmtRate(f.SystemErrorRate), "-bank-error-rate", fmtRate(f.BankErrorRate),
		"-frequency-limited-rate", fmtRate(f.FrequencyLimitedRate), "-bad-502-rate", fmtRate(f.Bad502Rate),
		"-timeout-after-create-rate", fmtRate(f.TimeoutAfterCreateRate),
		"-rate-per-merchant", fmtRate(f.RatePerMerchant), "-log-level", "info",
		"-notify-drop-rate", fmtRate(c.cfg.NotifyDropRate),
	}
	if c.cfg.ServiceUnavailableFromSimulator {
		// The simulator's own SERVICE_UNAVAILABLE fault, once it has one.
		args = append(args, "-service-unavailable-rate", fmtRate(c.cfg.ServiceUnavailableRate))
	}
	p, err := Start("wechatsim", filepath.Join(c.logs, "wechatsim.log"), nil, c.bins["wechatsim"], args...)
	if err != nil {
		return err
	}
	c.track(p)
	c.sim = p
	c.simURL = "http://" + proc.Addr(port)
	return proc.WaitHTTP(ctx, p, c.simURL+"/sim/stats", 30*time.Second)
}

func joinDurations(ds []time.Duration) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = d.String()
	}
	return strings.Join(parts, ",")
}

func fmtRate(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// workerEnv answers a worker's environment.
func (c *cluster) workerEnv(baseURL string, adminPort int) []string {
	env := []string{
		"NATS_URL=" + c.workerNATSURL(),
		"IDEMPOTENCY_BACKEND=redis",
		"REDIS_ADDRS=" + proc.Addr(c.redisPort),
		// The suite restarts Redis empty on purpose.
		"IDEMPOTENCY_ALLOW_VOLATILE=true",
		"WECHAT_BASE_URL=" + baseURL,
		"WECHAT_FLAVOUR=merchant",
		"WECHAT_MERCHANTS=" + strings.Join(c.mchIDs, ","),
		"WECHAT_MERCHANT_DIR=" + c.merchantDir,
		"RECONCILE_SCHEDULE=" + c.cfg.ReconcileSchedule,
		// The payments-seen record on JetStream KV, as the manifests run
		// it (deploy/k8s/base/worker.env): outside the idempotency
		// store's failure domain, so a Redis that loses its data (the
		// suite's wipe, a failover to a lagging replica) does not lose the
		// memory of published prepays and payments with it.
		"PAYMENTS_SEEN_BACKEND=kv",
		"ADMIN_ADDR=" + proc.Addr(adminPort),
		"LOG_LEVEL=info",
		// Shorter than production so that a run takes minutes: a hung call
		// gives up after 3s, a killed worker's jobs come back after
		// AckWait, a job reaches the delivery limit within a minute.
		"WECHAT_CALL_TIMEOUT=3s",
		"ACK_WAIT=" + AckWait.String(),
		"JOB_TIMEOUT=" + (AckWait - 3*time.Second).String(),
		"MAX_DELIVER=" + strconv.Itoa(MaxDeliver),
		"REDELIVERY_DELAYS=" + joinDurations(RedeliveryDelays),
		"IDEMPOTENCY_OUTCOME_TTL=" + c.cfg.OutcomeTTL.String(),
		"MAX_JOB_BYTES=" + strconv.Itoa(c.cfg.MaxJobBytes),
		// A fixed level (the adaptive limit's floor at its ceiling): the
		// suite judges outcomes, and a load that does not follow the
		// machine's own keeps runs comparable on a shared, noisy machine.
		"WORKER_IN_FLIGHT=16",
		"WORKER_IN_FLIGHT_MIN=16",
		"DUPLICATE_WINDOW=1h",
		"SHUTDOWN_GRACE=5s",
	}
	if c.cfg.Cluster {
		env = append(env, "STREAM_REPLICAS="+strconv.Itoa(ClusterNodes))
		switch {
		case c.cfg.KVBackend:
			env = slices.DeleteFunc(env, func(v string) bool { return strings.HasPrefix(v, "REDIS_ADDRS=") })
			env = slices.Insert(env, 1, "IDEMPOTENCY_BACKEND=kv")
			env = slices.DeleteFunc(env, func(v string) bool { return v == "IDEMPOTENCY_BACKEND=redis" })
		default:
			for i, v := range env {
				if strings.HasPrefix(v, "REDIS_ADDRS=") {
					env[i] = "REDIS_ADDRS=" + strings.Join(c.sent.addrs, ",")
				}
			}
			env = append(env, "REDIS_MASTER_NAME="+SentinelMasterName)
		}
	}
	return append(env, c.cfg.WorkerEnv...)
}

// startWorker starts one more worker behind its own proxy listener and
// waits until it is ready.
func (c *cluster) startWorker(ctx context.Context) (*proc.Proc, error) {
	c.mu.Lock()
	c.started++
	name := fmt.Sprintf("worker-%d", c.started)
	c.mu.Unlock()
	baseURL, err := c.recorder.Listen(name)
	if err != nil {
		return nil, err
	}
	adminPort, err := proc.FreePort()
	if err != nil {
		return nil, err
	}
	p, err := Start(name, filepath.Join(c.logs, name+".log"), c.workerEnv(baseURL, adminPort), c.bins["worker"])
	if err != nil {
		return nil, err
	}
	c.track(p)
	c.mu.Lock()
	c.workers = append(c.workers, p)
	c.mu.Unlock()
	return p, proc.WaitHTTP(ctx, p, "http://"+proc.Addr(adminPort)+"/readyz", 60*time.Second)
}

func (c *cluster) startNotifier(ctx context.Context) error {
	// A restarted notifier listens where the first did: the orders'
	// notify_url names it.
	if c.notifierPort == 0 {
		var err error
		if c.notifierPort, err = proc.FreePort(); err != nil {
			return err
		}
		if c.notifierAdminPort, err = proc.FreePort(); err != nil {
			return err
		}
	}
	port, adminPort := c.notifierPort, c.notifierAdminPort
	env := []string{
		"NATS_URL=" + c.natsURL(),
		"WECHAT_MERCHANTS=" + strings.Join(c.mchIDs, ","),
		"WECHAT_MERCHANT_DIR=" + c.merchantDir,
		"HTTP_ADDR=" + proc.Addr(port),
		"ADMIN_ADDR=" + proc.Addr(adminPort),
		"LOG_LEVEL=info",
		// The workers' payments-seen record.
		"PAYMENTS_SEEN_BACKEND=kv",
	}
	if c.cfg.Cluster {
		// The bucket's replicas as the workers made it.
		env = append(env, "STREAM_REPLICAS="+strconv.Itoa(ClusterNodes))
	}
	p, err := Start("notifier", filepath.Join(c.logs, "notifier.log"), env, c.bins["notifier"])
	if err != nil {
		return err
	}
	c.track(p)
	c.notifier = p
	c.notifierURL = "http://" + proc.Addr(port)
	return proc.WaitHTTP(ctx, p, "http://"+proc.Addr(adminPort)+"/readyz", 60*time.Second)
}

// notifierOutage stops the notifier gracefully for d, then starts it again
// on the same address.
func (c *cluster) notifierOutage(ctx context.Context, d time.Duration) (float64, string) {
	c.mu.Lock()
	p := c.notifier
	c.mu.Unlock()
	down := time.Now()
	p.Stop(15 * time.Second)
	sleepCtx(ctx, d)
	err := c.startNotifier(ctx)
	if err != nil {
		return time.Since(down).Seconds(), err.Error()
	}
	return time.Since(down).Seconds(), ""
}

// killWorker SIGKILLs live worker i.
func (c *cluster) killWorker(i int) string {
	c.mu.Lock()
	p := c.workers[i]
	c.workers = append(c.workers[:i:i], c.workers[i+1:]...)
	c.mu.Unlock()
	p.Kill()
	_, at, _, _ := p.Exited()
	c.mu.Lock()
	c.exits[p.Name] = at
	c.mu.Unlock()
	return p.Name
}

// reap records workers that exited without the harness asking and answers
// how many; the caller replaces them. Other processes that died are
// recorded too.
func (c *cluster) reap() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	live := c.workers[:0]
	for _, p := range c.workers {
		if exited, at, byHarness, err := p.Exited(); exited && !byHarness {
			c.exits[p.Name] = at
			c.unexpect = append(c.unexpect, fmt.Sprintf("%s exited at %s: %v (see %s)", p.Name, at.Format(time.RFC3339Nano), err, p.LogPath))
			n++
			continue
		}
		live = append(live, p)
	}
	c.workers = live
	servers := []*proc.Proc{c.nats, c.redis, c.sim, c.notifier}
	for _, n := range c.nodes {
		servers = append(servers, n.p)
	}
	if c.sent != nil {
		servers = append(servers, c.sent.sentinels...)
		for _, n := range c.sent.data {
			servers = append(servers, n.p)
		}
	}
	for _, p := range servers {
		if p == nil {
			continue
		}
		if exited, at, byHarness, err := p.Exited(); exited && !byHarness {
			msg := fmt.Sprintf("%s exited at %s: %v (see %s)", p.Name, at.Format(time.RFC3339Nano), err, p.LogPath)
			if !containsString(c.unexpect, msg) {
				c.unexpect = append(c.unexpect, msg)
			}
		}
	}
	return n
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// shutdown stops every process still running: workers first (gracefully,
// so their logs end cleanly), then the rest.
func (c *cluster) shutdown() {
	c.mu.Lock()
	all := append([]*proc.Proc(nil), c.all...)
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range all {
		if strings.HasPrefix(p.Name, "worker-") || p.Name == "notifier" {
			wg.Add(1)
			go func() { defer wg.Done(); p.Stop(8 * time.Second) }()
		}
	}
	wg.Wait()
	for _, p := range all {
		p.Stop(8 * time.Second)
	}
	if c.recorder != nil {
		c.recorder.Close()
	}
	if c.ackDropper != nil {
		c.ackDropper.Close()
	}
	if c.routes != nil {
		c.routes.close()
	}
	if c.sent != nil && c.sent.link != nil {
		c.sent.link.close()
	}
}
