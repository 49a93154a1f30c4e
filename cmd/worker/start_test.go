package main

import (
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
	admin := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	p := &proc{cmd: exec.Command(bin), out: &testenv.Buffer{}, admin: admin, done: make(chan struct{})}
	p.cmd.Env = append(workerEnv(t, ns.URL), "ADMIN_ADDR="+admin)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }() // Owned by the test: ends with the process.
	t.Cleanup(func() { _ = p.cmd.Process.Kill(); <-p.done })

	var code int
	var body string
	waitUntil(t, 10*time.Second, "/readyz to answer", func() bool { code, body = readyz(admin); return code != 0 })
	time.Sleep(2 * time.Second) // well past the 18 ms in which it used to exit
	select {
	case <-p.done:
		t.Fatalf("worker exited while NATS was down: %v\n%s", p.err, p.out.String())
	default:
	}
	if code, body = readyz(admin); code != http.StatusServiceUnavailable || !strings.Contains(body, "connecting to NATS") {
		t.Errorf("/readyz while NATS is down = %d %q, want 503 naming the connection", code, body)
	}
	ns.Start()
	waitUntil(t, 15*time.Second, "the worker to become ready once NATS is up", func() bool { code, body = readyz(admin); return code == http.StatusOK })
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
