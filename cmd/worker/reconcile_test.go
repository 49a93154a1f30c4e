package main

import (
	"strings"
	"testing"
	"time"
)

func TestLoadConfig_reconcile(t *testing.T) {
	base := map[string]string{
		"WECHAT_FLAVOUR": "merchant", "WECHAT_MERCHANTS": "1900000109", "WECHAT_MERCHANT_DIR": merchantDir(t, "1900000109"),
		"REDIS_ADDRS": "127.0.0.1:6380",
	}
	with := func(kv ...string) func(string) string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return env(m)
	}
	c, err := loadConfig(with())
	if err != nil {
		t.Fatal(err)
	}
	want := []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute, time.Hour}
	if r := c.Reconcile; !r.Enabled || len(r.Schedule) != 4 || r.Schedule[3] != want[3] || r.UnpaidCloseAfter != 2*time.Hour ||
		r.SeenBackend != "redis" || r.SeenTTL != 72*time.Hour || r.NotifyURLBase != "" {
		t.Errorf("defaults = %+v, want on, %v, 2h, the redis record for 72h, no NOTIFY_URL_BASE", r, want)
	}
	c, err = loadConfig(with("RECONCILE_ENABLED", "false", "IDEMPOTENCY_BACKEND", "kv", "NOTIFY_URL_BASE", "https://pay.example.com"))
	if err != nil {
		t.Fatal(err)
	}
	if r := c.Reconcile; r.Enabled || r.SeenBackend != "kv" || r.NotifyURLBase != "https://pay.example.com" {
		t.Errorf("config = %+v, want off, the kv record, the base URL", r)
	}
	// Every configuration that lets a replayed notification through is refused.
	for _, tt := range []struct {
		kv   []string
		want string
	}{
		{[]string{"PAYMENTS_SEEN_BACKEND", "none"}, "duplicate window 10m0s is shorter"},
		{[]string{"PAYMENTS_SEEN_TTL", "3h"}, "lasts 3h0m0s, shorter"},
		{[]string{"PAYMENTS_SEEN_BACKEND", "memcached"}, `"memcached" is not redis, kv or none`},
		{[]string{"IDEMPOTENCY_BACKEND", "kv", "PAYMENTS_SEEN_BACKEND", "redis"}, "redis needs IDEMPOTENCY_BACKEND=redis"},
		{[]string{"RECONCILE_SCHEDULE", "5m,1m"}, "strictly increasing"},
		{[]string{"NOTIFY_URL_BASE", "https://pay.example.com/?a=1"}, "NOTIFY_URL_BASE"},
	} {
		_, err := loadConfig(with(tt.kv...))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: loadConfig() = %v, want an error containing %q", tt.kv, err, tt.want)
		}
	}
	// A duplicate window beyond WeChat Pay's horizon may stand in for the record.
	if _, err := loadConfig(with("PAYMENTS_SEEN_BACKEND", "none", "DUPLICATE_WINDOW", "26h")); err != nil {
		t.Errorf("no record with a 26h window: %v", err)
	}
}
