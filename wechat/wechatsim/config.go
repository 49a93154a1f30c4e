package wechatsim

import (
	"cmp"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/wxcombine/orderworker/wechat"
)

// KeyMode selects which platform key signs answers and notifications.
type KeyMode string

// The key modes.
const (
	// ModeCert signs with the platform certificate key; Wechatpay-Serial is
	// the certificate's hex serial.
	ModeCert KeyMode = "cert"
	// ModePublicKey signs with the WeChat Pay public key; Wechatpay-Serial is
	// its PUB_KEY_ID_….
	ModePublicKey KeyMode = "pubkey"
	// ModeMigration signs each answer with the key the request's
	// Wechatpay-Serial names (the certificate when it names neither) and
	// notifications with either key at random, as during WeChat Pay's
	// gradual switch to public keys.
	ModeMigration KeyMode = "migration"
)

// ParseKeyMode parses a key mode name.
func ParseKeyMode(s string) (KeyMode, error) {
	switch m := KeyMode(s); m {
	case ModeCert, ModePublicKey, ModeMigration:
		return m, nil
	}
	return "", fmt.Errorf("wechatsim: unknown key mode %q (want cert, pubkey or migration)", s)
}

// Defaults.
const (
	// ClockSkewDefault is how far a request's Authorization timestamp may be
	// from the simulator's clock.
	ClockSkewDefault = 5 * time.Minute
	// PrepayValidityDefault is how long a prepay_id (and code_url) stays valid.
	PrepayValidityDefault = 2 * time.Hour
	// H5URLValidityDefault is how long an h5_url stays valid.
	H5URLValidityDefault = 5 * time.Minute
	// NotifyTimeoutDefault bounds one notification delivery attempt.
	NotifyTimeoutDefault = 5 * time.Second
	// MaxBodyBytesDefault caps a request body.
	MaxBodyBytesDefault = 1 << 20
	// OrderLifetimeDefault is how long an unpaid order stays payable when
	// its time_expire does not say otherwise (SKILLS 排障手册 §六: 7 days).
	OrderLifetimeDefault = 7 * 24 * time.Hour
)

// Code spellings of FaultConfig.CodeSpelling. The per-endpoint combine
// tables write SYSTEMERROR and ORDERNOTEXIST; the interface rules' common
// table writes SYSTEM_ERROR and ORDER_NOT_EXIST; WeChat Pay answers both.
const (
	// SpellingTable answers the combine tables' spellings (the default).
	SpellingTable = "table"
	// SpellingCommon answers the common table's spellings.
	SpellingCommon = "common"
	// SpellingMixed picks either spelling at random, per answer.
	SpellingMixed = "mixed"
)

// NotifySchedule is WeChat Pay's notification retry schedule: the delay
// before each of the 15 retries that follow a failed first delivery (24h4m in
// all). Config.NotifySpeedup divides every delay.
var NotifySchedule = []time.Duration{
	15 * time.Second, 15 * time.Second, 30 * time.Second, 3 * time.Minute, 10 * time.Minute,
	20 * time.Minute, 30 * time.Minute, 30 * time.Minute, 30 * time.Minute, 60 * time.Minute,
	3 * time.Hour, 3 * time.Hour, 3 * time.Hour, 6 * time.Hour, 6 * time.Hour,
}

// MerchantConfig is one merchant as WeChat Pay knows it.
type MerchantConfig struct {
	// MchID is the merchant number.
	MchID string
	// Serial is the merchant API certificate serial (Authorization serial_no).
	Serial string
	// PublicKey verifies the merchant's request signatures.
	PublicKey *rsa.PublicKey
	// APIv3Key encrypts the merchant's notifications; 32 bytes.
	APIv3Key wechat.APIv3Key
	// AppIDs are the appids bound to the merchant; combine_appid must be one
	// of them, else APPID_MCHID_NOT_MATCH.
	AppIDs []string
	// SubMchIDs are the merchant numbers the merchant may name in sub-orders
	// besides the configured merchants: sub_orders[].mchid in the merchant
	// flavour, sub_orders[].sub_mchid in the partner and e-commerce flavours.
	// Any other number answers MCH_NOT_EXISTS. Nil accepts every sub_mchid
	// (but not an unknown sub_orders[].mchid). Defaults to nil.
	SubMchIDs []string
}

