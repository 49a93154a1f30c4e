package main

import (
	"strings"
	"testing"
	"time"
)

func TestLoadSeenConfig(t *testing.T) {
	c, err := loadSeenConfig(env(map[string]string{"REDIS_ADDRS": "redis:6379"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Backend != "redis" || c.TTL != 72*time.Hour || len(c.Redis.Addrs) != 1 {
		t.Errorf("defaults = %+v, want the workers' default: redis, 72h", c)
	}
	if c, err := loadSeenConfig(env(map[string]string{"IDEMPOTENCY_BACKEND": "kv"})); err != nil || c.Backend != "kv" {
		t.Errorf("IDEMPOTENCY_BACKEND=kv: %+v, %v; want the kv record", c, err)
	}
	for _, tt := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{}, "REDIS_ADDRS: is required"},
		{map[string]string{"PAYMENTS_SEEN_BACKEND": "none"}, "duplicate window 10m0s is shorter"},
		{map[string]string{"PAYMENTS_SEEN_BACKEND": "kv", "PAYMENTS_SEEN_TTL": "1h"}, "lasts 1h0m0s, shorter"},
		{map[string]string{"PAYMENTS_SEEN_BACKEND": "kv", "STREAM_STORAGE": "tape"}, "STREAM_STORAGE"},
	} {
		_, err := loadSeenConfig(env(tt.env))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: loadSeenConfig() = %v, want an error containing %q", tt.env, err, tt.want)
		}
	}
	if _, err := loadSeenConfig(env(map[string]string{"PAYMENTS_SEEN_BACKEND": "none", "DUPLICATE_WINDOW": "25h"})); err != nil {
		t.Errorf("no record with a 25h window: %v", err)
	}
}
