package chaos

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/internal/testenv"
	"github.com/wxcombine/orderworker/loadgen"
)

// TestAckDropper runs a real JetStream consumer through the proxy: the ack
// of a selected order's job is lost, so the server delivers it again; the
// ack of another order's job arrives, so it is not.
func TestAckDropper(t *testing.T) {
	srv := testenv.StartNATS(t)
	target := strings.TrimPrefix(srv.URL, "nats://")
	drop := func(k loadgen.OrderKey) bool { return k.OutTradeNo == "DROP1" }
	p, err := NewAckDropper(target, drop)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := t.Context()

	direct, err := nats.Connect(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	djs, _ := jetstream.New(direct)
	st, err := djs.CreateStream(ctx, jetstream.StreamConfig{Name: "JOBS", Subjects: []string{"jobs.>"}, Retention: jetstream.WorkQueuePolicy})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := djs.CreateConsumer(ctx, "JOBS", jetstream.ConsumerConfig{Durable: "w", AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Second, MaxDeliver: 3}); err != nil {
		t.Fatal(err)
	}
	for _, no := range []string{"DROP1", "KEEP1"} {
		body := `{"version":1,"request":{"combine_mchid":"1900000109","combine_out_trade_no":"` + no + `"}}`
		msg := nats.NewMsg("jobs.x")
		msg.Data = []byte(body)
		msg.Header.Set("Nats-Msg-Id", no)
		if _, err := djs.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}

	proxied, err := nats.Connect(p.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer proxied.Close()
	pjs, _ := jetstream.New(proxied)
	cons, err := pjs.Consumer(ctx, "JOBS", "w")
	if err != nil {
		t.Fatal(err)
	}
	deliveries := map[string]int{}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) && deliveries["DROP1"] < 3 {
		batch, err := cons.Fetch(2, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			deliveries[jobKey(m.Data()).OutTradeNo]++
			if err := m.Ack(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if deliveries["DROP1"] != 3 || deliveries["KEEP1"] != 1 {
		t.Errorf("deliveries = %v, want DROP1 delivered 3 times (MaxDeliver, every ack lost) and KEEP1 once", deliveries)
	}
	// The last ack is on its way through the proxy when the third
	// delivery is counted: wait for the proxy to see it.
	var acks, orders int
	for wait := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if acks, orders = p.Dropped(); acks >= 3 || time.Now().After(wait) {
			break
		}
	}
	if acks != 3 || orders != 1 {
		t.Errorf("Dropped() = %d acks of %d orders, want 3 of 1", acks, orders)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Errorf("stream holds %d jobs, want 1: the job whose acks were lost", info.State.Msgs)
	}
}

// TestRecorder_faults: a withheld answer commits at the simulator and never
// reaches the worker; a 503 is answered without forwarding; a skewed clock
// moves the signed timestamp the simulator sees.
func TestRecorder_faults(t *testing.T) {
	var (
		mu   sync.Mutex
		seen []string
	)
	sim := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Authorization"))
		mu.Unlock()
		_, _ = io.WriteString(w, `{"prepay_id":"wx1"}`)
	}))
	defer sim.Close()
	rec := NewRecorder(sim.URL)
	defer rec.Close()
	var unavailable atomic.Bool
	rec.SetFaults(ProxyFaults{
		Withhold:           func(k loadgen.OrderKey) bool { return k.OutTradeNo == "HOLD" },
		ServiceUnavailable: unavailable.Load,
	})
	base, err := rec.Listen("worker-1")
	if err != nil {
		t.Fatal(err)
	}
	post := func(no string, timeout time.Duration) (*http.Response, error) {
		req, _ := http.NewRequest(http.MethodPost, base+"/v3/combine-transactions/app", bytes.NewReader([]byte(`{"combine_mchid":"1","combine_out_trade_no":"`+no+`"}`)))
		req.Header.Set("Authorization", `WECHATPAY2-SHA256-RSA2048 mchid="1",nonce_str="n",timestamp="1700000000",serial_no="S",signature="x"`)
		return (&http.Client{Timeout: timeout}).Do(req)
	}
	if resp, err := post("HOLD", 300*time.Millisecond); err == nil {
		resp.Body.Close()
		t.Errorf("withheld create answered %d, want no answer", resp.StatusCode)
	}
	unavailable.Store(true)
	resp, err := post("A", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), `"SERVICE_UNAVAILABLE"`) {
		t.Errorf("503 fault answered %d %s", resp.StatusCode, body)
	}
	unavailable.Store(false)
	rec.SetClockSkew(-10 * time.Minute)
	resp, err = post("B", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	mu.Lock()
	if len(seen) != 2 || !strings.Contains(seen[1], `timestamp="1699999400"`) {
		t.Errorf("simulator saw %q, want the withheld create and the skewed one (timestamp 1699999400)", seen)
	}
	mu.Unlock()
	deadline := time.Now().Add(2 * time.Second)
	for len(rec.Calls()) < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	faults := map[string]string{}
	for _, c := range rec.Calls() {
		faults[c.Order.OutTradeNo] = c.Fault
		if c.Order.OutTradeNo == "HOLD" && (c.Delivered || c.Ref != "wx1") {
			t.Errorf("withheld call = %+v, want the simulator's answer recorded and not delivered", c)
		}
	}
	want := map[string]string{"HOLD": FaultWithheld, "A": FaultServiceUnavailable, "B": FaultClockSkew}
	for k, v := range want {
		if faults[k] != v {
			t.Errorf("call %s fault = %q, want %q (all: %v)", k, faults[k], v, faults)
		}
	}
}

// The load generator's tally judges only after the last reconciliation
// step could have reported a dropped notification's payment, and after
// the whole redelivery schedule of a job.
func TestConfig_settleWait(t *testing.T) {
	cfg := Config{DrainWait: 2 * time.Minute, ReconcileSchedule: "5s, 15s,8m,1m"}
	if got, want := cfg.settleWait(time.Hour), 2*time.Minute+8*time.Minute+2*AckWait; got != want {
		t.Errorf("settleWait() = %s, want %s", got, want)
	}
	// Near the run's end, the drain and the reading still fit.
	if got, want := cfg.settleWait(10*time.Minute), 7*time.Minute; got != want {
		t.Errorf("settleWait() with 10m left = %s, want %s", got, want)
	}
	cfg = Config{DrainWait: time.Second, ReconcileSchedule: "1s"}
	if got := cfg.settleWait(time.Hour); got != 5*time.Minute {
		t.Errorf("settleWait() of a short schedule = %s, want the 5m floor", got)
	}
}
