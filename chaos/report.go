package chaos

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/wxcombine/orderworker/internal/securitytest"
	"github.com/wxcombine/orderworker/loadgen"
	"github.com/wxcombine/orderworker/wechat/wechatsim"
)

// Report is the result of a chaos run, as written to report.json.
type Report struct {
	// OK reports that the run completed and no invariant was broken.
	OK bool `json:"ok"`
	// Error says why the run could not be completed.
	Error string `json:"error,omitempty"`
	// Seed replays the run: chaos -seed N (with the same other flags).
	Seed  uint64 `json:"seed"`
	RunID string `json:"run_id"`
	// Dir holds this report, create-calls.json, the servers' data and Logs.
	Dir        string    `json:"dir"`
	Logs       string    `json:"logs"`
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at"`
	Seconds    float64   `json:"seconds"`
	Config     Config    `json:"config"`

	// Figures, for the closing note.
	Figures Figures `json:"figures"`

	Disruptions     []Disruption   `json:"disruptions"`
	Outages         []Outage       `json:"outages"`
	WorkersStarted  int            `json:"workers_started"`
	UnexpectedExits []string       `json:"unexpected_exits"`
	Restarts        map[string]int `json:"restarts"`
	// Faults counts the faults of one true outcome per order by kind (the
	// proxy's Fault* and the harness's own).
	Faults map[string]int `json:"faults"`
	// HarnessErrors lists faults that could not be injected as planned.
	HarnessErrors []string `json:"harness_errors,omitempty"`

	Invariants      []Invariant            `json:"invariants"`
	ViolationTotal  int                    `json:"violation_total"`
	Check           *CheckResult           `json:"check,omitempty"`
	SecretFindings  []securitytest.Finding `json:"secret_findings"`
	Loadgen         *loadgen.Report        `json:"loadgen,omitempty"`
	Sim             *wechatsim.Stats       `json:"sim,omitempty"`
	DisruptionsDone int                    `json:"disruptions_done"`
}

// Figures are the headline numbers of a run.
type Figures struct {
	Orders          int              `json:"orders"`
	Messages        int              `json:"messages"`
	Duplicates      int              `json:"duplicates"`
	Created         int              `json:"created"`
	Failed          int              `json:"failed"`
	DeadLetters     int              `json:"dead_letters"`
	Paid            int              `json:"paid"`
	PaymentEvents   int              `json:"payment_events"`
	CreateCalls     int              `json:"create_calls"`
	FaultsInjected  int64            `json:"faults_injected"`
	FaultsByKind    map[string]int64 `json:"faults_by_kind"`
	Kills           int              `json:"kills"`
	RedisRestarts   int              `json:"redis_restarts"`
	NATSRestarts    int              `json:"nats_restarts"`
	Violations      int              `json:"violations"`
	ThroughputPerS  float64          `json:"throughput_per_s"`
	LatencyP50MS    float64          `json:"latency_p50_ms"`
	LatencyP99MS    float64          `json:"latency_p99_ms"`
	NotifyDelivered int64            `json:"notifications_delivered"`
}

