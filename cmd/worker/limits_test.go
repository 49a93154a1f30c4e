package main

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestLoadLimits(t *testing.T) {
	root := merchantDir(t, "1900000109")
	base := func(kv ...string) func(string) string {
		m := map[string]string{"WECHAT_FLAVOUR": "merchant", "WECHAT_MERCHANTS": "1900000109", "WECHAT_MERCHANT_DIR": root,
			"IDEMPOTENCY_BACKEND": "kv"}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return env(m)
	}
	c, err := loadConfig(base("WECHAT_MERCHANT_QPS", "1900000109=100,*=20", "WORKER_IN_FLIGHT", "64", "WORKER_IN_FLIGHT_MIN", "8"))
	if err != nil {
		t.Fatal(err)
	}
	if c.InFlight != 64 || c.Limits.InFlightMin != 8 || c.Limits.Rates.Of("1900000109") != 100 || c.Limits.Rates.Of("1900000110") != 20 {
		t.Errorf("limits = %d, %+v", c.InFlight, c.Limits)
	}
	for _, tc := range []struct{ env, want []string }{
		{[]string{"WECHAT_MERCHANT_QPS", "1900000109=lots"}, []string{"WECHAT_MERCHANT_QPS", "lots"}},
		{[]string{"WORKER_IN_FLIGHT", "16", "WORKER_IN_FLIGHT_MIN", "32"}, []string{"WORKER_IN_FLIGHT_MIN: 32 is above WORKER_IN_FLIGHT 16"}},
		{[]string{"WORKER_IN_FLIGHT", "8192"}, []string{"MAX_ACK_PENDING: 4096 is below WORKER_IN_FLIGHT 8192"}},
	} {
		_, err := loadConfig(base(tc.env...))
		for _, w := range tc.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%v: error %v, want %q", tc.env, err, w)
			}
		}
	}
}

func TestOpenLimitsWithoutRates(t *testing.T) {
	c, err := loadConfig(env(map[string]string{"WECHAT_FLAVOUR": "merchant", "WECHAT_MERCHANTS": "1900000109",
		"WECHAT_MERCHANT_DIR": merchantDir(t, "1900000109"), "IDEMPOTENCY_BACKEND": "kv", "WORKER_IN_FLIGHT_MIN": "256"}))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	o, err := openLimits(t.Context(), c, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	defer o.close()
	if o.calls != nil {
		t.Errorf("a rate limiter without WECHAT_MERCHANT_QPS: %v", o.calls)
	}
	// WORKER_IN_FLIGHT_MIN = WORKER_IN_FLIGHT fixes the limit.
	if got := o.concurrency.Limit(); got != 256 {
		t.Errorf("limit %d, want the fixed 256", got)
	}
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 || mfs[0].GetName() != "orderworker_concurrency_limit" || mfs[0].GetMetric()[0].GetGauge().GetValue() != 256 {
		t.Errorf("gauge = %v, %v", mfs, err)
	}
}
