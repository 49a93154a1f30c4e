// Package stack starts the whole product on one machine — a NATS JetStream
// server, the idempotency store, the WeChat Pay simulator, workers and the
// notifier — for the demo and the end-to-end benchmark.
//
// The services run as they run in production: the worker, notifier and
// wechatsim commands are built with `go build` from the module and started
// as processes, configured only through their environment variables and
// flags. NATS is embedded (nats-server/v2 in process, with a temporary store
// directory) unless a nats-server binary or an external URL is given; the
// idempotency store is JetStream KV unless Redis addresses or a redis-server
// binary are given.
//
// # Credentials
//
// The simulator generates the platform keys and the merchants' credentials
// into its keys directory on first start, with one directory per merchant
// in the layout the worker and the notifier read (apiclient_key.pem,
// apiv3_key, serial, wechatpay_pub_key.pem with pub_key_id,
// platform_cert.pem; private files with mode 0600), so that directory is
// their WECHAT_MERCHANT_DIR.
//
// # Notifications
//
// Orders name the notifier's plain-HTTP loopback listener as notify_url
// (http://127.0.0.1:<port>/v3/notify/<mchid>). wechat.Validate accepts an
// http notify_url only on a loopback host, for local development and the
// simulator; WeChat Pay itself needs https, which an ingress terminates in
// front of the notifier in production.
package stack

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/wxcombine/orderworker/internal/proc"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/wxcombine/orderworker/loadgen"
	"github.com/wxcombine/orderworker/wechat"
	"github.com/wxcombine/orderworker/wechat/wechatsim"
)

// Defaults.
const (
	// MerchantsDefault are the simulator's merchants, mchid=appid.
	MerchantsDefault = "1900000109=wxd678efh567hg6787,1900000110=wxd678efh567hg6788"
	// ReadyTimeoutDefault bounds the wait for a service to become ready.
	ReadyTimeoutDefault = 30 * time.Second
	// StopTimeoutDefault bounds a graceful stop before a kill.
	StopTimeoutDefault = 15 * time.Second
	// SimGOGCDefault is the simulator's GOGC when this process has none.
	SimGOGCDefault = "400"
)

// Config configures Start.
type Config struct {
	// Root is the module root the commands are built from. Defaults to the
	// directory of `go env GOMOD`.
	Root string
	// Dir holds the binaries, keys, stores and logs. Defaults to a new
	// temporary directory that Close removes.
	Dir string
	// BinDir holds prebuilt worker, notifier and wechatsim binaries; Start
	// then builds nothing. Defaults to building into Dir/bin.
	BinDir string
	// BuildEnv is added to the environment of `go build`, such as
	// GOEXPERIMENT=boringcrypto. Defaults to none.
	BuildEnv []string
	// NATSURL is an external NATS server to use. Defaults to starting one.
	NATSURL string
	// NATSServerBin runs this nats-server binary instead of an embedded
	// server. Defaults to embedding.
	NATSServerBin string
	// RedisAddrs makes the workers use Redis at these comma-separated
	// addresses as the idempotency store. Defaults to JetStream KV.
	RedisAddrs string
	// RedisServerBin starts this redis-server on a free port and uses it.
	// Defaults to none.
	RedisServerBin string
	// Flavour is the WeChat Pay product. Defaults to wechat.FlavourMerchant.
	Flavour wechat.Flavour
	// Merchants are the simulator's merchants, "mchid=appid,…". Defaults to
	// MerchantsDefault.
	Merchants string
	// Workers is how many worker processes to start. Defaults to 1.
	Workers int
	// WorkerEnv adds or overrides worker settings (WORKER_IN_FLIGHT, …).
	// Defaults to none.
	WorkerEnv map[string]string
	// NotifierEnv adds or overrides notifier settings. Defaults to none.
	NotifierEnv map[string]string
	// SimArgs are extra wechatsim flags, such as fault rates. Defaults to
	// none.
	SimArgs []string
	// ReadyTimeout defaults to ReadyTimeoutDefault.
	ReadyTimeout time.Duration
	// Logger receives one line per step. Defaults to discarding.
	Logger *slog.Logger
}

