package chaos

import (
	"context"
	"errors"
	"fmt"
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

// Binaries are the commands Build compiles, by name.
var Binaries = []string{"worker", "notifier", "wechatsim"}

// Build compiles the module's commands named in Binaries into dir with
// `go build`, from the module that contains the working directory, and
// answers the path of each by name.
func Build(ctx context.Context, dir string) (map[string]string, error) {
	root, err := ModuleRoot(ctx)
	if err != nil {
		return nil, err
	}
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	for _, b := range Binaries {
		args = append(args, "./cmd/"+b)
	}
	cmd := exec.CommandContext(ctx, "go", args...) //nolint:gosec // G204: fixed command, the harness's own package paths
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("chaos: go build: %w\n%s", err, out)
	}
	paths := map[string]string{}
	for _, b := range Binaries {
		paths[b] = filepath.Join(dir, b)
	}
	return paths, nil
}

// ModuleRoot answers the directory of the go.mod that contains the working
// directory.
func ModuleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("chaos: go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("chaos: the working directory is not inside the module")
	}
	return filepath.Dir(mod), nil
}

// FreePort answers a loopback TCP port that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("chaos: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Proc is a child process whose stdout and stderr go to one log file. The
// child gets SIGKILL if the harness dies (Linux Pdeathsig), so no process
// outlives a run.
type Proc struct {
	// Name identifies the process in reports, such as "worker-3".
	Name string
	// LogPath is the file that receives its output.
	LogPath string
	// StartedAt is when it was started.
	StartedAt time.Time

	cmd  *exec.Cmd
	log  *os.File
	done chan struct{} // closed when the process has exited

	mu       sync.Mutex
	exitErr  error
	exitedAt time.Time
	stopping bool // the harness stopped or killed it
}

// Start starts bin with args and exactly env (plus PATH and HOME), its
// output appended to logPath.
func Start(name, logPath string, env []string, bin string, args ...string) (*Proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("chaos: %s: log file: %w", name, err)
	}
	cmd := exec.Command(bin, args...) //nolint:gosec // G204: the harness runs its own freshly built binaries
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("chaos: start %s: %w", name, err)
	}
	p := &Proc{Name: name, LogPath: logPath, StartedAt: time.Now(), cmd: cmd, log: f, done: make(chan struct{})}
	go func() { // Owned by p; ends when the process exits.
		err := cmd.Wait()
		p.mu.Lock()
		p.exitErr, p.exitedAt = err, time.Now()
		p.mu.Unlock()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// Pid answers the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited, when, and whether the
// harness caused it (Kill or Stop).
func (p *Proc) Exited() (exited bool, at time.Time, byHarness bool, err error) {
	select {
	case <-p.done:
	default:
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

// Stop sends SIGTERM, waits up to grace for the exit, then kills.
func (p *Proc) Stop(grace time.Duration) {
	p.mu.Lock()
	p.stopping = true
	p.mu.Unlock()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		p.Kill()
	}
}

// WaitHTTP polls url until it answers 200, p exits, or timeout passes.
func WaitHTTP(ctx context.Context, p *Proc, url string, timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	var last string
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("chaos: %w", err)
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		if p != nil {
			if exited, _, _, werr := p.Exited(); exited {
				return fmt.Errorf("chaos: %s exited before %s was ready (see %s): %w", p.Name, url, p.LogPath, cmpErr(werr))
			}
		}
		if time.Now().After(deadline) {
			name := "server"
			if p != nil {
				name = p.Name
			}
			return fmt.Errorf("chaos: %s not ready at %s after %s: %s", name, url, timeout, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// WaitTCP polls addr until it accepts a connection, p exits, or timeout
// passes.
func WaitTCP(ctx context.Context, p *Proc, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if exited, _, _, werr := p.Exited(); exited {
			return fmt.Errorf("chaos: %s exited before %s accepted connections (see %s): %w", p.Name, addr, p.LogPath, cmpErr(werr))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("chaos: %s not accepting on %s after %s: %w", p.Name, addr, timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// cmpErr answers err, or an error saying the exit status was 0.
func cmpErr(err error) error {
	if err == nil {
		return errors.New("exit status 0")
	}
	return err
}

// Addr formats a loopback address.
func Addr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }
