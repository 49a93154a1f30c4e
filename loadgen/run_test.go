package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/internal/testenv"
	"github.com/wxcombine/orderworker/wechat"
)

// fakeWorker plays the pipeline on the wire: it consumes jobs and publishes
// an outcome (and a dead letter for a bad job), with deterministic message
// ids, as the real worker does. Its faults break the promises loadgen checks.
type fakeWorker struct {
	js jetstream.JetStream
	s  events.Subjects
	// dropEvery drops the outcome of every n-th distinct order; 0 drops none.
	dropEvery int
	// freshPrepay answers a new prepay_id on every delivery, as a worker
	// without an idempotency store would.
	freshPrepay bool

	mu       sync.Mutex
	seen     map[string]int // order → deliveries
	creates  map[OrderKey]int
	payments atomic.Int64
}

func setupStreams(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	s := events.Subjects{}
	for _, cfg := range []jetstream.StreamConfig{
		{Name: events.StreamJobs, Subjects: []string{s.Jobs()}, Retention: jetstream.WorkQueuePolicy, Duplicates: time.Minute},
		{Name: events.StreamEvents, Subjects: s.Events(), Duplicates: time.Minute},
		{Name: events.StreamDeadLetters, Subjects: []string{s.DeadLetters()}, Duplicates: time.Minute},
	} {
		if _, err := js.CreateOrUpdateStream(t.Context(), cfg); err != nil {
			t.Fatalf("create stream %s: %v", cfg.Name, err)
		}
	}
}

