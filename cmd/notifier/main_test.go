package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/internal/testenv"
	"github.com/wxcombine/orderworker/notifier"
	"github.com/wxcombine/orderworker/wechat"
)

const (
	testMchID    = "1900000109"
	testPubKeyID = "PUB_KEY_ID_0119000001092025010100000000000001"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestLoadConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		env     map[string]string
		wantErr []string // every one must appear
		check   func(t *testing.T, c Config)
	}{
		{
			name: "defaults",
			env:  map[string]string{"WECHAT_MERCHANTS": "1900000109"},
			check: func(t *testing.T, c Config) {
				if c.NATS.URL != nats.DefaultURL || c.HTTPAddr != "127.0.0.1:8080" || c.AdminAddr != "127.0.0.1:8082" ||
					c.SubjectPrefix != "combine" || c.MerchantDir != "/etc/orderworker/merchants" ||
					c.ShutdownGrace != ShutdownGraceDefault || c.PublishOpenID || len(c.MchIDs) != 1 {
					t.Errorf("loadConfig() = %+v, want the defaults", c)
				}
			},
		},
		{
			name: "every setting",
			env: map[string]string{
				"WECHAT_MERCHANT_DIR": "/m", "WECHAT_MERCHANTS": "1900000109, 1900000110",
				"NATS_URL": "nats://a:4222,nats://b:4222", "SUBJECT_PREFIX": "shop.combine",
				"HTTP_ADDR": ":9000", "ADMIN_ADDR": ":9001",
				"TLS_CERT_FILE": "testdata/platform_cert.pem", "TLS_KEY_FILE": "testdata/platform_cert_key.pem",
				"NOTIFY_MAX_BODY_BYTES": "32768", "NOTIFY_PUBLISH_TIMEOUT": "3s", "NOTIFY_MAX_CONCURRENT_VERIFICATIONS": "16",
				"NOTIFY_MAX_CONCURRENT_REQUESTS": "64", "NOTIFY_SLOT_WAIT": "250ms",
				"NOTIFY_PUBLISH_OPENID": "true", "SHUTDOWN_GRACE": "5s", "LOG_LEVEL": "debug",
			},
			check: func(t *testing.T, c Config) {
				if strings.Join(c.MchIDs, ",") != "1900000109,1900000110" || c.NATS.URL != "nats://a:4222,nats://b:4222" ||
					c.SubjectPrefix != "shop.combine" || c.MerchantDir != "/m" || c.HTTPAddr != ":9000" || c.AdminAddr != ":9001" ||
					c.TLSCertFile != "testdata/platform_cert.pem" || c.MaxBodyBytes != 32768 || c.PublishTimeout != 3*time.Second ||
					c.MaxConcurrentVerifications != 16 || c.MaxConcurrentRequests != 64 || c.SlotWait != 250*time.Millisecond || !c.PublishOpenID || c.ShutdownGrace != 5*time.Second || c.LogLevel != -4 {
					t.Errorf("loadConfig() = %+v, want every setting applied", c)
				}
			},
		},
		{
			name:    "nothing set",
			env:     map[string]string{},
			wantErr: []string{"WECHAT_MERCHANTS: is required"},
		},
		{
			name: "everything wrong at once",
			env: map[string]string{
				"WECHAT_MERCHANTS": "19000001x9,1900000109,1900000109", "TLS_CERT_FILE": "testdata/platform_cert.pem",
				"NATS_TLS_KEY_FILE": "testdata/missing.pem",
				"SUBJECT_PREFIX":    "a.>", "NOTIFY_MAX_BODY_BYTES": "10", "NOTIFY_PUBLISH_TIMEOUT": "6s",
				"NOTIFY_MAX_CONCURRENT_VERIFICATIONS": "0", "NOTIFY_PUBLISH_OPENID": "perhaps",
				"NOTIFY_MAX_CONCURRENT_REQUESTS": "none", "NOTIFY_SLOT_WAIT": "2s",
				"SHUTDOWN_GRACE": "soon", "LOG_LEVEL": "loud",
			},
			wantErr: []string{
				"14 problem(s)", `WECHAT_MERCHANTS: "19000001x9" is not a merchant number`, "WECHAT_MERCHANTS: lists 1900000109 twice",
				"TLS_CERT_FILE: and TLS_KEY_FILE", "NATS_TLS_KEY_FILE: file testdata/missing.pem cannot be read",
				"NATS_TLS_CERT_FILE: and NATS_TLS_KEY_FILE", "SUBJECT_PREFIX", "NOTIFY_MAX_BODY_BYTES", "NOTIFY_PUBLISH_TIMEOUT",
				"NOTIFY_MAX_CONCURRENT_VERIFICATIONS", "NOTIFY_MAX_CONCURRENT_REQUESTS", "NOTIFY_SLOT_WAIT", "NOTIFY_PUBLISH_OPENID", "SHUTDOWN_GRACE", "LOG_LEVEL",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := loadConfig(env(tt.env))
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("loadConfig() = %v, want nil", err)
				}
				tt.check(t, c)
				return
			}
			if err == nil {
				t.Fatal("loadConfig() = nil, want an error")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("loadConfig() = %q, want it to mention %q", err, w)
				}
			}
		})
	}
}

