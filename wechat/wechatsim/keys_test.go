package wechatsim_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/wxcombine/orderworker/wechat"
	"github.com/wxcombine/orderworker/wechat/wechatsim"
)

func TestWriteKeys_LoadKeys(t *testing.T) {
	f, err := keys()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := wechatsim.WriteKeys(dir, f.platform, f.sim, f.client); err != nil {
		t.Fatalf("WriteKeys() = %v", err)
	}
	k, err := wechatsim.LoadKeys(dir)
	if err != nil {
		t.Fatalf("LoadKeys() = %v", err)
	}
	if k.Platform.CertSerial != f.platform.CertSerial || k.Platform.PubKeyID != f.platform.PubKeyID || len(k.Merchants) != 2 {
		t.Fatalf("LoadKeys() = platform %s/%s and %d merchants, want %s/%s and 2",
			k.Platform.CertSerial, k.Platform.PubKeyID, len(k.Merchants), f.platform.CertSerial, f.platform.PubKeyID)
	}
	fi, err := os.Stat(filepath.Join(dir, mchA, "apiclient_key.pem"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("merchant key file mode = %v, %v, want 0600", fi.Mode().Perm(), err)
	}
	// A simulator and a client built only from the files work together.
	s, err := wechatsim.New(wechatsim.Config{Platform: k.Platform, Merchants: k.Merchants, Mode: wechatsim.ModeCert})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	url, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m, err := wechat.LoadMerchant(k.Files[0])
	if err != nil {
		t.Fatalf("LoadMerchant(%+v) = %v", k.Files[0], err)
	}
	c, err := wechat.New(wechat.Config{BaseURL: url, Merchants: []*wechat.Merchant{m}, Flavour: wechat.FlavourMerchant})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateCombineOrder(t.Context(), wechat.TradeTypeJSAPI, merchantOrder(newNo("K"), "")); err != nil {
		t.Errorf("create with loaded credentials = %v", err)
	}

	// dir is also a WECHAT_MERCHANT_DIR: each merchant's directory holds the
	// files cmd/worker and cmd/notifier read, serial and pub_key_id included.
	md := filepath.Join(dir, mchA)
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(md, name))
		if err != nil {
			t.Fatalf("merchant directory: %v", err)
		}
		return strings.TrimSpace(string(b))
	}
	svc, err := wechat.LoadMerchant(wechat.MerchantFiles{
		MchID: mchA, Serial: read("serial"), PrivateKeyFile: filepath.Join(md, "apiclient_key.pem"),
		APIv3KeyFile: filepath.Join(md, "apiv3_key"), PublicKeyFile: filepath.Join(md, "wechatpay_pub_key.pem"),
		PublicKeyID: read("pub_key_id"), PlatformCertFiles: []string{filepath.Join(md, "platform_cert.pem")},
	})
	if err != nil {
		t.Fatalf("LoadMerchant(service layout) = %v", err)
	}
	if svc.Serial != f.sim[0].Serial {
		t.Errorf("serial file = %q, want %q", svc.Serial, f.sim[0].Serial)
	}
	if got, want := svc.Platform.Serials(), []string{f.platform.PubKeyID, f.platform.CertSerial}; !slices.Equal(got, want) {
		t.Errorf("platform serials = %v, want %v", got, want)
	}
}

func TestNew_RejectsBadConfig(t *testing.T) {
	f, err := keys()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  wechatsim.Config
	}{
		{"no platform", wechatsim.Config{Merchants: f.sim}},
		{"no merchants", wechatsim.Config{Platform: f.platform}},
		{"unknown flavour", wechatsim.Config{Platform: f.platform, Merchants: f.sim, Flavour: "shop"}},
		{"unknown mode", wechatsim.Config{Platform: f.platform, Merchants: f.sim, Mode: "sm2"}},
		{"duplicate merchant", wechatsim.Config{Platform: f.platform, Merchants: append(f.sim[:1:1], f.sim[0])}},
		{"short APIv3 key", wechatsim.Config{Platform: f.platform, Merchants: []wechatsim.MerchantConfig{{
			MchID: mchA, Serial: "AB", PublicKey: f.sim[0].PublicKey, APIv3Key: wechat.APIv3Key("short"), AppIDs: []string{appA},
		}}}},
		{"fault rates above 1", wechatsim.Config{Platform: f.platform, Merchants: f.sim, Faults: wechatsim.FaultConfig{Bad502Rate: 0.7, BankErrorRate: 0.7}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if s, err := wechatsim.New(tt.cfg); err == nil {
				s.Close()
				t.Errorf("New() = nil error, want one")
			}
		})
	}
}
