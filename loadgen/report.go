package loadgen

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/wechat"
)

// Report is the result of a run, as written to the JSON report file.
type Report struct {
	RunID   string         `json:"run_id"`
	Seed    uint64         `json:"seed"`
	Flavour wechat.Flavour `json:"flavour"`
	// StartedAt and FinishedAt bound the run.
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at"`
	// PublishSeconds runs from the first to the last publish; PublishRate
	// is messages per second over it.
	PublishSeconds float64 `json:"publish_seconds"`
	PublishRate    float64 `json:"publish_rate"`
	// Seconds runs from the first publish to the last first outcome;
	// Throughput is orders with an outcome per second over it.
	Seconds    float64 `json:"seconds"`
	Throughput float64 `json:"throughput"`
	// Latency runs from a job's created_at to its first outcome event.
	Latency   Latency         `json:"latency"`
	Published PublishedCounts `json:"published"`
	Outcomes  OutcomeCounts   `json:"outcomes"`
	// Sim holds the simulator's create counts, when they were read.
	Sim *SimCounts `json:"sim,omitempty"`
	// Violations lists the first 100 violations; ViolationCounts counts
	// every one by kind.
	Violations      []Violation    `json:"violations"`
	ViolationCounts map[string]int `json:"violation_counts"`
	ViolationTotal  int            `json:"violation_total"`
	// OK reports that there was no violation.
	OK bool `json:"ok"`
}

// Latency summarizes end-to-end latencies in milliseconds.
type Latency struct {
	Count  int     `json:"count"`
	MeanMS float64 `json:"mean_ms"`
	P50MS  float64 `json:"p50_ms"`
	P90MS  float64 `json:"p90_ms"`
	P99MS  float64 `json:"p99_ms"`
	MaxMS  float64 `json:"max_ms"`
}

// PublishedCounts counts what was published.
type PublishedCounts struct {
	// Messages counts every acknowledged publish, duplicates included.
	Messages int `json:"messages"`
	// Orders counts distinct orders.
	Orders      int                      `json:"orders"`
	ByKind      map[Kind]int             `json:"by_kind"`
	ByTradeType map[wechat.TradeType]int `json:"by_trade_type"`
	// Duplicates counts re-publications; LateDuplicates those with a new
	// Nats-Msg-Id.
	Duplicates     int `json:"duplicates"`
	LateDuplicates int `json:"late_duplicates"`
	// DroppedByJetStream counts publishes JetStream acknowledged as
	// duplicates without storing them.
	DroppedByJetStream int `json:"dropped_by_jetstream"`
	// Errors counts jobs that could not be published.
	Errors int `json:"errors"`
}

// OutcomeCounts counts what came back.
type OutcomeCounts struct {
	// Created and Failed count orders by their first outcome.
	Created      int            `json:"created"`
	Failed       int            `json:"failed"`
	FailedByCode map[string]int `json:"failed_by_code"`
	// Events counts outcome events; Republished those repeating an
	// order's earlier outcome.
	Events      int `json:"events"`
	Republished int `json:"republished"`
	// Retries sums attempts beyond the first over the first outcomes.
	Retries             int                   `json:"retries"`
	DeadLetters         int                   `json:"dead_letters"`
	DeadLettersByReason map[events.Reason]int `json:"dead_letters_by_reason"`
	// Paid counts orders paid; PayErrors orders whose payment failed;
	// PaymentEvents the payment events received.
	Paid          int `json:"paid"`
	PayErrors     int `json:"pay_errors"`
	PaymentEvents int `json:"payment_events"`
	// ForeignEvents counts events of other runs, ignored.
	ForeignEvents int `json:"foreign_events"`
}

