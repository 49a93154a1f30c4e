package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/idempotency"
	"github.com/wxcombine/orderworker/pipeline"
	"github.com/wxcombine/orderworker/ratelimit"
	"github.com/wxcombine/orderworker/wechat"
)

// setting is one configuration variable: its environment name, its default
// and what it means. Every setting is also a flag: NATS_URL is -nats-url.
type setting struct {
	env, def, usage string
}

// settings lists every variable the worker reads, in the order of the help.
var settings = []setting{
	{"NATS_URL", "nats://127.0.0.1:4222", "NATS server URLs, comma-separated"},
	{"NATS_CREDS_FILE", "", "NATS credentials file (JWT + NKey seed)"},
	{"NATS_TLS_CA_FILE", "", "PEM CA file that signs the NATS servers' certificates"},
	{"NATS_TLS_CERT_FILE", "", "PEM client certificate for NATS mutual TLS (with NATS_TLS_KEY_FILE)"},
	{"NATS_TLS_KEY_FILE", "", "PEM client key for NATS mutual TLS"},
	{"SUBJECT_PREFIX", events.SubjectPrefixDefault, "first token(s) of every subject"},
	{"STREAM_REPLICAS", "1", "replicas of the streams and the consumer (1-5)"},
	{"STREAM_STORAGE", "file", "stream storage: file or memory"},
	{"JOBS_MAX_AGE", "24h", "how long the jobs stream keeps a job"},
	{"EVENTS_MAX_AGE", "168h", "how long the events stream keeps an event"},
	{"DEADLETTERS_MAX_AGE", "720h", "how long the dead-letter stream keeps a dead letter"},
	{"DUPLICATE_WINDOW", "10m", "Nats-Msg-Id deduplication window of each stream"},
	{"CONSUMER_NAME", pipeline.ConsumerDefault, "durable consumer name"},
	{"ACK_WAIT", "60s", "consumer AckWait"},
	{"MAX_DELIVER", "10", "consumer MaxDeliver: the delivery that reaches it dead-letters"},
	{"MAX_ACK_PENDING", "4096", "consumer MaxAckPending, at least replicas × WORKER_IN_FLIGHT"},
	{"CONSUMER_BACKOFF", "", "consumer BackOff for unacknowledged jobs, comma-separated durations"},
	{"REDELIVERY_DELAYS", "2s,5s,15s,30s,1m,2m,5m", "NakWithDelay after each delivery that ran out of retries; the last repeats"},
	{"RETRY_INITIAL_INTERVAL", "500ms", "delay before the first in-process retry of a WeChat Pay call"},
	{"RETRY_MAX_INTERVAL", "4s", "largest delay between in-process retries"},
	{"RETRY_MAX_ATTEMPTS", "4", "WeChat Pay calls per delivery, the first included"},
	{"RETRY_MAX_ELAPSED", "15s", "budget of one delivery's calls and retry delays"},
	// Concurrency and rate limits (limits.go).
	{"WORKER_IN_FLIGHT", "256", "most jobs handled at once by this worker: the ceiling of its adaptive limit"},
	{"WORKER_IN_FLIGHT_MIN", "2", "floor of the adaptive limit; WORKER_IN_FLIGHT for a fixed one"},
	{"WECHAT_MERCHANT_QPS", "", "WeChat Pay requests/s per merchant over all workers: <mchid>=<rate>,…,*=<default>; none: no limit"},
	{"RATELIMIT_KV_BUCKET", ratelimit.KVBucketDefault, "KV bucket of the rate limits (kv backend)"},
	{"JOB_TIMEOUT", "45s", "deadline of one delivery, shorter than ACK_WAIT"},
	{"SHUTDOWN_GRACE", "25s", "time in-flight jobs get to finish after SIGTERM"},
	{"MAX_JOB_BYTES", strconv.Itoa(events.MaxJobSize), "largest job body accepted"},
	{"IDEMPOTENCY_BACKEND", "redis", "idempotency store: redis or kv (JetStream KV)"},
	{"IDEMPOTENCY_LEASE", "30s", "claim lease of one delivery's WeChat Pay calls"},
	{"IDEMPOTENCY_OUTCOME_TTL", "24h", "how long an outcome answers duplicates"},
	{"IDEMPOTENCY_KV_BUCKET", idempotency.KVBucketDefault, "KV bucket (kv backend)"},
	{"REDIS_ADDRS", "", "Redis host:port list (redis backend; several = Cluster seeds, or Sentinels with REDIS_MASTER_NAME)"},
	{"REDIS_MASTER_NAME", "", "Sentinel primary name"},
	{"REDIS_USERNAME", "", "Redis ACL user"},
	{"REDIS_PASSWORD_FILE", "", "file holding the Redis password"},
	{"REDIS_DB", "0", "Redis database"},
	{"REDIS_TLS", "false", "use TLS to Redis"},
	{"REDIS_TLS_CA_FILE", "", "PEM CA file for Redis TLS"},
	{"REDIS_TLS_SERVER_NAME", "", "name checked in the Redis certificates"},
	{"REDIS_KEY_PREFIX", "", "prefix of the idempotency keys (default: the store's)"},
	{"WECHAT_BASE_URL", wechat.BaseURLDefault, "WeChat Pay API base URL"},
	{"WECHAT_FLAVOUR", "", "WeChat Pay product: merchant, partner, ecommerce or individual (required)"},
	{"WECHAT_MERCHANTS", "", "combine_mchid list, comma-separated (required)"},
	{"WECHAT_MERCHANT_DIR", "/etc/orderworker/merchants", "directory with one sub-directory of credential files per merchant"},
	{"WECHAT_CALL_TIMEOUT", "8s", "timeout of one WeChat Pay call"},
	{"ADMIN_ADDR", ":8081", "address of /healthz, /readyz and /metrics"},
	{"LOG_LEVEL", "info", "debug, info, warn or error"},
	{"PPROF_ENABLED", "false", "also serve net/http/pprof under /debug/pprof/ on ADMIN_ADDR, for profiling"},
}

