// Package testenv starts the real servers the tests need — redis-server and
// a NATS JetStream server — on free loopback ports, and lets a test stop and
// restart them to inject outages.
package testenv

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// FreePort answers a loopback TCP port that was free a moment ago.
func FreePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Redis is a redis-server process owned by one test.
type Redis struct {
	tb   testing.TB
	Addr string // host:port
	dir  string
	port int
	args []string // extra redis-server arguments

	mu  sync.Mutex
	cmd *exec.Cmd
}

// SkipMissingEnv names the environment setting that turns a missing server
// binary from a test failure into a skip. Without it a machine lacking
// redis-server fails every test that needs one, so that a green run cannot
// hide tests that never ran.
const SkipMissingEnv = "TESTENV_SKIP_MISSING"

// RedisInstallHint is how to install the server the tests need.
const RedisInstallHint = "apt-get install redis-server"

// RequireRedis fails the test, naming the install command, when redis-server
// is not on PATH; with TESTENV_SKIP_MISSING=1 it skips it instead.
func RequireRedis(tb testing.TB) {
	tb.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv(SkipMissingEnv) == "1" {
			tb.Skipf("redis-server not installed (skipped because %s=1)", SkipMissingEnv)
		}
		tb.Fatalf("redis-server is not installed (%v): install it (%s) or set %s=1 to skip the tests that need it",
			err, RedisInstallHint, SkipMissingEnv)
	}
}

// StartRedis starts redis-server on a free port, without persistence, and
// stops it when the test ends. A missing redis-server fails the test (see
// RequireRedis).
func StartRedis(tb testing.TB) *Redis {
	tb.Helper()
	return StartRedisWith(tb)
}

// StartRedisWith is StartRedis with extra redis-server arguments, such as
// "--user", "app", "on", ">secret", "~*", "+@all" or a TLS port
// ("--tls-port", …). The plain port stays open: Start waits on it.
func StartRedisWith(tb testing.TB, args ...string) *Redis {
	tb.Helper()
	RequireRedis(tb)
	r := newRedis(tb, tb.TempDir(), FreePort(tb), args...)
	r.Start()
	tb.Cleanup(r.Stop)
	return r
}

// newRedis answers a stopped server of port with its files in dir.
func newRedis(tb testing.TB, dir string, port int, args ...string) *Redis {
	r := &Redis{tb: tb, dir: dir, port: port, args: args}
	r.Addr = "127.0.0.1:" + strconv.Itoa(r.port)
	return r
}

// Start (re)starts the server on its port. It waits until it accepts
// connections.
func (r *Redis) Start() {
	r.tb.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		return
	}
	args := append([]string{
		"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", r.dir,
		"--logfile", filepath.Join(r.dir, "redis.log"),
	}, r.args...)
	cmd := exec.Command("redis-server", args...) //nolint:gosec // G204: arguments come from the test itself
	if err := cmd.Start(); err != nil {
		r.tb.Fatalf("start redis-server: %v", err)
	}
	r.cmd = cmd
	waitTCP(r.tb, r.Addr)
}

// Stop kills the server. Data is lost, as after a crash without persistence.
func (r *Redis) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd = nil
}

// NATS is an in-process NATS server with JetStream and file storage, owned by
// one test. Its storage survives Stop and Start, as a real restart's does.
type NATS struct {
	tb   testing.TB
	URL  string
	port int
	dir  string

	mu  sync.Mutex
	srv *natsserver.Server
}

// StartNATS starts a JetStream-enabled NATS server on a free port and shuts
// it down when the test ends.
func StartNATS(tb testing.TB) *NATS {
	tb.Helper()
	n := &NATS{tb: tb, port: FreePort(tb), dir: tb.TempDir()}
	n.URL = fmt.Sprintf("nats://127.0.0.1:%d", n.port)
	n.Start()
	tb.Cleanup(n.Stop)
	return n
}

// Start (re)starts the server on its port with its previous storage.
func (n *NATS) Start() {
	n.tb.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.srv != nil {
		return
	}
	opts := &natsserver.Options{
		Host:      "127.0.0.1",
		Port:      n.port,
		JetStream: true,
		StoreDir:  n.dir,
		NoLog:     true,
		NoSigs:    true,
	}
	srv, err := natsserver.NewServer(opts)
	if err != nil {
		n.tb.Fatalf("nats server: %v", err)
	}
	go srv.Start() // Owned by n; ends on Shutdown in Stop.
	if !srv.ReadyForConnections(10 * time.Second) {
		n.tb.Fatalf("nats server not ready on port %d", n.port)
	}
	n.srv = srv
}

// Stop shuts the server down; clients see the connection drop.
func (n *NATS) Stop() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.srv == nil {
		return
	}
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
	n.srv = nil
}

// waitTCP waits up to 10s for addr to accept a connection.
func waitTCP(tb testing.TB, addr string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			// redis-server accepts before it has loaded; a PING proves it.
			_, _ = c.Write([]byte("PING\r\n"))
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if line == "+PONG\r\n" {
				return
			}
		}
		select {
		case <-ctx.Done():
			tb.Fatalf("%s did not accept connections: %v", addr, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Buffer is a bytes.Buffer safe for concurrent use, for collecting the output
// of a process or a logger while a test reads it.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String answers everything written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// JetStream connects to n for the rest of the test and answers its
// JetStream context (js.Conn() is the connection).
func (n *NATS) JetStream(tb testing.TB) jetstream.JetStream {
	tb.Helper()
	nc, err := nats.Connect(n.URL)
	if err != nil {
		tb.Fatalf("connect to nats: %v", err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatalf("jetstream: %v", err)
	}
	return js
}
