package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/wxcombine/orderworker/events"
	envconfig "github.com/wxcombine/orderworker/internal/config"
	"github.com/wxcombine/orderworker/notifier"
	"github.com/wxcombine/orderworker/wechat"
)

// Defaults of the settings below. The listen addresses are loopback only:
// the manifests set HTTP_ADDR=:8080 and ADMIN_ADDR=:8082 where the ingress,
// the kubelet and Prometheus must reach them.
const (
	MerchantDirDefault   = "/etc/orderworker/merchants"
	HTTPAddrDefault      = "127.0.0.1:8080"
	AdminAddrDefault     = "127.0.0.1:8082"
	ShutdownGraceDefault = 20 * time.Second
)

// setting is one configuration variable: its environment name, its default
// and what it means. internal/config reads them, with the loader the worker
// uses.
type setting struct {
	env, def, usage string
}

// settings lists every variable the notifier reads.
var settings = []setting{
	{"NATS_URL", envconfig.NATSURLDefault, "NATS server URLs, comma-separated"},
	{"NATS_CREDS_FILE", "", "NATS credentials file (JWT + NKey seed) of the notifier's own NATS user"},
	{"NATS_NKEY_FILE", "", "NATS user nkey seed file of the notifier's own NATS user (instead of NATS_CREDS_FILE)"},
	{"NATS_INBOX_PREFIX", "_INBOX_notifier", "prefix of the notifier's reply subjects, which its NATS permissions let it subscribe to"},
	{"NATS_TLS_CA_FILE", "", "PEM CA file that signs the NATS servers' certificates"},
	{"NATS_TLS_CERT_FILE", "", "PEM client certificate for NATS mutual TLS (with NATS_TLS_KEY_FILE)"},
	{"NATS_TLS_KEY_FILE", "", "PEM client key for NATS mutual TLS"},
	{"SUBJECT_PREFIX", events.SubjectPrefixDefault, "first token(s) of every subject"},
	{"EVENTS_STREAM", events.StreamEvents, "stream the payment events must land in"},
	{"WECHAT_MERCHANTS", "", "combine_mchid list, comma-separated (required)"},
	{"WECHAT_MERCHANT_DIR", MerchantDirDefault, "directory with one sub-directory of credential files per merchant"},
	{"HTTP_ADDR", HTTPAddrDefault, "address of the notification endpoint"},
	{"TLS_CERT_FILE", "", "serve HTTPS with this certificate (with TLS_KEY_FILE)"},
	{"TLS_KEY_FILE", "", "key of TLS_CERT_FILE"},
	{"ADMIN_ADDR", AdminAddrDefault, "address of /healthz, /readyz and /metrics"},
	{"NOTIFY_MAX_BODY_BYTES", "", "largest notification body (default 65536)"},
	{"NOTIFY_BODY_TIMEOUT", "", "time a sender gets to deliver the whole body (default 2s)"},
	{"NOTIFY_PUBLISH_TIMEOUT", "", "wait for JetStream's acknowledgement (default 4s)"},
	{"NOTIFY_MAX_CONCURRENT_REQUESTS", "", "complete bodies waiting for verification at once (default 256)"},
	{"NOTIFY_MAX_CONCURRENT_VERIFICATIONS", "", "RSA verifications and decryptions at once (default 4 x cores)"},
	{"NOTIFY_SLOT_WAIT", "", "wait for a place before answering 503 (default 400ms)"},
	{"NOTIFY_PUBLISH_OPENID", "false", "copy the payer's openid into events"},
	{"SHUTDOWN_GRACE", "20s", "time requests in flight get to finish after SIGTERM"},
	{"LOG_LEVEL", "info", "debug, info, warn or error"},
}

// shared answers the settings in internal/config's form.
func shared(list []setting) []envconfig.Setting {
	out := make([]envconfig.Setting, len(list))
	for i, s := range list {
		out[i] = envconfig.Setting{Env: s.env, Def: s.def, Usage: s.usage}
	}
	return out
}