// Process is one started service process; its Name is "wechatsim",
// "notifier", "worker-1", …, and its LogPath holds its stdout and stderr.
type Process struct {
	*proc.Proc
	// AdminURL serves /healthz, /readyz and /metrics (the simulator: /sim/).
	AdminURL string

	// thirdParty marks nats-server and redis-server, whose exit status
	// after SIGTERM is theirs to choose (nats-server answers 1).
	thirdParty bool
}

// Stack is a running product.
type Stack struct {
	// NATSURL is the NATS server's URL.
	NATSURL string
	// SimURL is the simulator's base URL (API under /v3/, admin under /sim/).
	SimURL string
	// NotifyBaseURL is the notifier's notification endpoint without the
	// merchant: http://127.0.0.1:<port>/v3/notify/.
	NotifyBaseURL string
	// Backend is the idempotency store: "kv" or "redis".
	Backend string
	// RedisAddrs is the Redis server when Backend is "redis".
	RedisAddrs string
	// KeysDir is the simulator's keys directory; MerchantDir the services'
	// merchant credentials, the same directory.
	KeysDir, MerchantDir string
	// Merchants are the simulator's merchants, with notify URLs pointing at
	// the notifier, ready for loadgen.
	Merchants []loadgen.Merchant
	// Dir is the working directory; BinDir the binaries.
	Dir, BinDir string

	cfg       Config
	log       *slog.Logger
	removeDir bool
	natsSrv   *natsserver.Server

	mu      sync.Mutex
	procs   []*Process
	workers int // started so far, for names
}

