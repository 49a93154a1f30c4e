// Package proc builds this module's commands and runs them, and servers such
// as nats-server and redis-server, as child processes with their output in a
// log file: what the demo stack, the benchmark, the chaos suite and the
// security tests share.
package proc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ModuleRoot answers the directory of the go.mod that contains the working
// directory.
func ModuleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("proc: go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("proc: the working directory is not inside the orderworker module: run from the repository")
	}
	return filepath.Dir(mod), nil
}

// Build compiles ./cmd/<name> for each of cmds into dir with `go build`,
// from root (the module containing the working directory when empty), with
// env added to this process's environment, and answers each binary's path
// by name.
func Build(ctx context.Context, root, dir string, env []string, cmds ...string) (map[string]string, error) {
	if root == "" {
		var err error
		if root, err = ModuleRoot(ctx); err != nil {
			return nil, err
		}
	}
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	for _, c := range cmds {
		args = append(args, "./cmd/"+c)
	}
	cmd := exec.CommandContext(ctx, "go", args...) //nolint:gosec // G204: the go command building this module's own commands
	cmd.Dir = root
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("proc: go build: %w\n%s", err, out)
	}
	paths := make(map[string]string, len(cmds))
	for _, c := range cmds {
		paths[c] = filepath.Join(dir, c)
	}
	return paths, nil
}

// FreePort answers a loopback TCP port that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("proc: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Addr formats a loopback address.
func Addr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// InheritEnv answers the named variables of this process's environment that
// are set, as KEY=value, for a child that must not inherit anything else.
func InheritEnv(keys ...string) []string {
	var env []string
	for _, k := range keys {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// Spec describes a process to start.
type Spec struct {
	// Name identifies the process in errors and reports, such as "worker-3".
	Name string
	// LogPath is the file its stdout and stderr are appended to.
	LogPath string
	// Bin and Args are the command.
	Bin  string
	Args []string
	// Env is exactly the child's environment.
	Env []string
	// ParentDeathSignal is sent to the child if this process dies, on Linux,
	// so that no child outlives its harness. Defaults to SIGKILL.
	ParentDeathSignal syscall.Signal
}

// Proc is a started child process.
type Proc struct {
	// Name identifies the process, as in Spec.
	Name string
	// LogPath is the file that receives its output.
	LogPath string
	// StartedAt is when it was started.
	StartedAt time.Time

	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited

	mu       sync.Mutex
	exitErr  error
	exitedAt time.Time
	stopping bool // Kill or Stop was called
}

// Start starts the process described by s. A goroutine owned by the Proc
// waits for it and ends when it exits.
func Start(s Spec) (*Proc, error) {
	if err := os.MkdirAll(filepath.Dir(s.LogPath), 0o750); err != nil {
		return nil, fmt.Errorf("proc: %s: %w", s.Name, err)
	}
	f, err := os.OpenFile(s.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("proc: %s: log file: %w", s.Name, err)
	}
	// Not CommandContext: a process outlives the context that started it
	// and is stopped with Stop or Kill.
	cmd := exec.Command(s.Bin, s.Args...) //nolint:gosec // G204: the harness runs its own binaries and servers
	cmd.Env = s.Env
	cmd.Stdout, cmd.Stderr = f, f
	sig := s.ParentDeathSignal
	if sig == 0 {
		sig = syscall.SIGKILL
	}
	setSysProcAttr(cmd, sig)
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("proc: start %s: %w", s.Name, err)
	}
	p := &Proc{Name: s.Name, LogPath: s.LogPath, StartedAt: time.Now(), cmd: cmd, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.exitErr, p.exitedAt = err, time.Now()
		p.mu.Unlock()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// PID answers the process id.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Running reports whether the process has not exited yet.
func (p *Proc) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Exited reports whether the process has exited, when, whether Kill or Stop
// caused it, and Wait's answer.
func (p *Proc) Exited() (exited bool, at time.Time, byHarness bool, err error) {
	if p.Running() {
		return false, time.Time{}, false, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return true, p.exitedAt, p.stopping, p.exitErr
}

// Kill sends SIGKILL and waits for the exit.
func (p *Proc) Kill() {
	p.mu.Lock()
	p.stopping = true
	p.mu.Unlock()
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Stop sends SIGTERM and waits up to grace for the exit, then kills the
// process; it reports whether it had to.
func (p *Proc) Stop(grace time.Duration) (killed bool) {
	if !p.Running() {
		return false
	}
	p.mu.Lock()
	p.stopping = true
	p.mu.Unlock()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return false
	case <-t.C:
		p.Kill()
		return true
	}
}

// Tail answers the last n lines of the process's log.
func (p *Proc) Tail(n int) string {
	f, err := os.Open(p.LogPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// WaitHTTP polls url until it answers 200, p exits, or timeout passes. p
// may be nil for a server this package did not start.
func WaitHTTP(ctx context.Context, p *Proc, url string, timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	return waitFor(ctx, p, timeout, url, func() error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errors.New(resp.Status)
		}
		return nil
	})
}

// WaitTCP polls addr until it accepts a connection, p exits, or timeout
// passes.
func WaitTCP(ctx context.Context, p *Proc, addr string, timeout time.Duration) error {
	return waitFor(ctx, p, timeout, addr, func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
}

// waitFor polls ready every 50ms; its errors name the process, its log
// file and the log's last lines.
func waitFor(ctx context.Context, p *Proc, timeout time.Duration, what string, ready func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := ready()
		if err == nil {
			return nil
		}
		if p != nil {
			if exited, _, _, werr := p.Exited(); exited {
				if werr == nil {
					werr = errors.New("exit status 0")
				}
				return fmt.Errorf("proc: %s exited before %s was ready (log %s):\n%s\n%w", p.Name, what, p.LogPath, p.Tail(20), werr)
			}
		}
		if time.Now().After(deadline) {
			if p == nil {
				return fmt.Errorf("proc: %s not ready after %s: %w", what, timeout, err)
			}
			return fmt.Errorf("proc: %s not ready at %s after %s (log %s): %w\n%s", p.Name, what, timeout, p.LogPath, err, p.Tail(20))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