// Config is the notifier's configuration, read from the environment by
// loadConfig. The settings it shares with cmd/worker (NATS_*,
// SUBJECT_PREFIX, WECHAT_MERCHANTS, WECHAT_MERCHANT_DIR and its file layout,
// ADMIN_ADDR, SHUTDOWN_GRACE, LOG_LEVEL) have the same names and meaning.
type Config struct {
	// NATS is how to reach NATS (NATS_URL, NATS_CREDS_FILE, NATS_NKEY_FILE,
	// NATS_INBOX_PREFIX, NATS_TLS_*), read as the worker reads it.
	NATS envconfig.NATS
	// EventsStream is the stream payment events must land in
	// (EVENTS_STREAM). Defaults to events.StreamEvents.
	EventsStream string
	// SubjectPrefix is the first token(s) of every subject (SUBJECT_PREFIX).
	// Defaults to events.SubjectPrefixDefault ("combine").
	SubjectPrefix string

	// MchIDs are the merchants whose notifications are accepted
	// (WECHAT_MERCHANTS, comma-separated). Required.
	MchIDs []string
	// MerchantDir holds one directory per merchant (WECHAT_MERCHANT_DIR);
	// see loadMerchant for the files. Defaults to MerchantDirDefault.
	MerchantDir string

	// HTTPAddr is where WeChat Pay's notifications arrive (HTTP_ADDR).
	// Defaults to HTTPAddrDefault.
	HTTPAddr string
	// TLSCertFile and TLSKeyFile make HTTPAddr serve HTTPS (TLS_CERT_FILE,
	// TLS_KEY_FILE, both or neither). Default to plain HTTP behind an
	// ingress that terminates TLS.
	TLSCertFile, TLSKeyFile string
	// AdminAddr serves /healthz, /readyz and /metrics (ADMIN_ADDR). Defaults
	// to AdminAddrDefault.
	AdminAddr string

	// MaxBodyBytes caps a notification body (NOTIFY_MAX_BODY_BYTES).
	// Defaults to notifier.MaxBodySizeDefault (64 KiB).
	MaxBodyBytes int64
	// BodyTimeout bounds the read of one body (NOTIFY_BODY_TIMEOUT).
	// Defaults to notifier.BodyTimeoutDefault (2s); at most 4s.
	BodyTimeout time.Duration
	// PublishTimeout bounds the wait for JetStream (NOTIFY_PUBLISH_TIMEOUT).
	// Defaults to notifier.PublishTimeoutDefault (4s); at most 4.5s.
	PublishTimeout time.Duration
	// MaxConcurrentRequests bounds the requests admitted past the header
	// checks, and so the bodies in memory (NOTIFY_MAX_CONCURRENT_REQUESTS).
	// Defaults to notifier.MaxConcurrentRequestsDefault (256).
	MaxConcurrentRequests int
	// MaxConcurrentVerifications bounds concurrent RSA verifications and
	// decryptions (NOTIFY_MAX_CONCURRENT_VERIFICATIONS). Defaults to
	// 4 × GOMAXPROCS.
	MaxConcurrentVerifications int
	// SlotWait bounds each wait for admission and for a verification slot
	// before a 503 (NOTIFY_SLOT_WAIT). Defaults to notifier.SlotWaitDefault
	// (400ms); at most 1s.
	SlotWait time.Duration
	// PublishOpenID copies the payer's openid into events
	// (NOTIFY_PUBLISH_OPENID=true). Defaults to false.
	PublishOpenID bool

	// ShutdownGrace bounds the graceful stop (SHUTDOWN_GRACE). Defaults to
	// ShutdownGraceDefault.
	ShutdownGrace time.Duration
	// LogLevel is debug, info, warn or error (LOG_LEVEL). Defaults to info.
	LogLevel slog.Level
}

