package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/wxcombine/orderworker/loadgen"
)

// progress prints the demo's progress lines to stdout, one at a time: the
// steps the stack reports while it builds and starts (the first build
// compiles every dependency and takes a minute or two), a heartbeat while
// nothing else is said, and the run's counts.
type progress struct {
	mu   sync.Mutex
	w    io.Writer
	last time.Time
}

func (p *progress) say(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "demo:   "+format+"\n", args...)
	p.last = time.Now()
}

// heartbeat says what is under way every interval of silence until ctx
// ends; what(elapsed) words it.
func (p *progress) heartbeat(ctx context.Context, interval time.Duration, what func(time.Duration) string) {
	start := time.Now()
	t := time.NewTicker(interval / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.mu.Lock()
			quiet := time.Since(p.last) >= interval
			p.mu.Unlock()
			if quiet {
				p.say("%s", what(time.Since(start).Round(time.Second)))
			}
		}
	}
}

// run reports a loadgen.Progress.
func (p *progress) run(r loadgen.Progress) {
	phase := "publishing"
	if !r.Publishing {
		phase = "waiting for outcomes"
	}
	p.say("%5.1fs %s: %d orders, %d outcomes, %d dead letters, %d payments",
		r.Elapsed.Seconds(), phase, r.Orders, r.Outcomes, r.DeadLetters, r.Payments)
}

// handler is a slog.Handler that turns the stack's Info records into
// progress lines ("built worker, notifier and wechatsim (took 1m23s)") and
// passes every record next accepts on to it.
type handler struct {
	p     *progress
	next  slog.Handler
	attrs []slog.Attr
}

func (h handler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || h.next.Enabled(ctx, l)
}

func (h handler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level == slog.LevelInfo {
		var extra []string
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "took" || a.Key == "url" || a.Key == "name" {
				extra = append(extra, a.Key+" "+a.Value.String())
			}
			return true
		})
		line := r.Message
		if len(extra) > 0 {
			line += " (" + strings.Join(extra, ", ") + ")"
		}
		h.p.say("%s", line)
	}
	if h.next.Enabled(ctx, r.Level) {
		return h.next.WithAttrs(h.attrs).Handle(ctx, r)
	}
	return nil
}

func (h handler) WithAttrs(as []slog.Attr) slog.Handler {
	return handler{p: h.p, next: h.next, attrs: append(append([]slog.Attr{}, h.attrs...), as...)}
}

func (h handler) WithGroup(name string) slog.Handler {
	return handler{p: h.p, next: h.next.WithGroup(name), attrs: h.attrs}
}
