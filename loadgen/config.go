package loadgen

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/wechat"
)

// Defaults.
const (
	// OrdersDefault is how many distinct orders a run publishes when neither
	// Orders nor Duration is set.
	OrdersDefault = 1000
	// MaxInFlightDefault bounds unacknowledged publishes.
	MaxInFlightDefault = 256
	// WaitDefault bounds the wait for outcomes after the last publish.
	WaitDefault = 60 * time.Second
	// LingerDefault is how long a run keeps collecting after everything
	// expected arrived, to catch extra and conflicting outcomes.
	LingerDefault = 500 * time.Millisecond
	// ProgressIntervalDefault is how often Config.ProgressFunc is called.
	ProgressIntervalDefault = time.Second
	// StreamWaitDefault is how long a run waits for the streams a worker
	// creates.
	StreamWaitDefault = 15 * time.Second
	// NotifyURLDefault is the notify_url of generated orders. It must be
	// reachable only when orders are paid.
	NotifyURLDefault = "https://notify.example.com/v3/notify"
)

// OrderKey identifies an order: combine_mchid and combine_out_trade_no.
type OrderKey struct {
	MchID      string `json:"mchid"`
	OutTradeNo string `json:"out_trade_no"`
}

// String formats the key as "mchid/out_trade_no".
func (k OrderKey) String() string { return k.MchID + "/" + k.OutTradeNo }

// Merchant is a combine merchant that orders are generated for.
type Merchant struct {
	// MchID is the combine_mchid. Required.
	MchID string
	// AppID is the combine_appid; it must be bound to MchID. Required.
	AppID string
	// SubMchIDs are named by sub-orders: sub_orders[].mchid in the merchant
	// flavour, sub_orders[].sub_mchid in the partner and e-commerce
	// flavour (the e-commerce one needs one per sub-order). Defaults to MchID in
	// the merchant flavour and to 50 made-up numbers otherwise.
	SubMchIDs []string
	// IndividualAuthIDs name the payees of the individual flavour. Defaults
	// to 10 made-up ids.
	IndividualAuthIDs []string
	// NotifyURL is the notify_url of the merchant's orders; paid orders are
	// notified there. Defaults to NotifyURLDefault.
	NotifyURL string
}

// PayFunc pays an order, for example through the simulator's admin API.
type PayFunc func(ctx context.Context, key OrderKey) error

// CreateCountsFunc answers how many create requests the payment service
// received for each of keys (the simulator's accounting); a key it never saw
// may be missing from the answer.
type CreateCountsFunc func(ctx context.Context, keys []OrderKey) (map[OrderKey]int, error)

