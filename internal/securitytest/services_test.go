package securitytest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxcombine/orderworker/internal/proc"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/chaos"
	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/internal/securitytest"
	"github.com/wxcombine/orderworker/internal/testenv"
	"github.com/wxcombine/orderworker/loadgen"
	"github.com/wxcombine/orderworker/wechat"
)

// Secrets planted in bad configurations; none may show up anywhere.
const (
	badAPIv3Key   = "BadApiV3KeyOf31CharactersXYZ12"
	redisPassword = "RedisSecretPassw0rd-7f3a9c"
	natsPassword  = "NatsSecretPassw0rd-51b2e8"
)

// TestServices_noSecretsEmitted runs the worker, the notifier and the
// simulator as processes with real key files, drives their error paths —
// bad jobs, every WeChat Pay fault, rejected orders, forged and broken
// notifications, bad configurations — and scans every log line, exported
// span (the console exporter writes them to the logs), error answer,
// /metrics page and stored event for key material, APIv3 keys, passwords
// and openids.
func TestServices_noSecretsEmitted(t *testing.T) {
	b := binaries(t)
	s := newSetup(t)
	n := testenv.StartNATS(t)
	r := testenv.StartRedis(t)
	ctx := t.Context()

	simAddr := freeAddr(t)
	sim := s.start(t, "wechatsim", nil, b["wechatsim"], "-listen", simAddr, "-keys-dir", s.simKeys, "-log-level", "debug", "-notify-speedup", "1000")
	simURL := "http://" + simAddr
	if err := proc.WaitHTTP(ctx, sim, simURL+"/sim/stats", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	wAdmin := freeAddr(t)
	worker := s.start(t, "worker", append([]string{
		"NATS_URL=" + n.URL, "IDEMPOTENCY_BACKEND=redis", "REDIS_ADDRS=" + r.Addr, "IDEMPOTENCY_ALLOW_VOLATILE=true",
		"WECHAT_BASE_URL=" + simURL, "WECHAT_FLAVOUR=merchant", "WECHAT_MERCHANTS=" + s.mchID,
		"WECHAT_MERCHANT_DIR=" + s.merchantDir, "ADMIN_ADDR=" + wAdmin, "LOG_LEVEL=debug",
		// Fail fast: two calls per delivery, two deliveries.
		"WECHAT_CALL_TIMEOUT=1s", "RETRY_INITIAL_INTERVAL=50ms", "RETRY_MAX_INTERVAL=200ms", "RETRY_MAX_ATTEMPTS=2",
		"RETRY_MAX_ELAPSED=2s", "MAX_DELIVER=2", "REDELIVERY_DELAYS=200ms", "ACK_WAIT=10s", "JOB_TIMEOUT=8s",
	}, consoleTracing...), b["worker"])
	if err := proc.WaitHTTP(ctx, worker, "http://"+wAdmin+"/readyz", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	notifyURL, nAdmin := s.startNotifier(t, n.URL, consoleTracing...)

	nc, err := nats.Connect(n.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// Every job body, to learn the openids the producer put in them.
	var jobsMu sync.Mutex
	var jobs [][]byte
	sub, err := nc.Subscribe(events.Subjects{}.Jobs(), func(m *nats.Msg) {
		jobsMu.Lock()
		jobs = append(jobs, m.Data)
		jobsMu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	keys := driveJobs(t, s, nc, simURL, notifyURL)
	answers := driveNotifications(t, s, notifyURL)
	driveBadConfigs(t, s, b, r.Addr)

	// What the services emitted.
	var sources []source
	for _, u := range []string{"http://" + wAdmin + "/metrics", nAdmin + "/metrics"} {
		sources = append(sources, source{u, httpGet(t, u)})
	}
	sources = append(sources, source{"notifier answers to bad notifications", answers})
	evs, dls := storedMessages(t, nc)
	sources = append(sources, evs...)
	worker.Stop(10 * time.Second) // flush the logs
	sim.Stop(5 * time.Second)

	sc := securitytest.NewScanner()
	keyOnly := securitytest.NewScanner() // for the jobs kept verbatim in dead letters
	for _, scn := range []*securitytest.Scanner{sc, keyOnly} {
		registerKeys(t, s, scn)
	}
	openids := 0
	jobsMu.Lock()
	for _, j := range jobs {
		var job events.CreateOrderJob
		if json.Unmarshal(j, &job) == nil && job.Request.CombinePayerInfo != nil && job.Request.CombinePayerInfo.OpenID != "" {
			sc.AddOpenID("job payer openid", job.Request.CombinePayerInfo.OpenID)
			openids++
		}
	}
	jobsMu.Unlock()
	simc := &loadgen.SimClient{BaseURL: simURL}
	for _, k := range keys {
		if info, ok, err := simc.Order(ctx, k); err == nil && ok && info.Order != nil && info.Order.CombinePayerInfo != nil {
			sc.AddOpenID("payer openid from WeChat Pay", info.Order.CombinePayerInfo.OpenID)
			openids++
		}
	}
	for _, id := range notifiedOpenIDs {
		sc.AddOpenID("payer openid in a notification", id)
		openids++
	}
	if openids == 0 {
		t.Fatal("no openid was registered: the scan would prove nothing about personal data")
	}

	var findings []securitytest.Finding
	// The console exporter wrote every span into the logs scanned below.
	for _, name := range []string{"worker", "notifier"} {
		if n := spansIn(t, filepath.Join(s.logs, name+".log")); n == 0 {
			t.Errorf("%s exported no span: the scan would prove nothing about spans", name)
		} else {
			t.Logf("%s exported %d spans to its log", name, n)
		}
	}
	logFindings, err := sc.ScanDir(s.logs)
	if err != nil {
		t.Fatal(err)
	}
	findings = append(findings, logFindings...)
	for _, src := range sources {
		findings = append(findings, sc.Scan(src.name, src.data)...)
	}
	for _, dl := range dls {
		findings = append(findings, sc.Scan(dl.name, dl.data)...)
		findings = append(findings, keyOnly.Scan(dl.name+" original_data", dl.original)...)
	}
	var logBytes int64
	entries, _ := os.ReadDir(s.logs)
	for _, e := range entries {
		if fi, err := e.Info(); err == nil {
			logBytes += fi.Size()
		}
	}
	t.Logf("scanned %d log files (%d bytes), %d other sources, %d dead letters, for %d needles (%d openids)",
		len(entries), logBytes, len(sources), len(dls), sc.Len(), openids)
	for _, f := range findings {
		t.Errorf("secret emitted: %s", f)
	}
}

// consoleTracing turns a service's tracing on with the console exporter:
// its spans, attributes and error texts go to its log, which is scanned.
var consoleTracing = []string{"OTEL_TRACES_EXPORTER=console", "OTEL_BSP_SCHEDULE_DELAY=100"}

// spansIn counts the console exporter's spans in a log file.
func spansIn(t *testing.T, path string) int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(data, []byte(`"SpanContext":{"TraceID":`))
}

type source struct {
	name string
	data []byte
}

type deadLetterSource struct {
	name     string
	data     []byte // the dead letter without original_data
	original []byte
}

// notifiedOpenIDs are the payer openids of the genuine notifications sent
// by driveNotifications.
var notifiedOpenIDs []string

func registerKeys(t *testing.T, s *setup, sc *securitytest.Scanner) {
	t.Helper()
	pem, err := os.ReadFile(s.keys.Files[0].PrivateKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := sc.AddPrivateKeyPEM("merchant private key", pem); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"platform_cert_key.pem", "wechatpay_pub_key_private.pem"} {
		pem, err := os.ReadFile(filepath.Join(s.simKeys, "platform", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := sc.AddPrivateKeyPEM("platform key "+f, pem); err != nil {
			t.Fatal(err)
		}
	}
	sc.AddAPIv3Key("APIv3 key", string(s.apiV3()))
	sc.AddAPIv3Key("bad APIv3 key", badAPIv3Key)
	sc.Add("Redis password", "raw", redisPassword)
	sc.Add("NATS password", "raw", natsPassword)
}

// driveJobs publishes jobs through every path of the worker: valid,
// duplicate, invalid and malformed jobs, configuration errors (an appid not bound
// to the merchant, an unknown sub-merchant, a merchant without credentials),
// and every WeChat Pay fault in turn. It answers the orders published.
func driveJobs(t *testing.T, s *setup, nc *nats.Conn, simURL, notifyURL string) []loadgen.OrderKey {
	t.Helper()
	ctx := t.Context()
	good := loadgen.Merchant{MchID: s.mchID, AppID: chaos.AppIDOf(s.mchID), NotifyURL: notifyURL + "/v3/notify/" + s.mchID}
	phases := []struct {
		name      string
		faults    string // PUT /sim/faults body
		merchants []loadgen.Merchant
		orders    int
		extra     func(*loadgen.Config)
	}{
		{"clean, paid, bad jobs, rejected orders", `{}`, []loadgen.Merchant{
			good,
			{MchID: s.mchID, AppID: "wxunboundappid00001", NotifyURL: good.NotifyURL},
			{MchID: s.mchID, AppID: good.AppID, SubMchIDs: []string{"1234567899"}, NotifyURL: good.NotifyURL},
			{MchID: "1900000299", AppID: "wx1900000299chaos", NotifyURL: good.NotifyURL},
		}, 16, func(c *loadgen.Config) {
			c.InvalidShare, c.MalformedShare, c.DuplicateShare, c.LateDuplicateShare, c.PayShare = 0.2, 0.2, 0.5, 1, 1
		}},
		{"SYSTEMERROR", `{"system_error_rate":1}`, nil, 2, nil},
		{"BANKERROR", `{"bank_error_rate":1}`, nil, 2, nil},
		{"FREQUENCY_LIMITED", `{"frequency_limited_rate":1}`, nil, 2, nil},
		{"502", `{"bad_502_rate":1}`, nil, 2, nil},
		{"timeout after create", `{"timeout_after_create_rate":1}`, nil, 2, nil},
		{"signature probes", `{"sign_test_rate":1}`, nil, 2, nil},
		{"unsigned errors", `{"system_error_rate":1,"unsigned_errors":true}`, nil, 2, nil},
		{"rate limit", `{"rate_per_merchant":0.5}`, nil, 3, nil},
	}
	sim := &loadgen.SimClient{BaseURL: simURL}
	var keys []loadgen.OrderKey
	for i, ph := range phases {
		setFaults(t, simURL, ph.faults)
		cfg := loadgen.Config{
			Merchants: ph.merchants, Orders: ph.orders, RunID: fmt.Sprintf("SEC%02d", i),
			Wait: 20 * time.Second, Linger: 200 * time.Millisecond, StreamWait: 15 * time.Second,
			PayFunc: sim.Pay,
			CreateCountsFunc: func(_ context.Context, ks []loadgen.OrderKey) (map[loadgen.OrderKey]int, error) {
				keys = append(keys, ks...)
				return map[loadgen.OrderKey]int{}, nil
			},
		}
		if cfg.Merchants == nil {
			cfg.Merchants = []loadgen.Merchant{good}
		}
		if ph.extra != nil {
			ph.extra(&cfg)
		}
		rep, err := loadgen.Run(ctx, nc, cfg)
		if err != nil {
			t.Fatalf("phase %s: %v", ph.name, err)
		}
		t.Logf("phase %s: %s", ph.name, rep.Line())
	}
	setFaults(t, simURL, `{}`)
	return keys
}

func setFaults(t *testing.T, simURL, body string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPut, simURL+"/sim/faults", strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("PUT /sim/faults %s: %s", body, resp.Status)
	}
}

// driveNotifications sends the notifier genuine, duplicate, forged and
// broken notifications and answers every answer body.
func driveNotifications(t *testing.T, s *setup, notifyURL string) []byte {
	t.Helper()
	paid := s.paidOrders(t, 3, "NTF")
	for _, tx := range paid {
		notifiedOpenIDs = append(notifiedOpenIDs, tx.CombinePayerInfo.OpenID)
	}
	u := notifyURL + "/v3/notify/" + s.mchID
	h0, body0 := s.notification(t, paid[0], "N-0")
	p := s.keys.Platform
	wrongKey := wechat.APIv3Key(strings.Repeat("k", 32))
	hWrong, bodyWrong, err := wechat.BuildNotification(p.PubKey, p.PubKeyID, wrongKey, "N-1", time.Now(), paid[1], time.Now())
	if err != nil {
		t.Fatal(err)
	}
	garbage := []byte(`{"id":"N-2","resource":{"ciphertext":"` + string(bytes.Repeat([]byte("A"), 64)) + `"}}`)
	hGarbage := http.Header{"Content-Type": {"application/json"}}
	if err := wechat.SignResponseHeaders(hGarbage, p.PubKey, p.PubKeyID, time.Now().Unix(), wechat.NewNonce(), garbage); err != nil {
		t.Fatal(err)
	}
	hBadSig := h0.Clone()
	hBadSig.Set(wechat.HeaderSignature, "c2lnbmF0dXJl")
	hProbe := h0.Clone()
	hProbe.Set(wechat.HeaderSignature, wechat.SignTestPrefix+"x")
	h2, body2 := s.notification(t, paid[2], "N-3")
	tamper := bytes.Replace(body2, []byte(`"N-3"`), []byte(`"N-4"`), 1)
	cases := []struct {
		name string
		url  string
		h    http.Header
		body []byte
	}{
		{"genuine", u, h0, body0},
		{"genuine again", u, h0, body0},
		{"wrong APIv3 key", u, hWrong, bodyWrong},
		{"undecryptable resource", u, hGarbage, garbage},
		{"bad signature", u, hBadSig, body0},
		{"signature probe", u, hProbe, body0},
		{"tampered body", u, h2, tamper},
		{"no headers", u, http.Header{}, body0},
		{"unknown merchant", notifyURL + "/v3/notify/1900000299", h0, body0},
		{"not JSON", u, h2, []byte("not json")},
		{"genuine last", u, h2, body2},
	}
	var answers bytes.Buffer
	for _, c := range cases {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, c.url, bytes.NewReader(c.body))
		req.Header = c.h.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Fprintf(&answers, "%s: %d %s\n", c.name, resp.StatusCode, b)
	}
	t.Logf("notifier answers:\n%s", answers.String())
	return answers.Bytes()
}

// driveBadConfigs starts the worker and the notifier with broken settings
// whose values are secrets, and keeps their output in the logs.
func driveBadConfigs(t *testing.T, s *setup, b map[string]string, redisAddr string) {
	t.Helper()
	bad := filepath.Join(s.dir, "bad-merchants")
	mdir := filepath.Join(bad, s.mchID)
	if err := os.MkdirAll(mdir, 0o700); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(s.merchantDir, s.mchID)
	entries, err := os.ReadDir(good)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(good, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		switch e.Name() {
		case "apiv3_key":
			data = []byte(badAPIv3Key + "\n")
		case "apiclient_key.pem":
			lines := strings.Split(string(data), "\n")
			data = []byte(strings.Join(lines[:len(lines)/2], "\n")) // truncated
		}
		if err := os.WriteFile(filepath.Join(mdir, e.Name()), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	pwFile := filepath.Join(s.dir, "redis-password")
	if err := os.WriteFile(pwFile, []byte(redisPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	closed := freeAddr(t)
	natsWithPassword := "nats://orderworker:" + natsPassword + "@" + closed
	common := []string{"WECHAT_FLAVOUR=merchant", "WECHAT_MERCHANTS=" + s.mchID, "LOG_LEVEL=debug", "IDEMPOTENCY_BACKEND=redis", "IDEMPOTENCY_ALLOW_VOLATILE=true"}
	runs := []struct {
		name    string
		bin     string
		env     []string
		runsFor time.Duration // 0: must exit with an error on its own
	}{
		{"worker-bad-key-files", "worker", append([]string{"WECHAT_MERCHANT_DIR=" + bad, "REDIS_ADDRS=" + redisAddr, "ADMIN_ADDR=" + freeAddr(t)}, common...), 0},
		{"worker-nats-password", "worker", append([]string{"NATS_URL=" + natsWithPassword, "WECHAT_MERCHANT_DIR=" + s.merchantDir, "REDIS_ADDRS=" + redisAddr, "ADMIN_ADDR=" + freeAddr(t)}, common...), 3 * time.Second}, // retries NATS, as the notifier does
		{"worker-wrong-redis-password", "worker", append([]string{"NATS_URL=nats://" + closed, "WECHAT_MERCHANT_DIR=" + s.merchantDir, "REDIS_ADDRS=" + redisAddr, "REDIS_PASSWORD_FILE=" + pwFile, "ADMIN_ADDR=" + freeAddr(t)}, common...), 3 * time.Second},
		{"worker-unknown-settings", "worker", []string{"WECHAT_FLAVOUR=nope", "REDIS_TLS=maybe", "ACK_WAIT=-1s", "REDIS_PASSWORD_FILE=" + pwFile}, 0},
		{"notifier-bad-apiv3-key", "notifier", []string{"NATS_URL=" + natsWithPassword, "WECHAT_MERCHANTS=" + s.mchID, "PAYMENTS_SEEN_BACKEND=kv", "WECHAT_MERCHANT_DIR=" + bad, "HTTP_ADDR=" + freeAddr(t), "ADMIN_ADDR=" + freeAddr(t)}, 0},
		{"notifier-nats-password", "notifier", []string{"NATS_URL=" + natsWithPassword, "WECHAT_MERCHANTS=" + s.mchID, "PAYMENTS_SEEN_BACKEND=kv", "WECHAT_MERCHANT_DIR=" + s.merchantDir, "HTTP_ADDR=" + freeAddr(t), "ADMIN_ADDR=" + freeAddr(t), "LOG_LEVEL=debug"}, 3 * time.Second},
	}
	var wg sync.WaitGroup
	for _, run := range runs {
		p, err := chaos.Start(run.name, filepath.Join(s.logs, run.name+".log"), run.env, b[run.bin])
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() { // Owned by driveBadConfigs; ends when the process has exited.
			defer wg.Done()
			limit := 20 * time.Second
			if run.runsFor > 0 {
				limit = run.runsFor
			}
			select {
			case <-p.Done():
				if _, _, _, err := p.Exited(); err == nil {
					t.Errorf("%s exited 0, want a configuration error", run.name)
				}
			case <-time.After(limit):
				if run.runsFor == 0 {
					t.Errorf("%s still running after %s, want a configuration error", run.name, limit)
				}
				p.Stop(5 * time.Second)
			}
		}()
	}
	wg.Wait()
}

func httpGet(t *testing.T, u string) []byte {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// storedMessages answers every stored event (with its headers) and every
// dead letter split into the letter and the job it keeps verbatim.
func storedMessages(t *testing.T, nc *nats.Conn) ([]source, []deadLetterSource) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var evs []source
	var dls []deadLetterSource
	reasons := map[events.Reason]int{}
	for _, stream := range []string{events.StreamEvents, events.StreamDeadLetters} {
		cons, err := js.OrderedConsumer(t.Context(), stream, jetstream.OrderedConsumerConfig{})
		if err != nil {
			t.Fatal(err)
		}
		for {
			batch, err := cons.Fetch(100, jetstream.FetchMaxWait(time.Second))
			if err != nil {
				t.Fatal(err)
			}
			got := 0
			for m := range batch.Messages() {
				got++
				name := fmt.Sprintf("%s %s", stream, m.Subject())
				hdr, _ := json.Marshal(m.Headers())
				if stream == events.StreamEvents {
					evs = append(evs, source{name, append(hdr, m.Data()...)})
					continue
				}
				var dl events.DeadLetter
				if err := json.Unmarshal(m.Data(), &dl); err != nil {
					t.Fatalf("dead letter: %v", err)
				}
				reasons[dl.Reason]++
				orig := dl.OriginalData
				dl.OriginalData = nil
				rest, _ := json.Marshal(dl)
				dls = append(dls, deadLetterSource{name, append(hdr, rest...), orig})
			}
			if got == 0 {
				break
			}
		}
	}
	for _, r := range []events.Reason{events.ReasonMalformed, events.ReasonInvalid, events.ReasonConfiguration, events.ReasonMaxDeliveries} {
		if reasons[r] == 0 {
			t.Errorf("no dead letter with reason %s: that error path was not driven (got %v)", r, reasons)
		}
	}
	return evs, dls
}
