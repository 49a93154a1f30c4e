package k8s_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/idempotency"
	"github.com/wxcombine/orderworker/internal/testenv"
	"github.com/wxcombine/orderworker/pipeline"
	"github.com/wxcombine/orderworker/wechat"
)

// devNATS starts a real nats-server (embedded nats-server/v2) with the NATS
// configuration the dev overlay renders — its users and their permissions —
// on a free loopback port and a temporary store.
func devNATS(t *testing.T) string {
	t.Helper()
	b := render(t, "dev")
	cm := findConfigMap(b, "nats-config")
	if cm == nil || cm.Data["nats.conf"] == "" {
		t.Fatal("overlays/dev renders no nats-config ConfigMap with nats.conf")
	}
	conf := cm.Data["nats.conf"]
	if !strings.Contains(conf, "authorization") {
		t.Fatal("the dev NATS configuration has no authorization block: anyone on the bus may publish anything")
	}
	port := testenv.FreePort(t)
	conf = regexp.MustCompile(`(?m)^port: \d+$`).ReplaceAllString(conf, fmt.Sprintf("host: 127.0.0.1\nport: %d", port))
	conf = regexp.MustCompile(`(?m)^http_port: \d+$`).ReplaceAllString(conf, "")
	conf = regexp.MustCompile(`store_dir: \S+`).ReplaceAllString(conf, "store_dir: "+strconvQuote(t.TempDir()))
	path := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := natsserver.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("the dev overlay's nats.conf: %v", err)
	}
	opts.NoLog, opts.NoSigs = true, true
	srv, err := natsserver.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start() // Owned by the test: ends on Shutdown.
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server with the dev configuration not ready")
	}
	return fmt.Sprintf("nats://127.0.0.1:%d", port)
}

func strconvQuote(s string) string { return `"` + s + `"` }

// role is one NATS user of the dev configuration, connected with its seed
// and its own inbox prefix, recording the permission violations the server
// reports.
type role struct {
	name string
	nc   *nats.Conn
	js   jetstream.JetStream

	mu         sync.Mutex
	violations []string
}

func connectAs(t *testing.T, url, name string) *role {
	t.Helper()
	r := &role{name: name}
	seed, err := nats.NkeyOptionFromSeed(filepath.Join("overlays", "dev", "testkeys", "nats", name+".nk"))
	if err != nil {
		t.Fatal(err)
	}
	r.nc, err = nats.Connect(url, seed, nats.CustomInboxPrefix("_INBOX_"+name),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			r.mu.Lock()
			r.violations = append(r.violations, err.Error())
			r.mu.Unlock()
		}))
	if err != nil {
		t.Fatalf("connect as %s: %v", name, err)
	}
	t.Cleanup(r.nc.Close)
	r.js, _ = jetstream.New(r.nc, jetstream.WithDefaultTimeout(2*time.Second))
	return r
}