// merchantDir writes testMchID's notifier files (no private key) under a
// temporary WECHAT_MERCHANT_DIR.
func merchantDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	md := filepath.Join(dir, testMchID)
	if err := os.Mkdir(md, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, src := range files {
		var data []byte
		if strings.HasPrefix(src, "=") {
			data = []byte(src[1:])
		} else {
			var err error
			if data, err = os.ReadFile(filepath.Join("testdata", src)); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(md, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

var allFiles = map[string]string{
	"apiv3_key":             "apiv3_key",
	"wechatpay_pub_key.pem": "wechatpay_pub_key.pem",
	"pub_key_id":            "=" + testPubKeyID + "\n",
	"platform_cert.pem":     "platform_cert.pem",
}

func TestLoadMerchants(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		files       map[string]string
		wantSerials int
		wantErr     string
	}{
		{"public key and certificate", allFiles, 2, ""},
		{"public key only", map[string]string{"apiv3_key": "apiv3_key", "wechatpay_pub_key.pem": "wechatpay_pub_key.pem", "pub_key_id": "=" + testPubKeyID}, 1, ""},
		{"certificate only", map[string]string{"apiv3_key": "apiv3_key", "platform_cert.pem": "platform_cert.pem"}, 1, ""},
		{"no APIv3 key", map[string]string{"platform_cert.pem": "platform_cert.pem"}, 0, "merchant 1900000109: APIv3 key"},
		{"short APIv3 key", map[string]string{"apiv3_key": "=short", "platform_cert.pem": "platform_cert.pem"}, 0, "APIv3 key is 5 bytes"},
		{"public key without id", map[string]string{"apiv3_key": "apiv3_key", "wechatpay_pub_key.pem": "wechatpay_pub_key.pem"}, 0, "needs its id"},
		{"no platform key", map[string]string{"apiv3_key": "apiv3_key"}, 0, "neither wechatpay_pub_key.pem nor"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ms, err := loadMerchants(Config{MerchantDir: merchantDir(t, tt.files), MchIDs: []string{testMchID}})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("loadMerchants() = %v, want an error containing %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), strings.TrimSpace(readFile(t, "apiv3_key"))) {
					t.Errorf("error quotes the APIv3 key")
				}
				return
			}
			if err != nil {
				t.Fatalf("loadMerchants() = %v", err)
			}
			if len(ms) != 1 || ms[0].MchID != testMchID || len(ms[0].Platform.Serials()) != tt.wantSerials {
				t.Fatalf("loadMerchants() = %d merchants, want %s with %d serials", len(ms), testMchID, tt.wantSerials)
			}
		})
	}
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRun runs the command against a real NATS server: not ready until the
// events stream exists, then a notification is stored and counted, and
// canceling the context stops it cleanly.
func TestRun(t *testing.T) {
	t.Parallel()
	ns := testenv.StartNATS(t)
	httpAddr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	adminAddr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	vars := map[string]string{
		"NATS_URL": ns.URL, "WECHAT_MERCHANTS": testMchID, "WECHAT_MERCHANT_DIR": merchantDir(t, allFiles),
		"HTTP_ADDR": httpAddr, "ADMIN_ADDR": adminAddr, "SHUTDOWN_GRACE": "5s", "PAYMENTS_SEEN_BACKEND": "kv",
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	logs := &testenv.Buffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, env(vars), logs) }() // ends when ctx is canceled

	admin := "http://" + adminAddr
	waitFor(t, "/healthz", func() bool { s, _ := get(t, admin+"/healthz"); return s == http.StatusOK })
	// No worker has created the events stream: the notifier does.
	waitFor(t, "/readyz", func() bool { s, _ := get(t, admin+"/readyz"); return s == http.StatusOK })

	nc, err := nats.Connect(ns.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(t.Context(), events.StreamEvents)
	if err != nil {
		t.Fatalf("events stream after /readyz: %v", err)
	}

	key, err := wechat.ParsePrivateKey([]byte(readFile(t, "wechatpay_pub_key_private.pem")))
	if err != nil {
		t.Fatal(err)
	}
	tx := &wechat.CombineOrder{
		CombineAppID: "wxd678efh567hg6787", CombineMchID: testMchID, CombineOutTradeNo: "RUN1",
		SubOrders: []wechat.OrderSubOrder{{
			MchID: testMchID, OutTradeNo: "RUN1-1", TransactionID: "4200000001RUN1", TradeState: "SUCCESS",
			Amount: wechat.Amount{TotalAmount: 1, Currency: "CNY", PayerAmount: 1, PayerCurrency: "CNY"},
		}},
	}
	h, body, err := wechat.BuildNotification(key, testPubKeyID, wechat.APIv3Key(strings.TrimSpace(readFile(t, "apiv3_key"))), "EV-RUN1", time.Now(), tx, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+httpAddr+notifier.PathPrefix+testMchID, bytes.NewReader(body))
	req.Header = h
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Errorf("POST notification = %d, want 204", resp.StatusCode)
	}
	info, err := stream.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Errorf("stream holds %d messages, want 1", info.State.Msgs)
	}
	if s, m := get(t, admin+"/metrics"); s != http.StatusOK || !strings.Contains(m, `orderworker_notifier_notifications_total{result="ok"} 1`) {
		t.Errorf("/metrics = %d, want the ok notification counted:\n%s", s, m)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run() = %v, want nil after cancel", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not stop within 10s of cancel")
	}
	for _, want := range []string{"notifier started", "notification stored", "notifier stopped"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %q:\n%s", want, logs)
		}
	}
}

