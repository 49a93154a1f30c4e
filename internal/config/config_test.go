package config_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/wxcombine/orderworker/internal/config"
	"github.com/wxcombine/orderworker/internal/testenv"
)

func TestNewLogger_durationsAsStrings(t *testing.T) {
	var b bytes.Buffer
	config.NewLogger(&b, slog.LevelInfo).Info("x", slog.Duration("took", 1500*time.Millisecond), slog.Duration("wait", 250*time.Millisecond))
	if got := b.String(); !strings.Contains(got, `"took":"1.5s"`) || !strings.Contains(got, `"wait":"250ms"`) {
		t.Errorf("log line %s: want durations as strings", got)
	}
}

func TestLoader_reportsEveryProblem(t *testing.T) {
	l := &config.Loader{
		Settings: []config.Setting{{"A", "1s", ""}, {"B", "3", ""}, {"C", "", ""}},
		Getenv:   func(k string) string { return map[string]string{"A": "soon", "B": "x", "C": "p, q, p"}[k] },
	}
	l.Duration("A")
	l.Integer("B", 1, 5)
	if got := l.List("C"); len(got) != 2 {
		t.Errorf("List = %q, want p and q", got)
	}
	err := l.Err()
	if err == nil {
		t.Fatal("Err() = nil with three bad settings")
	}
	for _, want := range []string{"A:", "B:", "C: lists p twice", "3 problem(s)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Err() = %q, want %q in it", err, want)
		}
	}
}

// TestConnect_waitsForServer: started before NATS, the connection neither
// fails nor exits; it connects once the server is up.
func TestConnect_waitsForServer(t *testing.T) {
	ns := testenv.StartNATS(t)
	ns.Stop()
	nc, err := config.NATS{URL: ns.URL}.Connect("test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("Connect with the server down = %v, want a connection that retries", err)
	}
	defer nc.Close()
	short, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if err := config.WaitConnected(short, nc); err == nil {
		t.Fatal("WaitConnected = nil while the server is down")
	}
	ns.Start()
	ctx, cancel2 := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel2()
	if err := config.WaitConnected(ctx, nc); err != nil {
		t.Fatalf("WaitConnected after the server started = %v", err)
	}
	if err := config.CheckServerVersion(nc, "2.11.0", "per-message TTL"); err != nil {
		t.Errorf("embedded server %s refused: %v", nc.ConnectedServerVersion(), err)
	}
	if err := config.CheckServerVersion(nc, "99.0.0", "the future"); err == nil || !strings.Contains(err.Error(), "99.0.0") {
		t.Errorf("CheckServerVersion(99.0.0) = %v, want an error naming the minimum", err)
	}
}

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		got, min string
		ok       bool
	}{
		{"2.9.10", "2.10.4", false},
		{"2.10.3", "2.10.4", false},
		{"2.10.4", "2.10.4", true},
		{"2.10.22", "2.11.0", false},
		{"2.11.0-RC.1", "2.11.0", true},
		{"v2.12.1", "2.11.0", true},
		{"3.0", "2.11.0", true},
		{"garbage", "2.10.4", false},
	}
	for _, tt := range tests {
		err := config.CompareVersion(tt.got, tt.min, "x")
		if (err == nil) != tt.ok {
			t.Errorf("CompareVersion(%s, %s) = %v, want ok=%v", tt.got, tt.min, err, tt.ok)
		}
	}
}
