package metrics_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wxcombine/orderworker/metrics"
)

func TestWorker_Lint(t *testing.T) {
	reg := prometheus.NewRegistry()
	w := metrics.NewWorker(reg)
	// Touch every vector so that each family is gathered and linted.
	w.SetBuildInfo("v1.2.3", "abc123")
	w.Job(metrics.OutcomeAck, 120*time.Millisecond)
	w.JobWait(false, 30*time.Millisecond)
	w.WeChatRequest("create_jsapi", "OK", 80*time.Millisecond)
	w.Retry(metrics.RetryInProcess)
	w.Claim(metrics.ClaimClaimed)
	w.InFlight(1)
	w.DeadLetter("malformed")
	w.PublishFailure(metrics.EventPrepayCreated)
	w.AckFailure(metrics.AckAck)
	w.StoreUp(true)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint %s: %s", p.Metric, p.Text)
	}
	n, err := testutil.GatherAndCount(reg)
	if err != nil {
		t.Fatal(err)
	}
	if n < 13 {
		t.Errorf("GatherAndCount() = %d, want at least 13 series", n)
	}
}

func TestNotifier_Lint(t *testing.T) {
	reg := prometheus.NewRegistry()
	n := metrics.NewNotifier(reg)
	n.SetBuildInfo("v1", "c")
	n.Notification(metrics.NotificationOK)
	n.Publish(3 * time.Millisecond)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint %s: %s", p.Metric, p.Text)
	}
}

func TestWorker_Values(t *testing.T) {
	reg := prometheus.NewRegistry()
	w := metrics.NewWorker(reg)
	w.Job(metrics.OutcomeRetry, time.Second)
	w.Job(metrics.OutcomeRetry, time.Second)
	w.Job(metrics.OutcomeAck, time.Second)
	w.InFlight(1)
	w.InFlight(1)
	w.InFlight(-1)
	w.Claim(metrics.ClaimConflict)
	w.SetBuildInfo("v9", "deadbeef")
	w.JobWait(false, 40*time.Millisecond)
	w.JobWait(true, 7*time.Second)
	w.JobWait(true, -time.Second) // a clock step backwards counts as 0
	want := `
# HELP orderworker_pipeline_jobs_total Jobs handled, by outcome: ack, retry, terminal or duplicate.
# TYPE orderworker_pipeline_jobs_total counter
orderworker_pipeline_jobs_total{outcome="ack"} 1
orderworker_pipeline_jobs_total{outcome="duplicate"} 0
orderworker_pipeline_jobs_total{outcome="retry"} 2
orderworker_pipeline_jobs_total{outcome="terminal"} 0
# HELP orderworker_pipeline_jobs_in_flight Jobs this worker is handling now.
# TYPE orderworker_pipeline_jobs_in_flight gauge
orderworker_pipeline_jobs_in_flight 1
# HELP orderworker_idempotency_claims_total Idempotency claims, by result: claimed, in_flight, completed, conflict or unavailable.
# TYPE orderworker_idempotency_claims_total counter
orderworker_idempotency_claims_total{result="claimed"} 0
orderworker_idempotency_claims_total{result="completed"} 0
orderworker_idempotency_claims_total{result="conflict"} 1
orderworker_idempotency_claims_total{result="in_flight"} 0
orderworker_idempotency_claims_total{result="unavailable"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"orderworker_pipeline_jobs_total", "orderworker_pipeline_jobs_in_flight", "orderworker_idempotency_claims_total"); err != nil {
		t.Error(err)
	}
	waits := `
# HELP orderworker_pipeline_job_wait_seconds Time from a job's storage in the stream to its pickup by a worker, by delivery: first or retry.
# TYPE orderworker_pipeline_job_wait_seconds histogram
orderworker_pipeline_job_wait_seconds_bucket{delivery="first",le="0.01"} 0
orderworker_pipeline_job_wait_seconds_bucket{delivery="first",le="0.05"} 1
orderworker_pipeline_job_wait_seconds_bucket{delivery="first",le="0.1"} 1
orderworker_pipeline_job_wait_seconds_bucket{delivery="first",le="0.5"} 1
orderworker_pipeline_job_wait_seconds_bucket{delivery="first",le="1"} 1
orderworker_pipeline_job_wait_seconds_bucket{delivery="first",le="5"} 1
orderworker_pipeline_job_wait_seconds_bucket{delivery="first",le="10"} 1
orderworker_pipeline_job_wait_seconds_bucket{delivery="first",le="30"} 1
orderworker_pipeline_job_wait_seconds_bucket{delivery="first",le="60"} 1
orderworker_pipeline_job_wait_seconds_bucket{delivery="first",le="120"} 1
orderworker_pipeline_job_wait_seconds_bucket{delivery="first",le="300"} 1
orderworker_pipeline_job_wait_seconds_bucket{delivery="first",le="600"} 1
orderworker_pipeline_job_wait_seconds_bucket{delivery="first",le="1800"} 1
orderworker_pipeline_job_wait_seconds_bucket{delivery="first",le="+Inf"} 1
orderworker_pipeline_job_wait_seconds_sum{delivery="first"} 0.04
orderworker_pipeline_job_wait_seconds_count{delivery="first"} 1
orderworker_pipeline_job_wait_seconds_bucket{delivery="retry",le="0.01"} 1
orderworker_pipeline_job_wait_seconds_bucket{delivery="retry",le="0.05"} 1
orderworker_pipeline_job_wait_seconds_bucket{delivery="retry",le="0.1"} 1
orderworker_pipeline_job_wait_seconds_bucket{delivery="retry",le="0.5"} 1
orderworker_pipeline_job_wait_seconds_bucket{delivery="retry",le="1"} 1
orderworker_pipeline_job_wait_seconds_bucket{delivery="retry",le="5"} 1
orderworker_pipeline_job_wait_seconds_bucket{delivery="retry",le="10"} 2
orderworker_pipeline_job_wait_seconds_bucket{delivery="retry",le="30"} 2
orderworker_pipeline_job_wait_seconds_bucket{delivery="retry",le="60"} 2
orderworker_pipeline_job_wait_seconds_bucket{delivery="retry",le="120"} 2
orderworker_pipeline_job_wait_seconds_bucket{delivery="retry",le="300"} 2
orderworker_pipeline_job_wait_seconds_bucket{delivery="retry",le="600"} 2
orderworker_pipeline_job_wait_seconds_bucket{delivery="retry",le="1800"} 2
orderworker_pipeline_job_wait_seconds_bucket{delivery="retry",le="+Inf"} 2
orderworker_pipeline_job_wait_seconds_sum{delivery="retry"} 7
orderworker_pipeline_job_wait_seconds_count{delivery="retry"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(waits), "orderworker_pipeline_job_wait_seconds"); err != nil {
		t.Error(err)
	}
	if got := testutil.CollectAndCount(reg, "orderworker_build_info"); got != 1 {
		t.Errorf("orderworker_build_info series = %d, want 1", got)
	}
}

