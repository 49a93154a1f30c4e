package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/notifier"
	"github.com/wxcombine/orderworker/wechat"
)

// Defaults of the settings below.
const (
	NATSURLDefault       = "nats://127.0.0.1:4222"
	MerchantDirDefault   = "/etc/orderworker/merchants"
	HTTPAddrDefault      = ":8080"
	AdminAddrDefault     = ":8082"
	ShutdownGraceDefault = 20 * time.Second
)

// Config is the notifier's configuration, read from the environment by
// loadConfig. The settings it shares with cmd/worker (NATS_*,
// SUBJECT_PREFIX, WECHAT_MERCHANTS, WECHAT_MERCHANT_DIR and its file layout,
// ADMIN_ADDR, SHUTDOWN_GRACE, LOG_LEVEL) have the same names and meaning.
type Config struct {
	// NATSURL lists the NATS servers, comma-separated (NATS_URL). Defaults
	// to NATSURLDefault.
	NATSURL string
	// NATSCredsFile is a NATS credentials file (NATS_CREDS_FILE). Defaults
	// to none.
	NATSCredsFile string
	// NATSTLSCAFile, NATSTLSCertFile and NATSTLSKeyFile configure TLS to NATS
	// (NATS_TLS_CA_FILE, NATS_TLS_CERT_FILE, NATS_TLS_KEY_FILE). Default to
	// none.
	NATSTLSCAFile, NATSTLSCertFile, NATSTLSKeyFile string
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
	get := func(k, def string) string { return or(strings.TrimSpace(getenv(k)), def) }
	c := Config{
		NATSURL:         get("NATS_URL", NATSURLDefault),
		NATSCredsFile:   get("NATS_CREDS_FILE", ""),
		NATSTLSCAFile:   get("NATS_TLS_CA_FILE", ""),
		NATSTLSCertFile: get("NATS_TLS_CERT_FILE", ""),
		NATSTLSKeyFile:  get("NATS_TLS_KEY_FILE", ""),
		SubjectPrefix:   get("SUBJECT_PREFIX", events.SubjectPrefixDefault),
		MerchantDir:     get("WECHAT_MERCHANT_DIR", MerchantDirDefault),
		HTTPAddr:        get("HTTP_ADDR", HTTPAddrDefault),
		TLSCertFile:     get("TLS_CERT_FILE", ""),
		TLSKeyFile:      get("TLS_KEY_FILE", ""),
		AdminAddr:       get("ADMIN_ADDR", AdminAddrDefault),
		ShutdownGrace:   ShutdownGraceDefault,
	}
	var errs []string
	bad := func(name, format string, args ...any) {
		errs = append(errs, name+": "+fmt.Sprintf(format, args...))
	}
	for _, id := range strings.Split(getenv("WECHAT_MERCHANTS"), ",") {
		switch id = strings.TrimSpace(id); {
		case id == "":
		case !allDigits(id):
			bad("WECHAT_MERCHANTS", "%q is not a merchant number", id)
		case slices.Contains(c.MchIDs, id):
			bad("WECHAT_MERCHANTS", "lists %s twice", id)
		default:
			c.MchIDs = append(c.MchIDs, id)
		}
	}
	if len(c.MchIDs) == 0 && strings.TrimSpace(getenv("WECHAT_MERCHANTS")) == "" {
		bad("WECHAT_MERCHANTS", "is required: the combine_mchid list, such as 1900000109,1900000110")
	}
	for k, v := range map[string]string{
		"NATS_CREDS_FILE": c.NATSCredsFile, "NATS_TLS_CA_FILE": c.NATSTLSCAFile, "NATS_TLS_CERT_FILE": c.NATSTLSCertFile,
		"NATS_TLS_KEY_FILE": c.NATSTLSKeyFile, "TLS_CERT_FILE": c.TLSCertFile, "TLS_KEY_FILE": c.TLSKeyFile,
	} {
		if _, err := os.Stat(v); v != "" && err != nil {
			bad(k, "file %s cannot be read", v)
		}
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		bad("TLS_CERT_FILE", "and TLS_KEY_FILE must be set together")
	}
	if (c.NATSTLSCertFile == "") != (c.NATSTLSKeyFile == "") {
		bad("NATS_TLS_CERT_FILE", "and NATS_TLS_KEY_FILE must be set together")
	}
	if strings.ContainsAny(c.SubjectPrefix, " \t*>") || strings.HasPrefix(c.SubjectPrefix, ".") || strings.HasSuffix(c.SubjectPrefix, ".") {
		bad("SUBJECT_PREFIX", "%q is not a subject prefix", c.SubjectPrefix)
	}
	if v := get("NOTIFY_MAX_BODY_BYTES", ""); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1<<10 || n > 1<<20 {
			bad("NOTIFY_MAX_BODY_BYTES", "%q is not an integer from 1024 to 1048576", v)
		}
		c.MaxBodyBytes = n
	}
	if v := get("NOTIFY_PUBLISH_TIMEOUT", ""); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 || d > 4500*time.Millisecond {
			bad("NOTIFY_PUBLISH_TIMEOUT", "%q is not a duration from 1ms to 4.5s (WeChat Pay waits 5s for the answer)", v)
		}
		c.PublishTimeout = d
	}
	if v := get("NOTIFY_MAX_CONCURRENT_VERIFICATIONS", ""); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10_000 {
			bad("NOTIFY_MAX_CONCURRENT_VERIFICATIONS", "%q is not an integer from 1 to 10000", v)
		}
		c.MaxConcurrentVerifications = n
	}
	if v := get("NOTIFY_MAX_CONCURRENT_REQUESTS", ""); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100_000 {
			bad("NOTIFY_MAX_CONCURRENT_REQUESTS", "%q is not an integer from 1 to 100000", v)
		}
		c.MaxConcurrentRequests = n
	}
	if v := get("NOTIFY_SLOT_WAIT", ""); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 || d > time.Second {
			bad("NOTIFY_SLOT_WAIT", "%q is not a duration from 1ms to 1s (WeChat Pay waits 5s for the answer)", v)
		}
		c.SlotWait = d
	}
	if v := get("NOTIFY_PUBLISH_OPENID", ""); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			bad("NOTIFY_PUBLISH_OPENID", "%q is not true or false", v)
		}
		c.PublishOpenID = b
	}
	if v := get("SHUTDOWN_GRACE", ""); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			bad("SHUTDOWN_GRACE", "%q is not a positive duration such as 20s", v)
		}
		c.ShutdownGrace = d
	}
	if v := get("LOG_LEVEL", ""); v != "" {
		if err := c.LogLevel.UnmarshalText([]byte(v)); err != nil {
			bad("LOG_LEVEL", "%q is not debug, info, warn or error", v)
		}
	}
	if len(errs) > 0 {
		slices.Sort(errs)
		return Config{}, fmt.Errorf("configuration: %d problem(s):\n  %s", len(errs), strings.Join(errs, "\n  "))
	}
	return c, nil
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
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

