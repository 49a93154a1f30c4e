// Command wechatsim runs the WeChat Pay simulator (package wechatsim) for
// the demo and load tests.
//
// On first start it generates platform keys and merchant credentials into
// -keys-dir, with one directory per merchant in the layout cmd/worker and
// cmd/notifier read, so -keys-dir can be their WECHAT_MERCHANT_DIR; later
// starts load them again, so the worker and notifier keep working across
// restarts. Usage:
//
//	wechatsim -listen 127.0.0.1:8090 -keys-dir ./wechatsim-keys \
//	    -merchants 1900000109=wxd678efh567hg6787 -flavour merchant -key-mode pubkey \
//	    -system-error-rate 0.01 -latency 20ms -notify-speedup 60
//
// It logs JSON with slog and stops gracefully on SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/wxcombine/orderworker/wechat"
	"github.com/wxcombine/orderworker/wechat/wechatsim"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr, nil); err != nil {
		fmt.Fprintln(os.Stderr, "wechatsim:", err)
		os.Exit(1)
	}
}

// options are the parsed flags.
type options struct {
	listen, flavour, keyMode, keysDir, merchants, logLevel string
	keyBits                                                int
	clockSkew                                              time.Duration
	notifySpeedup                                          float64
	faults                                                 wechatsim.FaultConfig
	seed                                                   int64
}

func parseFlags(args []string, out io.Writer) (*options, error) {
	fs := flag.NewFlagSet("wechatsim", flag.ContinueOnError)
	fs.SetOutput(out)
	o := &options{}
	fs.StringVar(&o.listen, "listen", "127.0.0.1:8090", "listen address")
	fs.StringVar(&o.flavour, "flavour", string(wechat.FlavourMerchant), "product flavour: merchant, partner, ecommerce or individual")
	fs.StringVar(&o.keyMode, "key-mode", string(wechatsim.ModePublicKey), "answer signing: cert, pubkey or migration")
	fs.StringVar(&o.keysDir, "keys-dir", "wechatsim-keys", "directory of generated keys (created and filled on first start, loaded afterwards)")
	fs.StringVar(&o.merchants, "merchants", "1900000109=wxd678efh567hg6787", "merchants to generate, comma-separated mchid[=appid[/appid…]]")
	fs.IntVar(&o.keyBits, "platform-key-bits", wechatsim.KeyBitsDefault, "RSA size of generated platform keys; 1024 signs answers ~6x faster for load tests")
	fs.DurationVar(&o.clockSkew, "clock-skew", wechatsim.ClockSkewDefault, "accepted request timestamp skew")
	fs.Float64Var(&o.notifySpeedup, "notify-speedup", 1, "divide the notification retry schedule (15s, 15s, 30s, 3m, …) by this")
	fs.Float64Var(&o.faults.SystemErrorRate, "system-error-rate", 0, "rate of 500 SYSTEMERROR answers")
	fs.Float64Var(&o.faults.BankErrorRate, "bank-error-rate", 0, "rate of 500 BANKERROR answers")
	fs.Float64Var(&o.faults.FrequencyLimitedRate, "frequency-limited-rate", 0, "rate of 429 FREQUENCY_LIMITED answers")
	fs.Float64Var(&o.faults.Bad502Rate, "bad-502-rate", 0, "rate of 502 answers without a body")
	fs.Float64Var(&o.faults.TimeoutAfterCreateRate, "timeout-after-create-rate", 0, "rate of creates that commit and never answer")
	fs.Float64Var(&o.faults.SignTestRate, "sign-test-rate", 0, "rate of WECHATPAY/SIGNTEST/ signature probes")
	fs.BoolVar(&o.faults.UnsignedErrors, "unsigned-errors", false, "send error answers without Wechatpay-* headers")
	fs.Float64Var(&o.faults.UnsignedErrorRate, "unsigned-error-rate", 0, "share of error answers sent without Wechatpay-* headers")
	fs.Float64Var(&o.faults.ServiceUnavailableRate, "service-unavailable-rate", 0, "rate of 502/503 SERVICE_UNAVAILABLE answers with a JSON body")
	fs.Float64Var(&o.faults.NotifyDropRate, "notify-drop-rate", 0, "share of payments whose notification is never sent")
	fs.StringVar(&o.faults.CodeSpelling, "code-spelling", wechatsim.SpellingTable, "SYSTEMERROR/ORDERNOTEXIST spelling: table, common (SYSTEM_ERROR, ORDER_NOT_EXIST) or mixed")
	fs.Float64Var(&o.faults.RatePerMerchant, "rate-per-merchant", 0, "requests per second per merchant before FREQUENCY_LIMITED (0: no limit)")
	fs.DurationVar(&o.faults.Latency, "latency", 0, "base latency of every answer")
	fs.DurationVar(&o.faults.LatencyJitter, "latency-jitter", 0, "random extra latency in [0, jitter)")
	fs.Int64Var(&o.seed, "seed", 0, "fault dice seed (0: random)")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return o, nil
}

