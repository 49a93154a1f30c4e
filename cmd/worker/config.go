package main

import (
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
	envconfig "github.com/wxcombine/orderworker/internal/config"
	"github.com/wxcombine/orderworker/pipeline"
	"github.com/wxcombine/orderworker/ratelimit"
	"github.com/wxcombine/orderworker/wechat"
)

// setting is one configuration variable: its environment name, its default
// and what it means. Every setting is also a flag: NATS_URL is -nats-url.
// internal/config reads them (the loader cmd/notifier shares).
type setting struct {
	env, def, usage string
}

// shared answers the settings in internal/config's form.
func shared(list []setting) []envconfig.Setting {
	out := make([]envconfig.Setting, len(list))
	for i, s := range list {
		out[i] = envconfig.Setting{Env: s.env, Def: s.def, Usage: s.usage}
	}
	return out
}

// settings lists every variable the worker reads, in the order of the help.
var settings = []setting{
	{"NATS_URL", envconfig.NATSURLDefault, "NATS server URLs, comma-separated"},
	{"NATS_CREDS_FILE", "", "NATS credentials file (JWT + NKey seed) of the worker's own NATS user"},
	{"NATS_NKEY_FILE", "", "NATS user nkey seed file of the worker's own NATS user (instead of NATS_CREDS_FILE)"},
	{"NATS_INBOX_PREFIX", "_INBOX_worker", "prefix of the worker's reply subjects, which its NATS permissions let it subscribe to"},
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
	{"STREAMS_MANAGE", "true", "true: create or update the streams and the consumer at start; false: only verify they exist and match (GitOps, deploy/nats/)"},
	{"JOBS_STREAM", events.StreamJobs, "jobs stream name (each SUBJECT_PREFIX needs its own)"},
	{"EVENTS_STREAM", events.StreamEvents, "events stream name"},
	{"DEADLETTERS_STREAM", events.StreamDeadLetters, "dead-letter stream name"},
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
	{"IDEMPOTENCY_ALLOW_VOLATILE", "false", "run with a store that keeps nothing across a restart (refused otherwise)"},
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
	{"PAUSE_KV_BUCKET", pipeline.PauseBucketDefault, "JetStream KV bucket of the operators' pause switches (deadletter pause / resume)"},
	{"ADMIN_ADDR", "127.0.0.1:8081", "address of /healthz, /readyz and /metrics (the manifests set :8081 for the kubelet and Prometheus)"},
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
	NATS envconfig.NATS

	Subjects                 events.Subjects
	StreamsManage            pipeline.StreamsMode
	JobsStream, EventsStream string
	DeadLettersStream        string
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

	Backend    string
	Lease      time.Duration
	OutcomeTTL time.Duration
	// AllowVolatileStore runs the worker on a store without persistence.
	AllowVolatileStore bool
	KVBucket           string
	Redis              idempotency.RedisClientConfig
	RedisPrefix        string

	WeChatBaseURL     string
	Flavour           wechat.Flavour
	MerchantFiles     []wechat.MerchantFiles
	WeChatCallTimeout time.Duration

	// PauseBucket holds the pause switch of Consumer.
	PauseBucket string

	AdminAddr string
	LogLevel  slog.Level
	// PprofEnabled serves /debug/pprof/ on the admin server.
	PprofEnabled bool
	// Reconcile configures reconciliation, the payments-seen record and
	// NOTIFY_URL_BASE (reconcile.go).
	Reconcile reconcileConfig
}

// withFlags answers a getenv in which every setting given as a flag
// (-nats-url for NATS_URL) overrides the environment.
func withFlags(args []string, getenv func(string) string, output io.Writer) (func(string) string, error) {
	return envconfig.WithFlags("worker", shared(settings), args, getenv, output)
}