// FaultConfig sets the injected faults. Rates are probabilities per API
// request in [0, 1]; the six answer faults together must not exceed 1.
type FaultConfig struct {
	// SystemErrorRate answers 500 SYSTEMERROR. Defaults to 0.
	SystemErrorRate float64 `json:"system_error_rate"`
	// BankErrorRate answers 500 BANKERROR. Defaults to 0.
	BankErrorRate float64 `json:"bank_error_rate"`
	// FrequencyLimitedRate answers 429 FREQUENCY_LIMITED. Defaults to 0.
	FrequencyLimitedRate float64 `json:"frequency_limited_rate"`
	// Bad502Rate answers 502 with an empty body, as a proxy does. Defaults to 0.
	Bad502Rate float64 `json:"bad_502_rate"`
	// TimeoutAfterCreateRate makes a create commit the order and then never
	// answer: the request hangs until the client gives up or the connection
	// closes. Defaults to 0.
	TimeoutAfterCreateRate float64 `json:"timeout_after_create_rate"`
	// SignTestRate signs 2xx answers and notification attempts with a
	// WECHATPAY/SIGNTEST/ probe instead of a real signature. Defaults to 0.
	SignTestRate float64 `json:"sign_test_rate"`
	// UnsignedErrors sends error answers without Wechatpay-* headers.
	// Defaults to false (errors are signed too).
	UnsignedErrors bool `json:"unsigned_errors"`
	// RatePerMerchant limits each merchant to this many API requests per
	// second (a token bucket holding one second's worth); excess requests
	// answer 429 FREQUENCY_LIMITED. Defaults to 0, no limit.
	RatePerMerchant float64 `json:"rate_per_merchant"`
	// ServiceUnavailableRate answers 502 or 503 (even odds) with the JSON
	// body {"code":"SERVICE_UNAVAILABLE",…}, the common table's answer for
	// both statuses. Defaults to 0.
	ServiceUnavailableRate float64 `json:"service_unavailable_rate"`
	// UnsignedErrorRate sends this share of error answers without
	// Wechatpay-* headers (UnsignedErrors sends all of them so). Defaults
	// to 0.
	UnsignedErrorRate float64 `json:"unsigned_error_rate"`
	// NotifyDropRate is the share of payments whose TRANSACTION.SUCCESS
	// notification is never sent: the merchant learns of them only by
	// querying. Defaults to 0.
	NotifyDropRate float64 `json:"notify_drop_rate"`
	// CodeSpelling picks how SYSTEMERROR/SYSTEM_ERROR and
	// ORDERNOTEXIST/ORDER_NOT_EXIST are spelled: SpellingTable (the
	// default, also ""), SpellingCommon or SpellingMixed.
	CodeSpelling string `json:"code_spelling,omitempty"`
	// Latency delays every API answer. Defaults to 0.
	Latency time.Duration `json:"latency"`
	// LatencyJitter adds a uniform random delay in [0, LatencyJitter).
	// Defaults to 0.
	LatencyJitter time.Duration `json:"latency_jitter"`
}

func (f FaultConfig) validate() error {
	rates := []struct {
		name string
		v    float64
	}{
		{"SystemErrorRate", f.SystemErrorRate}, {"BankErrorRate", f.BankErrorRate},
		{"FrequencyLimitedRate", f.FrequencyLimitedRate}, {"Bad502Rate", f.Bad502Rate},
		{"TimeoutAfterCreateRate", f.TimeoutAfterCreateRate}, {"ServiceUnavailableRate", f.ServiceUnavailableRate},
		{"SignTestRate", f.SignTestRate}, {"UnsignedErrorRate", f.UnsignedErrorRate}, {"NotifyDropRate", f.NotifyDropRate},
	}
	sum := 0.0
	for _, r := range rates {
		if r.v < 0 || r.v > 1 {
			return fmt.Errorf("wechatsim: faults: %s is %v, want within [0, 1]", r.name, r.v)
		}
		switch r.name {
		case "SignTestRate", "UnsignedErrorRate", "NotifyDropRate":
		default:
			sum += r.v
		}
	}
	switch {
	case sum > 1:
		return fmt.Errorf("wechatsim: faults: answer fault rates add up to %v, want at most 1", sum)
	case f.CodeSpelling != "" && f.CodeSpelling != SpellingTable && f.CodeSpelling != SpellingCommon && f.CodeSpelling != SpellingMixed:
		return fmt.Errorf("wechatsim: faults: CodeSpelling %q, want table, common or mixed", f.CodeSpelling)
	case f.RatePerMerchant < 0:
		return errors.New("wechatsim: faults: RatePerMerchant is negative")
	case f.Latency < 0 || f.LatencyJitter < 0:
		return errors.New("wechatsim: faults: Latency and LatencyJitter must not be negative")
	}
	return nil
}

