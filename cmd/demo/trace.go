package main

// One order's trace. With OTEL_TRACES_EXPORTER=console in the demo's
// environment, the workers and the notifier run with the console exporter
// (spans as JSON lines in their logs); after the summary the demo reads the
// workers' logs and prints the span tree of one order: the one whose trace
// has the most retry waits, so the tree shows WeChat Pay's faults and the
// backoff.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"
)

// consoleTracingEnv answers the variables that turn the services' console
// exporter on, or nil when the demo's environment does not ask for it.
func consoleTracingEnv(getenv func(string) string) map[string]string {
	if getenv("OTEL_TRACES_EXPORTER") != "console" {
		return nil
	}
	// Export within 200ms, so the spans are in the logs when the demo reads them.
	return map[string]string{"OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "200"}
}

// span is what the tree shows of one span printed by the console exporter.
type span struct {
	Name        string
	SpanContext struct{ TraceID, SpanID string }
	Parent      struct{ TraceID, SpanID string }
	StartTime   time.Time
	EndTime     time.Time
	Attributes  []struct {
		Key   string
		Value struct{ Value any }
	}
	Status struct{ Code, Description string }
}

// shownAttrs are the attributes printed after a span's name.
var shownAttrs = []string{
	"wechat.combine_out_trade_no", "idempotency.state", "wechat.attempt", "wechat.code", "http.response.status_code",
	"wechat.request_id", "retry.delay_ms", "retry.cause", "messaging.operation.name",
}

func (s *span) attr(key string) (string, bool) {
	for _, a := range s.Attributes {
		if a.Key == key {
			return fmt.Sprint(a.Value.Value), true
		}
	}
	return "", false
}

// readSpans answers the spans in a service's log; other lines are skipped.
func readSpans(data []byte) []*span {
	var out []*span
	for _, line := range bytes.Split(data, []byte("\n")) {
		if !bytes.Contains(line, []byte(`"SpanContext":`)) {
			continue
		}
		var s span
		if json.Unmarshal(line, &s) == nil && s.SpanContext.TraceID != "" {
			out = append(out, &s)
		}
	}
	return out
}

// pickTrace answers the spans of the job trace with the most retry waits
// (then the most spans), or nil when there is none.
func pickTrace(spans []*span) []*span {
	byTrace := map[string][]*span{}
	for _, s := range spans {
		byTrace[s.SpanContext.TraceID] = append(byTrace[s.SpanContext.TraceID], s)
	}
	var best []*span
	bestWaits := -1
	for _, tr := range byTrace {
		if !slices.ContainsFunc(tr, func(s *span) bool { return strings.HasPrefix(s.Name, "process ") }) {
			continue
		}
		waits := 0
		for _, s := range tr {
			if s.Name == "retry wait" {
				waits++
			}
		}
		if waits > bestWaits || (waits == bestWaits && len(tr) > len(best)) ||
			(waits == bestWaits && len(tr) == len(best) && tr[0].SpanContext.TraceID < best[0].SpanContext.TraceID) {
			best, bestWaits = tr, waits
		}
	}
	return best
}

// printTree prints a trace's spans as a tree, children in start order.
func printTree(w io.Writer, tr []*span) {
	ids := map[string]bool{}
	children := map[string][]*span{}
	for _, s := range tr {
		ids[s.SpanContext.SpanID] = true
	}
	var roots []*span
	for _, s := range tr {
		if ids[s.Parent.SpanID] {
			children[s.Parent.SpanID] = append(children[s.Parent.SpanID], s)
		} else {
			roots = append(roots, s)
		}
	}
	byStart := func(a, b *span) int { return a.StartTime.Compare(b.StartTime) }
	slices.SortFunc(roots, byStart)
	fmt.Fprintf(w, "demo: trace %s (%d spans)\n", tr[0].SpanContext.TraceID, len(tr))
	var walk func(s *span, prefix, branch string)
	walk = func(s *span, prefix, branch string) {
		var attrs []string
		for _, k := range shownAttrs {
			if v, ok := s.attr(k); ok {
				attrs = append(attrs, k+"="+v)
			}
		}
		if s.Status.Code == "Error" {
			attrs = append(attrs, "error")
		}
		line := fmt.Sprintf("  %s%s%s  %.1fms  %s", prefix, branch, s.Name, float64(s.EndTime.Sub(s.StartTime).Microseconds())/1000, strings.Join(attrs, " "))
		fmt.Fprintln(w, strings.TrimRight(line, " "))
		kids := children[s.SpanContext.SpanID]
		slices.SortFunc(kids, byStart)
		next := prefix
		switch branch {
		case "├── ":
			next += "│   "
		case "└── ":
			next += "    "
		}
		for i, c := range kids {
			b := "├── "
			if i == len(kids)-1 {
				b = "└── "
			}
			walk(c, next, b)
		}
	}
	for _, r := range roots {
		walk(r, "", "")
	}
}

// printOrderTrace reads the workers' logs and prints one order's trace.
func printOrderTrace(w io.Writer, logPaths []string) error {
	var spans []*span
	for _, p := range logPaths {
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		spans = append(spans, readSpans(data)...)
	}
	tr := pickTrace(spans)
	if tr == nil {
		return fmt.Errorf("no job trace in %d spans of the workers' logs", len(spans))
	}
	printTree(w, tr)
	return nil
}
