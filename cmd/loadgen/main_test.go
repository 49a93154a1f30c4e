package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/wxcombine/orderworker/internal/testenv"
	"github.com/wxcombine/orderworker/loadgen"
	"github.com/wxcombine/orderworker/wechat"
)

func noEnv(string) string { return "" }

func TestConfig(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		check   func(t *testing.T, cfg loadgen.Config)
		wantErr string
	}{
		{"merchant flags", []string{"-mchid", "1900000109", "-appid", "wx1", "-orders", "50", "-rate", "100",
			"-mix", "app=2,native", "-sub-orders", "3-5", "-dup", "0.2", "-late-dup", "0.5",
			"-notify-url", "http://127.0.0.1:9/v3/notify/{mchid}"}, func(t *testing.T, cfg loadgen.Config) {
			want := []loadgen.Merchant{{MchID: "1900000109", AppID: "wx1", NotifyURL: "http://127.0.0.1:9/v3/notify/1900000109"}}
			if diff := cmp.Diff(want, cfg.Merchants); diff != "" {
				t.Errorf("merchants (-want +got):\n%s", diff)
			}
			if cfg.Orders != 50 || cfg.Rate != 100 || cfg.SubOrdersMin != 3 || cfg.SubOrdersMax != 5 ||
				cfg.DuplicateShare != 0.2 || cfg.LateDuplicateShare != 0.5 {
				t.Errorf("config %+v", cfg)
			}
			if diff := cmp.Diff(map[wechat.TradeType]float64{"app": 2, "native": 1}, cfg.Mix); diff != "" {
				t.Errorf("mix (-want +got):\n%s", diff)
			}
		}, ""},
		{"simulator url wires pay and counts", []string{"-mchid", "1", "-appid", "wx1", "-sim-url", "http://127.0.0.1:9", "-pay", "0.5"},
			func(t *testing.T, cfg loadgen.Config) {
				if cfg.PayFunc == nil || cfg.CreateCountsFunc == nil || cfg.PayShare != 0.5 {
					t.Errorf("PayFunc %v, CreateCountsFunc %v, PayShare %v", cfg.PayFunc != nil, cfg.CreateCountsFunc != nil, cfg.PayShare)
				}
			}, ""},
		{"no merchant", []string{"-orders", "5"}, nil, "-sim-keys"},
		{"pay without simulator", []string{"-mchid", "1", "-appid", "wx1", "-pay", "0.1"}, nil, "-sim-url"},
		{"bad sub-orders", []string{"-mchid", "1", "-appid", "wx1", "-sub-orders", "a-b"}, nil, "-sub-orders"},
		{"bad mix", []string{"-mchid", "1", "-appid", "wx1", "-mix", "card"}, nil, "unknown trade type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			o, err := parseFlags(tt.args, noEnv, &stderr)
			if err != nil {
				t.Fatalf("parseFlags() = %v", err)
			}
			cfg, _, err := o.config()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("config() = %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("config() = %v", err)
			}
			tt.check(t, cfg)
		})
	}
}

func TestParseFlags_Env(t *testing.T) {
	env := map[string]string{"NATS_URL": "nats://127.0.0.1:4333", "WECHAT_FLAVOUR": "partner"}
	o, err := parseFlags(nil, func(k string) string { return env[k] }, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if o.natsURL != env["NATS_URL"] || o.flavour != "partner" {
		t.Errorf("nats-url %q, flavour %q, want them from the environment", o.natsURL, o.flavour)
	}
}

func TestRun_ExitCodes(t *testing.T) {
	nats := testenv.StartNATS(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	tests := []struct {
		name string
		args []string
		want int
	}{
		{"usage error", []string{"-bogus"}, 2},
		{"no merchant", []string{"-nats-url", nats.URL}, 2},
		{"no streams", []string{"-nats-url", nats.URL, "-mchid", "1", "-appid", "wx1", "-report", "", "-stream-wait", "300ms"}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if got := run(ctx, tt.args, noEnv, &out, &errOut); got != tt.want {
				t.Errorf("run(%q) = %d, want %d; stderr: %s", tt.args, got, tt.want, errOut.String())
			}
		})
	}
}

// TestReportPathDefault: without -report the report goes outside the
// working directory (a checkout of the repository).
func TestReportPathDefault(t *testing.T) {
	o, err := parseFlags([]string{"-nats-url", "nats://127.0.0.1:1", "-mchid", "1", "-appid", "wx1"}, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	abs, _ := filepath.Abs(o.reportPath)
	if o.reportPath == "" || strings.HasPrefix(abs, wd) || strings.HasPrefix(abs, filepath.Dir(filepath.Dir(wd))) {
		t.Errorf("default report path %q lies in the working directory or the repository", o.reportPath)
	}
}
