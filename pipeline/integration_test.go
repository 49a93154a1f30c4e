package pipeline_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/metrics"
	"github.com/wxcombine/orderworker/pipeline"
	"github.com/wxcombine/orderworker/wechat"
	"github.com/wxcombine/orderworker/wechat/wechatsim"
)

func TestRunner_tradeTypes(t *testing.T) {
	t.Parallel()
	for _, f := range []wechat.Flavour{wechat.FlavourMerchant, wechat.FlavourIndividual} {
		t.Run(string(f), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, f, wechatsim.FaultConfig{})
			e.startWorker(workerOpts{})
			var types []wechat.TradeType
			for _, tt := range wechat.TradeTypes {
				if wechat.Validate(f, tt, ptr(newRequest(tt, testMchID, "PCHECK01", 2))) == nil {
					types = append(types, tt)
				}
			}
			for i, tt := range types {
				e.publishJob(newJob(tt, orderNo("T"+string(tt[0]), i)))
			}
			o := e.waitFor(20*time.Second, "one prepay.created per trade type", func(o outcomes) bool { return len(o.created) == len(types) })
			for i, tt := range types {
				no := orderNo("T"+string(tt[0]), i)
				evs := o.created[no]
				if len(evs) != 1 {
					t.Fatalf("%s: %d prepay.created events, want 1", tt, len(evs))
				}
				ev := evs[0]
				info, _ := e.sim.Order(testMchID, no)
				if info.Answer == nil || ev.PrepayID != info.Answer.PrepayID || ev.H5URL != info.Answer.H5URL || ev.CodeURL != info.Answer.CodeURL {
					t.Errorf("%s: event %+v, want the simulator's answer %+v", tt, ev, info.Answer)
				}
				if info.CreateCalls != 1 {
					t.Errorf("%s: create calls = %d, want 1", tt, info.CreateCalls)
				}
				verifyPayParams(t, e.merchant.PrivateKey.Public(), testAppID, testMchID, ev)
			}
			if len(o.failed) != 0 || len(o.deadLetters) != 0 {
				t.Errorf("failures %v, dead letters %v, want none", o.failed, o.deadLetters)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestRunner_duplicates(t *testing.T) {
	t.Parallel()
	e := newEnv(t, wechat.FlavourMerchant, wechatsim.FaultConfig{Latency: 50 * time.Millisecond})
	// Every event publish, duplicates included, as core NATS sees it.
	var mu sync.Mutex
	published := map[string][][]byte{}
	sub, err := e.nc.Subscribe(events.SubjectPrepayCreated, func(m *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		id := m.Header.Get(events.HeaderMsgID)
		published[id] = append(published[id], m.Data)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	for range 3 {
		e.startWorker(workerOpts{})
	}
	const orders = 8
	for i := range orders {
		job := newJob(wechat.TradeTypeJSAPI, orderNo("D", i))
		data := mustJSON(t, job)
		subject := (events.Subjects{}).Job(job.TradeType)
		// Twice with the producer's Nats-Msg-Id (JetStream drops the
		// second), three times without one (the store must dedupe).
		e.publish(subject, data, job.MsgID())
		e.publish(subject, data, job.MsgID())
		for range 3 {
			e.publish(subject, data, "")
		}
	}
	o := e.waitFor(30*time.Second, "every order created", func(o outcomes) bool { return len(o.created) == orders })
	// Let the duplicates settle: the jobs stream must drain.
	deadline := time.Now().Add(20 * time.Second)
	for {
		s, _ := e.js.Stream(t.Context(), events.StreamJobs)
		info, err := s.Info(t.Context())
		if err == nil && info.State.Msgs == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("jobs stream still holds %d jobs", info.State.Msgs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	o = e.read()
	for i := range orders {
		no := orderNo("D", i)
		if n := e.createCalls(no); n != 1 {
			t.Errorf("%s: create calls = %d, want 1", no, n)
		}
		if n := len(o.created[no]); n != 1 {
			t.Errorf("%s: %d prepay.created events stored, want 1", no, n)
		}
		mu.Lock()
		payloads := published[events.PrepayCreatedMsgID(testMchID, no)]
		mu.Unlock()
		for _, p := range payloads[1:] {
			if !bytes.Equal(p, payloads[0]) {
				t.Errorf("%s: republished event differs:\n%s\n%s", no, payloads[0], p)
			}
		}
	}
	if len(o.failed) != 0 || len(o.deadLetters) != 0 {
		t.Errorf("failures %v, dead letters %d, want none", o.failed, len(o.deadLetters))
	}
}

func TestRunner_transientFaults(t *testing.T) {
	t.Parallel()
	e := newEnv(t, wechat.FlavourMerchant, wechatsim.FaultConfig{
		SystemErrorRate: 0.1, BankErrorRate: 0.08, FrequencyLimitedRate: 0.06, TimeoutAfterCreateRate: 0.06,
	})
	e.startWorker(workerOpts{})
	e.startWorker(workerOpts{})
	const orders = 20
	for i := range orders {
		e.publishJob(newJob(wechat.TradeTypeApp, orderNo("F", i)))
	}
	o := e.waitFor(60*time.Second, "every order created despite faults", func(o outcomes) bool { return len(o.created) == orders })
	retried := 0
	for i := range orders {
		no := orderNo("F", i)
		info, _ := e.sim.Order(testMchID, no)
		if info.DistinctSuccesses() > 1 {
			t.Errorf("%s: %d distinct prepay_ids answered, want 1: %v", no, info.DistinctSuccesses(), info.Outcomes)
		}
		if ev := o.created[no]; len(ev) != 1 || info.Answer == nil || ev[0].PrepayID != info.Answer.PrepayID {
			t.Errorf("%s: events %+v, want one with the simulator's prepay_id %+v", no, ev, info.Answer)
		}
		if info.CreateCalls > 1 {
			retried++
		}
	}
	st := e.sim.Stats()
	if st.ConflictingCreates != 0 {
		t.Errorf("conflicting creates = %d, want 0", st.ConflictingCreates)
	}
	if retried == 0 || len(st.Faults) == 0 {
		t.Errorf("no order was retried (faults %v): the test injected nothing", st.Faults)
	}
	if len(o.failed) != 0 || len(o.deadLetters) != 0 {
		t.Errorf("failures %v, dead letters %d, want none", o.failed, len(o.deadLetters))
	}
	t.Logf("faults injected: %v; orders retried: %d of %d", st.Faults, retried, orders)
}

// TestRunner_configurationError: an error an operator fixes
// (APPID_MCHID_NOT_MATCH) dead-letters the job without locking the order,
// so the same job sent again calls WeChat Pay again.
func TestRunner_configurationError(t *testing.T) {
	t.Parallel()
	e := newEnv(t, wechat.FlavourMerchant, wechatsim.FaultConfig{})
	e.startWorker(workerOpts{})
	job := newJob(wechat.TradeTypeNative, "PERM0001")
	job.Request.CombineAppID = "wx00000000unbound0" // not bound to the merchant: APPID_MCHID_NOT_MATCH
	e.publishJob(job)
	o := e.waitFor(15*time.Second, "a failure and a dead letter", func(o outcomes) bool { return len(o.failed) == 1 && len(o.deadLetters) == 1 })
	f := o.failed["PERM0001"][0]
	if f.Code != "APPID_MCHID_NOT_MATCH" || f.Attempts != 1 || f.HTTPStatus != 400 || f.RetryWithNewOrderNumber || f.Final {
		t.Errorf("failure = %+v, want APPID_MCHID_NOT_MATCH after 1 attempt, not final", f)
	}
	if dl := o.deadLetters[0]; dl.Reason != events.ReasonConfiguration || dl.CombineOutTradeNo != "PERM0001" {
		t.Errorf("dead letter = %+v, want reason configuration", dl)
	}
	// The replay (here: the same job under another Nats-Msg-Id) is not
	// answered from a stored failure: WeChat Pay is called again.
	e.publish((events.Subjects{}).Job(job.TradeType), mustJSON(t, job), "replay-PERM0001")
	e.waitFor(15*time.Second, "the replay's failure", func(o outcomes) bool { return len(o.failed["PERM0001"]) == 2 })
	if n := e.createCalls("PERM0001"); n != 2 {
		t.Errorf("create calls = %d, want 2: the replay must reach WeChat Pay", n)
	}
}

func TestRunner_deliveryLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, wechat.FlavourMerchant, wechatsim.FaultConfig{SystemErrorRate: 1})
	e.startWorker(workerOpts{maxDeliver: 2})
	e.publishJob(newJob(wechat.TradeTypeH5, "LIMIT001"))
	o := e.waitFor(20*time.Second, "a RETRIES_EXHAUSTED failure", func(o outcomes) bool { return len(o.failed) == 1 && len(o.deadLetters) == 1 })
	if f := o.failed["LIMIT001"][0]; f.Code != events.CodeRetriesExhausted {
		t.Errorf("failure code = %s, want %s", f.Code, events.CodeRetriesExhausted)
	}
	if n := e.createCalls("LIMIT001"); n < 2 || n > 8 {
		t.Errorf("create calls = %d, want 1 to 4 in each of the 2 deliveries", n)
	}
	if dl := o.deadLetters[0]; dl.Reason != events.ReasonMaxDeliveries || dl.DeliveryCount != 2 {
		t.Errorf("dead letter = %+v, want reason max_deliveries after 2 deliveries", dl)
	}
}

// TestRunner_redisOutage: an outage of the store far longer than the whole
// redelivery schedule (here two deliveries, 100 ms apart) costs time, not
// orders: jobs are held, not handed back, and no WeChat Pay call is made
// without a claim.
func TestRunner_redisOutage(t *testing.T) {
	t.Parallel()
	e := newEnv(t, wechat.FlavourMerchant, wechatsim.FaultConfig{})
	e.startWorker(workerOpts{maxDeliver: 2})
	e.publishJob(newJob(wechat.TradeTypeJSAPI, orderNo("R", 0)))
	e.waitFor(15*time.Second, "the first order", func(o outcomes) bool { return len(o.created) == 1 })
	e.redis.Stop()
	const orders = 6
	for i := 1; i <= orders; i++ {
		e.publishJob(newJob(wechat.TradeTypeJSAPI, orderNo("R", i)))
	}
	// The worker takes jobs, finds the store down and holds them: wait
	// until it does, and for a while longer than the whole redelivery
	// schedule (100 ms + 300 ms).
	cons, err := e.js.Consumer(t.Context(), events.StreamJobs, pipeline.ConsumerDefault)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		info, err := cons.Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if info.NumAckPending > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the worker took no job while the store was down")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	for i := 1; i <= orders; i++ {
		if n := e.createCalls(orderNo("R", i)); n != 0 {
			t.Errorf("%s: %d create calls while the store was down, want 0", orderNo("R", i), n)
		}
	}
	if info, err := cons.Info(t.Context()); err != nil || info.NumRedelivered != 0 {
		t.Errorf("consumer info %+v, %v: want no redelivery spent while the store was down", info, err)
	}
	e.redis.Start()
	o := e.waitFor(30*time.Second, "every order after Redis returned", func(o outcomes) bool { return len(o.created) == orders+1 })
	for i := 1; i <= orders; i++ {
		if n := e.createCalls(orderNo("R", i)); n != 1 {
			t.Errorf("%s: create calls = %d, want 1", orderNo("R", i), n)
		}
	}
	if len(o.failed) != 0 || len(o.deadLetters) != 0 {
		t.Errorf("failures %v, dead letters %d, want none", o.failed, len(o.deadLetters))
	}
}

func TestRunner_poisonJobs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, wechat.FlavourMerchant, wechatsim.FaultConfig{})
	e.startWorker(workerOpts{})
	subject := (events.Subjects{}).Job(wechat.TradeTypeJSAPI)
	wrongVersion := newJob(wechat.TradeTypeJSAPI, "POISON02")
	wrongVersion.Version = 9
	tooMany := newJob(wechat.TradeTypeJSAPI, "POISON03")
	tooMany.Request = newRequest(wechat.TradeTypeJSAPI, testMchID, "POISON03", 51)
	big := newJob(wechat.TradeTypeJSAPI, "POISON04")
	big.Request.SubOrders[0].Detail = strings.Repeat("x", events.MaxJobSize+pipeline.JobHeaderRoom)
	e.publish(subject, []byte(`{"version":1,"trade_type":"jsapi","request":{`), "poison-1")
	e.publish(subject, mustJSON(t, wrongVersion), wrongVersion.MsgID())
	e.publish(subject, mustJSON(t, tooMany), tooMany.MsgID())
	// A job larger than the worker accepts is refused at publish time: the
	// producer learns at once, and no job is stranded in the queue.
	if _, err := e.js.Publish(t.Context(), subject, mustJSON(t, big)); err == nil || !strings.Contains(err.Error(), "maximum allowed") {
		t.Errorf("publishing a %d-byte job: %v, want the stream's size limit", len(mustJSON(t, big)), err)
	}
	e.publishJob(newJob(wechat.TradeTypeJSAPI, "GOOD0001"))
	o := e.waitFor(20*time.Second, "three dead letters and the good order", func(o outcomes) bool {
		return len(o.deadLetters) == 3 && len(o.created) == 1
	})
	reasons := map[events.Reason]events.DeadLetter{}
	for _, dl := range o.deadLetters {
		reasons[dl.Reason] = dl
	}
	for _, r := range []events.Reason{events.ReasonMalformed, events.ReasonUnsupportedVersion, events.ReasonInvalid} {
		if _, ok := reasons[r]; !ok {
			t.Errorf("no dead letter with reason %s; got %v", r, reasons)
		}
	}
	if dl := reasons[events.ReasonMalformed]; string(dl.OriginalData) != `{"version":1,"trade_type":"jsapi","request":{` || dl.OriginalHeaders[events.HeaderMsgID][0] != "poison-1" {
		t.Errorf("malformed dead letter = %+v, want the original body and headers", dl)
	}
	for no, code := range map[string]string{"POISON02": events.CodeUnsupportedVersion, "POISON03": events.CodeInvalidJob} {
		if f := o.failed[no]; len(f) != 1 || f[0].Code != code {
			t.Errorf("%s: failures %+v, want one %s", no, f, code)
		}
	}
	for _, no := range []string{"POISON02", "POISON03", "POISON04"} {
		if n := e.createCalls(no); n != 0 {
			t.Errorf("%s: create calls = %d, want 0", no, n)
		}
	}
}

// exhaust delivers the job stored under no through the worker's durable
// consumer without processing it, naking it until JetStream's delivery
// limit: a worker that died on every delivery, its last one included.
func (e *env) exhaust(maxDeliver int) {
	e.t.Helper()
	cons, err := e.js.Consumer(e.t.Context(), events.StreamJobs, pipeline.ConsumerDefault)
	if err != nil {
		e.t.Fatal(err)
	}
	for n := 0; n < maxDeliver; {
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			e.t.Fatal(err)
		}
		for m := range batch.Messages() {
			_ = m.Nak()
			n++
		}
	}
}

// TestRunner_deliveryLimitAdvisory: a job whose deliveries all died without
// an outcome, while no worker ran, is settled from the captured
// MAX_DELIVERIES advisory when a worker starts: WeChat Pay has no such
// order, so the failure says the same job may be sent again; the job
// leaves the work queue.
func TestRunner_deliveryLimitAdvisory(t *testing.T) {
	t.Parallel()
	e := newEnv(t, wechat.FlavourMerchant, wechatsim.FaultConfig{})
	e.startWorker(workerOpts{maxDeliver: 2})()
	e.publishJob(newJob(wechat.TradeTypeNative, "ADVIS001"))
	e.exhaust(2)
	e.startWorker(workerOpts{maxDeliver: 2})
	o := e.waitFor(20*time.Second, "a dead letter from the advisory", func(o outcomes) bool { return len(o.deadLetters) == 1 })
	dl := o.deadLetters[0]
	if dl.Reason != events.ReasonMaxDeliveries || dl.CombineOutTradeNo != "ADVIS001" {
		t.Errorf("dead letter = %+v, want max_deliveries of ADVIS001", dl)
	}
	if f := o.failed["ADVIS001"]; len(f) != 1 || f[0].Code != events.CodeOrderNotCreated || f[0].Final {
		t.Errorf("failures = %+v, want one ORDER_NOT_CREATED, not final", f)
	}
	e.waitJobsEmpty()
}

// TestRunner_deliveryLimitSettled: a worker died after publishing an
// order's prepay and before the ack, on the last delivery. Settling it
// publishes the stored outcome again (a JetStream duplicate), never a
// failure.
func TestRunner_deliveryLimitSettled(t *testing.T) {
	t.Parallel()
	e := newEnv(t, wechat.FlavourMerchant, wechatsim.FaultConfig{})
	stop := e.startWorker(workerOpts{maxDeliver: 2})
	job := newJob(wechat.TradeTypeJSAPI, "SETTLED1")
	e.publishJob(job)
	e.waitFor(15*time.Second, "the prepay", func(o outcomes) bool { return len(o.created) == 1 })
	stop()
	e.publish((events.Subjects{}).Job(job.TradeType), mustJSON(t, job), "redelivered-SETTLED1")
	e.exhaust(2)
	e.startWorker(workerOpts{maxDeliver: 2})
	e.waitJobsEmpty()
	o := e.read()
	if len(o.failed) != 0 || len(o.deadLetters) != 0 || len(o.created["SETTLED1"]) != 1 {
		t.Errorf("created %d, failed %v, dead letters %d: want the one prepay and nothing else", len(o.created["SETTLED1"]), o.failed, len(o.deadLetters))
	}
	if n := e.createCalls("SETTLED1"); n != 1 {
		t.Errorf("create calls = %d, want 1", n)
	}
}

// TestRunner_deliveryLimitSweep: the advisory was lost too (here: purged);
// the sweep at start finds the job pinned below the consumer's ack floor.
func TestRunner_deliveryLimitSweep(t *testing.T) {
	t.Parallel()
	e := newEnv(t, wechat.FlavourMerchant, wechatsim.FaultConfig{})
	e.startWorker(workerOpts{maxDeliver: 2})()
	e.publishJob(newJob(wechat.TradeTypeNative, "SWEEP001"))
	e.exhaust(2)
	e.publishJob(newJob(wechat.TradeTypeNative, "SWEEP002")) // acked above the stuck one
	s, err := e.js.Stream(t.Context(), pipeline.AdvisoryStream(events.StreamJobs))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(t.Context()); err != nil {
		t.Fatal(err)
	}
	e.startWorker(workerOpts{maxDeliver: 2, sweepMinAge: time.Millisecond})
	o := e.waitFor(20*time.Second, "both orders settled", func(o outcomes) bool {
		return len(o.failed["SWEEP001"]) == 1 && len(o.created["SWEEP002"]) == 1
	})
	if f := o.failed["SWEEP001"][0]; f.Code != events.CodeOrderNotCreated {
		t.Errorf("SWEEP001 failure = %+v, want ORDER_NOT_CREATED", f)
	}
	e.waitJobsEmpty()
}

// TestRunner_keptBelowAckFloor: the jobs stream still holds a job below
// the consumer's ack floor, so the consumer will never deliver it (a
// replicated consumer can lose a job so; here the consumer is reset past
// it). The sweep queues it again, and it is created like any other job,
// once.
func TestRunner_keptBelowAckFloor(t *testing.T) {
	t.Parallel()
	e := newEnv(t, wechat.FlavourMerchant, wechatsim.FaultConfig{})
	e.startWorker(workerOpts{})()
	e.publishJob(newJob(wechat.TradeTypeNative, "KEPT0001"))
	s, err := e.js.Stream(t.Context(), events.StreamJobs)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	kept := info.State.LastSeq
	e.resetConsumer(kept + 1)
	cons, err := s.Consumer(t.Context(), pipeline.ConsumerDefault)
	if err != nil {
		t.Fatal(err)
	}
	ci, err := cons.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if ci.AckFloor.Stream < kept || ci.NumPending != 0 {
		t.Fatalf("after the reset: ack floor %d, pending %d; want the job at %d below the floor, nothing pending", ci.AckFloor.Stream, ci.NumPending, kept)
	}
	reg := prometheus.NewRegistry()
	e.startWorker(workerOpts{sweepMinAge: time.Millisecond, metrics: metrics.NewWorker(reg)})
	o := e.waitFor(20*time.Second, "the kept job's prepay", func(o outcomes) bool { return len(o.created["KEPT0001"]) == 1 })
	if len(o.failed) != 0 || len(o.deadLetters) != 0 {
		t.Errorf("failures %v, dead letters %d: want the prepay alone", o.failed, len(o.deadLetters))
	}
	e.waitJobsEmpty()
	if n := e.createCalls("KEPT0001"); n != 1 {
		t.Errorf("create calls = %d, want 1", n)
	}
	const swept = `
# HELP orderworker_pipeline_swept_jobs_total Jobs the worker took out of the jobs stream itself, by action: settled_at_limit (deliveries used up) or requeued_kept (kept below the consumer's ack floor, published again).
# TYPE orderworker_pipeline_swept_jobs_total counter
orderworker_pipeline_swept_jobs_total{action="requeued_kept"} 1
orderworker_pipeline_swept_jobs_total{action="settled_at_limit"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(swept), "orderworker_pipeline_swept_jobs_total"); err != nil {
		t.Error(err)
	}
}

// resetConsumer moves the jobs consumer's next delivery to seq, and its ack
// floor to seq-1, through JetStream's consumer reset API.
func (e *env) resetConsumer(seq uint64) {
	e.t.Helper()
	req := fmt.Sprintf(`{"seq":%d}`, seq)
	m, err := e.js.Conn().Request("$JS.API.CONSUMER.RESET."+events.StreamJobs+"."+pipeline.ConsumerDefault, []byte(req), 5*time.Second)
	if err != nil {
		e.t.Fatal(err)
	}
	var resp struct {
		Error *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil || resp.Error != nil {
		e.t.Fatalf("consumer reset: %s (%v)", m.Data, err)
	}
}

func (e *env) waitJobsEmpty() {
	e.t.Helper()
	s, err := e.js.Stream(e.t.Context(), events.StreamJobs)
	if err != nil {
		e.t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		info, err := s.Info(e.t.Context())
		if err != nil {
			e.t.Fatal(err)
		}
		if info.State.Msgs == 0 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("jobs stream holds %d jobs, want every job settled and removed", info.State.Msgs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
