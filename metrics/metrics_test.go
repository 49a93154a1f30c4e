package metrics_test

import (
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
	if n < 12 {
		t.Errorf("GatherAndCount() = %d, want at least 12 series", n)
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
	want := `
# HELP orderworker_pipeline_jobs_total Jobs handled, by outcome: ack, retry, terminal or duplicate.
# TYPE orderworker_pipeline_jobs_total counter
orderworker_pipeline_jobs_total{outcome="ack"} 1
orderworker_pipeline_jobs_total{outcome="retry"} 2
# HELP orderworker_pipeline_jobs_in_flight Jobs this worker is handling now.
# TYPE orderworker_pipeline_jobs_in_flight gauge
orderworker_pipeline_jobs_in_flight 1
# HELP orderworker_idempotency_claims_total Idempotency claims, by result: claimed, in_flight, completed, conflict or unavailable.
# TYPE orderworker_idempotency_claims_total counter
orderworker_idempotency_claims_total{result="conflict"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"orderworker_pipeline_jobs_total", "orderworker_pipeline_jobs_in_flight", "orderworker_idempotency_claims_total"); err != nil {
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
	w.WeChatRequest("create_app", "OK", time.Second)
	w.Retry(metrics.RetryRedelivery)
	w.Claim(metrics.ClaimClaimed)
	w.InFlight(1)
	w.DeadLetter("invalid")
	w.PublishFailure(metrics.EventDeadLetter)
	w.AckFailure(metrics.AckNak)
	w.StoreUp(false)
	w.SetBuildInfo("v", "c")
	var n *metrics.Notifier
	n.Notification(metrics.NotificationOK)
	n.Publish(time.Second)
	n.SetBuildInfo("v", "c")
}