// run starts the simulator and serves until ctx ends. ready, if not nil,
// receives the base URL once it listens.
func run(ctx context.Context, args []string, stderr io.Writer, ready chan<- string) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	flavour, err := wechat.ParseFlavour(o.flavour)
	if err != nil {
		return err
	}
	mode, err := wechatsim.ParseKeyMode(o.keyMode)
	if err != nil {
		return err
	}
	keys, generated, err := loadOrGenerate(o)
	if err != nil {
		return err
	}
	s, err := wechatsim.New(wechatsim.Config{
		Flavour: flavour, Merchants: keys.Merchants, Platform: keys.Platform, Mode: mode,
		ClockSkew: o.clockSkew, Faults: o.faults, Seed: o.seed, NotifySpeedup: o.notifySpeedup, Logger: log,
	})
	if err != nil {
		return err
	}
	defer s.Close()
	url, err := s.Start(o.listen)
	if err != nil {
		return err
	}
	for _, f := range keys.Files {
		log.Info("merchant credentials",
			slog.String("mchid", f.MchID), slog.String("serial", f.Serial),
			slog.String("private_key_file", f.PrivateKeyFile), slog.String("apiv3_key_file", f.APIv3KeyFile),
			slog.String("public_key_file", f.PublicKeyFile), slog.String("public_key_id", f.PublicKeyID),
			slog.String("platform_cert_file", f.PlatformCertFiles[0]))
	}
	log.Info("wechatsim listening", slog.String("url", url), slog.String("flavour", string(flavour)),
		slog.String("key_mode", string(mode)), slog.Bool("keys_generated", generated),
		slog.String("keys_dir", o.keysDir), slog.Any("faults", o.faults))
	if ready != nil {
		ready <- url
	}
	<-ctx.Done()
	log.Info("wechatsim stopping")
	s.Close()
	st := s.Stats()
	log.Info("wechatsim stopped", slog.Int64("create_calls", st.CreateCalls), slog.Int("orders", st.Orders),
		slog.Int("paid", st.Paid), slog.Int64("notifications_delivered", st.Notifications.Delivered))
	return nil
}

// loadOrGenerate loads the keys in o.keysDir, or generates and writes them
// when the directory holds none yet.
func loadOrGenerate(o *options) (*wechatsim.Keys, bool, error) {
	if _, err := os.Stat(filepath.Join(o.keysDir, "wechatsim.json")); err == nil {
		k, err := wechatsim.LoadKeys(o.keysDir)
		return k, false, err
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, false, err
	}
	specs, err := parseMerchants(o.merchants)
	if err != nil {
		return nil, false, err
	}
	p, err := wechatsim.GeneratePlatform(o.keyBits)
	if err != nil {
		return nil, false, err
	}
	var (
		sims    []wechatsim.MerchantConfig
		clients []*wechat.Merchant
	)
	for _, sp := range specs {
		mc, m, err := wechatsim.GenerateMerchant(p, sp.mchID, sp.appIDs...)
		if err != nil {
			return nil, false, err
		}
		sims, clients = append(sims, mc), append(clients, m)
	}
	if err := wechatsim.WriteKeys(o.keysDir, p, sims, clients); err != nil {
		return nil, false, err
	}
	k, err := wechatsim.LoadKeys(o.keysDir)
	return k, true, err
}

type merchantSpec struct {
	mchID  string
	appIDs []string
}

// parseMerchants parses "mchid[=appid[/appid…]],…".
func parseMerchants(s string) ([]merchantSpec, error) {
	var out []merchantSpec
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		id, apps, _ := strings.Cut(item, "=")
		if id == "" || strings.ContainsFunc(id, func(r rune) bool { return r < '0' || r > '9' }) {
			return nil, fmt.Errorf("-merchants: %q is not a numeric mchid", id)
		}
		sp := merchantSpec{mchID: id}
		if apps != "" {
			sp.appIDs = strings.Split(apps, "/")
		}
		out = append(out, sp)
	}
	if len(out) == 0 {
		return nil, errors.New("-merchants: no merchant given")
	}
	return out, nil
}