// Merchant credential files inside WECHAT_MERCHANT_DIR/<mchid>/.
const (
	fileMerchantKey  = "apiclient_key.pem"     // required: merchant API private key
	fileAPIv3Key     = "apiv3_key"             // required: 32-byte APIv3 key
	fileSerial       = "serial"                // required: merchant certificate serial
	filePublicKey    = "wechatpay_pub_key.pem" // WeChat Pay public key (public-key mode) …
	filePublicKeyID  = "pub_key_id"            // … and its PUB_KEY_ID_… id
	globPlatformCert = "platform_cert*.pem"    // and/or platform certificates
)

// config is the worker's whole configuration.
type config struct {
	NATSURL, NATSCredsFile                string
	NATSCAFile, NATSCertFile, NATSKeyFile string

	Subjects                 events.Subjects
	Replicas                 int
	Storage                  jetstream.StorageType
	JobsMaxAge, EventsMaxAge time.Duration
	DeadLettersMaxAge        time.Duration
	DuplicateWindow          time.Duration
	Consumer                 string
	AckWait                  time.Duration
	MaxDeliver               int
	MaxAckPending            int
	ConsumerBackOff          []time.Duration
	Redelivery               []time.Duration
	Retry                    pipeline.RetryPolicy
	InFlight                 int
	Limits                   limits
	JobTimeout               time.Duration
	ShutdownGrace            time.Duration
	MaxJobBytes              int

	Backend     string
	Lease       time.Duration
	OutcomeTTL  time.Duration
	KVBucket    string
	Redis       idempotency.RedisClientConfig
	RedisPrefix string

	WeChatBaseURL     string
	Flavour           wechat.Flavour
	MerchantFiles     []wechat.MerchantFiles
	WeChatCallTimeout time.Duration

	AdminAddr string
	LogLevel  slog.Level
	// PprofEnabled serves /debug/pprof/ on the admin server.
	PprofEnabled bool
}

