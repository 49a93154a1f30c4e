package pipeline_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/idempotency"
	"github.com/wxcombine/orderworker/notifier"
	"github.com/wxcombine/orderworker/pipeline"
	"github.com/wxcombine/orderworker/wechat"
	"github.com/wxcombine/orderworker/wechat/wechatsim"
)

// testClock is a clock the test moves forward; the simulator, the wechat
// client, the workers and the notifier share it.
type testClock struct{ offset atomic.Int64 }

func (c *testClock) Now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *testClock) Advance(d time.Duration) { c.offset.Add(int64(d)) }

// longSchedule queries often at first and keeps querying for a minute and
// a half, so that an order paid late on a slow machine is still found:
// the tests wait for outcomes, never for a moment.
var longSchedule = []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 3 * time.Second, 5 * time.Second,
	8 * time.Second, 13 * time.Second, 21 * time.Second, 34 * time.Second, 55 * time.Second, 89 * time.Second}

// notifierFront is a real notifier (package notifier) behind a switch that
// answers 503 while it is "down", and that counts its answers.
type notifierFront struct {
	url  string // the notify_url of testMchID's orders
	down atomic.Bool

	mu       sync.Mutex
	statuses map[int]int
}

func (f *notifierFront) answers(status int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.statuses[status]
}

