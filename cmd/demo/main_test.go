package main

import (
	"bytes"
	"context"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wxcombine/orderworker/internal/testenv"
	"github.com/wxcombine/orderworker/loadgen"
)

// lastLine matches the demo's closing summary line.
var lastLine = regexp.MustCompile(`^demo: ok orders=(\d+) prepay=(\d+) failed=(\d+) dead_letters=(\d+) payments=(\d+) violations=0 \([\d.]+s\)$`)

// TestDemo runs the demo end to end: it builds the worker, the notifier and
// the simulator and starts them as processes, so it is skipped with -short.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts the services")
	}
	tests := []struct {
		name  string
		env   func(t *testing.T) map[string]string
		store string
	}{
		{"jetstream kv", func(*testing.T) map[string]string { return nil }, "JetStream KV"},
		{"redis", func(t *testing.T) map[string]string {
			return map[string]string{"REDIS_ADDRS": testenv.StartRedis(t).Addr}
		}, "Redis at"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := tt.env(t)
			var out, errOut bytes.Buffer
			code := run(t.Context(), []string{"-orders", "60", "-rate", "0", "-seed", "11"}, func(k string) string { return env[k] }, &out, &errOut)
			if code != 0 {
				t.Fatalf("run() = %d, want 0\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
			}
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			last := lines[len(lines)-1]
			m := lastLine.FindStringSubmatch(last)
			if m == nil {
				t.Fatalf("last line %q does not match %s", last, lastLine)
			}
			if m[1] != "60" || m[2] == "0" || m[5] == "0" {
				t.Errorf("last line %q: want 60 orders, some created and some paid", last)
			}
			for _, want := range []string{tt.store, "orders submitted", "prepay events", "failure events", "retries",
				"dead letters", "payments notified", "latency", "violations"} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("output lacks %q:\n%s", want, out.String())
				}
			}
		})
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr bool
	}{
		{nil, false},
		{[]string{"-orders", "10", "-workers", "2", "-keep", "-no-faults", "-rate", "0"}, false},
		{[]string{"-orders", "0"}, true},
		{[]string{"extra"}, true},
		{[]string{"-bogus"}, true},
	}
	for _, tt := range tests {
		_, err := parseFlags(tt.args, &bytes.Buffer{})
		if (err != nil) != tt.wantErr {
			t.Errorf("parseFlags(%q) = %v, want error %v", tt.args, err, tt.wantErr)
		}
	}
}

// TestProgress: the stack's steps become progress lines, a silent wait gets
// a heartbeat, and warnings still reach the log.
func TestProgress(t *testing.T) {
	var out, logs bytes.Buffer
	p := &progress{w: &out, last: time.Now()}
	log := slog.New(handler{p: p, next: slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})})
	log.Info("built worker, notifier and wechatsim", slog.Duration("took", 83*time.Second), slog.String("dir", "/tmp/x"))
	log.Warn("stop", slog.String("error", "boom"))
	ctx, cancel := context.WithTimeout(t.Context(), 400*time.Millisecond)
	defer cancel()
	p.heartbeat(ctx, 100*time.Millisecond, func(d time.Duration) string { return "still building" })
	p.run(loadgen.Progress{Elapsed: 5 * time.Second, Publishing: true, Orders: 40, Outcomes: 12})
	got := out.String()
	for _, want := range []string{"demo:   built worker, notifier and wechatsim (took 1m23s)", "demo:   still building", "publishing: 40 orders, 12 outcomes"} {
		if !strings.Contains(got, want) {
			t.Errorf("progress lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "boom") || !strings.Contains(logs.String(), "boom") {
		t.Errorf("a warning went to progress instead of the log: progress %q, log %q", got, logs.String())
	}
}