// withFlags answers a getenv in which every setting given as a flag
// (-nats-url for NATS_URL) overrides the environment.
func withFlags(args []string, getenv func(string) string, output io.Writer) (func(string) string, error) {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(output)
	vals := map[string]*string{}
	for _, s := range settings {
		name := strings.ReplaceAll(strings.ToLower(s.env), "_", "-")
		vals[s.env] = fs.String(name, "", s.usage+" (env "+s.env+", default "+strconv.Quote(s.def)+")")
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[strings.ReplaceAll(strings.ToUpper(f.Name), "-", "_")] = true })
	return func(k string) string {
		if set[k] {
			return *vals[k]
		}
		return getenv(k)
	}, nil
}

// loader reads settings and collects every problem.
type loader struct {
	getenv func(string) string
	errs   []string
}

func (l *loader) str(k string) string {
	if v := strings.TrimSpace(l.getenv(k)); v != "" {
		return v
	}
	for _, s := range settings {
		if s.env == k {
			return s.def
		}
	}
	panic("unknown setting " + k)
}

func (l *loader) fail(k, format string, args ...any) {
	l.errs = append(l.errs, k+": "+fmt.Sprintf(format, args...))
}

func (l *loader) duration(k string) time.Duration {
	v := l.str(k)
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		l.fail(k, "%q is not a positive duration such as 30s", v)
	}
	return d
}

func (l *loader) durations(k string) []time.Duration {
	v := l.str(k)
	if v == "" {
		return nil
	}
	var out []time.Duration
	for _, p := range strings.Split(v, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(p))
		if err != nil || d <= 0 {
			l.fail(k, "%q is not a comma-separated list of positive durations", v)
			return nil
		}
		out = append(out, d)
	}
	return out
}

func (l *loader) integer(k string, lo, hi int) int {
	v := l.str(k)
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		l.fail(k, "%q is not an integer from %d to %d", v, lo, hi)
	}
	return n
}

func (l *loader) boolean(k string) bool {
	v := l.str(k)
	b, err := strconv.ParseBool(v)
	if err != nil {
		l.fail(k, "%q is not true or false", v)
	}
	return b
}

// file checks that a named file exists; "" is allowed.
func (l *loader) file(k string) string {
	v := l.str(k)
	if v != "" {
		if _, err := os.Stat(v); err != nil {
			l.fail(k, "file %s cannot be read", v)
		}
	}
	return v
}

