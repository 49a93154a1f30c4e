package loadgen

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/wechat"
)

func testConfig(t *testing.T, f wechat.Flavour, mutate func(*Config)) *Config {
	t.Helper()
	cfg := &Config{
		Flavour:   f,
		Merchants: []Merchant{{MchID: "1900000109", AppID: "wxd678efh567hg6787"}, {MchID: "1900000110", AppID: "wxd678efh567hg6788"}},
		Seed:      42,
		RunID:     "T1",
	}
	if mutate != nil {
		mutate(cfg)
	}
	if err := cfg.applyDefaults(); err != nil {
		t.Fatalf("applyDefaults() = %v", err)
	}
	return cfg
}

func TestGenerator_JobsMatchTheirKind(t *testing.T) {
	for _, f := range []wechat.Flavour{wechat.FlavourMerchant, wechat.FlavourPartner, wechat.FlavourEcommerce, wechat.FlavourIndividual} {
		t.Run(string(f), func(t *testing.T) {
			cfg := testConfig(t, f, func(c *Config) {
				c.InvalidShare, c.MalformedShare = 0.2, 0.2
				c.SubOrdersMax = 5
			})
			g := newGenerator(cfg)
			seenType := map[wechat.TradeType]bool{}
			seenKind := map[Kind]int{}
			now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
			for range 300 {
				j, err := g.next(now)
				if err != nil {
					t.Fatalf("next() = %v", err)
				}
				seenType[j.TradeType] = true
				seenKind[j.Kind]++
				if j.Subject != (events.Subjects{}).Job(j.TradeType) {
					t.Errorf("%s: subject %q, want the %s job subject", j.Key, j.Subject, j.TradeType)
				}
				if j.MsgID != events.JobMsgID(j.Key.MchID, j.Key.OutTradeNo) {
					t.Errorf("%s: msg id %q, want JobMsgID", j.Key, j.MsgID)
				}
				job, err := events.DecodeJob(j.Body, 0)
				if j.Kind == KindMalformed {
					if !errors.Is(err, events.ErrMalformed) {
						t.Fatalf("%s: DecodeJob(malformed) = %v, want ErrMalformed", j.Key, err)
					}
					if job.Request.CombineMchID != j.Key.MchID || job.Request.CombineOutTradeNo != j.Key.OutTradeNo {
						t.Errorf("%s: malformed job identity %s/%s, want it readable", j.Key, job.Request.CombineMchID, job.Request.CombineOutTradeNo)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%s: DecodeJob() = %v", j.Key, err)
				}
				if job.Request.CombineOutTradeNo != j.Key.OutTradeNo || !job.CreatedAt.Equal(now) {
					t.Errorf("%s: decoded order %s created %v", j.Key, job.Request.CombineOutTradeNo, job.CreatedAt)
				}
				if n := len(job.Request.SubOrders); n != j.SubOrders || n < cfg.SubOrdersMin || n > cfg.SubOrdersMax {
					t.Errorf("%s: %d sub-orders, want %d within %d–%d", j.Key, n, j.SubOrders, cfg.SubOrdersMin, cfg.SubOrdersMax)
				}
				err = wechat.Validate(f, j.TradeType, &job.Request)
				switch j.Kind {
				case KindValid:
					if err != nil {
						t.Errorf("%s %s: Validate() = %v, want nil", j.Key, j.TradeType, err)
					}
				case KindInvalid:
					if !errors.Is(err, wechat.ErrInvalid) {
						t.Errorf("%s %s: Validate(invalid) = %v, want ErrInvalid", j.Key, j.TradeType, err)
					}
				}
			}
			for _, tt := range TradeTypesFor(f) {
				if !seenType[tt] {
					t.Errorf("trade type %s never generated", tt)
				}
			}
			for _, k := range []Kind{KindValid, KindInvalid, KindMalformed} {
				if seenKind[k] == 0 {
					t.Errorf("kind %s never generated", k)
				}
			}
		})
	}
}

func TestGenerator_Duplicates(t *testing.T) {
	cfg := testConfig(t, wechat.FlavourMerchant, func(c *Config) { c.DuplicateShare, c.LateDuplicateShare = 0.5, 0.5 })
	g := newGenerator(cfg)
	bodies := map[OrderKey][]byte{}
	ids := map[OrderKey]string{}
	dups, late := 0, 0
	for range 400 {
		if d := g.duplicate(); d != nil {
			dups++
			if !bytes.Equal(d.Body, bodies[d.Key]) {
				t.Fatalf("duplicate of %s has a different body", d.Key)
			}
			switch {
			case d.LateDuplicate:
				late++
				if d.MsgID == ids[d.Key] || !strings.HasPrefix(d.MsgID, ids[d.Key]+":late") {
					t.Errorf("late duplicate msg id %q, want a new id after %q", d.MsgID, ids[d.Key])
				}
			case d.MsgID != ids[d.Key]:
				t.Errorf("early duplicate msg id %q, want %q", d.MsgID, ids[d.Key])
			}
			continue
		}
		j, err := g.next(time.Now())
		if err != nil {
			t.Fatal(err)
		}
		bodies[j.Key], ids[j.Key] = j.Body, j.MsgID
	}
	if dups < 50 || late == 0 || late == dups {
		t.Errorf("%d duplicates, %d late in 400 draws; want a mix near 50%% and 50%%", dups, late)
	}
}

func TestGenerator_Reproducible(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	run := func() []byte {
		g := newGenerator(testConfig(t, wechat.FlavourPartner, func(c *Config) { c.DuplicateShare = 0.3 }))
		var all []byte
		for range 50 {
			if d := g.duplicate(); d != nil {
				all = append(all, d.MsgID...)
				continue
			}
			j, err := g.next(now)
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, j.Body...)
		}
		return all
	}
	if !bytes.Equal(run(), run()) {
		t.Error("two generators with the same seed produced different jobs")
	}
}

