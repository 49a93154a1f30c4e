package proc_test

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wxcombine/orderworker/internal/proc"
)

func TestStart_exitAndLog(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	log := filepath.Join(t.TempDir(), "logs", "p.log")
	p, err := proc.Start(proc.Spec{Name: "p", LogPath: log, Bin: sh, Args: []string{"-c", "echo one; echo two >&2; exit 3"}})
	if err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	exited, _, byHarness, werr := p.Exited()
	var ee *exec.ExitError
	if !exited || byHarness || !errors.As(werr, &ee) || ee.ExitCode() != 3 {
		t.Errorf("Exited() = %v, byHarness %v, %v; want exited by itself with status 3", exited, byHarness, werr)
	}
	if got := p.Tail(1); got != "two" {
		t.Errorf("Tail(1) = %q, want %q", got, "two")
	}
	if got := p.Tail(5); got != "one\ntwo" {
		t.Errorf("Tail(5) = %q, want both lines", got)
	}
	// A readiness wait on an exited process fails at once, quoting its log.
	err = proc.WaitTCP(context.Background(), p, proc.Addr(1), 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "exited before") || !strings.Contains(err.Error(), "two") {
		t.Errorf("WaitTCP() = %v, want an early exit error with the log tail", err)
	}
}

func TestProc_Stop(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	dir := t.TempDir()
	tests := []struct {
		name       string
		script     string
		wantKilled bool
	}{
		{"exits on SIGTERM", "sleep 30 & wait", false},
		{"ignores SIGTERM, killed after the grace", "trap '' TERM; while :; do sleep 0.05; done", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := proc.Start(proc.Spec{Name: "p", LogPath: filepath.Join(dir, tt.name+".log"), Bin: sh, Args: []string{"-c", tt.script}})
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond) // let the shell install its trap
			if got := p.Stop(500 * time.Millisecond); got != tt.wantKilled {
				t.Errorf("Stop() killed = %v, want %v", got, tt.wantKilled)
			}
			if p.Running() {
				t.Error("Running() after Stop = true")
			}
			if _, _, byHarness, _ := p.Exited(); !byHarness {
				t.Error("Exited() byHarness = false after Stop")
			}
		})
	}
}

func TestWaitHTTP_timeout(t *testing.T) {
	port, err := proc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	err = proc.WaitHTTP(context.Background(), nil, "http://"+proc.Addr(port)+"/readyz", 200*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "not ready after") {
		t.Errorf("WaitHTTP() on a closed port = %v, want a timeout error", err)
	}
}
