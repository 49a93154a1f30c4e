package stack

import (
	"os"
	"strings"
	"testing"
	"time"
)

const exposition = `# HELP orderworker_pipeline_jobs_total Jobs handled, by outcome.
# TYPE orderworker_pipeline_jobs_total counter
orderworker_pipeline_jobs_total{outcome="ack"} 1280
orderworker_pipeline_jobs_total{outcome="duplicate"} 28
orderworker_pipeline_retries_total{kind="in_process"} 3
orderworker_pipeline_retries_total{kind="redelivery"} 2 1700000000000
orderworker_wechat_requests_total{code="OK",operation="create_app"} 7
weird_label{msg="a \"quoted\", comma",x="1"} 4
go_goroutines 12
malformed_line{outcome="ack" 1
no_value
`

func TestParseMetrics(t *testing.T) {
	m, err := ParseMetrics(strings.NewReader(exposition))
	if err != nil {
		t.Fatalf("ParseMetrics() = %v", err)
	}
	tests := []struct {
		name  string
		match []string
		want  float64
	}{
		{"orderworker_pipeline_jobs_total", nil, 1308},
		{"orderworker_pipeline_jobs_total", []string{"outcome", "duplicate"}, 28},
		{"orderworker_pipeline_retries_total", nil, 5},
		{"orderworker_wechat_requests_total", []string{"operation", "create_app", "code", "OK"}, 7},
		{"orderworker_wechat_requests_total", []string{"code", "SYSTEMERROR"}, 0},
		{"weird_label", []string{"msg", `a "quoted", comma`, "x", "1"}, 4},
		{"go_goroutines", nil, 12},
		{"malformed_line", nil, 0},
	}
	for _, tt := range tests {
		if got := m.Sum(tt.name, tt.match...); got != tt.want {
			t.Errorf("Sum(%s, %q) = %v, want %v", tt.name, tt.match, got, tt.want)
		}
	}
	both := m.Add(m)
	if got := both.Sum("go_goroutines"); got != 24 {
		t.Errorf("Add then Sum = %v, want 24", got)
	}
}

func TestCPUTime(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	// Burn some CPU so the tick counter moves.
	deadline := time.Now().Add(50 * time.Millisecond)
	for x := 0; time.Now().Before(deadline); x++ {
		_ = x * x
	}
	got, err := CPUTime(os.Getpid())
	if err != nil {
		t.Fatalf("CPUTime(self) = %v", err)
	}
	if got <= 0 || got > SelfCPUTime()+time.Second {
		t.Errorf("CPUTime(self) = %v, SelfCPUTime() = %v", got, SelfCPUTime())
	}
	if _, err := CPUTime(-1); err == nil {
		t.Error("CPUTime(-1) = nil error, want one")
	}
}