// loadConfig reads the whole configuration and reports every missing or
// invalid setting in one error. It reads files (the Redis password, the
// merchants' credential file names) but never quotes a secret.
func loadConfig(getenv func(string) string) (config, error) {
	l := &loader{getenv: getenv}
	c := config{
		NATSURL: l.str("NATS_URL"), NATSCredsFile: l.file("NATS_CREDS_FILE"),
		NATSCAFile: l.file("NATS_TLS_CA_FILE"), NATSCertFile: l.file("NATS_TLS_CERT_FILE"), NATSKeyFile: l.file("NATS_TLS_KEY_FILE"),
		Subjects:          events.Subjects{Prefix: l.str("SUBJECT_PREFIX")},
		Replicas:          l.integer("STREAM_REPLICAS", 1, 5),
		JobsMaxAge:        l.duration("JOBS_MAX_AGE"),
		EventsMaxAge:      l.duration("EVENTS_MAX_AGE"),
		DeadLettersMaxAge: l.duration("DEADLETTERS_MAX_AGE"),
		DuplicateWindow:   l.duration("DUPLICATE_WINDOW"),
		Consumer:          l.str("CONSUMER_NAME"),
		AckWait:           l.duration("ACK_WAIT"),
		MaxDeliver:        l.integer("MAX_DELIVER", 1, 1000),
		MaxAckPending:     l.integer("MAX_ACK_PENDING", 1, 1_000_000),
		ConsumerBackOff:   l.durations("CONSUMER_BACKOFF"),
		Redelivery:        l.durations("REDELIVERY_DELAYS"),
		Retry: pipeline.RetryPolicy{
			InitialInterval: l.duration("RETRY_INITIAL_INTERVAL"),
			MaxInterval:     l.duration("RETRY_MAX_INTERVAL"),
			MaxAttempts:     l.integer("RETRY_MAX_ATTEMPTS", 1, 100),
			MaxElapsed:      l.duration("RETRY_MAX_ELAPSED"),
		},
		InFlight:          l.integer("WORKER_IN_FLIGHT", 1, 10_000),
		JobTimeout:        l.duration("JOB_TIMEOUT"),
		ShutdownGrace:     l.duration("SHUTDOWN_GRACE"),
		MaxJobBytes:       l.integer("MAX_JOB_BYTES", 1024, 64<<20),
		Backend:           l.str("IDEMPOTENCY_BACKEND"),
		Lease:             l.duration("IDEMPOTENCY_LEASE"),
		OutcomeTTL:        l.duration("IDEMPOTENCY_OUTCOME_TTL"),
		KVBucket:          l.str("IDEMPOTENCY_KV_BUCKET"),
		RedisPrefix:       l.str("REDIS_KEY_PREFIX"),
		WeChatBaseURL:     l.str("WECHAT_BASE_URL"),
		WeChatCallTimeout: l.duration("WECHAT_CALL_TIMEOUT"),
		AdminAddr:         l.str("ADMIN_ADDR"),
	}
	if (c.NATSCertFile == "") != (c.NATSKeyFile == "") {
		l.fail("NATS_TLS_CERT_FILE", "and NATS_TLS_KEY_FILE must be set together")
	}
	switch s := l.str("STREAM_STORAGE"); s {
	case "file":
		c.Storage = jetstream.FileStorage
	case "memory":
		c.Storage = jetstream.MemoryStorage
	default:
		l.fail("STREAM_STORAGE", "%q is not file or memory", s)
	}
	if c.JobTimeout >= c.AckWait && c.AckWait > 0 {
		l.fail("JOB_TIMEOUT", "%s must be shorter than ACK_WAIT %s", c.JobTimeout, c.AckWait)
	}
	if need := c.Retry.MaxElapsed + c.WeChatCallTimeout + c.Retry.MaxInterval; c.Lease > 0 && c.Lease < need {
		l.fail("IDEMPOTENCY_LEASE", "%s must cover RETRY_MAX_ELAPSED + WECHAT_CALL_TIMEOUT + RETRY_MAX_INTERVAL = %s", c.Lease, need)
	}
	if len(c.ConsumerBackOff) > c.MaxDeliver && c.MaxDeliver > 0 {
		l.fail("CONSUMER_BACKOFF", "has %d values, more than MAX_DELIVER %d", len(c.ConsumerBackOff), c.MaxDeliver)
	}
	if c.MaxAckPending < c.InFlight && c.InFlight > 0 {
		l.fail("MAX_ACK_PENDING", "%d is below WORKER_IN_FLIGHT %d", c.MaxAckPending, c.InFlight)
	}
	switch c.Backend {
	case "redis":
		c.Redis = loadRedis(l)
	case "kv":
	default:
		l.fail("IDEMPOTENCY_BACKEND", "%q is not redis or kv", c.Backend)
	}
	if f, err := wechat.ParseFlavour(l.getenv("WECHAT_FLAVOUR")); err != nil {
		if l.getenv("WECHAT_FLAVOUR") == "" {
			l.fail("WECHAT_FLAVOUR", "is required: merchant, partner, ecommerce or individual")
		} else {
			l.fail("WECHAT_FLAVOUR", "%q is not merchant, partner, ecommerce or individual", l.getenv("WECHAT_FLAVOUR"))
		}
	} else {
		c.Flavour = f
	}
	c.MerchantFiles = loadMerchantFiles(l)
	c.Limits = loadLimits(l, c.InFlight)
	c.PprofEnabled = l.boolean("PPROF_ENABLED")
	if lv := l.str("LOG_LEVEL"); c.LogLevel.UnmarshalText([]byte(lv)) != nil {
		l.fail("LOG_LEVEL", "%q is not debug, info, warn or error", lv)
	}
	if len(l.errs) > 0 {
		return c, fmt.Errorf("configuration: %d problem(s):\n  %s", len(l.errs), strings.Join(l.errs, "\n  "))
	}
	return c, nil
}