// finish derives the invariants that are not about orders and the figures.
func (r *Report) finish() {
	if r.Check != nil {
		r.Invariants = append(r.Invariants, r.Check.Invariants...)
	}
	add := func(name string, violations int, detail string) {
		r.Invariants = append(r.Invariants, Invariant{Name: name, OK: violations == 0, Violations: violations, Detail: detail})
	}
	if r.Loadgen != nil {
		add(InvLoadgen, r.Loadgen.ViolationTotal, "the load generator's own checks: "+joinCounts(r.Loadgen.ViolationCounts))
	}
	add(InvNoUnexpectedExit, len(r.UnexpectedExits), fmt.Sprintf("%d processes exited without being told to", len(r.UnexpectedExits)))
	if r.Check != nil {
		add(InvNoSecrets, len(r.SecretFindings), fmt.Sprintf("%d findings of key material in the logs", len(r.SecretFindings)))
	}
	want := map[string]int{KindKillWorker: r.Config.Kills, KindRestartRedis: r.Config.RedisRestarts, KindRestartNATS: r.Config.NATSRestarts,
		KindWipeRedis: r.Config.RedisWipes, KindRedisOutage: r.Config.RedisOutages, KindClockSkew: r.Config.ClockSkews, KindNotifierOutage: r.Config.NotifierOutages}
	maps.Copy(want, r.Config.clusterWant())
	got := map[string]int{}
	failed := 0
	for _, d := range r.Disruptions {
		if d.Error == "" {
			got[d.Kind]++
			r.DisruptionsDone++
		} else {
			failed++
		}
	}
	missing := len(r.HarnessErrors)
	for k, n := range want {
		missing += max(n-got[k], 0)
	}
	// A fault that is on must have hit something.
	for kind, on := range map[string]bool{
		FaultAcksDropped: r.Config.AckDropShare > 0, FaultWithheld: r.Config.UnknownOutcomeShare > 0,
		FaultServiceUnavailable: r.Config.ServiceUnavailableRate > 0 && !r.Config.ServiceUnavailableFromSimulator,
		FaultClockSkew:          r.Config.ClockSkews > 0, FaultLateAfterTTL: r.Config.LateAfterTTL > 0,
		FaultOversizedAtLimit: r.Config.OversizedJobs > 0,
	} {
		if on && r.Check != nil && r.Faults[kind] == 0 {
			missing++
			r.HarnessErrors = append(r.HarnessErrors, "fault "+kind+" is on and hit nothing")
		}
	}
	var cl []string
	for k, n := range r.Config.clusterWant() {
		if n > 0 {
			cl = append(cl, fmt.Sprintf("%s %d of %d", k, got[k], n))
		}
	}
	slices.Sort(cl)
	clusterDone := ""
	if len(cl) > 0 {
		clusterDone = "; cluster: " + strings.Join(cl, ", ")
	}
	add(InvDisruptions, missing, fmt.Sprintf("%d worker kills, %d Redis and %d NATS restarts, %d Redis wipes, %d long Redis outages, %d clock skews of %d, %d, %d, %d, %d and %d planned; %d failed; %d harness errors",
		got[KindKillWorker], got[KindRestartRedis], got[KindRestartNATS], got[KindWipeRedis], got[KindRedisOutage], got[KindClockSkew],
		want[KindKillWorker], want[KindRestartRedis], want[KindRestartNATS], want[KindWipeRedis], want[KindRedisOutage], want[KindClockSkew], failed, len(r.HarnessErrors))+clusterDone)
	r.Restarts = map[string]int{"redis": got[KindRestartRedis], "nats": got[KindRestartNATS]}
	r.ViolationTotal = 0
	for _, inv := range r.Invariants {
		r.ViolationTotal += inv.Violations
	}
	r.OK = r.Error == "" && r.Check != nil && r.ViolationTotal == 0

	f := &r.Figures
	f.Kills, f.RedisRestarts, f.NATSRestarts, f.Violations = got[KindKillWorker], got[KindRestartRedis], got[KindRestartNATS], r.ViolationTotal
	if l := r.Loadgen; l != nil {
		f.Orders, f.Messages, f.Duplicates = l.Published.Orders, l.Published.Messages, l.Published.Duplicates
		f.ThroughputPerS, f.LatencyP50MS, f.LatencyP99MS = l.Throughput, l.Latency.P50MS, l.Latency.P99MS
	}
	if c := r.Check; c != nil {
		f.Created, f.Failed, f.DeadLetters = c.Created, c.Failed, c.DeadLetters
		f.Paid, f.PaymentEvents, f.CreateCalls = c.Paid, c.PaymentEvents, c.Creates.Calls
	}
	if s := r.Sim; s != nil {
		f.FaultsByKind = map[string]int64{}
		for k, v := range s.Faults {
			if k == wechatsim.FaultLatency {
				continue
			}
			f.FaultsByKind[k] = v
			f.FaultsInjected += v
		}
		f.NotifyDelivered = s.Notifications.Delivered
	}
}