func (w *fakeWorker) start(t *testing.T) {
	t.Helper()
	w.seen, w.creates = map[string]int{}, map[OrderKey]int{}
	cons, err := w.js.CreateOrUpdateConsumer(t.Context(), events.StreamJobs, jetstream.ConsumerConfig{Durable: "fake", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatalf("consumer: %v", err)
	}
	cc, err := cons.Consume(w.handle)
	if err != nil {
		t.Fatalf("consume: %v", err)
	}
	t.Cleanup(cc.Stop)
}

func (w *fakeWorker) publish(subject, id string, v any) {
	data, _ := json.Marshal(v)
	m := nats.NewMsg(subject)
	m.Data = data
	m.Header.Set(events.HeaderMsgID, id)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = w.js.PublishMsg(ctx, m)
}

func (w *fakeWorker) handle(msg jetstream.Msg) {
	defer func() { _ = msg.Ack() }()
	job, err := events.DecodeJob(msg.Data(), 0)
	key := OrderKey{job.Request.CombineMchID, job.Request.CombineOutTradeNo}
	fail := func(code string, reason events.Reason) {
		w.publish(w.s.PrepayFailed(), events.PrepayFailedMsgID(key.MchID, key.OutTradeNo), events.PrepayFailed{
			Version: events.Version, CombineMchID: key.MchID, CombineOutTradeNo: key.OutTradeNo, Code: code,
		})
		md, _ := msg.Metadata()
		w.publish(w.s.DeadLetter(reason), events.DeadLetterMsgID(events.StreamJobs, md.Sequence.Stream), events.DeadLetter{
			Version: events.Version, Reason: reason, CombineMchID: key.MchID, CombineOutTradeNo: key.OutTradeNo,
			OriginalSubject: msg.Subject(), OriginalData: msg.Data(),
		})
	}
	if err != nil {
		fail(events.CodeOf(err), events.ReasonOf(err))
		return
	}
	if err := wechat.Validate(wechat.FlavourMerchant, job.TradeType, &job.Request); err != nil {
		fail(events.CodeInvalidJob, events.ReasonInvalid)
		return
	}
	w.mu.Lock()
	w.seen[key.String()]++
	n := w.seen[key.String()]
	w.creates[key]++
	distinct := len(w.seen)
	w.mu.Unlock()
	if w.dropEvery > 0 && distinct%w.dropEvery == 0 && n == 1 {
		return
	}
	prepay := "wx" + key.OutTradeNo
	id := events.PrepayCreatedMsgID(key.MchID, key.OutTradeNo)
	if w.freshPrepay {
		prepay = fmt.Sprintf("%s-%d", prepay, n)
		id = fmt.Sprintf("%s-%d", id, n)
	}
	w.publish(w.s.PrepayCreated(), id, events.PrepayCreated{
		Version: events.Version, TradeType: job.TradeType, CombineMchID: key.MchID, CombineOutTradeNo: key.OutTradeNo,
		PrepayID: prepay, Attempts: 1, CreatedAt: time.Now(),
	})
}

// pay plays the simulator and the notifier: one payment event per order.
func (w *fakeWorker) pay(_ context.Context, key OrderKey) error {
	w.payments.Add(1)
	id := "EV-" + key.MchID + "-" + key.OutTradeNo
	w.publish(w.s.PaymentSucceeded(), events.PaymentSucceededMsgID(key.MchID, key.OutTradeNo), events.PaymentSucceeded{
		Version: events.Version, NotificationID: id, CombineMchID: key.MchID, CombineOutTradeNo: key.OutTradeNo, CombineTransactionID: "T" + key.OutTradeNo,
	})
	return nil
}

func (w *fakeWorker) createCounts(_ context.Context, keys []OrderKey) (map[OrderKey]int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[OrderKey]int{}
	for _, k := range keys {
		if n := w.creates[k]; n > 0 {
			out[k] = n
		}
	}
	return out, nil
}

func startFake(t *testing.T, w *fakeWorker) *nats.Conn {
	t.Helper()
	js := testenv.StartNATS(t).JetStream(t)
	setupStreams(t, js)
	w.js = js
	w.start(t)
	return js.Conn()
}

func TestRun_HealthyPipeline(t *testing.T) {
	w := &fakeWorker{}
	nc := startFake(t, w)
	var progress atomic.Int64
	rep, err := Run(t.Context(), nc, Config{
		Merchants:          []Merchant{{MchID: "1900000109", AppID: "wxd678efh567hg6787"}},
		Orders:             300,
		DuplicateShare:     0.3,
		LateDuplicateShare: 0.5,
		InvalidShare:       0.05,
		MalformedShare:     0.05,
		PayShare:           0.2,
		PayFunc:            w.pay,
		CreateCountsFunc:   w.createCounts,
		Seed:               7,
		Wait:               20 * time.Second,
		Linger:             100 * time.Millisecond,
		ProgressFunc:       func(Progress) { progress.Add(1) },
		ProgressInterval:   time.Millisecond,
	})
	if err != nil {
		t.Fatalf("Run() = %v", err)
	}
	if !rep.OK {
		t.Fatalf("Run() found %d violations: %+v", rep.ViolationTotal, rep.Violations)
	}
	p, o := rep.Published, rep.Outcomes
	if p.Orders != 300 || p.Duplicates == 0 || p.LateDuplicates == 0 || p.DroppedByJetStream == 0 {
		t.Errorf("published %+v, want 300 orders with early and late duplicates, some dropped", p)
	}
	if p.Messages != p.Orders+p.Duplicates {
		t.Errorf("%d messages, want %d orders + %d duplicates", p.Messages, p.Orders, p.Duplicates)
	}
	if o.Created != p.ByKind[KindValid] || o.Failed != p.ByKind[KindInvalid]+p.ByKind[KindMalformed] {
		t.Errorf("outcomes %+v for kinds %v", o, p.ByKind)
	}
	if o.Paid == 0 || int64(o.Paid) != w.payments.Load() || o.PaymentEvents < o.Paid {
		t.Errorf("paid %d, payment events %d, fake paid %d", o.Paid, o.PaymentEvents, w.payments.Load())
	}
	if rep.Sim == nil || rep.Sim.Orders != o.Created {
		t.Errorf("simulator counts %+v, want %d orders", rep.Sim, o.Created)
	}
	if rep.Latency.Count != p.Orders || rep.Throughput <= 0 {
		t.Errorf("latency %+v, throughput %v", rep.Latency, rep.Throughput)
	}
	if progress.Load() == 0 {
		t.Error("ProgressFunc never called")
	}
}

func TestRun_FlagsABrokenPipeline(t *testing.T) {
	w := &fakeWorker{dropEvery: 25, freshPrepay: true}
	nc := startFake(t, w)
	rep, err := Run(t.Context(), nc, Config{
		Merchants:          []Merchant{{MchID: "1900000109", AppID: "wxd678efh567hg6787"}},
		Orders:             100,
		DuplicateShare:     0.5,
		LateDuplicateShare: 1,
		CreateCountsFunc:   w.createCounts,
		MaxCreatesPerOrder: 1,
		Seed:               3,
		Wait:               2 * time.Second,
	})
	if err != nil {
		t.Fatalf("Run() = %v", err)
	}
	if rep.OK {
		t.Fatal("Run() reported OK for a pipeline that drops outcomes and answers fresh prepay_ids")
	}
	for _, kind := range []string{ViolationMissingOutcome, ViolationConflictingPrepay, ViolationSimTooManyCreates} {
		if rep.ViolationCounts[kind] == 0 {
			t.Errorf("no %s violation; counts %v", kind, rep.ViolationCounts)
		}
	}
}

func TestRun_NoStreams(t *testing.T) {
	srv := testenv.StartNATS(t)
	nc, err := nats.Connect(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	_, err = Run(t.Context(), nc, Config{
		Merchants:  []Merchant{{MchID: "1900000109", AppID: "wx1"}},
		StreamWait: 300 * time.Millisecond,
	})
	if err == nil || !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("Run() without streams = %v, want ErrStreamNotFound", err)
	}
}

func TestRun_DurationAndRate(t *testing.T) {
	w := &fakeWorker{}
	nc := startFake(t, w)
	start := time.Now()
	rep, err := Run(t.Context(), nc, Config{
		Merchants: []Merchant{{MchID: "1900000109", AppID: "wxd678efh567hg6787"}},
		Duration:  500 * time.Millisecond,
		Rate:      100,
		Linger:    50 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("Run() = %v", err)
	}
	// 100/s for 0.5s: about 50 orders, paced, not a burst.
	if n := rep.Published.Orders; n < 30 || n > 55 {
		t.Errorf("published %d orders in 500ms at 100/s, want about 50", n)
	}
	if rep.PublishSeconds < 0.3 {
		t.Errorf("publishing took %.2fs, want it paced over about 0.5s", rep.PublishSeconds)
	}
	if !rep.OK || time.Since(start) > 10*time.Second {
		t.Errorf("OK %v after %s; violations %+v", rep.OK, time.Since(start), rep.Violations)
	}
}

func TestRun_ContextEnds(t *testing.T) {
	w := &fakeWorker{dropEvery: 1} // never answers
	nc := startFake(t, w)
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	rep, err := Run(ctx, nc, Config{
		Merchants: []Merchant{{MchID: "1900000109", AppID: "wxd678efh567hg6787"}},
		Orders:    20,
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run() = %v, want the context's error", err)
	}
	if rep == nil || rep.Published.Orders != 20 || rep.ViolationCounts[ViolationMissingOutcome] != 20 {
		t.Errorf("report after cancel: %+v", rep)
	}
}