func TestRun_badConfig(t *testing.T) {
	t.Parallel()
	err := run(t.Context(), env(map[string]string{"LOG_LEVEL": "loud"}), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "WECHAT_MERCHANTS") || !strings.Contains(err.Error(), "LOG_LEVEL") {
		t.Errorf("run() = %v, want an error naming WECHAT_MERCHANTS and LOG_LEVEL", err)
	}
}

// TestRun_tls serves notifications over HTTPS, and starts even though NATS
// is unreachable: it is then not ready, and reconnects in the background.
func TestRun_tls(t *testing.T) {
	t.Parallel()
	httpAddr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	adminAddr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	vars := map[string]string{
		"NATS_URL":         "nats://127.0.0.1:" + strconv.Itoa(testenv.FreePort(t)),
		"WECHAT_MERCHANTS": testMchID, "WECHAT_MERCHANT_DIR": merchantDir(t, allFiles),
		"HTTP_ADDR": httpAddr, "ADMIN_ADDR": adminAddr, "PAYMENTS_SEEN_BACKEND": "kv",
		"TLS_CERT_FILE": "testdata/platform_cert.pem", "TLS_KEY_FILE": "testdata/platform_cert_key.pem",
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, env(vars), io.Discard) }() // ends when ctx is canceled

	admin := "http://" + adminAddr
	waitFor(t, "/healthz", func() bool { s, _ := get(t, admin+"/healthz"); return s == http.StatusOK })
	if s, body := get(t, admin+"/readyz"); s != http.StatusServiceUnavailable || !strings.Contains(body, "nats") {
		t.Errorf("/readyz without NATS = %d %q, want 503 naming nats", s, body)
	}
	// The test certificate has no SAN; check it is the one served instead.
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := client.Post("https://"+httpAddr+notifier.PathPrefix+testMchID, "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	block, _ := pem.Decode([]byte(readFile(t, "platform_cert.pem")))
	if resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 || !bytes.Equal(resp.TLS.PeerCertificates[0].Raw, block.Bytes) {
		t.Error("HTTPS answer not signed with TLS_CERT_FILE")
	}
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("unsigned POST over HTTPS = %d, want 401", resp.StatusCode)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run() = %v, want nil after cancel", err)
	}
}

// TestLoadMerchants_refusesReadableKey: an APIv3 key readable by everyone
// stops the notifier at start.
func TestLoadMerchants_refusesReadableKey(t *testing.T) {
	dir := merchantDir(t, allFiles)
	if err := os.Chmod(filepath.Join(dir, testMchID, "apiv3_key"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := loadMerchants(Config{MchIDs: []string{testMchID}, MerchantDir: dir})
	if err == nil || !strings.Contains(err.Error(), "mode 0644") {
		t.Errorf("loadMerchants with a 0644 APIv3 key = %v, want a refusal naming the mode", err)
	}
}
