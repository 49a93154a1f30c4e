package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wxcombine/orderworker/internal/testenv"

	"github.com/wxcombine/orderworker/wechat"
	"github.com/wxcombine/orderworker/wechat/wechatsim"
)

func TestRun(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	var logs testenv.Buffer
	start := func() (string, context.CancelFunc, chan error) {
		ctx, cancel := context.WithCancel(t.Context())
		ready, done := make(chan string, 1), make(chan error, 1)
		go func() {
			done <- run(ctx, []string{"-listen", "127.0.0.1:0", "-keys-dir", dir, "-merchants", "1900000109=wxd678efh567hg6787",
				"-key-mode", "migration", "-platform-key-bits", "1024", "-latency", "1ms"}, &logs, ready)
		}()
		select {
		case url := <-ready:
			return url, cancel, done
		case err := <-done:
			t.Fatalf("run() = %v before listening", err)
		case <-time.After(30 * time.Second):
			t.Fatal("run() did not listen within 30s")
		}
		return "", cancel, done
	}
	for i, wantGenerated := range []bool{true, false} { // the second start loads the first's keys
		url, cancel, done := start()
		m, err := wechat.LoadMerchant(wechatsim.MerchantFiles(dir, "1900000109", readSerial(t, dir), readPubKeyID(t, dir)))
		if err != nil {
			t.Fatalf("LoadMerchant() from -keys-dir = %v", err)
		}
		c, err := wechat.New(wechat.Config{BaseURL: url, Merchants: []*wechat.Merchant{m}, Flavour: wechat.FlavourMerchant})
		if err != nil {
			t.Fatal(err)
		}
		no := "CMD" + time.Now().Format("150405.000000")[7:] + string(rune('a'+i))
		req := &wechat.CombineOrderRequest{
			CombineAppID: "wxd678efh567hg6787", CombineMchID: "1900000109", CombineOutTradeNo: no,
			CombinePayerInfo: &wechat.PayerInfo{OpenID: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
			SubOrders: []wechat.SubOrder{
				{MchID: "1900000109", Attach: "a", Amount: wechat.Amount{TotalAmount: 1, Currency: "CNY"}, OutTradeNo: no + "1", Description: "d"},
				{MchID: "1900000109", Attach: "b", Amount: wechat.Amount{TotalAmount: 2, Currency: "CNY"}, OutTradeNo: no + "2", Description: "d"},
			},
			NotifyURL: "https://example.com/notify",
		}
		if _, err := c.CreateCombineOrder(t.Context(), wechat.TradeTypeJSAPI, req); err != nil {
			t.Errorf("start %d: create against the binary = %v", i+1, err)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run() = %v after cancel, want nil", err)
		}
		if got := strings.Contains(logs.String(), `"keys_generated":`+map[bool]string{true: "true", false: "false"}[wantGenerated]); !got {
			t.Errorf("start %d: logs lack keys_generated=%t:\n%s", i+1, wantGenerated, logs.String())
		}
	}
	if strings.Contains(logs.String(), "PRIVATE KEY") {
		t.Error("logs contain a private key")
	}
}

func readSerial(t *testing.T, dir string) string {
	t.Helper()
	k, err := wechatsim.LoadKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	return k.Merchants[0].Serial
}

func readPubKeyID(t *testing.T, dir string) string {
	t.Helper()
	k, err := wechatsim.LoadKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	return k.Platform.PubKeyID
}

func TestParseMerchants(t *testing.T) {
	tests := []struct {
		in      string
		want    int
		wantErr bool
	}{
		{"1900000109", 1, false},
		{"1900000109=wx1/wx2, 1900000110", 2, false},
		{"abc=wx1", 0, true},
		{"", 0, true},
	}
	for _, tt := range tests {
		got, err := parseMerchants(tt.in)
		if (err != nil) != tt.wantErr || len(got) != tt.want {
			t.Errorf("parseMerchants(%q) = %d merchants, %v; want %d, error %t", tt.in, len(got), err, tt.want, tt.wantErr)
		}
	}
}

func TestParseFlags_Rejects(t *testing.T) {
	for _, args := range [][]string{{"-system-error-rate", "x"}, {"extra"}} {
		if _, err := parseFlags(args, &bytes.Buffer{}); err == nil {
			t.Errorf("parseFlags(%q) = nil error, want one", args)
		}
	}
	if err := run(t.Context(), []string{"-flavour", "shop", "-keys-dir", t.TempDir()}, &bytes.Buffer{}, nil); err == nil {
		t.Error("run(-flavour shop) = nil, want an error")
	}
}