func loadRedis(l *loader) idempotency.RedisClientConfig {
	r := idempotency.RedisClientConfig{
		MasterName: l.str("REDIS_MASTER_NAME"),
		Username:   l.str("REDIS_USERNAME"),
		DB:         l.integer("REDIS_DB", 0, 1000),
		TLS:        l.boolean("REDIS_TLS"),
		CAFile:     l.file("REDIS_TLS_CA_FILE"),
		ServerName: l.str("REDIS_TLS_SERVER_NAME"),
	}
	for _, a := range strings.Split(l.str("REDIS_ADDRS"), ",") {
		if a = strings.TrimSpace(a); a != "" {
			r.Addrs = append(r.Addrs, a)
		}
	}
	if len(r.Addrs) == 0 {
		l.fail("REDIS_ADDRS", "is required with IDEMPOTENCY_BACKEND=redis")
	}
	if !r.TLS && (r.CAFile != "" || r.ServerName != "") {
		l.fail("REDIS_TLS", "must be true when REDIS_TLS_CA_FILE or REDIS_TLS_SERVER_NAME is set")
	}
	if pf := l.file("REDIS_PASSWORD_FILE"); pf != "" {
		b, err := os.ReadFile(pf)
		if err == nil {
			r.Password = strings.TrimSpace(string(b))
		}
	}
	return r
}

// loadMerchantFiles finds each merchant's credential files in
// WECHAT_MERCHANT_DIR/<mchid>/ and reports every missing one.
func loadMerchantFiles(l *loader) []wechat.MerchantFiles {
	raw := l.getenv("WECHAT_MERCHANTS")
	var ids []string
	for _, id := range strings.Split(raw, ",") {
		if id = strings.TrimSpace(id); id != "" {
			if slices.Contains(ids, id) {
				l.fail("WECHAT_MERCHANTS", "lists %s twice", id)
				continue
			}
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		l.fail("WECHAT_MERCHANTS", "is required: the combine_mchid list, such as 1900000109,1900000110")
		return nil
	}
	root := l.str("WECHAT_MERCHANT_DIR")
	var out []wechat.MerchantFiles
	for _, id := range ids {
		dir := filepath.Join(root, id)
		k := "WECHAT_MERCHANT_DIR"
		f := wechat.MerchantFiles{
			MchID:          id,
			PrivateKeyFile: filepath.Join(dir, fileMerchantKey),
			APIv3KeyFile:   filepath.Join(dir, fileAPIv3Key),
		}
		for _, p := range []string{f.PrivateKeyFile, f.APIv3KeyFile} {
			if _, err := os.Stat(p); err != nil {
				l.fail(k, "merchant %s: %s is missing", id, p)
			}
		}
		if b, err := os.ReadFile(filepath.Join(dir, fileSerial)); err != nil || strings.TrimSpace(string(b)) == "" {
			l.fail(k, "merchant %s: %s is missing or empty", id, filepath.Join(dir, fileSerial))
		} else {
			f.Serial = strings.TrimSpace(string(b))
		}
		if _, err := os.Stat(filepath.Join(dir, filePublicKey)); err == nil {
			f.PublicKeyFile = filepath.Join(dir, filePublicKey)
			b, err := os.ReadFile(filepath.Join(dir, filePublicKeyID))
			if err != nil || !strings.HasPrefix(strings.TrimSpace(string(b)), wechat.PublicKeyIDPrefix) {
				l.fail(k, "merchant %s: %s must hold the %s… id of %s", id, filepath.Join(dir, filePublicKeyID), wechat.PublicKeyIDPrefix, filePublicKey)
			} else {
				f.PublicKeyID = strings.TrimSpace(string(b))
			}
		}
		f.PlatformCertFiles, _ = filepath.Glob(filepath.Join(dir, globPlatformCert))
		if f.PublicKeyFile == "" && len(f.PlatformCertFiles) == 0 {
			l.fail(k, "merchant %s: neither %s nor %s in %s", id, filePublicKey, globPlatformCert, dir)
		}
		out = append(out, f)
	}
	return out
}
