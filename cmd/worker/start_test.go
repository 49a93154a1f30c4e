package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/internal/testenv"
	"github.com/wxcombine/orderworker/pipeline"
	"github.com/wxcombine/orderworker/wechat/wechatsim"
)

// buildWorker builds the worker binary once per test.
func buildWorker(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the worker binary")
	}
	bin := filepath.Join(t.TempDir(), "worker")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// workerEnv answers a worker environment against natsURL with the KV
// backend (no Redis needed) and a simulator merchant.
func workerEnv(t *testing.T, natsURL string, extra ...string) []string {
	t.Helper()
	p, err := wechatsim.GeneratePlatform(wechatsim.KeyBitsDefault)
	if err != nil {
		t.Fatal(err)
	}
	_, m, err := wechatsim.GenerateMerchant(p, "1900000109", "wxd678efh567hg6787")
	if err != nil {
		t.Fatal(err)
	}
	return append([]string{
		"NATS_URL=" + natsURL, "IDEMPOTENCY_BACKEND=kv", "WECHAT_BASE_URL=http://127.0.0.1:1", "WECHAT_FLAVOUR=merchant",
		"WECHAT_MERCHANTS=1900000109", "WECHAT_MERCHANT_DIR=" + writeMerchantDir(t, p, m), "SHUTDOWN_GRACE=2s",
		"PATH=" + os.Getenv("PATH"),
	}, extra...)
}