// natsOptions answers the connection options: a name, reconnection forever
// and no reconnect buffer, so that a publish while disconnected fails at once
// (answered 500, WeChat Pay retries) instead of being stored after its
// answer was already sent.
func natsOptions(c Config, version string) ([]nats.Option, error) {
	opts := []nats.Option{
		nats.Name("orderworker-notifier " + version),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.ReconnectBufSize(-1),
		nats.RetryOnFailedConnect(true),
	}
	if c.NATSCredsFile != "" {
		opts = append(opts, nats.UserCredentials(c.NATSCredsFile))
	}
	if c.NATSTLSCAFile != "" || c.NATSTLSCertFile != "" {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if c.NATSTLSCAFile != "" {
			pem, err := os.ReadFile(c.NATSTLSCAFile)
			if err != nil {
				return nil, fmt.Errorf("NATS_TLS_CA_FILE: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("NATS_TLS_CA_FILE %s: no PEM certificate", c.NATSTLSCAFile)
			}
			cfg.RootCAs = pool
		}
		if c.NATSTLSCertFile != "" {
			cert, err := tls.LoadX509KeyPair(c.NATSTLSCertFile, c.NATSTLSKeyFile)
			if err != nil {
				return nil, fmt.Errorf("NATS_TLS_CERT_FILE: %w", err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, nats.Secure(cfg))
	}
	return opts, nil
}

// handlerConfig maps c onto the handler's configuration.
func (c Config) handlerConfig() notifier.Config {
	return notifier.Config{
		Subjects:                   events.Subjects{Prefix: c.SubjectPrefix},
		MaxBodySize:                c.MaxBodyBytes,
		PublishTimeout:             c.PublishTimeout,
		MaxConcurrentRequests:      c.MaxConcurrentRequests,
		MaxConcurrentVerifications: c.MaxConcurrentVerifications,
		SlotWait:                   c.SlotWait,
		PublishOpenID:              c.PublishOpenID,
	}
}