// loadConfig reads the configuration through getenv. It reports every
// missing or invalid setting in one error, one per line, and never quotes a
// secret.
func loadConfig(getenv func(string) string) (Config, error) {
	l := &envconfig.Loader{Settings: shared(settings), Getenv: getenv}
	c := Config{
		NATS:                       envconfig.LoadNATS(l),
		EventsStream:               l.Str("EVENTS_STREAM"),
		SubjectPrefix:              l.Str("SUBJECT_PREFIX"),
		MerchantDir:                l.Str("WECHAT_MERCHANT_DIR"),
		HTTPAddr:                   l.Str("HTTP_ADDR"),
		TLSCertFile:                l.File("TLS_CERT_FILE"),
		TLSKeyFile:                 l.File("TLS_KEY_FILE"),
		AdminAddr:                  l.Str("ADMIN_ADDR"),
		MaxBodyBytes:               int64(l.Integer("NOTIFY_MAX_BODY_BYTES", 1<<10, 1<<20)),
		BodyTimeout:                l.DurationIn("NOTIFY_BODY_TIMEOUT", time.Millisecond, 4*time.Second, " (WeChat Pay waits 5s for the answer)"),
		PublishTimeout:             l.DurationIn("NOTIFY_PUBLISH_TIMEOUT", time.Millisecond, 4500*time.Millisecond, " (WeChat Pay waits 5s for the answer)"),
		MaxConcurrentRequests:      l.Integer("NOTIFY_MAX_CONCURRENT_REQUESTS", 1, 100_000),
		MaxConcurrentVerifications: l.Integer("NOTIFY_MAX_CONCURRENT_VERIFICATIONS", 1, 10_000),
		SlotWait:                   l.DurationIn("NOTIFY_SLOT_WAIT", time.Millisecond, time.Second, " (WeChat Pay waits 5s for the answer)"),
		PublishOpenID:              l.Boolean("NOTIFY_PUBLISH_OPENID"),
		ShutdownGrace:              l.Duration("SHUTDOWN_GRACE"),
	}
	invalid := 0
	for _, id := range l.List("WECHAT_MERCHANTS") {
		if !allDigits(id) {
			l.Fail("WECHAT_MERCHANTS", "%q is not a merchant number", id)
			invalid++
			continue
		}
		c.MchIDs = append(c.MchIDs, id)
	}
	// "," or " , " lists nobody either (found by FuzzLoadConfig).
	if len(c.MchIDs) == 0 && invalid == 0 {
		l.Fail("WECHAT_MERCHANTS", "is required: the combine_mchid list, such as 1900000109,1900000110")
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		l.Fail("TLS_CERT_FILE", "and TLS_KEY_FILE must be set together")
	}
	if strings.ContainsAny(c.SubjectPrefix, " \t*>") || strings.HasPrefix(c.SubjectPrefix, ".") || strings.HasSuffix(c.SubjectPrefix, ".") {
		l.Fail("SUBJECT_PREFIX", "%q is not a subject prefix", c.SubjectPrefix)
	}
	if lv := l.Str("LOG_LEVEL"); c.LogLevel.UnmarshalText([]byte(lv)) != nil {
		l.Fail("LOG_LEVEL", "%q is not debug, info, warn or error", lv)
	}
	if err := l.Err(); err != nil {
		return Config{}, err
	}
	return c, nil
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// Files of WECHAT_MERCHANT_DIR/<mchid>/ that the notifier reads, the same
// layout as cmd/worker's. It never reads the merchant's private key
// (apiclient_key.pem) or serial: verifying and decrypting notifications needs
// neither, so the notifier's pods need not hold the signing key.
const (
	fileAPIv3Key     = "apiv3_key"             // the 32-byte APIv3 key
	filePublicKey    = "wechatpay_pub_key.pem" // WeChat Pay public key (public-key mode)
	filePublicKeyID  = "pub_key_id"            // its PUB_KEY_ID_…
	globPlatformCert = "platform_cert*.pem"    // platform certificates (certificate mode)
)

// loadMerchants loads every merchant of c.MchIDs; it reports every failure.
func loadMerchants(c Config) ([]*wechat.Merchant, error) {
	var (
		ms   []*wechat.Merchant
		errs []error
	)
	for _, id := range c.MchIDs {
		m, err := loadMerchant(filepath.Join(c.MerchantDir, id), id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ms = append(ms, m)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("WECHAT_MERCHANT_DIR: %w", errors.Join(errs...))
	}
	return ms, nil
}

// loadMerchant reads what verifies and decrypts merchant mchID's
// notifications from dir: apiv3_key, and the WeChat Pay public key
// (wechatpay_pub_key.pem with its id in pub_key_id) and/or platform
// certificates (platform_cert*.pem). Both kinds may be present during the
// migration to public-key mode.
func loadMerchant(dir, mchID string) (*wechat.Merchant, error) {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("merchant %s: "+format, append([]any{mchID}, args...)...)
	}
	raw, err := os.ReadFile(filepath.Join(dir, fileAPIv3Key))
	if err != nil {
		return nil, fail("APIv3 key: %w", err)
	}
	if err := wechat.CheckSecretFile(filepath.Join(dir, fileAPIv3Key)); err != nil {
		return nil, fail("%w", err) // refused: a key others can read is a key to rotate
	}
	m := &wechat.Merchant{
		MchID:    mchID,
		APIv3Key: wechat.APIv3Key(strings.TrimSpace(string(raw))),
		Platform: wechat.NewVerifier(nil),
	}
	if err := m.APIv3Key.Validate(); err != nil {
		return nil, fail("%s: %w", fileAPIv3Key, err)
	}
	pubPath := filepath.Join(dir, filePublicKey)
	if _, err := os.Stat(pubPath); err == nil {
		idRaw, err := os.ReadFile(filepath.Join(dir, filePublicKeyID))
		if err != nil {
			return nil, fail("%s needs its id: %w", filePublicKey, err)
		}
		id := strings.TrimSpace(string(idRaw))
		if !strings.HasPrefix(id, wechat.PublicKeyIDPrefix) {
			return nil, fail("%s must start with %s", filePublicKeyID, wechat.PublicKeyIDPrefix)
		}
		pub, _, err := wechat.LoadPublicKey(pubPath)
		if err != nil {
			return nil, fail("%w", err)
		}
		m.Platform.AddKey(id, pub)
	}
	certs, _ := filepath.Glob(filepath.Join(dir, globPlatformCert)) // the pattern is valid
	for _, path := range certs {
		pub, serial, err := wechat.LoadPublicKey(path)
		if err != nil {
			return nil, fail("%w", err)
		}
		if serial == "" {
			return nil, fail("%s is not a certificate", filepath.Base(path))
		}
		m.Platform.AddKey(serial, pub)
	}
	if len(m.Platform.Serials()) == 0 {
		return nil, fail("neither %s nor %s in %s", filePublicKey, globPlatformCert, dir)
	}
	return m, nil
}

// handlerConfig maps c onto the handler's configuration.
func (c Config) handlerConfig() notifier.Config {
	return notifier.Config{
		Subjects:                   events.Subjects{Prefix: c.SubjectPrefix},
		Stream:                     c.EventsStream,
		BodyTimeout:                c.BodyTimeout,
		MaxBodySize:                c.MaxBodyBytes,
		PublishTimeout:             c.PublishTimeout,
		MaxConcurrentRequests:      c.MaxConcurrentRequests,
		MaxConcurrentVerifications: c.MaxConcurrentVerifications,
		SlotWait:                   c.SlotWait,
		PublishOpenID:              c.PublishOpenID,
	}
}
