package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/wechat"
)

// merchantDir writes a merchant credential directory layout (file contents
// are not parsed by loadConfig) and answers the root.
func merchantDir(t testing.TB, ids ...string) string {
	t.Helper()
	root := t.TempDir()
	for _, id := range ids {
		d := filepath.Join(root, id)
		files := map[string]string{
			fileMerchantKey: "key", fileAPIv3Key: "k", fileSerial: "SERIAL" + id + "\n",
			filePublicKey: "pub", filePublicKeyID: "PUB_KEY_ID_0114232134912410000000000001\n", "platform_cert_1.pem": "cert",
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, data := range files {
			if err := os.WriteFile(filepath.Join(d, name), []byte(data), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	return root
}

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestLoadConfig(t *testing.T) {
	root := merchantDir(t, "1900000109", "1900000110")
	pw := filepath.Join(t.TempDir(), "redis-password")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := map[string]string{
		"WECHAT_FLAVOUR": "merchant", "WECHAT_MERCHANTS": "1900000109, 1900000110", "WECHAT_MERCHANT_DIR": root,
		"REDIS_ADDRS": "127.0.0.1:6380",
	}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name    string
		env     map[string]string
		check   func(t *testing.T, c config)
		wantErr []string // substrings, all in one error
	}{
		{name: "defaults", env: base, check: func(t *testing.T, c config) {
			if c.NATS.URL != "nats://127.0.0.1:4222" || c.AdminAddr != "127.0.0.1:8081" || c.InFlight != 256 || c.MaxAckPending != 4096 || c.Limits.InFlightMin != 2 || c.Limits.Rates.Limited() || c.AckWait != 60*time.Second ||
				c.MaxDeliver != 10 || c.JobTimeout != 45*time.Second || c.Backend != "redis" || c.Storage != jetstream.FileStorage ||
				c.Subjects.Prefix != "combine" || c.Flavour != wechat.FlavourMerchant || c.WeChatBaseURL != wechat.BaseURLDefault {
				t.Errorf("defaults = %+v", c)
			}
			if diff := cmp.Diff([]string{"127.0.0.1:6380"}, c.Redis.Addrs); diff != "" {
				t.Errorf("redis addrs (-want +got):\n%s", diff)
			}
			if len(c.MerchantFiles) != 2 || c.MerchantFiles[1].MchID != "1900000110" || c.MerchantFiles[1].Serial != "SERIAL1900000110" ||
				c.MerchantFiles[0].PublicKeyID != "PUB_KEY_ID_0114232134912410000000000001" || len(c.MerchantFiles[0].PlatformCertFiles) != 1 {
				t.Errorf("merchant files = %+v", c.MerchantFiles)
			}
			if len(c.Redelivery) != 7 || c.Redelivery[6] != 5*time.Minute {
				t.Errorf("redelivery = %v", c.Redelivery)
			}
		}},
		{name: "overrides", env: with("WORKER_IN_FLIGHT", "16", "ACK_WAIT", "2m", "JOB_TIMEOUT", "90s", "STREAM_STORAGE", "memory",
			"IDEMPOTENCY_BACKEND", "kv", "REDIS_ADDRS", "", "SUBJECT_PREFIX", "acme", "CONSUMER_BACKOFF", "10s, 1m", "LOG_LEVEL", "debug",
			"REDIS_PASSWORD_FILE", pw), check: func(t *testing.T, c config) {
			if c.InFlight != 16 || c.AckWait != 2*time.Minute || c.Storage != jetstream.MemoryStorage || c.Backend != "kv" ||
				c.Subjects.Prefix != "acme" || len(c.ConsumerBackOff) != 2 || c.LogLevel.String() != "DEBUG" {
				t.Errorf("overrides = %+v", c)
			}
		}},
		{name: "redis password from a file", env: with("REDIS_PASSWORD_FILE", pw, "REDIS_TLS", "true", "REDIS_USERNAME", "worker"),
			check: func(t *testing.T, c config) {
				if c.Redis.Password != "s3cret" || !c.Redis.TLS || c.Redis.Username != "worker" {
					t.Errorf("redis = %v (password set %v)", c.Redis, c.Redis.Password != "")
				}
			}},
		{name: "every problem at once", env: map[string]string{
			"WORKER_IN_FLIGHT": "0", "ACK_WAIT": "soon", "STREAM_STORAGE": "disk", "IDEMPOTENCY_BACKEND": "redis", "WECHAT_FLAVOUR": "vip",
			"NATS_TLS_CERT_FILE": pw, "LOG_LEVEL": "loud",
		}, wantErr: []string{
			"WORKER_IN_FLIGHT", "ACK_WAIT", "STREAM_STORAGE", "REDIS_ADDRS: is required", `WECHAT_FLAVOUR: "vip"`,
			"WECHAT_MERCHANTS: is required", "NATS_TLS_CERT_FILE: and NATS_TLS_KEY_FILE", "LOG_LEVEL",
		}},
		{name: "flavour required", env: with("WECHAT_FLAVOUR", ""), wantErr: []string{"WECHAT_FLAVOUR: is required"}},
		{name: "job timeout within ack wait", env: with("ACK_WAIT", "30s", "JOB_TIMEOUT", "30s"), wantErr: []string{"JOB_TIMEOUT: 30s must be shorter than ACK_WAIT"}},
		{name: "missing merchant files", env: with("WECHAT_MERCHANTS", "1900000109,1900000999"), wantErr: []string{
			"merchant 1900000999: " + filepath.Join(root, "1900000999", "apiclient_key.pem") + " is missing", "merchant 1900000999: neither",
		}},
		{name: "lease shorter than the retry budget", env: with("IDEMPOTENCY_LEASE", "10s"), wantErr: []string{"IDEMPOTENCY_LEASE: 10s must cover"}},
		{name: "duplicate merchant", env: with("WECHAT_MERCHANTS", "1900000109,1900000109"), wantErr: []string{"lists 1900000109 twice"}},
		{name: "unknown backend", env: with("IDEMPOTENCY_BACKEND", "etcd"), wantErr: []string{`IDEMPOTENCY_BACKEND: "etcd" is not redis or kv`}},
		{name: "bad durations list", env: with("REDELIVERY_DELAYS", "1s,x"), wantErr: []string{"REDELIVERY_DELAYS"}},
		{name: "missing password file", env: with("REDIS_PASSWORD_FILE", "/nonexistent/pw"), wantErr: []string{"REDIS_PASSWORD_FILE: file /nonexistent/pw cannot be read"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := loadConfig(env(tt.env))
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("loadConfig() = %v", err)
				}
				tt.check(t, c)
				return
			}
			if err == nil {
				t.Fatalf("loadConfig() = nil error, want %q", tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("loadConfig() error =\n%v\nwant it to contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Error("error quotes the Redis password")
			}
		})
	}
}

func TestWithFlags(t *testing.T) {
	getenv, err := withFlags([]string{"-nats-url", "nats://10.0.0.1:4222", "-worker-in-flight=9"}, env(map[string]string{
		"NATS_URL": "nats://env:4222", "ADMIN_ADDR": ":9090",
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"NATS_URL": "nats://10.0.0.1:4222", "WORKER_IN_FLIGHT": "9", "ADMIN_ADDR": ":9090", "ACK_WAIT": ""} {
		if got := getenv(k); got != want {
			t.Errorf("getenv(%q) = %q, want %q", k, got, want)
		}
	}
	if _, err := withFlags([]string{"-no-such-flag"}, env(nil), io.Discard); err == nil {
		t.Error("withFlags(unknown flag) = nil error")
	}
	if _, err := withFlags([]string{"extra"}, env(nil), io.Discard); err == nil {
		t.Error("withFlags(positional argument) = nil error")
	}
}
