package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wxcombine/orderworker/internal/config/configtest"
	"github.com/wxcombine/orderworker/pipeline"
)

// FuzzLoadConfig feeds the worker's configuration loader any value of any
// setting (configtest.Env) on top of a valid configuration. The loader
// must never panic; what it accepts must hold the rules it enforces (the
// ones the worker relies on at start); every problem it reports names the
// setting to fix; and it never quotes the Redis password it read.
func FuzzLoadConfig(f *testing.F) {
	const secret = "fuzz-redis-secret-9f2c"
	root := merchantDir(f, "1900000109")
	pw := filepath.Join(f.TempDir(), "redis-password")
	if err := os.WriteFile(pw, []byte(secret+"\n"), 0o600); err != nil {
		f.Fatal(err)
	}
	base := map[string]string{
		"WECHAT_FLAVOUR": "merchant", "WECHAT_MERCHANTS": "1900000109", "WECHAT_MERCHANT_DIR": root,
		"REDIS_ADDRS": "127.0.0.1:6380", "REDIS_PASSWORD_FILE": pw,
	}
	all := shared(settings)
	seed := func(kv ...string) { f.Add(configtest.Seed(all, kv...)) }
	seed()
	seed("WORKER_IN_FLIGHT", "16", "MAX_ACK_PENDING", "8")
	seed("ACK_WAIT", "30s", "JOB_TIMEOUT", "30s")
	seed("RECONCILE_SCHEDULE", "5m,1m", "UNPAID_CLOSE_AFTER", "-1h")
	seed("WECHAT_MERCHANT_QPS", "1900000109=100,default=abc", "WORKER_IN_FLIGHT_MIN", "9999")
	seed("IDEMPOTENCY_BACKEND", "kv", "PAYMENTS_SEEN_BACKEND", "redis", "DUPLICATE_WINDOW", "0s")
	seed("CONSUMER_BACKOFF", "1s,2s,3s,4s,5s,6s,7s,8s,9s,10s,11s", "MAX_DELIVER", "3")
	seed("NOTIFY_URL_BASE", "http://user:pw@example.com/?q", "REDIS_TLS", "yes")
	seed("JOBS_STREAM", "X", "EVENTS_STREAM", "X", "STREAM_REPLICAS", "9", "MAX_JOB_BYTES", "1e9")
	seed("WECHAT_MERCHANTS", "1900000109, 1900000109", "NATS_TLS_KEY_FILE", pw)

	f.Fuzz(func(t *testing.T, data []byte) {
		env := configtest.Env(all, base, data)
		c, err := loadConfig(func(k string) string { return env[k] })
		if err != nil {
			if bad := configtest.Unattributed(err, all); len(bad) > 0 {
				t.Fatalf("problems naming no setting: %q", bad)
			}
			if strings.Contains(err.Error(), secret) && !strings.Contains(strings.Join(mapValues(env), "\n"), secret) {
				t.Fatalf("error quotes the Redis password: %v", err)
			}
			return
		}
		switch {
		case c.InFlight < 1 || c.MaxAckPending < c.InFlight || c.Limits.InFlightMin > c.InFlight:
			t.Fatalf("accepted in flight %d, ack pending %d, floor %d", c.InFlight, c.MaxAckPending, c.Limits.InFlightMin)
		case c.JobTimeout <= 0 || c.JobTimeout >= c.AckWait:
			t.Fatalf("accepted JOB_TIMEOUT %s with ACK_WAIT %s", c.JobTimeout, c.AckWait)
		case c.Lease < c.Retry.MaxElapsed+c.WeChatCallTimeout+c.Retry.MaxInterval:
			t.Fatalf("accepted a lease %s shorter than a job's calls", c.Lease)
		case len(c.ConsumerBackOff) > c.MaxDeliver || c.MaxDeliver < 1:
			t.Fatalf("accepted %d back-off steps for %d deliveries", len(c.ConsumerBackOff), c.MaxDeliver)
		case c.JobsStream == c.EventsStream || c.JobsStream == c.DeadLettersStream || c.EventsStream == c.DeadLettersStream:
			t.Fatalf("accepted streams %s, %s, %s", c.JobsStream, c.EventsStream, c.DeadLettersStream)
		case c.Backend == "redis" && len(c.Redis.Addrs) == 0:
			t.Fatal("accepted the redis backend without REDIS_ADDRS")
		case c.Backend != "redis" && c.Backend != "kv":
			t.Fatalf("accepted backend %q", c.Backend)
		case len(c.MerchantFiles) == 0:
			t.Fatal("accepted no merchant")
		}
		if err := pipeline.CheckSchedule(c.Reconcile.Schedule); err != nil && len(c.Reconcile.Schedule) > 0 {
			t.Fatalf("accepted RECONCILE_SCHEDULE %v: %v", c.Reconcile.Schedule, err)
		}
		if err := pipeline.CheckNotifyURLBase(c.Reconcile.NotifyURLBase); err != nil {
			t.Fatalf("accepted NOTIFY_URL_BASE %q: %v", c.Reconcile.NotifyURLBase, err)
		}
	})
}

func mapValues(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}
