package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wxcombine/orderworker/idempotency"
	envconfig "github.com/wxcombine/orderworker/internal/config"
	"github.com/wxcombine/orderworker/internal/config/configtest"
	"github.com/wxcombine/orderworker/wechat"
)

// seenSettings are the variables loadSeenConfig reads (seen.go), beside
// the notifier's own settings.
var seenSettings = []string{"PAYMENTS_SEEN_BACKEND", "IDEMPOTENCY_BACKEND", "PAYMENTS_SEEN_KV_BUCKET", "PAYMENTS_SEEN_TTL",
	"DUPLICATE_WINDOW", "REDIS_KEY_PREFIX", "STREAM_REPLICAS", "STREAM_STORAGE", "REDIS_ADDRS", "REDIS_MASTER_NAME",
	"REDIS_USERNAME", "REDIS_PASSWORD_FILE", "REDIS_DB", "REDIS_TLS", "REDIS_TLS_CA_FILE", "REDIS_TLS_SERVER_NAME"}

// FuzzLoadConfig feeds the notifier's two loaders (loadConfig and
// loadSeenConfig) any value of any setting on top of a valid
// configuration. Neither may panic; what they accept holds the limits
// they enforce (WeChat Pay's 5-second answer window, a record that stops
// replayed notifications); every problem names its setting; the Redis
// password read from its file is never quoted.
func FuzzLoadConfig(f *testing.F) {
	const secret = "fuzz-redis-secret-41d7"
	pw := filepath.Join(f.TempDir(), "redis-password")
	if err := os.WriteFile(pw, []byte(secret+"\n"), 0o600); err != nil {
		f.Fatal(err)
	}
	all := shared(settings)
	for _, k := range seenSettings {
		all = append(all, envconfig.Setting{Env: k})
	}
	base := map[string]string{"WECHAT_MERCHANTS": testMchID, "REDIS_ADDRS": "127.0.0.1:6380", "REDIS_PASSWORD_FILE": pw}
	seed := func(kv ...string) { f.Add(configtest.Seed(all, kv...)) }
	seed()
	seed("NOTIFY_PUBLISH_TIMEOUT", "5s", "NOTIFY_BODY_TIMEOUT", "1ns", "NOTIFY_SLOT_WAIT", "-1s")
	seed("NOTIFY_MAX_BODY_BYTES", "1023", "NOTIFY_MAX_CONCURRENT_REQUESTS", "0x10")
	seed("WECHAT_MERCHANTS", "1900000109,,1900000109", "SUBJECT_PREFIX", "a.*.b")
	seed("PAYMENTS_SEEN_BACKEND", "none", "DUPLICATE_WINDOW", "24h")
	seed("PAYMENTS_SEEN_TTL", "1h", "STREAM_REPLICAS", "6", "REDIS_DB", "-1")
	seed("TLS_CERT_FILE", pw, "IDEMPOTENCY_BACKEND", "kv", "REDIS_TLS", "1")
	seed("REDIS_PASSWORD_FILE", "/nonexistent/"+secret, "LOG_LEVEL", "WARN")

	f.Fuzz(func(t *testing.T, data []byte) {
		env := configtest.Env(all, base, data)
		getenv := func(k string) string { return env[k] }
		given := strings.Contains(string(data), secret)
		c, err := loadConfig(getenv)
		sc, serr := loadSeenConfig(getenv)
		for _, e := range []error{err, serr} {
			if bad := configtest.Unattributed(e, all); len(bad) > 0 {
				t.Fatalf("problems naming no setting: %q", bad)
			}
			if e != nil && !given && strings.Contains(e.Error(), secret) {
				t.Fatalf("error quotes the Redis password: %v", e)
			}
		}
		if err == nil {
			switch {
			case len(c.MchIDs) == 0:
				t.Fatal("accepted no merchant")
			case c.PublishTimeout > 4500e6 || c.BodyTimeout > 4e9 || c.SlotWait > 1e9 || c.PublishTimeout < 0 || c.BodyTimeout < 0 || c.SlotWait < 0:
				t.Fatalf("accepted waits past WeChat Pay's 5 s: publish %s, body %s, slot %s", c.PublishTimeout, c.BodyTimeout, c.SlotWait)
			case c.MaxBodyBytes != 0 && (c.MaxBodyBytes < 1<<10 || c.MaxBodyBytes > 1<<20):
				t.Fatalf("accepted a body limit of %d bytes", c.MaxBodyBytes)
			case (c.TLSCertFile == "") != (c.TLSKeyFile == ""):
				t.Fatal("accepted a TLS certificate without its key, or the reverse")
			}
			for _, id := range c.MchIDs {
				if !allDigits(id) {
					t.Fatalf("accepted merchant %q", id)
				}
			}
		}
		if serr == nil {
			if e := idempotency.CheckReplayProtection(sc.Backend != "none", sc.TTL, sc.DuplicateWindow); e != nil {
				t.Fatalf("accepted a setup that lets a replayed notification through: %v", e)
			}
			if sc.Backend == "redis" && len(sc.Redis.Addrs) == 0 || sc.Replicas < 1 || sc.Replicas > 5 {
				t.Fatalf("accepted %+v", sc)
			}
		}
	})
}

// FuzzLoadMerchant loads a merchant directory whose APIv3 key, public key,
// its id and a platform certificate hold anything. Loading never panics,
// and its error never quotes the APIv3 key it read.
func FuzzLoadMerchant(f *testing.F) {
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		return string(b)
	}
	key, pub, cert := read("apiv3_key"), read("wechatpay_pub_key.pem"), read("platform_cert.pem")
	f.Add(key, pub, testPubKeyID, "")
	f.Add(key, "", "", cert)
	f.Add(key+"x", pub, "PUB_KEY_ID_", cert[:len(cert)/2])
	f.Add(strings.Repeat("k", 31), pub[:40], testPubKeyID, "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
	f.Add("\xff\xfe"+key[2:], pub, " "+testPubKeyID+"\n", cert)
	load := func(t *testing.T, apiv3, pubPEM, pubID, certPEM string) (*wechat.Merchant, error) {
		dir := t.TempDir()
		files := map[string]string{fileAPIv3Key: apiv3, filePublicKey: pubPEM, filePublicKeyID: pubID, "platform_cert_1.pem": certPEM}
		for name, data := range files {
			if data == "" {
				continue
			}
			if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return loadMerchant(dir, testMchID)
	}
	f.Fuzz(func(t *testing.T, apiv3, pubPEM, pubID, certPEM string) {
		m, err := load(t, apiv3, pubPEM, pubID, certPEM)
		if err != nil {
			// A key that happens to spell part of the message is no leak:
			// the same failure with another key of that length must not
			// contain it either.
			if k := strings.TrimSpace(apiv3); len(k) >= 4 && strings.Contains(err.Error(), k) {
				_, other := load(t, strings.Repeat("#", len(apiv3)), pubPEM, pubID, certPEM)
				if other == nil || !strings.Contains(other.Error(), k) {
					t.Fatalf("error quotes the APIv3 key: %v", err)
				}
			}
			return
		}
		if m.APIv3Key.Validate() != nil || len(m.Platform.Serials()) == 0 {
			t.Fatalf("accepted a merchant without a valid APIv3 key or a verification key: %d keys", len(m.Platform.Serials()))
		}
	})
}