// Config configures a Run.
type Config struct {
	// Subjects names the job and event subjects. Defaults to the "combine"
	// prefix.
	Subjects events.Subjects
	// Flavour is the WeChat Pay product the orders are built for; it
	// decides the trade types and sub-order counts. Defaults to
	// wechat.FlavourMerchant.
	Flavour wechat.Flavour
	// SetFlavour writes Flavour into every job instead of leaving it to the
	// worker's configuration. Defaults to false.
	SetFlavour bool
	// Merchants are the combine merchants; orders go to them in turn.
	// Required.
	Merchants []Merchant
	// Orders is how many distinct orders to publish; with Duration it is an
	// upper bound. Defaults to OrdersDefault when Duration is 0.
	Orders int
	// Duration publishes for this long. Defaults to 0: publish Orders.
	Duration time.Duration
	// Rate is how many messages (duplicates included) to publish per
	// second. Defaults to 0: as fast as JetStream acknowledges them.
	Rate float64
	// MaxInFlight bounds unacknowledged publishes. Defaults to
	// MaxInFlightDefault.
	MaxInFlight int
	// Mix weighs the trade types. Every trade type must be offered by the
	// flavour. Defaults to equal weights for every trade type the flavour
	// offers (see TradeTypesFor).
	Mix map[wechat.TradeType]float64
	// SubOrdersMin and SubOrdersMax bound the sub-orders of an order,
	// within the flavour's limits. Default to the flavour's minimum and to
	// the minimum plus 2.
	SubOrdersMin, SubOrdersMax int
	// DuplicateShare is how many duplicate publishes to add, as a fraction
	// of the distinct orders: 0.2 publishes about 20 duplicates per 100
	// orders. Defaults to 0.
	DuplicateShare float64
	// LateDuplicateShare is the fraction of duplicates that carry a new
	// Nats-Msg-Id, as a job re-sent after the duplicate window. Defaults
	// to 0.
	LateDuplicateShare float64
	// InvalidShare is the fraction of orders that break a WeChat Pay rule
	// (a sub-order of 0 fen): each must fail and be dead-lettered.
	// Defaults to 0.
	InvalidShare float64
	// MalformedShare is the fraction of orders whose job has an unknown
	// field: each must fail and be dead-lettered. Defaults to 0.
	MalformedShare float64
	// PayShare is the fraction of created orders to pay with PayFunc; each
	// must produce one payment event. Defaults to 0.
	PayShare float64
	// PayFunc pays orders. Required when PayShare is set.
	PayFunc PayFunc
	// CreateCountsFunc reads the simulator's create counts after the run.
	// Defaults to nil: not checked.
	CreateCountsFunc CreateCountsFunc
	// RecordFunc reads the simulator's record of every order after the run,
	// and the tally judges the events by it (Tally.ReportRecord); it
	// supersedes CreateCountsFunc. Defaults to nil: not checked.
	RecordFunc RecordFunc
	// MaxCreatesPerOrder flags an order the simulator saw more often (with
	// faults off and a working idempotency store, 1). Defaults to 0: not
	// checked.
	MaxCreatesPerOrder int
	// RunID prefixes every order number of the run (letters and digits, at
	// most 12). Defaults to "LG" and 8 random characters.
	RunID string
	// Seed seeds the choices (trade types, duplicates, amounts). Defaults
	// to 0: a random seed, printed in the report.
	Seed uint64
	// Wait bounds the wait for outcomes after the last publish. Defaults to
	// WaitDefault.
	Wait time.Duration
	// Linger keeps collecting after everything expected arrived. Defaults
	// to LingerDefault.
	Linger time.Duration
	// StreamWait is how long to wait for the streams to exist. Defaults to
	// StreamWaitDefault.
	StreamWait time.Duration
	// ProgressFunc, if set, is called about every ProgressInterval from the
	// goroutine that called Run. Defaults to nil.
	ProgressFunc func(Progress)
	// ProgressInterval defaults to ProgressIntervalDefault.
	ProgressInterval time.Duration
	// NowFunc answers the current time. Defaults to time.Now.
	NowFunc func() time.Time
	// Logger receives warnings (publish retries, pay failures). Defaults to
	// a logger that discards everything.
	Logger *slog.Logger
}

// TradeTypesFor answers the trade types flavour f offers: app and
// miniprogram for individual payees, app, jsapi, h5 and native otherwise.
func TradeTypesFor(f wechat.Flavour) []wechat.TradeType {
	if f == wechat.FlavourIndividual {
		return []wechat.TradeType{wechat.TradeTypeApp, wechat.TradeTypeMiniProgram}
	}
	return []wechat.TradeType{wechat.TradeTypeApp, wechat.TradeTypeJSAPI, wechat.TradeTypeH5, wechat.TradeTypeNative}
}

// ParseMix parses "app=2,jsapi=1,h5" (a missing weight is 1) into weights.
func ParseMix(s string) (map[wechat.TradeType]float64, error) {
	mix := map[wechat.TradeType]float64{}
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, weight, hasWeight := strings.Cut(part, "=")
		t := wechat.TradeType(strings.TrimSpace(name))
		if !t.Valid() {
			return nil, fmt.Errorf("loadgen: mix: unknown trade type %q (want app, jsapi, h5, native or miniprogram)", name)
		}
		w := 1.0
		if hasWeight {
			var err error
			w, err = strconv.ParseFloat(strings.TrimSpace(weight), 64)
			if err != nil || w < 0 || math.IsInf(w, 0) || math.IsNaN(w) {
				return nil, fmt.Errorf("loadgen: mix: weight of %s is %q, want a number ≥ 0", t, weight)
			}
		}
		mix[t] = w
	}
	if len(mix) == 0 {
		return nil, errors.New("loadgen: mix is empty")
	}
	return mix, nil
}