// Config configures a Server.
type Config struct {
	// Flavour is the WeChat Pay product whose rules apply. Defaults to
	// wechat.FlavourMerchant.
	Flavour wechat.Flavour
	// Merchants are the merchants that may call the API. Required.
	Merchants []MerchantConfig
	// Platform holds the keys that sign answers and notifications. Required;
	// see GeneratePlatform and LoadKeys.
	Platform *Platform
	// Mode selects the signing key. Defaults to ModePublicKey, the mode of
	// merchants created since late 2024.
	Mode KeyMode
	// ClockSkew is how far a request timestamp may be from now. Defaults to
	// ClockSkewDefault.
	ClockSkew time.Duration
	// PrepayValidity is how long a prepay_id is answered again to an
	// identical create. Defaults to PrepayValidityDefault.
	PrepayValidity time.Duration
	// H5URLValidity is the same for h5_url. Defaults to H5URLValidityDefault.
	H5URLValidity time.Duration
	// Faults are the injected faults; change them at run time with
	// (*Server).SetFaults. Defaults to none.
	Faults FaultConfig
	// Seed seeds the fault dice so that a run is reproducible. Defaults to 0,
	// a random seed.
	Seed int64
	// NotifySpeedup divides every delay of NotifySchedule: 60 turns minutes
	// into seconds. Defaults to 1 (the real schedule).
	NotifySpeedup float64
	// NotifyTimeout bounds one delivery attempt. Defaults to
	// NotifyTimeoutDefault.
	NotifyTimeout time.Duration
	// NotifyHTTPClient delivers notifications. Defaults to a client with
	// NotifyTimeout as its timeout.
	NotifyHTTPClient *http.Client
	// MaxBodyBytes caps request bodies. Defaults to MaxBodyBytesDefault.
	MaxBodyBytes int64
	// NowFunc answers the current time. Defaults to time.Now.
	NowFunc func() time.Time
	// Logger receives one record per answer at Debug and per notification
	// attempt. Defaults to a logger that discards everything.
	Logger *slog.Logger
}

func (cfg *Config) applyDefaults() error {
	cfg.Flavour = cmp.Or(cfg.Flavour, wechat.FlavourMerchant)
	cfg.Mode = cmp.Or(cfg.Mode, ModePublicKey)
	cfg.ClockSkew = cmp.Or(cfg.ClockSkew, ClockSkewDefault)
	cfg.PrepayValidity = cmp.Or(cfg.PrepayValidity, PrepayValidityDefault)
	cfg.H5URLValidity = cmp.Or(cfg.H5URLValidity, H5URLValidityDefault)
	cfg.NotifySpeedup = cmp.Or(cfg.NotifySpeedup, 1)
	cfg.NotifyTimeout = cmp.Or(cfg.NotifyTimeout, NotifyTimeoutDefault)
	cfg.MaxBodyBytes = cmp.Or(cfg.MaxBodyBytes, MaxBodyBytesDefault)
	if cfg.NotifyHTTPClient == nil {
		cfg.NotifyHTTPClient = &http.Client{Timeout: cfg.NotifyTimeout}
	}
	if cfg.NowFunc == nil {
		cfg.NowFunc = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if _, err := wechat.ParseFlavour(string(cfg.Flavour)); err != nil {
		return fmt.Errorf("wechatsim: %w", err)
	}
	if _, err := ParseKeyMode(string(cfg.Mode)); err != nil {
		return err
	}
	if cfg.Platform == nil {
		return errors.New("wechatsim: Config.Platform is required")
	}
	if err := cfg.Platform.validate(); err != nil {
		return err
	}
	if len(cfg.Merchants) == 0 {
		return errors.New("wechatsim: Config.Merchants is empty")
	}
	seen := map[string]bool{}
	for i, m := range cfg.Merchants {
		switch {
		case m.MchID == "":
			return fmt.Errorf("wechatsim: merchant %d: MchID is empty", i)
		case seen[m.MchID]:
			return fmt.Errorf("wechatsim: merchant %s configured twice", m.MchID)
		case m.Serial == "" || m.PublicKey == nil:
			return fmt.Errorf("wechatsim: merchant %s: Serial and PublicKey are required", m.MchID)
		case len(m.AppIDs) == 0:
			return fmt.Errorf("wechatsim: merchant %s: no AppIDs", m.MchID)
		}
		if err := m.APIv3Key.Validate(); err != nil {
			return fmt.Errorf("wechatsim: merchant %s: %w", m.MchID, err)
		}
		seen[m.MchID] = true
	}
	switch {
	case cfg.ClockSkew < 0:
		return errors.New("wechatsim: ClockSkew is negative")
	case cfg.NotifySpeedup < 0:
		return errors.New("wechatsim: NotifySpeedup is negative")
	}
	return cfg.Faults.validate()
}

func (m *MerchantConfig) hasAppID(appID string) bool { return slices.Contains(m.AppIDs, appID) }

const alnum = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+).
	return b
}

// randomAlnum answers n characters from [0-9A-Za-z]; the slight modulo bias
// is irrelevant for identifiers.
func randomAlnum(n int) string {
	b := randomBytes(n)
	for i := range b {
		b[i] = alnum[int(b[i])%len(alnum)]
	}
	return string(b)
}

func randomDigits(n int) string {
	b := randomBytes(n)
	for i := range b {
		b[i] = '0' + b[i]%10
	}
	return string(b)
}