// readyz answers /readyz's status and body.
func readyz(admin string) (int, string) {
	resp, err := http.Get("http://" + admin + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// TestWorker_natsDownAtStart: a worker started while NATS is down neither
// exits nor reports ready; it answers /readyz 503 while it connects, and
// becomes ready once NATS is up.
func TestWorker_natsDownAtStart(t *testing.T) {
	bin := buildWorker(t)
	ns := testenv.StartNATS(t)
	ns.Stop()
	p := spawn(t, bin, workerEnv(t, ns.URL))
	p.waitsFor(t, "connecting to NATS", ns.Start)
}

// TestWorker_redisDownAtStart: a worker whose Redis is down when it starts
// waits, unready, naming the store, and becomes ready once Redis is up,
// instead of exiting into CrashLoopBackOff.
func TestWorker_redisDownAtStart(t *testing.T) {
	bin := buildWorker(t)
	ns, rs := testenv.StartNATS(t), testenv.StartRedisWith(t, "--appendonly", "yes")
	rs.Stop()
	p := spawn(t, bin, workerEnv(t, ns.URL, "IDEMPOTENCY_BACKEND=redis", "REDIS_ADDRS="+rs.Addr))
	p.waitsFor(t, "reaching the idempotency store", rs.Start)
	if !strings.Contains(p.out.String(), "reaching the idempotency store failed; retrying") {
		t.Errorf("worker log has no retry warning:\n%s", p.out.String())
	}
	for line := range strings.Lines(p.out.String()) {
		if !strings.HasPrefix(line, "{") {
			t.Errorf("a log line is not JSON (go-redis's own logger?): %q", line)
		}
	}
}

// TestWorker_redisRefusesAtStart: a Redis that refuses the worker's password
// is a configuration mistake, not an outage: the worker exits at once with
// an error naming the store, without the password.
func TestWorker_redisRefusesAtStart(t *testing.T) {
	bin := buildWorker(t)
	ns, rs := testenv.StartNATS(t), testenv.StartRedisWith(t, "--appendonly", "yes", "--user", "orderworker", "on", ">right-pass", "~*", "+@all")
	pw := filepath.Join(t.TempDir(), "redis-password")
	if err := os.WriteFile(pw, []byte("wrong-pass\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin) //nolint:gosec // the binary built above
	cmd.Env = append(workerEnv(t, ns.URL, "IDEMPOTENCY_BACKEND=redis", "REDIS_ADDRS="+rs.Addr, "REDIS_USERNAME=orderworker", "REDIS_PASSWORD_FILE="+pw), "ADMIN_ADDR=127.0.0.1:0")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "idempotency store") || !strings.Contains(string(out), "WRONGPASS") {
		t.Fatalf("worker with a wrong Redis password: %v\n%s\nwant an exit naming the store's refusal", err, out)
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("exited after %v; a refusal is not retried", took)
	}
	if strings.Contains(string(out), "wrong-pass") {
		t.Errorf("the password reached the log:\n%s", out)
	}
}

// waitsFor checks that p, started while a dependency is down, stays up and
// answers /readyz 503 naming state; then it brings the dependency up and
// checks that p becomes ready and exits 0 on SIGTERM.
func (p *proc) waitsFor(t *testing.T, state string, up func()) {
	t.Helper()
	var code int
	var body string
	waitUntil(t, 10*time.Second, "/readyz to answer", func() bool { code, body = readyz(p.admin); return code != 0 })
	time.Sleep(2 * time.Second) // well past the milliseconds in which a worker exits on a failed start
	select {
	case <-p.done:
		t.Fatalf("worker exited while the dependency was down: %v\n%s", p.err, p.out.String())
	default:
	}
	if code, body = readyz(p.admin); code != http.StatusServiceUnavailable || !strings.Contains(body, state) {
		t.Errorf("/readyz while the dependency is down = %d %q, want 503 naming %q", code, body, state)
	}
	up()
	waitUntil(t, 20*time.Second, "the worker to become ready once the dependency is up", func() bool { code, body = readyz(p.admin); return code == http.StatusOK })
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
		if p.err != nil {
			t.Errorf("exit after SIGTERM = %v\n%s", p.err, p.out.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no exit 10s after SIGTERM")
	}
}

// TestWorker_refusesOldServer runs the worker against Debian's nats-server
// (2.9.10 on the development machine): it must exit with an error naming
// the minimum version.
func TestWorker_refusesOldServer(t *testing.T) {
	natsBin, err := exec.LookPath("nats-server")
	if err != nil {
		t.Skip("no nats-server binary on PATH")
	}
	out, _ := exec.Command(natsBin, "--version").Output()
	if !strings.Contains(string(out), "v2.9.") && !strings.Contains(string(out), "v2.10.0") {
		t.Skipf("nats-server on PATH is %s, not one older than the minimum", strings.TrimSpace(string(out)))
	}
	bin := buildWorker(t)
	port := testenv.FreePort(t)
	srv := exec.Command(natsBin, "-js", "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-sd", t.TempDir())
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	url := "nats://127.0.0.1:" + strconv.Itoa(port)
	waitUntil(t, 10*time.Second, "the old nats-server", func() bool {
		nc, err := nats.Connect(url)
		if err == nil {
			nc.Close()
		}
		return err == nil
	})
	for _, backend := range []struct{ name, want string }{{"redis", serverVersionMin}, {"kv", kvServerVersionMin}} {
		env := workerEnv(t, url, "IDEMPOTENCY_BACKEND="+backend.name, "REDIS_ADDRS=127.0.0.1:1", "ADMIN_ADDR=127.0.0.1:0")
		cmd := exec.Command(bin)
		cmd.Env = env
		done := make(chan struct{})
		var outb []byte
		var runErr error
		go func() { outb, runErr = cmd.CombinedOutput(); close(done) }() // Owned by the test: ends with the process.
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			t.Fatalf("%s: worker still running against %s", backend.name, strings.TrimSpace(string(out)))
		}
		if runErr == nil || !strings.Contains(string(outb), "nats-server "+backend.want+" or later") {
			t.Errorf("%s backend against %s: exit %v, output %s; want a refusal naming %s", backend.name, strings.TrimSpace(string(out)), runErr, outb, backend.want)
		}
	}
}

// TestWorker_pause: a paused worker reports "paused" on /readyz (still 200:
// it is healthy), exports orderworker_pipeline_paused 1 and takes no job
// until resumed.
func TestWorker_pause(t *testing.T) {
	bin := buildWorker(t)
	ns := testenv.StartNATS(t)
	p := startProc(t, bin, workerEnv(t, ns.URL, "WECHAT_CALL_TIMEOUT=1s"))
	nc, err := nats.Connect(ns.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := t.Context()
	if err := pipeline.SetPause(ctx, js, "", "", pipeline.ConsumerDefault, pipeline.PauseState{Paused: true, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	var code int
	var body string
	waitUntil(t, 15*time.Second, "/readyz to say paused", func() bool { code, body = readyz(p.admin); return body == "paused" })
	if code != http.StatusOK {
		t.Errorf("/readyz while paused = %d, want 200 (paused is healthy)", code)
	}
	if _, err := js.Publish(ctx, events.SubjectPrefixDefault+".orders.create.native", []byte(`{"not":"a job"}`)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	cons, err := js.Consumer(ctx, events.StreamJobs, pipeline.ConsumerDefault)
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumPending != 1 || info.Delivered.Consumer != 0 {
		t.Errorf("paused worker: pending %d, delivered %d; want the job untouched", info.NumPending, info.Delivered.Consumer)
	}
	resp, err := http.Get("http://" + p.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(m), "orderworker_pipeline_paused 1") {
		t.Errorf("/metrics lacks orderworker_pipeline_paused 1:\n%s", grep(string(m), "paused"))
	}
	if err := pipeline.SetPause(ctx, js, "", "", pipeline.ConsumerDefault, pipeline.PauseState{}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 15*time.Second, "the resumed worker to take the job", func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumPending == 0 && info.Delivered.Consumer >= 1
	})
	if code, body = readyz(p.admin); code != http.StatusOK || body != "ready" {
		t.Errorf("/readyz after resume = %d %q", code, body)
	}
}

// TestWorker_twoFlavours: two workers of different flavours (SUBJECT_PREFIX
// and stream names) on one NATS: both become ready, a restart of one leaves
// the other's streams alone, and each handles only its own jobs.
func TestWorker_twoFlavours(t *testing.T) {
	bin := buildWorker(t)
	ns := testenv.StartNATS(t)
	partner := []string{"SUBJECT_PREFIX=partner", "JOBS_STREAM=PARTNER_ORDER_JOBS", "EVENTS_STREAM=PARTNER_ORDER_EVENTS",
		"DEADLETTERS_STREAM=PARTNER_ORDER_DEADLETTERS", "IDEMPOTENCY_KV_BUCKET=partner_idempotency"}
	a := startProc(t, bin, workerEnv(t, ns.URL))
	b := startProc(t, bin, workerEnv(t, ns.URL, partner...))
	nc, err := nats.Connect(ns.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := t.Context()
	subjects := func(stream string) string {
		s, err := js.Stream(ctx, stream)
		if err != nil {
			t.Fatalf("stream %s: %v", stream, err)
		}
		return strings.Join(s.CachedInfo().Config.Subjects, ",")
	}
	before := subjects("PARTNER_ORDER_JOBS")
	// Restart the first flavour: its setup must not touch the partner's.
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-a.done
	startProc(t, bin, workerEnv(t, ns.URL))
	if got := subjects("PARTNER_ORDER_JOBS"); got != before || got != "partner.orders.create.*" {
		t.Errorf("partner jobs stream subjects %q after the other flavour restarted, want %q", got, before)
	}
	if got := subjects(events.StreamJobs); got != "combine.orders.create.*" {
		t.Errorf("combine jobs stream subjects %q", got)
	}
	for _, f := range []struct{ prefix, jobs, dls string }{
		{"combine", events.StreamJobs, events.StreamDeadLetters},
		{"partner", "PARTNER_ORDER_JOBS", "PARTNER_ORDER_DEADLETTERS"},
	} {
		ack, err := js.Publish(ctx, f.prefix+".orders.create.native", []byte(`not a job`))
		if err != nil {
			t.Fatalf("%s: publish: %v", f.prefix, err)
		}
		if ack.Stream != f.jobs {
			t.Errorf("%s job stored in %s, want %s", f.prefix, ack.Stream, f.jobs)
		}
		waitUntil(t, 15*time.Second, f.prefix+"'s dead letter", func() bool {
			s, err := js.Stream(ctx, f.dls)
			if err != nil {
				return false
			}
			info, err := s.Info(ctx)
			return err == nil && info.State.Msgs == 1
		})
	}
	if code, body := readyz(b.admin); code != http.StatusOK {
		t.Errorf("partner worker /readyz = %d %q", code, body)
	}
}