// WriteFile writes the report as indented JSON.
func (r *Report) WriteFile(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("chaos: report: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("chaos: write report: %w", err)
	}
	return nil
}

// WriteText writes the figures, the disruptions and every invariant.
func (r *Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) {
		fmt.Fprintf(tw, "  %s\t"+format+"\n", append([]any{k}, args...)...)
	}
	f := r.Figures
	row("seed", "%d (replay: -seed %d), run %s, %.0fs", r.Seed, r.Seed, r.RunID, r.Seconds)
	row("orders", "%d distinct, %d messages (%d duplicates)", f.Orders, f.Messages, f.Duplicates)
	row("outcomes", "%d created, %d failed, %d dead letters", f.Created, f.Failed, f.DeadLetters)
	row("payments", "%d orders paid, %d payment events, %d notifications delivered", f.Paid, f.PaymentEvents, f.NotifyDelivered)
	row("create calls", "%d", f.CreateCalls)
	row("faults injected", "%d (%s)", f.FaultsInjected, joinCounts64(f.FaultsByKind))
	row("kills", "%d SIGKILLs, %d workers started in all", f.Kills, r.WorkersStarted)
	row("restarts", "redis %d, nats %d", f.RedisRestarts, f.NATSRestarts)
	row("outcome faults", "%s", joinCounts(r.Faults))
	row("throughput", "%.1f orders/s, latency p50 %.0fms p99 %.0fms", f.ThroughputPerS, f.LatencyP50MS, f.LatencyP99MS)
	for _, d := range r.Disruptions {
		extra := ""
		if d.Replacement != "" {
			extra = " → " + d.Replacement
		}
		if d.Error != "" {
			extra += " ERROR " + d.Error
		}
		if d.Stall != nil {
			extra += fmt.Sprintf("; stall %.1fs from %.1fs, %d orders waited", d.Stall.Seconds, d.Stall.From, d.Stall.OrdersWaited)
		}
		row("  "+d.Kind, "%s at %.1fs (planned %.1fs), down %.1fs%s", d.Target, d.At, d.PlannedAt, d.DownSeconds, extra)
	}
	for _, inv := range r.Invariants {
		mark := "ok  "
		if !inv.OK {
			mark = "FAIL"
		}
		row(mark+" "+inv.Name, "%d violations; %s", inv.Violations, inv.Detail)
	}
	if r.Check != nil {
		for i, v := range r.Check.Violations {
			if i == 20 {
				row("", "… see %s", r.Dir+"/report.json")
				break
			}
			row("", "%s %s: %s", v.Invariant, v.Order, v.Detail)
		}
	}
	for _, s := range r.HarnessErrors {
		row("", "harness error: %s", s)
	}
	for _, s := range r.UnexpectedExits {
		row("", "unexpected exit: %s", s)
	}
	for _, fd := range r.SecretFindings {
		row("", "secret: %s", fd)
	}
	if r.Error != "" {
		row("error", "%s", r.Error)
	}
	verdict := "PASS"
	if !r.OK {
		verdict = "FAIL"
	}
	row("verdict", "%s: %d violations; logs in %s", verdict, r.ViolationTotal, r.Logs)
	return tw.Flush()
}

func joinCounts64(m map[string]int64) string {
	c := make(map[string]int, len(m))
	for k, v := range m {
		c[k] = int(v)
	}
	return joinCounts(c)
}

// String formats a disruption for logs.
func (d Disruption) String() string {
	return strings.TrimSpace(fmt.Sprintf("%s %s at %.1fs %s", d.Kind, d.Target, d.At, d.Error))
}
