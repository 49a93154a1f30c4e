package pipeline_test

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/idempotency"
	"github.com/wxcombine/orderworker/internal/testenv"
	"github.com/wxcombine/orderworker/metrics"
	"github.com/wxcombine/orderworker/pipeline"
	"github.com/wxcombine/orderworker/wechat"
	"github.com/wxcombine/orderworker/wechat/wechatsim"
)

// env is one integration test's world: a real NATS, a real Redis, the
// simulator, and a WeChat client trusting it.
type env struct {
	t        *testing.T
	nats     *testenv.NATS
	redis    *testenv.Redis
	sim      *wechatsim.Server
	client   *wechat.Client
	merchant *wechat.Merchant
	flavour  wechat.Flavour
	nc       *nats.Conn
	js       jetstream.JetStream
	base     string // the simulator's URL
}

var (
	platformOnce sync.Once
	platform     *wechatsim.Platform
)

func testPlatform(t *testing.T) *wechatsim.Platform {
	platformOnce.Do(func() {
		p, err := wechatsim.GeneratePlatform(wechatsim.KeyBitsDefault)
		if err != nil {
			panic(err)
		}
		platform = p
	})
	return platform
}

func newEnv(t *testing.T, flavour wechat.Flavour, faults wechatsim.FaultConfig, simOpts ...func(*wechatsim.Config)) *env {
	t.Helper()
	e := &env{t: t, flavour: flavour, nats: testenv.StartNATS(t), redis: testenv.StartRedis(t)}
	p := testPlatform(t)
	mc, m, err := wechatsim.GenerateMerchant(p, testMchID, testAppID)
	if err != nil {
		t.Fatal(err)
	}
	e.merchant = m
	simCfg := wechatsim.Config{Flavour: flavour, Merchants: []wechatsim.MerchantConfig{mc}, Platform: p, Faults: faults, Seed: 42}
	for _, o := range simOpts {
		o(&simCfg)
	}
	e.sim, err = wechatsim.New(simCfg)
	if err != nil {
		t.Fatal(err)
	}
	base, err := e.sim.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.sim.Close)
	e.base = base
	e.client, err = wechat.New(wechat.Config{BaseURL: base, Merchants: []*wechat.Merchant{m}, Flavour: flavour, NowFunc: simCfg.NowFunc})
	if err != nil {
		t.Fatal(err)
	}
	e.nc, err = nats.Connect(e.nats.URL, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.nc.Close)
	e.js, err = jetstream.New(e.nc)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// worker starts a runner with its own connections and answers a stop
// function that waits for it.
type workerOpts struct {
	maxDeliver int
	inFlight   int
	// payer replaces the client (to inject faults around the real calls).
	payer pipeline.Payer
	// sweepMinAge, if set, is the age past which the sweep settles a job
	// stuck below the ack floor.
	sweepMinAge time.Duration
	// reconcile, if set, runs a Reconciler beside the runner (its
	// JetStream, Payer, Publisher and Seen are filled in) and makes the
	// processor publish reconcile checks; the Seen record is Redis.
	reconcile *pipeline.ReconcileConfig
	// now is the workers' clock. Defaults to time.Now.
	now func() time.Time
	// duplicateWindow is the streams' duplicate window. Defaults to 1m.
	duplicateWindow time.Duration
	// notifyURLBase is the processor's NotifyURLBase.
	notifyURLBase string
	// logger receives the processor's records; none if nil.
	logger *slog.Logger
	// outcomeTTL is how long an outcome record lasts. Defaults to the
	// processor's default (24h).
	outcomeTTL time.Duration
	// metrics receives the runner's records; none if nil.
	metrics *metrics.Worker
}