// SimCounts summarizes the simulator's create counts over the run's orders.
type SimCounts struct {
	// Orders counts orders the simulator created at least once.
	Orders int `json:"orders"`
	// Creates counts accepted create requests.
	Creates int `json:"creates"`
	// OrdersCreatedAgain counts orders created more than once (retries
	// after a lost answer, which must answer the same prepay_id).
	OrdersCreatedAgain int `json:"orders_created_again"`
	MaxPerOrder        int `json:"max_per_order"`
}

// ReportPathDefault answers where cmd/loadgen writes its report unless told
// otherwise: the user's cache directory (else the temporary directory), never
// the working directory, which is usually a checkout of this repository.
func ReportPathDefault() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "orderworker", "loadgen-report.json")
}

// WriteFile writes the report as indented JSON, creating its directory.
func (r *Report) WriteFile(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("loadgen: report: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("loadgen: write report: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("loadgen: write report: %w", err)
	}
	return nil
}

// WriteText writes the report as a readable table.
func (r *Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) {
		fmt.Fprintf(tw, "  %s\t"+format+"\n", append([]any{k}, args...)...)
	}
	p, o := r.Published, r.Outcomes
	row("run", "%s (seed %d, flavour %s)", r.RunID, r.Seed, r.Flavour)
	row("orders submitted", "%d (%s)", p.Orders, joinCounts(p.ByKind))
	row("trade types", "%s", joinCounts(p.ByTradeType))
	row("messages published", "%d in %.2fs (%.0f/s), %d publish errors", p.Messages, r.PublishSeconds, r.PublishRate, p.Errors)
	row("duplicates published", "%d (%d late, new Nats-Msg-Id); %d dropped by JetStream", p.Duplicates, p.LateDuplicates, p.DroppedByJetStream)
	row("prepay events", "%d orders created", o.Created)
	row("failure events", "%d orders failed%s", o.Failed, parenthesized(joinCounts(o.FailedByCode)))
	row("outcome events", "%d (%d republished identical)", o.Events, o.Republished)
	row("retries", "%d create attempts beyond the first", o.Retries)
	row("dead letters", "%d%s", o.DeadLetters, parenthesized(joinCounts(o.DeadLettersByReason)))
	row("payments", "%d paid, %d payment events, %d pay errors", o.Paid, o.PaymentEvents, o.PayErrors)
	row("throughput", "%.1f orders/s over %.2fs", r.Throughput, r.Seconds)
	row("latency", "p50 %.1fms  p90 %.1fms  p99 %.1fms  max %.1fms", r.Latency.P50MS, r.Latency.P90MS, r.Latency.P99MS, r.Latency.MaxMS)
	if r.Sim != nil {
		row("simulator creates", "%d for %d orders; %d orders created again (max %d)", r.Sim.Creates, r.Sim.Orders, r.Sim.OrdersCreatedAgain, r.Sim.MaxPerOrder)
	}
	row("violations", "%d%s", r.ViolationTotal, parenthesized(joinCounts(r.ViolationCounts)))
	for i, v := range r.Violations {
		if i == 10 {
			row("", "… %d more in the JSON report", r.ViolationTotal-10)
			break
		}
		row("", "%s %s: %s", v.Kind, v.Order, v.Detail)
	}
	return tw.Flush()
}

// Line answers the one-line summary.
func (r *Report) Line() string {
	return fmt.Sprintf("orders=%d created=%d failed=%d dead_letters=%d payments=%d throughput=%.1f/s p50=%.1fms p99=%.1fms violations=%d",
		r.Published.Orders, r.Outcomes.Created, r.Outcomes.Failed, r.Outcomes.DeadLetters, r.Outcomes.PaymentEvents,
		r.Throughput, r.Latency.P50MS, r.Latency.P99MS, r.ViolationTotal)
}

func joinCounts[K ~string](m map[K]int) string {
	keys := slices.SortedFunc(maps.Keys(m), func(a, b K) int { return cmp.Compare(a, b) })
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func parenthesized(s string) string {
	if s == "" {
		return ""
	}
	return " (" + s + ")"
}