// startNotifier serves a notifier publishing to e's JetStream with the
// payments-seen record in e's Redis (the workers' record), on clock now.
func (e *env) startNotifier(now func() time.Time) *notifierFront {
	t := e.t
	t.Helper()
	rc, err := idempotency.NewRedisClient(idempotency.RedisClientConfig{Addrs: []string{e.redis.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rc.Close() })
	seen, err := idempotency.NewRedisSeen(rc, "")
	if err != nil {
		t.Fatal(err)
	}
	v := testPlatform(t).Verifier(wechatsim.ModeMigration)
	v.NowFunc = now
	h, err := notifier.New(notifier.Config{
		Merchants: []*wechat.Merchant{{MchID: testMchID, APIv3Key: e.merchant.APIv3Key, Platform: v}},
		Publisher: e.js, Seen: seen, NowFunc: now,
	})
	if err != nil {
		t.Fatal(err)
	}
	f := &notifierFront{statuses: map[int]int{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		if f.down.Load() {
			rec.WriteHeader(http.StatusServiceUnavailable)
		} else {
			h.ServeHTTP(rec, r)
		}
		f.mu.Lock()
		f.statuses[rec.status]++
		f.mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	f.url = srv.URL + notifier.PathPrefix + testMchID
	return f
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(s int) { r.status = s; r.ResponseWriter.WriteHeader(s) }

// streamMsgs answers how many messages stream holds.
func (e *env) streamMsgs(stream string) uint64 {
	e.t.Helper()
	s, err := e.js.Stream(e.t.Context(), stream)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := s.Info(e.t.Context())
	if err != nil {
		e.t.Fatal(err)
	}
	return info.State.Msgs
}

// figures logs what a test measured.
func (e *env) figures(orders, dropped int, o outcomes) {
	e.t.Helper()
	byNotification, byReconciliation := 0, 0
	for _, ps := range o.payments {
		for _, p := range ps {
			if p.NotificationID != "" {
				byNotification++
			} else {
				byReconciliation++
			}
		}
	}
	st := e.sim.Stats()
	e.t.Logf("orders %d, notifications dropped %d, payments by notification %d, by reconciliation %d, queries %d (%.2f per order), closes %d, notifications delivered %d",
		orders, dropped, byNotification, byReconciliation, st.Requests[wechatsim.OpQuery], float64(st.Requests[wechatsim.OpQuery])/float64(orders),
		st.Requests[wechatsim.OpClose], st.Notifications.Delivered)
}

func (e *env) createOrders(prefix string, n int, notifyURL string, edit func(*events.CreateOrderJob)) []string {
	e.t.Helper()
	var nos []string
	for i := range n {
		no := orderNo(prefix, i)
		job := newJob(wechat.TradeTypeJSAPI, no)
		if notifyURL != "" {
			job.Request.NotifyURL = notifyURL
		}
		if edit != nil {
			edit(&job)
		}
		e.publishJob(job)
		nos = append(nos, no)
	}
	e.waitFor(60*time.Second, "a prepay per order", func(o outcomes) bool {
		for _, no := range nos {
			if len(o.created[no]) == 0 {
				return false
			}
		}
		return true
	})
	return nos
}

func (e *env) checkOnePayment(o outcomes, nos []string) {
	e.t.Helper()
	for _, no := range nos {
		if got := len(o.payments[no]); got != 1 {
			e.t.Errorf("%s: %d payment events, want exactly 1", no, got)
			continue
		}
		p := o.payments[no][0]
		info, _ := e.sim.Order(testMchID, no)
		for i, s := range info.Order.SubOrders {
			if p.SubOrders[i].TransactionID != s.TransactionID || p.SubOrders[i].TradeState != wechat.TradeStateSuccess {
				e.t.Errorf("%s: payment sub-order %d = %+v, want WeChat Pay's %s SUCCESS", no, i, p.SubOrders[i], s.TransactionID)
			}
		}
	}
}

// A third of the notifications are lost: reconciliation finds those
// payments, and every payment is published once.
func TestReconcile_droppedNotifications(t *testing.T) {
	t.Parallel()
	e := newEnv(t, wechat.FlavourMerchant, wechatsim.FaultConfig{}, func(c *wechatsim.Config) { c.NotifySpeedup = 1000 })
	e.startWorker(workerOpts{reconcile: &pipeline.ReconcileConfig{Schedule: longSchedule, UnpaidCloseAfter: time.Hour}})
	n := e.startNotifier(time.Now)
	const orders = 12
	nos := e.createOrders("DROP", orders, n.url, nil)
	dropped := map[string]bool{}
	for i, no := range nos {
		var err error
		if i%3 == 0 {
			dropped[no] = true
			err = e.sim.PayWithoutNotification(t.Context(), testMchID, no)
		} else {
			_, err = e.sim.Pay(t.Context(), testMchID, no)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	o := e.waitFor(120*time.Second, "a payment per order and every order's checks settled", func(o outcomes) bool {
		return len(o.payments) == orders && e.streamMsgs(events.StreamReconcile) == 0
	})
	e.checkOnePayment(o, nos)
	for no := range dropped {
		if ps := o.payments[no]; len(ps) == 1 && ps[0].NotificationID != "" {
			t.Errorf("%s: payment from notification %s, but its notification was dropped", no, ps[0].NotificationID)
		}
		if info, _ := e.sim.Order(testMchID, no); info.NotifyAttempts != 0 {
			t.Errorf("%s: %d notification attempts, want none", no, info.NotifyAttempts)
		}
	}
	e.figures(orders, len(dropped), o)
}

// The notifier is down for longer than the whole schedule: reconciliation
// publishes every payment; when the notifier is back, WeChat Pay's retried
// notifications publish nothing new, even past the duplicate window.
func TestReconcile_notifierDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t, wechat.FlavourMerchant, wechatsim.FaultConfig{}, func(c *wechatsim.Config) { c.NotifySpeedup = 1000 })
	e.startWorker(workerOpts{duplicateWindow: time.Second,
		reconcile: &pipeline.ReconcileConfig{Schedule: []time.Duration{200 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second}, UnpaidCloseAfter: time.Hour}})
	n := e.startNotifier(time.Now)
	n.down.Store(true)
	const orders = 6
	nos := e.createOrders("DOWN", orders, n.url, nil)
	for _, no := range nos {
		if _, err := e.sim.Pay(t.Context(), testMchID, no); err != nil {
			t.Fatal(err)
		}
	}
	o := e.waitFor(120*time.Second, "every payment found by reconciliation", func(o outcomes) bool {
		return len(o.payments) == orders && e.streamMsgs(events.StreamReconcile) == 0
	})
	e.checkOnePayment(o, nos)
	// Past the streams' one-second duplicate window: only the payments-seen
	// record can tell a re-sent notification from a new payment now.
	time.Sleep(1500 * time.Millisecond)
	n.down.Store(false)
	deadline := time.Now().Add(120 * time.Second)
	for _, no := range nos {
		for {
			if info, _ := e.sim.Order(testMchID, no); info.NotifyDelivered {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: notification never delivered after the notifier came back", no)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	o = e.read()
	e.checkOnePayment(o, nos)
	for _, no := range nos {
		if ps := o.payments[no]; len(ps) == 1 && ps[0].NotificationID != "" {
			t.Errorf("%s: payment from a notification, want reconciliation's (the notifier was down)", no)
		}
	}
	if got := n.answers(http.StatusOK); got < orders {
		t.Errorf("notifier answered 200 (duplicate) %d times, want at least %d", got, orders)
	}
	if got := n.answers(http.StatusNoContent); got != 0 {
		t.Errorf("notifier stored %d new events after coming back, want 0", got)
	}
	e.figures(orders, 0, o)
}

// A duplicate job past the streams' duplicate window republishes the
// order's prepay, and JetStream can no longer drop its ReconcileCheck by
// Nats-Msg-Id: the Seen record keeps the order on one schedule, so it is
// queried once per point, not once per duplicate.
func TestReconcile_lateDuplicateOneCheck(t *testing.T) {
	t.Parallel()
	e := newEnv(t, wechat.FlavourMerchant, wechatsim.FaultConfig{})
	// The first point is an hour away: the check stays in the stream for
	// the whole test, and a second one would sit beside it.
	e.startWorker(workerOpts{duplicateWindow: time.Second,
		reconcile: &pipeline.ReconcileConfig{Schedule: []time.Duration{time.Hour}, UnpaidCloseAfter: 2 * time.Hour}})
	nos := e.createOrders("LATE", 1, "", nil)
	if got := e.streamMsgs(events.StreamReconcile); got != 1 {
		t.Fatalf("%d reconcile checks after the first prepay, want 1", got)
	}
	time.Sleep(1500 * time.Millisecond) // past the one-second duplicate window
	e.publishJob(newJob(wechat.TradeTypeJSAPI, nos[0]))
	o := e.waitFor(60*time.Second, "the prepay republished for the late duplicate", func(o outcomes) bool {
		return len(o.created[nos[0]]) == 2
	})
	if a, b := o.created[nos[0]][0].PrepayID, o.created[nos[0]][1].PrepayID; a != b {
		t.Errorf("late duplicate got prepay_id %s, want the stored %s", b, a)
	}
	if got := e.streamMsgs(events.StreamReconcile); got != 1 {
		t.Errorf("%d reconcile checks after a duplicate past the window, want 1", got)
	}
}

// Unpaid past time_expire (or UNPAID_CLOSE_AFTER without one): closed at
// WeChat Pay, orders.closed published, never a payment.
func TestReconcile_unpaidClosed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, wechat.FlavourMerchant, wechatsim.FaultConfig{})
	e.startWorker(workerOpts{reconcile: &pipeline.ReconcileConfig{
		Schedule: []time.Duration{300 * time.Millisecond, 600 * time.Millisecond}, UnpaidCloseAfter: 4 * time.Second}})
	expire := time.Now().Add(2 * time.Second).Truncate(time.Second).Add(time.Second)
	withExpire := e.createOrders("EXPA", 1, "", func(j *events.CreateOrderJob) { j.Request.TimeExpire = expire.Format(time.RFC3339) })
	without := e.createOrders("EXPB", 1, "", nil)
	nos := append(withExpire, without...)
	o := e.waitFor(60*time.Second, "orders.closed for both orders", func(o outcomes) bool {
		return len(o.closed[nos[0]]) > 0 && len(o.closed[nos[1]]) > 0 && e.streamMsgs(events.StreamReconcile) == 0
	})
	for _, no := range nos {
		if got := o.closed[no]; len(got) != 1 || got[0].Reason != events.ClosedUnpaid {
			t.Errorf("%s: orders.closed %+v, want one with reason %s", no, got, events.ClosedUnpaid)
		}
		if e.state(no) != wechat.TradeStateClosed {
			t.Errorf("%s: %s at the simulator, want CLOSED", no, e.state(no))
		}
		if _, err := e.sim.Pay(t.Context(), testMchID, no); !errors.Is(err, wechatsim.ErrOrderClosed) {
			t.Errorf("%s: paying after the close = %v, want ErrOrderClosed", no, err)
		}
		if len(o.payments[no]) != 0 {
			t.Errorf("%s: payment events %v, want none", no, o.payments[no])
		}
	}
	if c := o.closed[nos[0]]; len(c) == 1 && c[0].ClosedAt.Before(expire) {
		t.Errorf("closed at %s, before its time_expire %s", c[0].ClosedAt, expire)
	}
	if c := o.closed[nos[1]]; len(c) == 1 && c[0].ClosedAt.Before(o.created[nos[1]][0].CreatedAt.Add(4*time.Second)) {
		t.Errorf("closed at %s, before UnpaidCloseAfter", c[0].ClosedAt)
	}
	e.figures(len(nos), 0, o)
}

func (e *env) publishClose(no string) {
	e.t.Helper()
	e.publish(events.SubjectCloseJob, mustJSON(e.t, events.CloseOrderJob{
		Version: events.Version, CorrelationID: "close-" + no, CombineMchID: testMchID, CombineOutTradeNo: no,
	}), events.CloseJobMsgID(testMchID, no))
}

// Close jobs, with reconciliation turned off: an open order is closed; a
// paid one gets close.failed ORDER_PAID and its payment; an unknown one
// close.failed ORDER_NOT_EXIST.
func TestCloseJobs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, wechat.FlavourMerchant, wechatsim.FaultConfig{})
	e.startWorker(workerOpts{reconcile: &pipeline.ReconcileConfig{Disabled: true}})
	nos := e.createOrders("CLOSE", 2, "", nil)
	paid, open, unknown := nos[0], nos[1], "CLOSE-UNKNOWN"
	if err := e.sim.PayWithoutNotification(t.Context(), testMchID, paid); err != nil {
		t.Fatal(err)
	}
	for _, no := range []string{paid, open, unknown} {
		e.publishClose(no)
	}
	o := e.waitFor(60*time.Second, "an answer to every close job", func(o outcomes) bool {
		return len(o.closeFailed[paid]) > 0 && len(o.payments[paid]) > 0 && len(o.closed[open]) > 0 && len(o.closeFailed[unknown]) > 0
	})
	if f := o.closeFailed[paid]; len(f) != 1 || f[0].Code != events.CodeOrderPaid {
		t.Errorf("paid order: close.failed %+v, want one ORDER_PAID", f)
	}
	e.checkOnePayment(o, []string{paid})
	if len(o.closed[paid]) != 0 {
		t.Errorf("paid order: orders.closed %+v, want none", o.closed[paid])
	}
	if c := o.closed[open]; len(c) != 1 || c[0].Reason != events.ClosedOnRequest || c[0].CorrelationID != "close-"+open {
		t.Errorf("open order: orders.closed %+v, want one, requested, with the job's correlation id", c)
	}
	if e.state(open) != wechat.TradeStateClosed {
		t.Errorf("open order is %s at the simulator, want CLOSED", e.state(open))
	}
	if f := o.closeFailed[unknown]; len(f) != 1 || f[0].Code != events.CodeOrderNotExist {
		t.Errorf("unknown order: close.failed %+v, want one ORDER_NOT_EXIST", f)
	}
	// Reconciliation is off: no check was published, close jobs are consumed.
	deadline := time.Now().Add(30 * time.Second)
	for e.streamMsgs(events.StreamReconcile) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("reconcile stream holds %d messages, want none (no checks, close jobs consumed)", e.streamMsgs(events.StreamReconcile))
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.figures(2, 0, o)
}

// refusingPayer answers every create of an order number starting with R
// after the clock passed refuseAfter as WeChat Pay would refuse an
// identical create of an expired order ("该订单已失效").
type refusingPayer struct {
	*wechat.Client
	clock       *testClock
	refuseAfter atomic.Int64 // unix nanoseconds; 0: never
}

func (p *refusingPayer) CreateCombineOrder(ctx context.Context, t wechat.TradeType, req *wechat.CombineOrderRequest) (*wechat.PrepayResult, error) {
	if after := p.refuseAfter.Load(); after != 0 && strings.HasPrefix(req.CombineOutTradeNo, "R") && p.clock.Now().UnixNano() > after {
		return nil, &wechat.APIError{StatusCode: http.StatusBadRequest, Code: "ORDER_CLOSED", Message: "该订单已失效"}
	}
	return p.Client.CreateCombineOrder(ctx, t, req)
}

// A duplicate job after the prepay_id expired never gets the expired one:
// a working one when WeChat Pay gives it (the simulator answers a new one
// to an identical create after 2 hours), the payment of a paid order, or —
// when WeChat Pay refuses the repeat — the order closed with a failure
// sending the checkout to new order numbers.
func TestPrepayExpiry(t *testing.T) {
	t.Parallel()
	clk := &testClock{}
	e := newEnv(t, wechat.FlavourMerchant, wechatsim.FaultConfig{}, func(c *wechatsim.Config) { c.NowFunc = clk.Now })
	payer := &refusingPayer{Client: e.client, clock: clk}
	e.startWorker(workerOpts{now: clk.Now, payer: payer, reconcile: &pipeline.ReconcileConfig{Disabled: true}})
	fresh := e.createOrders("F", 1, "", nil)[0]
	paid := e.createOrders("P", 1, "", nil)[0]
	refused := e.createOrders("R", 1, "", nil)[0]
	if err := e.sim.PayWithoutNotification(t.Context(), testMchID, paid); err != nil {
		t.Fatal(err)
	}
	first := e.read()
	payer.refuseAfter.Store(clk.Now().UnixNano())
	clk.Advance(2*time.Hour + time.Minute)
	for _, no := range []string{fresh, paid, refused} {
		job := newJob(wechat.TradeTypeJSAPI, no)
		e.publish((events.Subjects{}).Job(job.TradeType), mustJSON(t, job), "late-duplicate:"+no)
	}
	e.waitFor(60*time.Second, "an answer to every late duplicate", func(o outcomes) bool {
		return len(o.created[fresh]) == 2 && len(o.payments[paid]) == 1 && len(o.closed[refused]) == 1 && len(o.failed[refused]) == 1
	})
	e.waitJobsEmpty()
	o := e.read()

	old := first.created[fresh][0]
	if got := o.created[fresh]; len(got) != 2 || got[1].PrepayID == old.PrepayID || got[1].PrepayID == "" || !got[1].ExpiresAt.After(clk.Now()) {
		t.Errorf("fresh: prepay.created %+v, want a second one with a new, unexpired prepay_id (the first was %s)", got, old.PrepayID)
	} else if info, _ := e.sim.Order(testMchID, fresh); info.Answer.PrepayID != got[1].PrepayID {
		t.Errorf("fresh: published %s, WeChat Pay's working prepay_id is %s", got[1].PrepayID, info.Answer.PrepayID)
	} else if got[1].PayParams == nil || !strings.Contains(got[1].PayParams.JSAPI.Package, got[1].PrepayID) {
		t.Errorf("fresh: pay parameters %+v do not carry the new prepay_id", got[1].PayParams)
	}
	if got := o.created[paid]; len(got) != 1 {
		t.Errorf("paid: %d prepay.created, want only the first", len(got))
	}
	e.checkOnePayment(o, []string{paid})
	if got := o.created[refused]; len(got) != 1 {
		t.Errorf("refused: %d prepay.created, want only the first", len(got))
	}
	if c := o.closed[refused]; len(c) != 1 || c[0].Reason != events.ClosedPrepayExpired {
		t.Errorf("refused: orders.closed %+v, want one, prepay_expired", c)
	}
	if f := o.failed[refused]; len(f) != 1 || f[0].Code != events.CodeOrderClosed || !f[0].RetryWithNewOrderNumber {
		t.Errorf("refused: prepay.failed %+v, want ORDER_CLOSED with retry_with_new_order_number", f)
	}
	if e.state(refused) != wechat.TradeStateClosed {
		t.Errorf("refused: %s at the simulator, want CLOSED", e.state(refused))
	}
}

// WeChat Pay sends a notification again three hours later (simulated
// clock), far past the stream's duplicate window: no second payment.
func TestNotifier_resentAfterThreeHours(t *testing.T) {
	t.Parallel()
	clk := &testClock{}
	e := newEnv(t, wechat.FlavourMerchant, wechatsim.FaultConfig{}, func(c *wechatsim.Config) { c.NowFunc, c.NotifySpeedup = clk.Now, 1000 })
	e.startWorker(workerOpts{now: clk.Now, duplicateWindow: time.Second, reconcile: &pipeline.ReconcileConfig{Schedule: []time.Duration{24 * time.Hour}, UnpaidCloseAfter: 48 * time.Hour}})
	n := e.startNotifier(clk.Now)
	no := e.createOrders("RESEND", 1, n.url, nil)[0]
	if _, err := e.sim.Pay(t.Context(), testMchID, no); err != nil {
		t.Fatal(err)
	}
	o := e.waitFor(60*time.Second, "the payment from the notification", func(o outcomes) bool { return len(o.payments[no]) == 1 })
	if o.payments[no][0].NotificationID == "" {
		t.Fatal("payment without notification id, want the notifier's")
	}
	time.Sleep(1500 * time.Millisecond) // past the one-second duplicate window
	clk.Advance(3 * time.Hour)
	if err := e.sim.ResendNotification(testMchID, no); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for info, _ := e.sim.Order(testMchID, no); !info.NotifyDelivered; info, _ = e.sim.Order(testMchID, no) {
		if time.Now().After(deadline) {
			t.Fatal("re-sent notification not delivered")
		}
		time.Sleep(20 * time.Millisecond)
	}
	o = e.read()
	e.checkOnePayment(o, []string{no})
	if got := n.answers(http.StatusOK); got < 1 {
		t.Errorf("notifier answered 200 (duplicate) %d times, want the re-sent notification answered so", got)
	}
	if got := n.answers(http.StatusNoContent); got != 1 {
		t.Errorf("notifier stored %d events, want 1", got)
	}
}

// With NotifyURLBase, a job without notify_url gets the notifier's, so its
// payment notification arrives; a job naming another one is refused before
// any WeChat Pay call.
func TestNotifyURLBase(t *testing.T) {
	t.Parallel()
	e := newEnv(t, wechat.FlavourMerchant, wechatsim.FaultConfig{}, func(c *wechatsim.Config) { c.NotifySpeedup = 1000 })
	// The notifier's address is only known once it runs; the workers start after it.
	n := e.startNotifierLate()
	base := strings.TrimSuffix(n.url, notifier.PathPrefix+testMchID)
	e.startWorker(workerOpts{notifyURLBase: base + "/", reconcile: &pipeline.ReconcileConfig{Disabled: true}})
	filled := e.createOrders("NURL", 1, "", func(j *events.CreateOrderJob) { j.Request.NotifyURL = "" })[0]
	if _, err := e.sim.Pay(t.Context(), testMchID, filled); err != nil {
		t.Fatal(err)
	}
	elsewhere := newJob(wechat.TradeTypeJSAPI, "NURLX")
	elsewhere.Request.NotifyURL = "https://elsewhere.example/notify"
	e.publishJob(elsewhere)
	o := e.waitFor(60*time.Second, "the payment via the filled notify_url and the refusal", func(o outcomes) bool {
		return len(o.payments[filled]) == 1 && len(o.failed["NURLX"]) == 1
	})
	if p := o.payments[filled][0]; p.NotificationID == "" {
		t.Error("payment without a notification id: the notification did not reach the notifier")
	}
	if f := o.failed["NURLX"][0]; f.Field != "/notify_url" || f.Code != events.CodeInvalidJob || f.Final || !strings.Contains(f.Message, n.url) {
		t.Errorf("refusal = %+v, want INVALID_JOB at /notify_url naming %s, not final", f, n.url)
	}
	if calls := e.createCalls("NURLX"); calls != 0 {
		t.Errorf("%d create calls for the refused job, want 0", calls)
	}
}

// startNotifierLate starts the notifier before any worker: the events
// stream does not exist yet, so it is created here as a worker would.
func (e *env) startNotifierLate() *notifierFront {
	e.t.Helper()
	if _, err := e.js.CreateOrUpdateStream(e.t.Context(), jetstream.StreamConfig{Name: events.StreamEvents, Subjects: events.Subjects{}.Events()}); err != nil {
		e.t.Fatal(err)
	}
	return e.startNotifier(time.Now)
}

// WeChat Pay reports states that are no payment and no open order: nothing
// is published as a payment, and the orders are no longer watched.
func TestReconcile_anomalies(t *testing.T) {
	t.Parallel()
	e := newEnv(t, wechat.FlavourMerchant, wechatsim.FaultConfig{})
	e.startWorker(workerOpts{reconcile: &pipeline.ReconcileConfig{Schedule: longSchedule, UnpaidCloseAfter: time.Hour}})
	nos := e.createOrders("ANOM", 2, "", nil)
	for i, state := range []string{wechat.TradeStateRefund, wechat.TradeStatePayError} {
		if err := e.sim.SetTradeState(testMchID, nos[i], state); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(120 * time.Second)
	for e.streamMsgs(events.StreamReconcile) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the checks of REFUND and PAYERROR orders are still held")
		}
		time.Sleep(50 * time.Millisecond)
	}
	o := e.read()
	for _, no := range nos {
		if len(o.payments[no]) != 0 || len(o.closed[no]) != 0 {
			t.Errorf("%s (%s): payments %v, closes %v, want none", no, e.state(no), o.payments[no], o.closed[no])
		}
	}
	if q := e.sim.Stats().Requests[wechatsim.OpQuery]; q < 2 {
		t.Errorf("%d queries, want each order queried", q)
	}
}

// cancelingJS cancels the run's context when the reconciler looks up its
// consumers, as a SIGTERM right after the setup does.
type cancelingJS struct {
	jetstream.JetStream
	cancel context.CancelFunc
}

func (c cancelingJS) Consumer(ctx context.Context, stream, name string) (jetstream.Consumer, error) {
	c.cancel()
	return nil, ctx.Err()
}

// Stopped between its setup and its loops, the reconciler ends cleanly:
// the worker exits 0 on SIGTERM, whenever it comes.
func TestReconciler_stoppedWhileStarting(t *testing.T) {
	t.Parallel()
	e := newEnv(t, wechat.FlavourMerchant, wechatsim.FaultConfig{})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	r, err := pipeline.NewReconciler(pipeline.ReconcileConfig{
		JetStream: cancelingJS{JetStream: e.js, cancel: cancel}, Payer: e.client, Publisher: pipeline.JetStreamPublisher{JetStream: e.js},
		DuplicateWindow: 26 * time.Hour, // no payments-seen record needed for this test
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(ctx); err != nil {
		t.Errorf("Run() stopped while starting = %v, want nil", err)
	}
}