func (e *env) startWorker(o workerOpts) (stop func()) {
	t := e.t
	t.Helper()
	// Budgets hold on a loaded 2-core machine: what the tests assert are
	// invariants (one outcome, one prepay_id, no create without a claim),
	// never how fast they are reached.
	rc, err := idempotency.NewRedisClient(idempotency.RedisClientConfig{Addrs: []string{e.redis.Addr}, DialTimeout: time.Second, ReadTimeout: 2 * time.Second, MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	store, err := idempotency.NewRedis(rc, idempotency.RedisConfig{})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(e.nats.URL)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	var seen idempotency.Seen
	if o.reconcile != nil {
		if seen, err = idempotency.NewRedisSeen(rc, ""); err != nil {
			t.Fatal(err)
		}
	}
	proc, err := pipeline.New(pipeline.Config{
		Reconcile: o.reconcile != nil && !o.reconcile.Disabled, Seen: seen, NowFunc: o.now, NotifyURLBase: o.notifyURLBase,
		Payer: cmp.Or[pipeline.Payer](o.payer, e.client), Signer: e.client, Store: store, Publisher: pipeline.JetStreamPublisher{JetStream: js}, Flavour: e.flavour,
		CallTimeout: 2 * time.Second, Lease: 8 * time.Second,
		Retry:      pipeline.RetryPolicy{InitialInterval: 10 * time.Millisecond, MaxInterval: 50 * time.Millisecond, MaxElapsed: 2 * time.Second},
		Redelivery: []time.Duration{100 * time.Millisecond, 300 * time.Millisecond}, MaxDeliver: cmp.Or(o.maxDeliver, 30),
		StoreRetryDelay: 200 * time.Millisecond, Logger: o.logger, OutcomeTTL: o.outcomeTTL,
	})
	if err != nil {
		t.Fatal(err)
	}
	r, err := pipeline.NewRunner(pipeline.RunnerConfig{
		JetStream: js, Processor: proc, AckWait: 15 * time.Second, JobTimeout: 12 * time.Second, InFlight: max(o.inFlight, 4),
		ShutdownGrace: 3 * time.Second, DuplicateWindow: cmp.Or(o.duplicateWindow, time.Minute), SweepMinAge: o.sweepMinAge,
		Metrics: o.metrics,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Setup(t.Context()); err != nil { // streams exist before the test publishes
		t.Fatal(err)
	}
	var rec *pipeline.Reconciler
	if o.reconcile != nil {
		rc := *o.reconcile
		rc.JetStream, rc.Payer, rc.Publisher, rc.Seen = js, cmp.Or[pipeline.Payer](o.payer, e.client), pipeline.JetStreamPublisher{JetStream: js}, seen
		rc.NowFunc, rc.DuplicateWindow, rc.CallTimeout = o.now, cmp.Or(o.duplicateWindow, time.Minute), time.Second
		if rec, err = pipeline.NewReconciler(rc); err != nil {
			t.Fatal(err)
		}
		if err := rec.Setup(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- r.Run(ctx) }() // Owned by the test: ends on stop.
	runs := 1
	if rec != nil {
		runs++
		go func() { done <- rec.Run(ctx) }() // Owned by the test: ends on stop.
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			for range runs {
				select {
				case err := <-done:
					if err != nil {
						t.Errorf("Run() = %v", err)
					}
				case <-time.After(10 * time.Second):
					t.Error("Run() did not return within 10s of cancel")
				}
			}
			nc.Close()
			_ = rc.Close()
		})
	}
	t.Cleanup(stop)
	return stop
}

// publish publishes a job body on the job subject of t with msgID (none if
// empty).
func (e *env) publish(subject string, data []byte, msgID string) {
	e.t.Helper()
	msg := nats.NewMsg(subject)
	msg.Data = data
	if msgID != "" {
		msg.Header.Set(events.HeaderMsgID, msgID)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := e.js.PublishMsg(ctx, msg); err != nil {
		e.t.Fatalf("publish: %v", err)
	}
}

func (e *env) publishJob(job events.CreateOrderJob) {
	e.t.Helper()
	e.publish((events.Subjects{}).Job(job.TradeType), mustJSON(e.t, job), job.MsgID())
}

// outcomes is what the events and dead-letter streams hold.
type outcomes struct {
	created     map[string][]events.PrepayCreated // by combine_out_trade_no
	failed      map[string][]events.PrepayFailed
	payments    map[string][]events.PaymentSucceeded
	closed      map[string][]events.OrderClosed
	closeFailed map[string][]events.CloseFailed
	deadLetters []events.DeadLetter
	// ids holds every stored event's Nats-Msg-Id by combine_out_trade_no.
	ids map[string][]string
}

func (e *env) read() outcomes {
	e.t.Helper()
	o := outcomes{created: map[string][]events.PrepayCreated{}, failed: map[string][]events.PrepayFailed{},
		payments: map[string][]events.PaymentSucceeded{}, ids: map[string][]string{},
		closed: map[string][]events.OrderClosed{}, closeFailed: map[string][]events.CloseFailed{}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Dead letters first: the worker publishes a job's event before its dead
	// letter, so a dead letter read here has its event read after it.
	for _, name := range []string{events.StreamDeadLetters, events.StreamEvents} {
		s, err := e.js.Stream(ctx, name)
		if err != nil {
			e.t.Fatalf("stream %s: %v", name, err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			e.t.Fatal(err)
		}
		for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
			m, err := s.GetMsg(ctx, seq)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				continue
			}
			if err != nil {
				e.t.Fatal(err)
			}
			switch m.Subject {
			case events.SubjectPrepayCreated:
				var v events.PrepayCreated
				mustUnmarshal(e.t, m.Data, &v)
				o.created[v.CombineOutTradeNo] = append(o.created[v.CombineOutTradeNo], v)
			case events.SubjectPrepayFailed:
				var v events.PrepayFailed
				mustUnmarshal(e.t, m.Data, &v)
				o.failed[v.CombineOutTradeNo] = append(o.failed[v.CombineOutTradeNo], v)
				o.ids[v.CombineOutTradeNo] = append(o.ids[v.CombineOutTradeNo], m.Header.Get(events.HeaderMsgID))
			case events.SubjectPaymentSucceeded:
				var v events.PaymentSucceeded
				mustUnmarshal(e.t, m.Data, &v)
				o.payments[v.CombineOutTradeNo] = append(o.payments[v.CombineOutTradeNo], v)
			case events.SubjectOrderClosed:
				var v events.OrderClosed
				mustUnmarshal(e.t, m.Data, &v)
				o.closed[v.CombineOutTradeNo] = append(o.closed[v.CombineOutTradeNo], v)
			case events.SubjectCloseFailed:
				var v events.CloseFailed
				mustUnmarshal(e.t, m.Data, &v)
				o.closeFailed[v.CombineOutTradeNo] = append(o.closeFailed[v.CombineOutTradeNo], v)
			default:
				var v events.DeadLetter
				mustUnmarshal(e.t, m.Data, &v)
				o.deadLetters = append(o.deadLetters, v)
			}
		}
	}
	return o
}

func mustUnmarshal(t *testing.T, data []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("unmarshal %s: %v", data, err)
	}
}

// waitFor polls until done answers true or the timeout passes.
func (e *env) waitFor(timeout time.Duration, what string, done func(o outcomes) bool) outcomes {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		o := e.read()
		if done(o) {
			return o
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out after %s waiting for %s; created %d, failed %d, dead letters %d", timeout, what, len(o.created), len(o.failed), len(o.deadLetters))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (e *env) createCalls(no string) int {
	info, ok := e.sim.Order(testMchID, no)
	if !ok {
		return 0
	}
	return info.CreateCalls
}

func orderNo(prefix string, i int) string { return fmt.Sprintf("%s%06d", prefix, i) }
