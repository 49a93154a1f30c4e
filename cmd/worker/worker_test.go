package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	"github.com/wxcombine/orderworker/wechat"
	"github.com/wxcombine/orderworker/wechat/wechatsim"
)

func TestRun_configErrors(t *testing.T) {
	err := run(t.Context(), env(map[string]string{"IDEMPOTENCY_BACKEND": "redis"}), io.Discard)
	if err == nil {
		t.Fatal("run() with no configuration = nil error")
	}
	for _, want := range []string{"WECHAT_FLAVOUR", "WECHAT_MERCHANTS", "REDIS_ADDRS"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("run() error = %q, want it to mention %s", err, want)
		}
	}
}

type proc struct {
	cmd   *exec.Cmd
	out   *testenv.Buffer
	admin string
	done  chan struct{} // closed when the process has exited
	err   error         // its exit status, once done is closed
}

// spawn starts the worker binary with environ and a free admin address,
// without waiting for it; the test's end kills it.
func spawn(t *testing.T, bin string, environ []string) *proc {
	t.Helper()
	admin := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	p := &proc{cmd: exec.Command(bin), out: &testenv.Buffer{}, admin: admin, done: make(chan struct{})}
	p.cmd.Env = append(environ, "ADMIN_ADDR="+admin)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }() // Owned by the test: ends with the process.
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("worker output:\n%s", p.out.String())
		}
	})
	return p
}

// startProc spawns the worker and waits up to 15 s for it to be ready.
func startProc(t *testing.T, bin string, environ []string) *proc {
	t.Helper()
	p := spawn(t, bin, environ)
	admin := p.admin
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker not ready within 15s:\n%s", p.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// scrapeUntil scrapes admin's /metrics (in the format accept asks for, or
// Prometheus text) until done holds for the body or 10 s passed, and
// answers the last body. What a job's end records (its ack, its duration)
// follows the publish of its outcome, so a test that saw the outcome waits
// for it.
func scrapeUntil(t *testing.T, admin, accept string, done func(string) bool) string {
	t.Helper()
	var body string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+admin+"/metrics", nil)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body = string(b)
		if done(body) || time.Now().After(deadline) {
			return body
		}
	}
}