// violated waits for the server to report a permission violation naming
// subject.
func (r *role) violated(subject string) bool {
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		r.mu.Lock()
		for _, v := range r.violations {
			if strings.Contains(v, "Permissions Violation") && strings.Contains(v, `"`+subject+`"`) {
				r.mu.Unlock()
				return true
			}
		}
		r.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// mustNotPublish: a JetStream publish of subject by r fails, the server
// reports the violation, and nothing lands in stream.
func mustNotPublish(t *testing.T, r *role, admin jetstream.JetStream, subject, stream string) {
	t.Helper()
	before := msgs(t, admin, stream)
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	if _, err := r.js.Publish(ctx, subject, []byte(`{"version":1}`)); err == nil {
		t.Errorf("%s published %s and JetStream stored it", r.name, subject)
	}
	if !r.violated(subject) {
		t.Errorf("%s: no permission violation reported for publishing %s", r.name, subject)
	}
	if after := msgs(t, admin, stream); after != before {
		t.Errorf("%s's publish to %s: %s holds %d messages, before %d", r.name, subject, stream, after, before)
	}
}

func msgs(t *testing.T, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	s, err := js.Stream(t.Context(), stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// TestNATSPermissions runs every role of the dev overlay's NATS
// configuration against a real server: each can do its work, and a
// producer cannot publish payment or outcome events, the notifier cannot
// consume (or snoop) jobs.
func TestNATSPermissions(t *testing.T) {
	url := devNATS(t)
	ctx := t.Context()
	worker := connectAs(t, url, "worker")
	notifierR := connectAs(t, url, "notifier")
	producer := connectAs(t, url, "producer")
	dl := connectAs(t, url, "deadletter")
	reconciler := connectAs(t, url, "reconciler")
	subj := events.Subjects{}

	// The worker sets up its streams and consumer, its pause switch and a
	// KV idempotency store, as cmd/worker does.
	top := pipeline.Topology{
		Subjects: subj, Consumer: pipeline.ConsumerDefault, Replicas: 1, Storage: jetstream.FileStorage,
		JobsMaxAge: 24 * time.Hour, EventsMaxAge: 168 * time.Hour, DeadLettersMaxAge: 720 * time.Hour,
		DuplicateWindow: 10 * time.Minute, MaxJobBytes: events.MaxJobSize, AckWait: time.Minute, MaxDeliver: 10, MaxAckPending: 64,
	}
	cons, err := top.Ensure(ctx, worker.js, pipeline.StreamsCreate)
	if err != nil {
		t.Fatalf("worker: set up streams: %v", err)
	}
	pause, err := pipeline.NewPause(ctx, pipeline.PauseConfig{JetStream: worker.js})
	if err != nil {
		t.Fatalf("worker: pause switch: %v", err)
	}
	defer pause.Stop()
	kv, err := idempotency.NewKV(ctx, worker.js, idempotency.KVConfig{})
	if err != nil {
		t.Fatalf("worker: KV idempotency store: %v", err)
	}
	if _, err := kv.Claim(ctx, idempotency.Key{MchID: "1900000109", OutTradeNo: "P1"}, "fp", time.Minute); err != nil {
		t.Fatalf("worker: claim: %v", err)
	}
	advisory, err := worker.nc.SubscribeSync(pipeline.AdvisoryMaxDeliveries(events.StreamJobs, pipeline.ConsumerDefault))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = advisory.Unsubscribe() }()

	// A producer publishes jobs.
	if _, err := producer.js.Publish(ctx, subj.Job(wechat.TradeTypeNative), []byte(`{"job":1}`)); err != nil {
		t.Fatalf("producer: publish a job: %v", err)
	}
	if _, err := producer.js.Publish(ctx, subj.Job(wechat.TradeTypeJSAPI), []byte(`{"job":2}`)); err != nil {
		t.Fatalf("producer: publish a job: %v", err)
	}

	// The notifier can neither consume jobs nor read the worker's replies.
	if _, err := notifierR.js.Consumer(ctx, events.StreamJobs, pipeline.ConsumerDefault); err == nil {
		t.Error("notifier: looked up the jobs consumer")
	}
	if _, err := notifierR.js.CreateConsumer(ctx, events.StreamJobs, jetstream.ConsumerConfig{Durable: "thief", AckPolicy: jetstream.AckExplicitPolicy}); err == nil {
		t.Error("notifier: created a consumer on the jobs stream")
	}
	next := fmt.Sprintf("$JS.API.CONSUMER.MSG.NEXT.%s.%s", events.StreamJobs, pipeline.ConsumerDefault)
	if _, err := notifierR.nc.Request(next, []byte(`{"batch":1}`), time.Second); err == nil {
		t.Error("notifier: pulled a job")
	}
	if !notifierR.violated(next) {
		t.Errorf("notifier: no permission violation for %s", next)
	}
	if sub, err := notifierR.nc.SubscribeSync("_INBOX_worker.>"); err == nil {
		_ = notifierR.nc.Flush()
		if !notifierR.violated("_INBOX_worker.>") {
			t.Error("notifier: subscribed to the worker's inbox (pulled jobs arrive there)")
		}
		_ = sub.Unsubscribe()
	}
	if _, err := notifierR.js.Stream(ctx, events.StreamJobs); err == nil {
		t.Error("notifier: read the jobs stream's info")
	}

	// The worker consumes both jobs: one acked, one terminated with a reason.
	batch, err := cons.Fetch(2, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatalf("worker: fetch: %v", err)
	}
	var got int
	for m := range batch.Messages() {
		if got == 0 {
			err = m.DoubleAck(ctx)
		} else {
			err = m.TermWithReason("malformed")
		}
		if err != nil {
			t.Errorf("worker: acknowledge: %v", err)
		}
		got++
	}
	if got != 2 {
		t.Fatalf("worker fetched %d jobs, want 2: the notifier must not have taken any", got)
	}
	jobs, _ := worker.js.Stream(ctx, events.StreamJobs)
	if _, err := jobs.GetMsg(ctx, 1); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Errorf("worker: read a job by sequence: %v", err)
	}
	for _, s := range []string{subj.PrepayCreated(), subj.PrepayFailed(), subj.DeadLetter(events.ReasonMalformed)} {
		if _, err := worker.js.Publish(ctx, s, []byte(`{"version":1}`)); err != nil {
			t.Errorf("worker: publish %s: %v", s, err)
		}
	}

	// The notifier publishes payment events and checks its stream.
	if _, err := notifierR.js.Publish(ctx, subj.PaymentSucceeded(), []byte(`{"version":1}`), jetstream.WithExpectStream(events.StreamEvents)); err != nil {
		t.Errorf("notifier: publish a payment event: %v", err)
	}
	if _, err := notifierR.js.Stream(ctx, events.StreamEvents); err != nil {
		t.Errorf("notifier: readiness check of its stream: %v", err)
	}

	// A producer cannot publish payment or outcome events, nor dead letters.
	for _, tt := range []struct{ subject, stream string }{
		{subj.PaymentSucceeded(), events.StreamEvents},
		{subj.PrepayCreated(), events.StreamEvents},
		{subj.PrepayFailed(), events.StreamEvents},
		{subj.DeadLetter(events.ReasonMaxDeliveries), events.StreamDeadLetters},
	} {
		mustNotPublish(t, producer, worker.js, tt.subject, tt.stream)
	}
	// Nor can the notifier publish outcomes, or the worker payments.
	mustNotPublish(t, notifierR, worker.js, subj.PrepayCreated(), events.StreamEvents)
	mustNotPublish(t, worker, worker.js, subj.PaymentSucceeded(), events.StreamEvents)

	// The dead-letter tool reads, deletes and replays dead letters and sets
	// the pause switch; it publishes no event.
	dls, err := dl.js.Stream(ctx, events.StreamDeadLetters)
	if err != nil {
		t.Fatalf("deadletter: stream: %v", err)
	}
	if _, err := dls.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(subj.DeadLetters())); err != nil {
		t.Errorf("deadletter: read: %v", err)
	}
	if err := dls.DeleteMsg(ctx, 1); err != nil {
		t.Errorf("deadletter: delete: %v", err)
	}
	if _, err := dl.js.Publish(ctx, subj.Job(wechat.TradeTypeNative), []byte(`{"replay":1}`), jetstream.WithExpectStream(events.StreamJobs)); err != nil {
		t.Errorf("deadletter: replay: %v", err)
	}
	if err := pipeline.SetPause(ctx, dl.js, "", "", pipeline.ConsumerDefault, pipeline.PauseState{Paused: true, Reason: "test"}); err != nil {
		t.Errorf("deadletter: pause: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !pause.Paused() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !pause.Paused() {
		t.Error("the worker did not see the pause the dead-letter tool set")
	}
	mustNotPublish(t, dl, worker.js, subj.PaymentSucceeded(), events.StreamEvents)

	// The reconciler consumes its requests and publishes payment and closed
	// events, and nothing of the worker's.
	if sub, err := reconciler.nc.SubscribeSync(events.SubjectPrefixDefault + ".orders.reconcile.>"); err != nil {
		t.Errorf("reconciler: subscribe to reconciliation requests: %v", err)
	} else {
		_ = reconciler.nc.Flush()
		if reconciler.violated(events.SubjectPrefixDefault + ".orders.reconcile.>") {
			t.Error("reconciler: may not subscribe to reconciliation requests")
		}
		_ = sub.Unsubscribe()
	}
	if _, err := reconciler.js.Publish(ctx, subj.PaymentSucceeded(), []byte(`{"version":1}`)); err != nil {
		t.Errorf("reconciler: publish a payment event: %v", err)
	}
	if err := reconciler.nc.Publish(events.SubjectPrefixDefault+".orders.closed", []byte(`{}`)); err != nil {
		t.Error(err)
	}
	_ = reconciler.nc.Flush()
	if reconciler.violated(events.SubjectPrefixDefault + ".orders.closed") {
		t.Error("reconciler: may not publish closed events")
	}
	mustNotPublish(t, reconciler, worker.js, subj.PrepayCreated(), events.StreamEvents)
	if _, err := reconciler.js.Consumer(ctx, events.StreamJobs, pipeline.ConsumerDefault); err == nil {
		t.Error("reconciler: looked up the jobs consumer")
	}
}