// loadConfig reads the whole configuration and reports every missing or
// invalid setting in one error. It reads files (the Redis password, the
// merchants' credential file names) but never quotes a secret.
func loadConfig(getenv func(string) string) (config, error) {
	l := &envconfig.Loader{Settings: shared(settings), Getenv: getenv}
	c := config{
		NATS:              envconfig.LoadNATS(l),
		Subjects:          events.Subjects{Prefix: l.Str("SUBJECT_PREFIX")},
		JobsStream:        l.Str("JOBS_STREAM"),
		EventsStream:      l.Str("EVENTS_STREAM"),
		DeadLettersStream: l.Str("DEADLETTERS_STREAM"),
		Replicas:          l.Integer("STREAM_REPLICAS", 1, 5),
		JobsMaxAge:        l.Duration("JOBS_MAX_AGE"),
		EventsMaxAge:      l.Duration("EVENTS_MAX_AGE"),
		DeadLettersMaxAge: l.Duration("DEADLETTERS_MAX_AGE"),
		DuplicateWindow:   l.Duration("DUPLICATE_WINDOW"),
		Consumer:          l.Str("CONSUMER_NAME"),
		AckWait:           l.Duration("ACK_WAIT"),
		MaxDeliver:        l.Integer("MAX_DELIVER", 1, 1000),
		MaxAckPending:     l.Integer("MAX_ACK_PENDING", 1, 1_000_000),
		ConsumerBackOff:   l.Durations("CONSUMER_BACKOFF"),
		Redelivery:        l.Durations("REDELIVERY_DELAYS"),
		Retry: pipeline.RetryPolicy{
			InitialInterval: l.Duration("RETRY_INITIAL_INTERVAL"),
			MaxInterval:     l.Duration("RETRY_MAX_INTERVAL"),
			MaxAttempts:     l.Integer("RETRY_MAX_ATTEMPTS", 1, 100),
			MaxElapsed:      l.Duration("RETRY_MAX_ELAPSED"),
		},
		InFlight:           l.Integer("WORKER_IN_FLIGHT", 1, 10_000),
		JobTimeout:         l.Duration("JOB_TIMEOUT"),
		ShutdownGrace:      l.Duration("SHUTDOWN_GRACE"),
		MaxJobBytes:        l.Integer("MAX_JOB_BYTES", 1024, 64<<20),
		Backend:            l.Str("IDEMPOTENCY_BACKEND"),
		Lease:              l.Duration("IDEMPOTENCY_LEASE"),
		OutcomeTTL:         l.Duration("IDEMPOTENCY_OUTCOME_TTL"),
		AllowVolatileStore: l.Boolean("IDEMPOTENCY_ALLOW_VOLATILE"),
		KVBucket:           l.Str("IDEMPOTENCY_KV_BUCKET"),
		RedisPrefix:        l.Str("REDIS_KEY_PREFIX"),
		WeChatBaseURL:      l.Str("WECHAT_BASE_URL"),
		WeChatCallTimeout:  l.Duration("WECHAT_CALL_TIMEOUT"),
		PauseBucket:        l.Str("PAUSE_KV_BUCKET"),
		AdminAddr:          l.Str("ADMIN_ADDR"),
	}
	if m, err := pipeline.ParseStreamsMode(l.Str("STREAMS_MANAGE")); err != nil {
		l.Fail("STREAMS_MANAGE", "%v", err)
	} else {
		c.StreamsManage = m
	}
	if c.JobsStream == c.EventsStream || c.JobsStream == c.DeadLettersStream || c.EventsStream == c.DeadLettersStream {
		l.Fail("JOBS_STREAM", "JOBS_STREAM, EVENTS_STREAM and DEADLETTERS_STREAM must differ")
	}
	switch s := l.Str("STREAM_STORAGE"); s {
	case "file":
		c.Storage = jetstream.FileStorage
	case "memory":
		c.Storage = jetstream.MemoryStorage
	default:
		l.Fail("STREAM_STORAGE", "%q is not file or memory", s)
	}
	if c.JobTimeout >= c.AckWait && c.AckWait > 0 {
		l.Fail("JOB_TIMEOUT", "%s must be shorter than ACK_WAIT %s", c.JobTimeout, c.AckWait)
	}
	if need := c.Retry.MaxElapsed + c.WeChatCallTimeout + c.Retry.MaxInterval; c.Lease > 0 && c.Lease < need {
		l.Fail("IDEMPOTENCY_LEASE", "%s must cover RETRY_MAX_ELAPSED + WECHAT_CALL_TIMEOUT + RETRY_MAX_INTERVAL = %s", c.Lease, need)
	}
	if len(c.ConsumerBackOff) > c.MaxDeliver && c.MaxDeliver > 0 {
		l.Fail("CONSUMER_BACKOFF", "has %d values, more than MAX_DELIVER %d", len(c.ConsumerBackOff), c.MaxDeliver)
	}
	if c.MaxAckPending < c.InFlight && c.InFlight > 0 {
		l.Fail("MAX_ACK_PENDING", "%d is below WORKER_IN_FLIGHT %d", c.MaxAckPending, c.InFlight)
	}
	switch c.Backend {
	case "redis":
		c.Redis = loadRedis(l)
	case "kv":
	default:
		l.Fail("IDEMPOTENCY_BACKEND", "%q is not redis or kv", c.Backend)
	}
	if f, err := wechat.ParseFlavour(l.Getenv("WECHAT_FLAVOUR")); err != nil {
		if l.Getenv("WECHAT_FLAVOUR") == "" {
			l.Fail("WECHAT_FLAVOUR", "is required: merchant, partner, ecommerce or individual")
		} else {
			l.Fail("WECHAT_FLAVOUR", "%q is not merchant, partner, ecommerce or individual", l.Getenv("WECHAT_FLAVOUR"))
		}
	} else {
		c.Flavour = f
	}
	c.Reconcile = loadReconcile(l, c.Backend, c.DuplicateWindow)
	c.MerchantFiles = loadMerchantFiles(l)
	c.Limits = loadLimits(l, c.InFlight)
	c.PprofEnabled = l.Boolean("PPROF_ENABLED")
	if lv := l.Str("LOG_LEVEL"); c.LogLevel.UnmarshalText([]byte(lv)) != nil {
		l.Fail("LOG_LEVEL", "%q is not debug, info, warn or error", lv)
	}
	return c, l.Err()
}