// TestNilReceivers: a component built without metrics passes nil; every
// method must then be a no-op rather than a panic (a panic fails the test).
func TestNilReceivers(t *testing.T) {
	var w *metrics.Worker
	w.Job(metrics.OutcomeAck, time.Second)
	w.JobWait(true, time.Second)
	w.WeChatRequest("create_app", "OK", time.Second)
	w.Retry(metrics.RetryRedelivery)
	w.Claim(metrics.ClaimClaimed)
	w.InFlight(1)
	w.DeadLetter("invalid")
	w.PublishFailure(metrics.EventDeadLetter)
	w.AckFailure(metrics.AckNak)
	w.StoreUp(false)
	w.SetBuildInfo("v", "c")
	w.MerchantRequest("1900000109", "OK")
	w.Paused(true)
	var n *metrics.Notifier
	n.Notification(metrics.NotificationOK)
	n.Shed(metrics.ShedAdmission)
	n.Publish(time.Second)
	n.SetBuildInfo("v", "c")
}

// TestPreinitialised: every failure counter and every fixed label value
// exists at 0 before anything happened, so panels and increase() see 0
// rather than "No data".
func TestPreinitialised(t *testing.T) {
	reg := prometheus.NewRegistry()
	metrics.NewWorkerWith(reg, metrics.WorkerConfig{DeadLetterReasons: []string{"malformed", "invalid"}, Merchants: []string{"1900000109"}})
	nreg := prometheus.NewRegistry()
	metrics.NewNotifier(nreg)
	for name, want := range map[string]int{
		"orderworker_pipeline_jobs_total":             len(metrics.Outcomes),
		"orderworker_pipeline_retries_total":          len(metrics.RetryKinds),
		"orderworker_idempotency_claims_total":        len(metrics.ClaimResults),
		"orderworker_pipeline_dead_letters_total":     2,
		"orderworker_pipeline_publish_failures_total": len(metrics.Events),
		"orderworker_pipeline_ack_failures_total":     len(metrics.AckActions),
		"orderworker_wechat_merchant_requests_total":  1,
		"orderworker_notifier_notifications_total":    len(metrics.NotificationResults),
		"orderworker_notifier_shed_total":             len(metrics.ShedStages),
	} {
		g := prometheus.Gatherers{reg, nreg}
		if got, err := testutil.GatherAndCount(g, name); err != nil || got != want {
			t.Errorf("%s: %d series before any event (%v), want %d", name, got, err, want)
		}
	}
}

// TestWorker_MerchantBounded: a job naming an unconfigured merchant adds no
// series; it counts as "other".
func TestWorker_MerchantBounded(t *testing.T) {
	reg := prometheus.NewRegistry()
	w := metrics.NewWorkerWith(reg, metrics.WorkerConfig{Merchants: []string{"1900000109"}})
	w.MerchantRequest("1900000109", "FREQUENCY_LIMITED")
	for i := range 50 {
		w.MerchantRequest(fmt.Sprintf("attacker-%d", i), "OK")
	}
	want := `
# HELP orderworker_wechat_merchant_requests_total WeChat Pay create calls, by configured combine_mchid (or other) and code (WeChat code, OK, TIMEOUT, TRANSPORT_ERROR or ERROR).
# TYPE orderworker_wechat_merchant_requests_total counter
orderworker_wechat_merchant_requests_total{code="FREQUENCY_LIMITED",mchid="1900000109"} 1
orderworker_wechat_merchant_requests_total{code="OK",mchid="1900000109"} 0
orderworker_wechat_merchant_requests_total{code="OK",mchid="other"} 50
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "orderworker_wechat_merchant_requests_total"); err != nil {
		t.Error(err)
	}
}

// TestNotifier_Help: the HELP of notifications_total names exactly the
// results there are.
func TestNotifier_Help(t *testing.T) {
	reg := prometheus.NewRegistry()
	metrics.NewNotifier(reg)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "orderworker_notifier_notifications_total" {
			continue
		}
		for _, r := range metrics.NotificationResults {
			if !strings.Contains(mf.GetHelp(), r) {
				t.Errorf("HELP %q does not name %s", mf.GetHelp(), r)
			}
		}
		if strings.Contains(mf.GetHelp(), "bad_request") {
			t.Errorf("HELP %q names bad_request, which no code emits", mf.GetHelp())
		}
		return
	}
	t.Fatal("notifications_total not gathered")
}