// TestWorker_killedMidCall builds the worker, runs it against real NATS,
// Redis and the simulator, SIGKILLs it while the simulator holds its create
// call, and checks that a second worker process finishes the order with one
// prepay_id, then exits 0 on SIGTERM.
func TestWorker_killedMidCall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the worker binary")
	}
	bin := filepath.Join(t.TempDir(), "worker")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ns, rs := testenv.StartNATS(t), testenv.StartRedisWith(t, "--appendonly", "yes")
	p, err := wechatsim.GeneratePlatform(wechatsim.KeyBitsDefault)
	if err != nil {
		t.Fatal(err)
	}
	const mchID, appID, no = "1900000109", "wxd678efh567hg6787", "KILL000001"
	mc, m, err := wechatsim.GenerateMerchant(p, mchID, appID)
	if err != nil {
		t.Fatal(err)
	}
	sim, err := wechatsim.New(wechatsim.Config{Merchants: []wechatsim.MerchantConfig{mc}, Platform: p,
		Faults: wechatsim.FaultConfig{Latency: 1200 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	base, err := sim.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	dir := writeMerchantDir(t, p, m)

	environ := []string{
		"NATS_URL=" + ns.URL, "REDIS_ADDRS=" + rs.Addr, "WECHAT_BASE_URL=" + base, "WECHAT_FLAVOUR=merchant",
		"WECHAT_MERCHANTS=" + mchID, "WECHAT_MERCHANT_DIR=" + dir, "ACK_WAIT=4s", "JOB_TIMEOUT=3s",
		"IDEMPOTENCY_LEASE=3s", "WECHAT_CALL_TIMEOUT=1500ms", "RETRY_INITIAL_INTERVAL=50ms", "RETRY_MAX_INTERVAL=100ms",
		"RETRY_MAX_ELAPSED=500ms", "REDELIVERY_DELAYS=200ms", "SHUTDOWN_GRACE=3s", "LOG_LEVEL=debug", "DUPLICATE_WINDOW=1m",
		"PATH=" + os.Getenv("PATH"),
	}
	w1 := startProc(t, bin, environ)

	nc, err := nats.Connect(ns.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	job := events.CreateOrderJob{
		Version: events.Version, CorrelationID: "corr-kill", CreatedAt: time.Now().UTC(), TradeType: wechat.TradeTypeJSAPI,
		Request: wechat.CombineOrderRequest{
			CombineAppID: appID, CombineMchID: mchID, CombineOutTradeNo: no,
			SceneInfo: &wechat.SceneInfo{PayerClientIP: "14.23.150.211"},
			SubOrders: []wechat.SubOrder{
				{MchID: mchID, Attach: "a", Amount: wechat.Amount{TotalAmount: 10, Currency: "CNY"}, OutTradeNo: no + "-1", Description: "cup"},
				{MchID: mchID, Attach: "b", Amount: wechat.Amount{TotalAmount: 20, Currency: "CNY"}, OutTradeNo: no + "-2", Description: "pen"},
			},
			CombinePayerInfo: &wechat.PayerInfo{OpenID: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
			NotifyURL:        "https://yourapp.example/wxpay/notify",
		},
	}
	data, _ := json.Marshal(job)
	if _, err := js.Publish(t.Context(), (events.Subjects{}).Job(job.TradeType), data, jetstream.WithMsgID(job.MsgID())); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the simulator to hold the create", func() bool { return sim.Stats().Faults[wechatsim.FaultLatency] >= 1 })
	if err := w1.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-w1.done
	if err := sim.SetFaults(wechatsim.FaultConfig{}); err != nil {
		t.Fatal(err)
	}

	w2 := startProc(t, bin, environ)
	var created []events.PrepayCreated
	waitUntil(t, 20*time.Second, "the second worker's prepay.created", func() bool {
		created = readCreated(t, js)
		return len(created) > 0
	})
	info, _ := sim.Order(mchID, no)
	if len(created) != 1 || info.Answer == nil || created[0].PrepayID != info.Answer.PrepayID || info.DistinctSuccesses() != 1 {
		t.Errorf("events %+v, simulator %+v: want one event with the one prepay_id", created, info)
	}
	if ev := created[0]; ev.PayParams == nil || ev.PayParams.JSAPI == nil ||
		wechat.VerifySignature(m.PrivateKey.Public(), wechat.PaySignMessage(appID, ev.PayParams.JSAPI.TimeStamp, ev.PayParams.JSAPI.NonceStr, ev.PayParams.JSAPI.Package), ev.PayParams.JSAPI.PaySign) != nil {
		t.Errorf("pay params %+v do not verify with the merchant's public key", ev.PayParams)
	}

	// The outcome is published before the job is acknowledged and
	// counted: the count follows within moments.
	acked := `orderworker_pipeline_jobs_total{outcome="ack"} 1`
	body := scrapeUntil(t, w2.admin, "", func(body string) bool { return strings.Contains(body, acked) })
	if !strings.Contains(body, acked) {
		t.Errorf("/metrics lacks the acked job 10s after its outcome:\n%s", grep(body, "orderworker_"))
	}
	// The job came back after its first worker died: a redelivery's wait.
	if !strings.Contains(body, `orderworker_pipeline_job_wait_seconds_count{delivery="retry"} 1`) {
		t.Errorf("/metrics lacks the redelivered job's wait:\n%s", grep(body, "job_wait"))
	}

	if err := w2.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-w2.done:
		if w2.err != nil {
			t.Errorf("worker exit after SIGTERM = %v, want 0", w2.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("worker did not exit within 10s of SIGTERM")
	}
	logs := w1.out.String() + w2.out.String()
	if testing.Verbose() {
		t.Logf("worker 1:\n%s\nworker 2:\n%s", w1.out.String(), w2.out.String())
	}
	if strings.Contains(logs, "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o") || strings.Contains(logs, "PRIVATE KEY") || strings.Contains(logs, string(m.APIv3Key)) {
		t.Error("logs contain the openid or a key")
	}
	for _, line := range strings.Split(strings.TrimSpace(w2.out.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("log line is not JSON: %q", line)
			continue
		}
		if rec["msg"] == "prepay created" && rec["combine_out_trade_no"] != no {
			t.Errorf("log line %q lacks the order identity", line)
		}
	}
}

func readCreated(t *testing.T, js jetstream.JetStream) []events.PrepayCreated {
	t.Helper()
	s, err := js.Stream(t.Context(), events.StreamEvents)
	if err != nil {
		return nil
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var out []events.PrepayCreated
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(t.Context(), seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if m.Subject == events.SubjectPrepayCreated {
			var ev events.PrepayCreated
			if err := json.Unmarshal(m.Data, &ev); err != nil {
				t.Fatal(err)
			}
			out = append(out, ev)
		}
	}
	return out
}

// writeMerchantDir lays out WECHAT_MERCHANT_DIR for one merchant.
func writeMerchantDir(t *testing.T, p *wechatsim.Platform, m *wechat.Merchant) string {
	t.Helper()
	root := t.TempDir()
	d := filepath.Join(root, m.MchID)
	if err := os.MkdirAll(d, 0o700); err != nil {
		t.Fatal(err)
	}
	key, err := wechat.MarshalPrivateKeyPEM(m.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := wechat.MarshalPublicKeyPEM(p.PubKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		fileMerchantKey: key, fileAPIv3Key: []byte(m.APIv3Key), fileSerial: []byte(m.Serial + "\n"),
		filePublicKey: pub, filePublicKeyID: []byte(p.PubKeyID + "\n"),
	} {
		if err := os.WriteFile(filepath.Join(d, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func grep(s, sub string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			fmt.Fprintln(&b, l)
		}
	}
	return b.String()
}

// TestWorker_refusesVolatileStore: a Redis that keeps nothing across a
// restart is refused, naming the risk and the opt-in; with the opt-in the
// worker starts and says RISK in its log.
func TestWorker_refusesVolatileStore(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the worker binary")
	}
	bin := filepath.Join(t.TempDir(), "worker")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ns, rs := testenv.StartNATS(t), testenv.StartRedis(t) // --save "" --appendonly no
	p, err := wechatsim.GeneratePlatform(wechatsim.KeyBitsDefault)
	if err != nil {
		t.Fatal(err)
	}
	_, m, err := wechatsim.GenerateMerchant(p, "1900000109", "wxd678efh567hg6787")
	if err != nil {
		t.Fatal(err)
	}
	environ := []string{
		"NATS_URL=" + ns.URL, "REDIS_ADDRS=" + rs.Addr, "WECHAT_FLAVOUR=merchant", "WECHAT_MERCHANTS=1900000109",
		"WECHAT_MERCHANT_DIR=" + writeMerchantDir(t, p, m), "ADMIN_ADDR=127.0.0.1:0", "PATH=" + os.Getenv("PATH"),
	}
	cmd := exec.Command(bin) //nolint:gosec // the binary built above
	cmd.Env = environ
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "keeps nothing across a restart") || !strings.Contains(string(out), "IDEMPOTENCY_ALLOW_VOLATILE") {
		t.Fatalf("worker on a volatile Redis: %v\n%s\nwant a refusal naming the risk and the opt-in", err, out)
	}
	w := startProc(t, bin, append(environ[:len(environ)-2], "IDEMPOTENCY_ALLOW_VOLATILE=true", "PATH="+os.Getenv("PATH"))) // ready
	if !strings.Contains(w.out.String(), "RISK") {
		t.Errorf("worker log has no RISK warning:\n%s", w.out.String())
	}
}