func loadRedis(l *envconfig.Loader) idempotency.RedisClientConfig {
	r := idempotency.RedisClientConfig{
		MasterName: l.Str("REDIS_MASTER_NAME"),
		Username:   l.Str("REDIS_USERNAME"),
		DB:         l.Integer("REDIS_DB", 0, 1000),
		TLS:        l.Boolean("REDIS_TLS"),
		CAFile:     l.File("REDIS_TLS_CA_FILE"),
		ServerName: l.Str("REDIS_TLS_SERVER_NAME"),
	}
	for _, a := range strings.Split(l.Str("REDIS_ADDRS"), ",") {
		if a = strings.TrimSpace(a); a != "" {
			r.Addrs = append(r.Addrs, a)
		}
	}
	if len(r.Addrs) == 0 {
		l.Fail("REDIS_ADDRS", "is required with IDEMPOTENCY_BACKEND=redis")
	}
	if !r.TLS && (r.CAFile != "" || r.ServerName != "") {
		l.Fail("REDIS_TLS", "must be true when REDIS_TLS_CA_FILE or REDIS_TLS_SERVER_NAME is set")
	}
	if pf := l.File("REDIS_PASSWORD_FILE"); pf != "" {
		b, err := os.ReadFile(pf)
		if err == nil {
			r.Password = strings.TrimSpace(string(b))
		}
	}
	return r
}

// loadMerchantFiles finds each merchant's credential files in
// WECHAT_MERCHANT_DIR/<mchid>/ and reports every missing one.
func loadMerchantFiles(l *envconfig.Loader) []wechat.MerchantFiles {
	raw := l.Getenv("WECHAT_MERCHANTS")
	var ids []string
	for _, id := range strings.Split(raw, ",") {
		if id = strings.TrimSpace(id); id != "" {
			if slices.Contains(ids, id) {
				l.Fail("WECHAT_MERCHANTS", "lists %s twice", id)
				continue
			}
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		l.Fail("WECHAT_MERCHANTS", "is required: the combine_mchid list, such as 1900000109,1900000110")
		return nil
	}
	root := l.Str("WECHAT_MERCHANT_DIR")
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
				l.Fail(k, "merchant %s: %s is missing", id, p)
			} else if err := wechat.CheckSecretFile(p); err != nil {
				// Refused, not warned: a key others can read is a key to rotate.
				l.Fail(k, "merchant %s: %v", id, err)
			}
		}
		if b, err := os.ReadFile(filepath.Join(dir, fileSerial)); err != nil || strings.TrimSpace(string(b)) == "" {
			l.Fail(k, "merchant %s: %s is missing or empty", id, filepath.Join(dir, fileSerial))
		} else {
			f.Serial = strings.TrimSpace(string(b))
		}
		if _, err := os.Stat(filepath.Join(dir, filePublicKey)); err == nil {
			f.PublicKeyFile = filepath.Join(dir, filePublicKey)
			b, err := os.ReadFile(filepath.Join(dir, filePublicKeyID))
			if err != nil || !strings.HasPrefix(strings.TrimSpace(string(b)), wechat.PublicKeyIDPrefix) {
				l.Fail(k, "merchant %s: %s must hold the %s… id of %s", id, filepath.Join(dir, filePublicKeyID), wechat.PublicKeyIDPrefix, filePublicKey)
			} else {
				f.PublicKeyID = strings.TrimSpace(string(b))
			}
		}
		f.PlatformCertFiles, _ = filepath.Glob(filepath.Join(dir, globPlatformCert))
		if f.PublicKeyFile == "" && len(f.PlatformCertFiles) == 0 {
			l.Fail(k, "merchant %s: neither %s nor %s in %s", id, filePublicKey, globPlatformCert, dir)
		}
		out = append(out, f)
	}
	return out
}