func TestConfig_Validation(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr string // substring; "" means valid
	}{
		{"defaults", nil, ""},
		{"miniprogram outside individual", func(c *Config) { c.Mix = map[wechat.TradeType]float64{wechat.TradeTypeMiniProgram: 1} }, "does not offer trade type miniprogram"},
		{"jsapi for individual", func(c *Config) {
			c.Flavour = wechat.FlavourIndividual
			c.Mix = map[wechat.TradeType]float64{wechat.TradeTypeJSAPI: 1}
		}, "does not offer trade type jsapi"},
		{"one sub-order for merchant", func(c *Config) { c.SubOrdersMin, c.SubOrdersMax = 1, 1 }, "allows 2–10"},
		{"share above 1", func(c *Config) { c.DuplicateShare = 1.5 }, "DuplicateShare"},
		{"pay without PayFunc", func(c *Config) { c.PayShare = 0.1 }, "PayFunc"},
		{"bad run id", func(c *Config) { c.RunID = "has-dash" }, "RunID"},
		{"no merchants", func(c *Config) { c.Merchants = nil }, "Merchants is empty"},
		{"merchant without appid", func(c *Config) { c.Merchants = []Merchant{{MchID: "1"}} }, "AppID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{Merchants: []Merchant{{MchID: "1900000109", AppID: "wx1"}}}
			if tt.mutate != nil {
				tt.mutate(&cfg)
			}
			err := cfg.applyDefaults()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("applyDefaults() = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("applyDefaults() = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseMix(t *testing.T) {
	mix, err := ParseMix("app=2, jsapi ,h5=0.5")
	if err != nil {
		t.Fatalf("ParseMix() = %v", err)
	}
	want := map[wechat.TradeType]float64{"app": 2, "jsapi": 1, "h5": 0.5}
	if len(mix) != len(want) {
		t.Fatalf("ParseMix() = %v, want %v", mix, want)
	}
	for k, w := range want {
		if mix[k] != w {
			t.Errorf("ParseMix()[%s] = %v, want %v", k, mix[k], w)
		}
	}
	for _, bad := range []string{"", "card=1", "app=-1", "app=x"} {
		if _, err := ParseMix(bad); err == nil {
			t.Errorf("ParseMix(%q) = nil error, want one", bad)
		}
	}
}