// Start builds the commands and starts the stack; on error it stops what
// it started. Call Close when done.
func Start(ctx context.Context, cfg Config) (_ *Stack, err error) {
	s := &Stack{cfg: cfg, log: cfg.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.cfg.Flavour = cmp.Or(cfg.Flavour, wechat.FlavourMerchant)
	s.cfg.Merchants = cmp.Or(cfg.Merchants, MerchantsDefault)
	s.cfg.Workers = cmp.Or(cfg.Workers, 1)
	s.cfg.ReadyTimeout = cmp.Or(cfg.ReadyTimeout, ReadyTimeoutDefault)
	s.Dir = cfg.Dir
	if s.Dir == "" {
		if s.Dir, err = os.MkdirTemp("", "orderworker-stack-"); err != nil {
			return nil, fmt.Errorf("stack: %w", err)
		}
		s.removeDir = true
	}
	defer func() {
		if err != nil {
			_ = s.Close()
		}
	}()
	if err := s.build(ctx); err != nil {
		return nil, err
	}
	if err := s.startNATS(ctx); err != nil {
		return nil, err
	}
	if err := s.startRedis(ctx); err != nil {
		return nil, err
	}
	if err := s.startSim(ctx); err != nil {
		return nil, err
	}
	if err := s.provision(); err != nil {
		return nil, err
	}
	for range s.cfg.Workers {
		if _, err := s.AddWorker(ctx, nil); err != nil {
			return nil, err
		}
	}
	// The notifier publishes into the events stream, which the workers
	// create.
	if err := s.startNotifier(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// build builds the worker, notifier and wechatsim commands into BinDir.
func (s *Stack) build(ctx context.Context) error {
	if s.cfg.BinDir != "" {
		s.BinDir = s.cfg.BinDir
		return nil
	}
	s.BinDir = filepath.Join(s.Dir, "bin")
	start := time.Now()
	if _, err := proc.Build(ctx, s.cfg.Root, s.BinDir, s.cfg.BuildEnv, "worker", "notifier", "wechatsim"); err != nil {
		return fmt.Errorf("stack: %w", err)
	}
	s.log.Info("built worker, notifier and wechatsim", slog.String("dir", s.BinDir), slog.Duration("took", time.Since(start).Round(time.Millisecond)))
	return nil
}

// freeAddr answers a loopback address that was free a moment ago.
func freeAddr() (string, error) {
	port, err := proc.FreePort()
	if err != nil {
		return "", fmt.Errorf("stack: %w", err)
	}
	return proc.Addr(port), nil
}

func (s *Stack) startNATS(ctx context.Context) error {
	if s.cfg.NATSURL != "" {
		s.NATSURL = s.cfg.NATSURL
		return nil
	}
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	host, portStr, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portStr)
	store := filepath.Join(s.Dir, "nats")
	s.NATSURL = "nats://" + addr
	if s.cfg.NATSServerBin != "" {
		p, err := s.startProcess(ctx, "nats-server", s.cfg.NATSServerBin,
			[]string{"-a", host, "-p", portStr, "-js", "-sd", store}, nil)
		if err != nil {
			return err
		}
		p.thirdParty = true
		if err := waitTCP(ctx, p, addr, s.cfg.ReadyTimeout); err != nil {
			return err
		}
		s.log.Info("nats-server started", slog.String("url", s.NATSURL), slog.Int("pid", p.PID()))
		return nil
	}
	srv, err := natsserver.NewServer(&natsserver.Options{
		Host: host, Port: port, JetStream: true, StoreDir: store, NoLog: true, NoSigs: true,
	})
	if err != nil {
		return fmt.Errorf("stack: nats server: %w", err)
	}
	go srv.Start() // Owned by s; ends on Shutdown in Close.
	if !srv.ReadyForConnections(s.cfg.ReadyTimeout) {
		srv.Shutdown()
		return fmt.Errorf("stack: embedded nats server not ready on %s", addr)
	}
	s.natsSrv = srv
	s.log.Info("embedded NATS JetStream started", slog.String("url", s.NATSURL), slog.String("store", store))
	return nil
}

func (s *Stack) startRedis(ctx context.Context) error {
	switch {
	case s.cfg.RedisAddrs != "":
		s.Backend, s.RedisAddrs = "redis", s.cfg.RedisAddrs
		return nil
	case s.cfg.RedisServerBin == "":
		s.Backend = "kv"
		return nil
	}
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	_, port, _ := net.SplitHostPort(addr)
	dir := filepath.Join(s.Dir, "redis")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("stack: %w", err)
	}
	p, err := s.startProcess(ctx, "redis-server", s.cfg.RedisServerBin,
		[]string{"--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir}, nil)
	if err != nil {
		return err
	}
	p.thirdParty = true
	if err := waitTCP(ctx, p, addr, s.cfg.ReadyTimeout); err != nil {
		return err
	}
	s.Backend, s.RedisAddrs = "redis", addr
	s.log.Info("redis-server started", slog.String("addr", addr), slog.Int("pid", p.PID()))
	return nil
}

func (s *Stack) startSim(ctx context.Context) error {
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	s.KeysDir = filepath.Join(s.Dir, "wechatsim-keys")
	args := append([]string{
		"-listen", addr, "-keys-dir", s.KeysDir, "-merchants", s.cfg.Merchants,
		"-flavour", string(s.cfg.Flavour), "-log-level", "warn",
	}, s.cfg.SimArgs...)
	// The simulator stands in for WeChat Pay's servers: it collects garbage
	// as the worker does (cmd/worker's GOGC=400) unless GOGC is set.
	var env map[string]string
	if _, ok := os.LookupEnv("GOGC"); !ok {
		env = map[string]string{"GOGC": SimGOGCDefault}
	}
	p, err := s.startProcess(ctx, "wechatsim", filepath.Join(s.BinDir, "wechatsim"), args, env)
	if err != nil {
		return err
	}
	s.SimURL = "http://" + addr
	p.AdminURL = s.SimURL
	if err := waitHTTP(ctx, p, s.SimURL+"/sim/stats", s.cfg.ReadyTimeout); err != nil {
		return err
	}
	s.log.Info("wechatsim started", slog.String("url", s.SimURL), slog.Int("pid", p.PID()), slog.Any("args", s.cfg.SimArgs))
	return nil
}

// provision reads the simulator's keys directory, which is also the
// services' WECHAT_MERCHANT_DIR (wechatsim.WriteKeys writes their layout),
// and the load generator's merchants.
func (s *Stack) provision() error {
	keys, err := wechatsim.LoadKeys(s.KeysDir)
	if err != nil {
		return fmt.Errorf("stack: %w", err)
	}
	s.MerchantDir = s.KeysDir
	var ids []string
	for _, m := range keys.Merchants {
		ids = append(ids, m.MchID)
	}
	for i, f := range keys.Files {
		m := loadgen.Merchant{MchID: f.MchID, AppID: keys.Merchants[i].AppIDs[0]}
		if s.cfg.Flavour == wechat.FlavourMerchant {
			m.SubMchIDs = ids // every configured merchant may take a sub-order
		}
		s.Merchants = append(s.Merchants, m)
	}
	return nil
}

// workerEnv answers the worker's environment; extra overrides
// Config.WorkerEnv.
func (s *Stack) workerEnv(adminAddr string, extra map[string]string) map[string]string {
	env := map[string]string{
		"NATS_URL":            s.NATSURL,
		"WECHAT_BASE_URL":     s.SimURL,
		"WECHAT_FLAVOUR":      string(s.cfg.Flavour),
		"WECHAT_MERCHANTS":    strings.Join(s.merchantIDs(), ","),
		"WECHAT_MERCHANT_DIR": s.MerchantDir,
		"ADMIN_ADDR":          adminAddr,
		"IDEMPOTENCY_BACKEND": s.Backend,
		"LOG_LEVEL":           "warn",
	}
	if s.Backend == "redis" {
		env["REDIS_ADDRS"] = s.RedisAddrs
		// A throwaway stack's Redis keeps nothing across restarts.
		env["IDEMPOTENCY_ALLOW_VOLATILE"] = "true"
	}
	for k, v := range s.cfg.WorkerEnv {
		env[k] = v
	}
	for k, v := range extra {
		env[k] = v
	}
	return env
}

func (s *Stack) merchantIDs() []string {
	ids := make([]string, len(s.Merchants))
	for i, m := range s.Merchants {
		ids[i] = m.MchID
	}
	return ids
}

// AddWorker starts one more worker process, with extra settings over
// Config.WorkerEnv, and waits until it is ready.
func (s *Stack) AddWorker(ctx context.Context, extra map[string]string) (*Process, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.workers++
	name := "worker-" + strconv.Itoa(s.workers)
	s.mu.Unlock()
	p, err := s.startProcess(ctx, name, filepath.Join(s.BinDir, "worker"), nil, s.workerEnv(addr, extra))
	if err != nil {
		return nil, err
	}
	p.AdminURL = "http://" + addr
	if err := waitHTTP(ctx, p, p.AdminURL+"/readyz", s.cfg.ReadyTimeout); err != nil {
		return nil, err
	}
	s.log.Info("worker started", slog.String("name", name), slog.String("admin", p.AdminURL), slog.Int("pid", p.PID()), slog.String("idempotency", s.Backend))
	return p, nil
}

func (s *Stack) startNotifier(ctx context.Context) error {
	httpAddr, err := freeAddr()
	if err != nil {
		return err
	}
	adminAddr, err := freeAddr()
	if err != nil {
		return err
	}
	env := map[string]string{
		"NATS_URL":            s.NATSURL,
		"WECHAT_MERCHANT_DIR": s.MerchantDir,
		"WECHAT_MERCHANTS":    strings.Join(s.merchantIDs(), ","),
		"HTTP_ADDR":           httpAddr,
		"ADMIN_ADDR":          adminAddr,
		"LOG_LEVEL":           "warn",
		// The workers' payments-seen record.
		"IDEMPOTENCY_BACKEND": s.Backend,
	}
	if s.Backend == "redis" {
		env["REDIS_ADDRS"] = s.RedisAddrs
	}
	for k, v := range s.cfg.NotifierEnv {
		env[k] = v
	}
	p, err := s.startProcess(ctx, "notifier", filepath.Join(s.BinDir, "notifier"), nil, env)
	if err != nil {
		return err
	}
	p.AdminURL = "http://" + adminAddr
	if err := waitHTTP(ctx, p, p.AdminURL+"/readyz", s.cfg.ReadyTimeout); err != nil {
		return err
	}
	s.NotifyBaseURL = "http://" + httpAddr + "/v3/notify/"
	for i := range s.Merchants {
		s.Merchants[i].NotifyURL = s.NotifyBaseURL + s.Merchants[i].MchID
	}
	s.log.Info("notifier started", slog.String("notify", s.NotifyBaseURL+"{mchid}"), slog.String("admin", p.AdminURL), slog.Int("pid", p.PID()))
	return nil
}

// startProcess starts bin with args and, of this process's environment,
// only what does not configure a service, plus env; its output goes to
// Dir/logs/<name>.log. If this process dies, Linux sends the service SIGTERM.
func (s *Stack) startProcess(_ context.Context, name, bin string, args []string, env map[string]string) (*Process, error) {
	e := proc.InheritEnv("PATH", "HOME", "TMPDIR", "GOMAXPROCS", "GODEBUG", "GOGC", "GOMEMLIMIT")
	for k, v := range env {
		e = append(e, k+"="+v)
	}
	pp, err := proc.Start(proc.Spec{
		Name: name, LogPath: filepath.Join(s.Dir, "logs", name+".log"), Bin: bin, Args: args, Env: e,
		ParentDeathSignal: syscall.SIGTERM,
	})
	if err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	p := &Process{Proc: pp}
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	return p, nil
}

// Processes answers the started processes in start order.
func (s *Stack) Processes() []*Process {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*Process(nil), s.procs...)
}

// Workers answers the worker processes still running.
func (s *Stack) Workers() []*Process {
	var ws []*Process
	for _, p := range s.Processes() {
		if strings.HasPrefix(p.Name, "worker-") && p.Running() {
			ws = append(ws, p)
		}
	}
	return ws
}

// Process answers the process named name, or nil.
func (s *Stack) Process(name string) *Process {
	for _, p := range s.Processes() {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// Stop stops p gracefully (SIGTERM), killing it after StopTimeoutDefault.
func Stop(p *Process) error {
	if !p.Running() {
		return nil
	}
	if p.Stop(StopTimeoutDefault) {
		return fmt.Errorf("stack: %s did not stop within %s and was killed", p.Name, StopTimeoutDefault)
	}
	_, _, _, err := p.Exited()
	var exit *exec.ExitError
	if errors.As(err, &exit) && !p.thirdParty {
		return fmt.Errorf("stack: %s: %w", p.Name, err)
	}
	return nil
}

// Close stops every process (the last started first), the embedded NATS
// server, and removes a temporary Dir.
func (s *Stack) Close() error {
	procs := s.Processes()
	var errs []error
	for i := len(procs) - 1; i >= 0; i-- {
		if err := Stop(procs[i]); err != nil {
			errs = append(errs, err)
		}
	}
	if s.natsSrv != nil {
		s.natsSrv.Shutdown()
		s.natsSrv.WaitForShutdown()
	}
	if s.removeDir {
		if err := os.RemoveAll(s.Dir); err != nil {
			errs = append(errs, fmt.Errorf("stack: %w", err))
		}
	}
	return errors.Join(errs...)
}

// waitTCP waits until addr accepts connections, or p exits.
func waitTCP(ctx context.Context, p *Process, addr string, timeout time.Duration) error {
	return proc.WaitTCP(ctx, p.Proc, addr, timeout)
}

// waitHTTP waits until url answers 200, or p exits.
func waitHTTP(ctx context.Context, p *Process, url string, timeout time.Duration) error {
	return proc.WaitHTTP(ctx, p.Proc, url, timeout)
}