func (cfg *Config) applyDefaults() error {
	cfg.Flavour = cmp.Or(cfg.Flavour, wechat.FlavourMerchant)
	if _, err := wechat.ParseFlavour(string(cfg.Flavour)); err != nil {
		return fmt.Errorf("loadgen: %w", err)
	}
	if cfg.Orders == 0 && cfg.Duration == 0 {
		cfg.Orders = OrdersDefault
	}
	cfg.MaxInFlight = cmp.Or(cfg.MaxInFlight, MaxInFlightDefault)
	cfg.Wait = cmp.Or(cfg.Wait, WaitDefault)
	cfg.Linger = cmp.Or(cfg.Linger, LingerDefault)
	cfg.StreamWait = cmp.Or(cfg.StreamWait, StreamWaitDefault)
	cfg.ProgressInterval = cmp.Or(cfg.ProgressInterval, ProgressIntervalDefault)
	if cfg.NowFunc == nil {
		cfg.NowFunc = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	lo, hi := cfg.Flavour.SubOrderLimits()
	cfg.SubOrdersMin = cmp.Or(cfg.SubOrdersMin, lo)
	cfg.SubOrdersMax = cmp.Or(cfg.SubOrdersMax, min(cfg.SubOrdersMin+2, hi))
	offered := TradeTypesFor(cfg.Flavour)
	if len(cfg.Mix) == 0 {
		cfg.Mix = map[wechat.TradeType]float64{}
		for _, t := range offered {
			cfg.Mix[t] = 1
		}
	}
	switch {
	case cfg.Orders < 0:
		return errors.New("loadgen: Orders is negative")
	case cfg.Duration < 0:
		return errors.New("loadgen: Duration is negative")
	case cfg.Rate < 0 || math.IsNaN(cfg.Rate) || math.IsInf(cfg.Rate, 0):
		return fmt.Errorf("loadgen: Rate is %v, want ≥ 0", cfg.Rate)
	case cfg.MaxInFlight < 1:
		return fmt.Errorf("loadgen: MaxInFlight is %d, want ≥ 1", cfg.MaxInFlight)
	case cfg.SubOrdersMin < lo || cfg.SubOrdersMax > hi || cfg.SubOrdersMin > cfg.SubOrdersMax:
		return fmt.Errorf("loadgen: sub-orders %d–%d, the %s flavour allows %d–%d", cfg.SubOrdersMin, cfg.SubOrdersMax, cfg.Flavour, lo, hi)
	case cfg.PayShare > 0 && cfg.PayFunc == nil:
		return errors.New("loadgen: PayShare is set but PayFunc is nil")
	case cfg.MaxCreatesPerOrder < 0:
		return errors.New("loadgen: MaxCreatesPerOrder is negative")
	case len(cfg.Merchants) == 0:
		return errors.New("loadgen: Merchants is empty")
	}
	for name, v := range map[string]float64{
		"DuplicateShare": cfg.DuplicateShare, "LateDuplicateShare": cfg.LateDuplicateShare,
		"InvalidShare": cfg.InvalidShare, "MalformedShare": cfg.MalformedShare, "PayShare": cfg.PayShare,
	} {
		if v < 0 || v > 1 || math.IsNaN(v) {
			return fmt.Errorf("loadgen: %s is %v, want within [0, 1]", name, v)
		}
	}
	if cfg.InvalidShare+cfg.MalformedShare > 1 {
		return errors.New("loadgen: InvalidShare and MalformedShare add up to more than 1")
	}
	total := 0.0
	for t, w := range cfg.Mix {
		if !slices.Contains(offered, t) {
			return fmt.Errorf("loadgen: mix: the %s flavour does not offer trade type %s", cfg.Flavour, t)
		}
		if w < 0 {
			return fmt.Errorf("loadgen: mix: weight of %s is negative", t)
		}
		total += w
	}
	if total <= 0 {
		return errors.New("loadgen: mix: every weight is 0")
	}
	if cfg.RunID == "" {
		cfg.RunID = "LG" + randomAlnum(8)
	}
	if len(cfg.RunID) > 12 || !isAlnum(cfg.RunID) {
		return fmt.Errorf("loadgen: RunID %q must be 1–12 letters and digits", cfg.RunID)
	}
	ms := make([]Merchant, len(cfg.Merchants))
	for i, m := range cfg.Merchants {
		if m.MchID == "" || m.AppID == "" {
			return fmt.Errorf("loadgen: merchant %d: MchID and AppID are required", i)
		}
		m.NotifyURL = cmp.Or(m.NotifyURL, NotifyURLDefault)
		if len(m.SubMchIDs) == 0 {
			if cfg.Flavour == wechat.FlavourMerchant {
				m.SubMchIDs = []string{m.MchID}
			} else {
				for j := range 50 {
					m.SubMchIDs = append(m.SubMchIDs, fmt.Sprintf("16%08d", 100+j))
				}
			}
		}
		if len(m.IndividualAuthIDs) == 0 {
			for j := range 10 {
				m.IndividualAuthIDs = append(m.IndividualAuthIDs, fmt.Sprintf("loadgen-payee-%02d", j))
			}
		}
		if cfg.Flavour == wechat.FlavourEcommerce && len(m.SubMchIDs) < cfg.SubOrdersMax {
			return fmt.Errorf("loadgen: merchant %s: the e-commerce flavour needs a sub_mchid per sub-order, have %d for up to %d sub-orders", m.MchID, len(m.SubMchIDs), cfg.SubOrdersMax)
		}
		ms[i] = m
	}
	cfg.Merchants = ms
	return nil
}

func isAlnum(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		default:
			return false
		}
	}
	return s != ""
}
