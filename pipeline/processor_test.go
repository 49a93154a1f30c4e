package pipeline_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/idempotency"
	"github.com/wxcombine/orderworker/pipeline"
	"github.com/wxcombine/orderworker/wechat"
)

// fakePayer answers the scripted results in order; the last one repeats.
type fakePayer struct {
	mu      sync.Mutex
	results []payResult
	calls   int
	bodies  []wechat.CombineOrderRequest
	// order is what a query answers (nil: ORDER_NOT_EXIST); closeErr what
	// a close does.
	order           *wechat.CombineOrder
	queryErr        error
	closeErr        error
	queries, closes int
}

type payResult struct {
	res *wechat.PrepayResult
	err error
}

func (f *fakePayer) CreateCombineOrder(_ context.Context, _ wechat.TradeType, req *wechat.CombineOrderRequest) (*wechat.PrepayResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.results[min(f.calls, len(f.results)-1)]
	f.calls++
	f.bodies = append(f.bodies, *req)
	return r.res, r.err
}

// queries and closes answer as WeChat Pay would for an order it never
// received, unless a test scripts them.
func (f *fakePayer) QueryByOutTradeNo(_ context.Context, _, _ string) (*wechat.CombineOrder, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queries++
	if f.queryErr != nil {
		return nil, f.queryErr
	}
	if f.order != nil {
		return f.order, nil
	}
	return nil, &wechat.APIError{StatusCode: 404, Code: "ORDER_NOT_EXIST"}
}

func (f *fakePayer) Close(context.Context, string, string, *wechat.CloseRequest) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closes++
	return f.closeErr
}

// fakeSigner signs with a real key, so the tests can verify the signatures.
type fakeSigner struct{ key wechat.PrivateKey }

func (s fakeSigner) JSAPIPayParams(_, appID, prepayID string) (*wechat.JSAPIPayParams, error) {
	return wechat.SignJSAPIPayParams(s.key, appID, prepayID, 1700000000, "NONCE")
}

func (s fakeSigner) MiniProgramPayParams(_, appID, prepayID string) (*wechat.MiniProgramPayParams, error) {
	return wechat.SignMiniProgramPayParams(s.key, appID, prepayID, 1700000000, "NONCE")
}

func (s fakeSigner) AppPayParams(mchID, appID, prepayID string) (*wechat.AppPayParams, error) {
	return wechat.SignAppPayParams(s.key, appID, mchID, prepayID, 1700000000, "NONCE")
}

// fakeStore answers one scripted claim and records what it is told.
type fakeStore struct {
	claim       idempotency.Claim
	claimErr    error
	completeErr error
	claims      int
	completed   []byte
	released    bool
}

func (s *fakeStore) Claim(context.Context, idempotency.Key, string, time.Duration) (idempotency.Claim, error) {
	s.claims++
	return s.claim, s.claimErr
}

func (s *fakeStore) Extend(context.Context, idempotency.Key, uint64, time.Duration) error { return nil }

func (s *fakeStore) Complete(_ context.Context, _ idempotency.Key, _ uint64, outcome []byte, _ time.Duration) error {
	if s.completeErr != nil {
		return s.completeErr
	}
	s.completed = outcome
	return nil
}

func (s *fakeStore) Release(context.Context, idempotency.Key, uint64) error {
	s.released = true
	return nil
}

func (s *fakeStore) Ping(context.Context) error { return s.claimErr }

// fakePublisher records messages; it fails while failures > 0, and
// whenever refuse answers true.
type fakePublisher struct {
	mu       sync.Mutex
	msgs     []*nats.Msg
	failures int
	refuse   func(*nats.Msg) bool
}

func (p *fakePublisher) Publish(_ context.Context, msg *nats.Msg) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failures > 0 || p.refuse != nil && p.refuse(msg) {
		p.failures = max(p.failures-1, 0)
		return errors.New("nats: no response from stream")
	}
	p.msgs = append(p.msgs, msg)
	return nil
}

func (p *fakePublisher) subjects() []string {
	var s []string
	for _, m := range p.msgs {
		s = append(s, m.Subject)
	}
	return s
}

func (p *fakePublisher) find(subject string) *nats.Msg {
	for _, m := range p.msgs {
		if m.Subject == subject {
			return m
		}
	}
	return nil
}

var testKey = func() wechat.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return wechat.NewPrivateKey(k)
}()

const maxDeliver = 3

type bundle struct {
	payer *fakePayer
	store *fakeStore
	pub   *fakePublisher
	proc  *pipeline.Processor
}

func setup(t *testing.T, flavour wechat.Flavour, results ...payResult) *bundle {
	t.Helper()
	b := &bundle{payer: &fakePayer{results: results}, store: &fakeStore{claim: idempotency.Claim{State: idempotency.StateClaimed, Token: 7}}, pub: &fakePublisher{}}
	if len(results) == 0 {
		b.payer.results = []payResult{{res: &wechat.PrepayResult{PrepayID: "wx-prepay-1"}}}
	}
	p, err := pipeline.New(pipeline.Config{
		Payer: b.payer, Signer: fakeSigner{key: testKey}, Store: b.store, Publisher: b.pub, Flavour: flavour,
		Retry:      pipeline.RetryPolicy{InitialInterval: time.Millisecond, MaxInterval: 2 * time.Millisecond, RandomizationFactor: -1},
		Redelivery: []time.Duration{3 * time.Second, 9 * time.Second}, MaxDeliver: maxDeliver, StoreRetryDelay: 4 * time.Second,
		MaxJobSize: 64 << 10,
	})
	if err != nil {
		t.Fatal(err)
	}
	b.proc = p
	return b
}

func delivery(t testing.TB, job events.CreateOrderJob) pipeline.Delivery {
	return pipeline.Delivery{
		Subject: (events.Subjects{}).Job(job.TradeType), Header: nats.Header{events.HeaderMsgID: {job.MsgID()}},
		Data: mustJSON(t, job), Stream: events.StreamJobs, Sequence: 11, NumDelivered: 1, Timestamp: time.Unix(1700000000, 0),
	}
}

func decodeFailed(t *testing.T, m *nats.Msg) events.PrepayFailed {
	t.Helper()
	if m == nil {
		t.Fatal("no prepay.failed event published")
	}
	var f events.PrepayFailed
	if err := json.Unmarshal(m.Data, &f); err != nil {
		t.Fatal(err)
	}
	return f
}

func decodeDeadLetter(t *testing.T, m *nats.Msg) events.DeadLetter {
	t.Helper()
	if m == nil {
		t.Fatal("no dead letter published")
	}
	var d events.DeadLetter
	if err := json.Unmarshal(m.Data, &d); err != nil {
		t.Fatal(err)
	}
	return d
}

var (
	sysErr     = &wechat.APIError{StatusCode: 500, Code: "SYSTEM_ERROR", Message: "busy"}
	timeoutErr = &wechat.TransportError{Op: "POST /v3/combine-transactions/jsapi", Err: &net.OpError{Op: "read", Err: errors.New("i/o timeout")}}
	paramErr   = &wechat.APIError{StatusCode: 400, Code: "PARAM_ERROR", Message: "bad field", Detail: json.RawMessage(`{"field":"/sub_orders/0/attach"}`), RequestID: "req-1"}
	closedErr  = &wechat.APIError{StatusCode: 400, Code: "ORDER_CLOSED", Message: "closed"}
	usedErr    = &wechat.APIError{StatusCode: 403, Code: "OUT_TRADE_NO_USED", Message: "商户订单号重复"}
	paidErr    = &wechat.APIError{StatusCode: 400, Code: "INVALID_REQUEST", Message: "订单已支付"}
	signErr    = &wechat.APIError{StatusCode: 401, Code: "SIGN_ERROR", Message: "签名错误"}
	svcErr     = &wechat.APIError{StatusCode: 503, Code: "SERVICE_UNAVAILABLE", Message: "服务不可用"}
	ok         = payResult{res: &wechat.PrepayResult{PrepayID: "wx-prepay-1"}}
)

// queried answers an order as WeChat Pay reports it, every sub-order in
// state.
func queried(state string) *wechat.CombineOrder {
	o := &wechat.CombineOrder{CombineAppID: "wx", CombineMchID: testMchID, CombineOutTradeNo: "P00001", CombineTransactionID: "4200001",
		SubOrders: []wechat.OrderSubOrder{
			{MchID: testMchID, OutTradeNo: "P00001-0", TradeState: state, Amount: wechat.Amount{TotalAmount: 10, Currency: "CNY"}},
			{MchID: testMchID, OutTradeNo: "P00001-1", TradeState: state, Amount: wechat.Amount{TotalAmount: 20, Currency: "CNY"}},
		}}
	if state == wechat.TradeStateSuccess {
		for i := range o.SubOrders {
			o.SubOrders[i].TransactionID = fmt.Sprintf("42000%d", i)
			o.SubOrders[i].SuccessTime = "2025-01-16T10:00:00+08:00"
			o.SubOrders[i].Amount.PayerAmount = o.SubOrders[i].Amount.TotalAmount
		}
	}
	return o
}

func TestProcessor_Process(t *testing.T) {
	dlSubject := func(r events.Reason) string { return (events.Subjects{}).DeadLetter(r) }
	tests := []struct {
		name         string
		results      []payResult
		claim        *idempotency.Claim
		claimErr     error
		numDelivered uint64
		wantErr      error
		wantAfter    time.Duration // for RetryError
		wantCalls    int
		wantSubjects []string
		wantReleased bool
		wantStored   bool
		order        *wechat.CombineOrder // the query's answer; nil: ORDER_NOT_EXIST
		queryErr     error                // the query's failure
		wantQueries  int
		wantCloses   int
		wantHold     bool
		wantFinal    *bool // of the published failure
	}{
		{name: "created", results: []payResult{ok}, wantCalls: 1,
			wantSubjects: []string{events.SubjectPrepayCreated}, wantStored: true},
		{name: "retryable errors are retried in process", results: []payResult{{err: sysErr}, {err: timeoutErr}, ok}, wantCalls: 3,
			wantSubjects: []string{events.SubjectPrepayCreated}, wantStored: true},
		{name: "an answer that fails verification (a SIGNTEST probe) is retried with the same body",
			results: []payResult{{err: fmt.Errorf("wechat: POST /v3/combine-transactions/jsapi: %w: signature probe", wechat.ErrSignature)}, ok}, wantCalls: 2,
			wantSubjects: []string{events.SubjectPrepayCreated}, wantStored: true},
		{name: "in-process budget spent hands the job back", results: []payResult{{err: sysErr}}, wantCalls: 4,
			wantErr: &pipeline.RetryError{}, wantAfter: 3 * time.Second, wantReleased: true},
		{name: "second delivery uses the second delay", results: []payResult{{err: timeoutErr}}, numDelivered: 2, wantCalls: 4,
			wantErr: &pipeline.RetryError{}, wantAfter: 9 * time.Second, wantReleased: true},
		{name: "503 SERVICE_UNAVAILABLE is retried in process", results: []payResult{{err: svcErr}, ok}, wantCalls: 2,
			wantSubjects: []string{events.SubjectPrepayCreated}, wantStored: true},
		{name: "delivery limit, no such order: not created, same number may come back", results: []payResult{{err: sysErr}}, numDelivered: maxDeliver, wantCalls: 4,
			wantErr: &pipeline.TerminalError{}, wantReleased: true, wantQueries: 1, wantFinal: ptr(false),
			wantSubjects: []string{dlSubject(events.ReasonMaxDeliveries), events.SubjectPrepayFailed}},
		{name: "delivery limit, order unpaid: the identical body recovers its prepay_id",
			results: []payResult{{err: timeoutErr}, {err: timeoutErr}, {err: timeoutErr}, {err: timeoutErr}, ok}, numDelivered: maxDeliver,
			order: queried(wechat.TradeStateNotPay), wantQueries: 1, wantCalls: 5, wantStored: true,
			wantSubjects: []string{events.SubjectPrepayCreated}},
		{name: "delivery limit, order unpaid and unrecoverable: closed, final",
			results: []payResult{{err: timeoutErr}}, numDelivered: maxDeliver, order: queried(wechat.TradeStateNotPay),
			wantQueries: 1, wantCalls: 8, wantCloses: 1, wantStored: true, wantFinal: ptr(true), wantErr: &pipeline.TerminalError{},
			wantSubjects: []string{events.SubjectOrderClosed, events.SubjectPrepayFailed, dlSubject(events.ReasonMaxDeliveries)}},
		{name: "delivery limit, order paid: the payment, never a failure", results: []payResult{{err: timeoutErr}}, numDelivered: maxDeliver,
			order: queried(wechat.TradeStateSuccess), wantQueries: 1, wantCalls: 4, wantStored: true,
			wantSubjects: []string{events.SubjectPaymentSucceeded}},
		{name: "used, record lost, order paid: the payment", results: []payResult{{err: usedErr}}, order: queried(wechat.TradeStateSuccess),
			wantQueries: 1, wantCalls: 1, wantStored: true, wantSubjects: []string{events.SubjectPaymentSucceeded}},
		{name: "already paid (INVALID_REQUEST), record lost: the payment", results: []payResult{{err: paidErr}}, order: queried(wechat.TradeStateSuccess),
			wantQueries: 1, wantCalls: 1, wantStored: true, wantSubjects: []string{events.SubjectPaymentSucceeded}},
		{name: "closed, record lost: final ORDER_CLOSED", results: []payResult{{err: closedErr}}, order: queried(wechat.TradeStateClosed),
			wantQueries: 1, wantCalls: 1, wantStored: true, wantFinal: ptr(true), wantErr: &pipeline.TerminalError{},
			wantSubjects: []string{events.SubjectOrderClosed, events.SubjectPrepayFailed, dlSubject(events.ReasonRejected)}},
		{name: "used by an unpaid order with other parameters: not this order's outcome", results: []payResult{{err: usedErr}}, order: queried(wechat.TradeStateNotPay),
			wantQueries: 1, wantCalls: 1, wantReleased: true, wantFinal: ptr(false), wantErr: &pipeline.TerminalError{},
			wantSubjects: []string{dlSubject(events.ReasonConflict), events.SubjectPrepayFailed}},
		{name: "used, record lost, the query failing with a delivery left: handed back, nothing published", results: []payResult{{err: usedErr}}, queryErr: sysErr,
			wantQueries: 4, wantCalls: 1, wantReleased: true, wantErr: &pipeline.RetryError{}, wantAfter: 3 * time.Second},
		{name: "used, record lost, the query failing on the last delivery: RETRIES_EXHAUSTED, not final", results: []payResult{{err: usedErr}}, queryErr: sysErr,
			numDelivered: maxDeliver, wantQueries: 4, wantCalls: 1, wantReleased: true, wantFinal: ptr(false), wantErr: &pipeline.TerminalError{},
			wantSubjects: []string{dlSubject(events.ReasonMaxDeliveries), events.SubjectPrepayFailed}},
		{name: "refunded order: dead letter, nothing published for the order", results: []payResult{{err: usedErr}}, order: queried(wechat.TradeStateRefund),
			wantQueries: 1, wantCalls: 1, wantReleased: true, wantErr: &pipeline.TerminalError{},
			wantSubjects: []string{dlSubject(events.ReasonUnexpectedState)}},
		{name: "SIGN_ERROR is an operator's to fix: not stored", results: []payResult{{err: signErr}}, wantCalls: 1,
			wantReleased: true, wantFinal: ptr(false), wantErr: &pipeline.TerminalError{},
			wantSubjects: []string{dlSubject(events.ReasonConfiguration), events.SubjectPrepayFailed}},
		{name: "param error is terminal at once and stored", results: []payResult{{err: paramErr}}, wantCalls: 1,
			wantErr: &pipeline.TerminalError{}, wantStored: true,
			wantSubjects: []string{events.SubjectPrepayFailed, dlSubject(events.ReasonRejected)}},
		{name: "done republishes without a call", claim: &idempotency.Claim{State: idempotency.StateDone,
			Outcome: []byte(`{"created":{"version":1,"trade_type":"jsapi","combine_appid":"wx","combine_mchid":"1900000109","combine_out_trade_no":"P00001","prepay_id":"wx-old","attempts":1,"created_at":"` +
				time.Now().UTC().Format(time.RFC3339) + `"}}`)},
			wantSubjects: []string{events.SubjectPrepayCreated}},
		{name: "done failure republishes the failure", claim: &idempotency.Claim{State: idempotency.StateDone,
			Outcome: []byte(`{"failed":{"version":1,"combine_mchid":"1900000109","combine_out_trade_no":"P00001","code":"PARAM_ERROR","message":"x","retry_with_new_order_number":false,"attempts":1,"created_at":"2025-01-16T10:00:00Z"}}`)},
			wantSubjects: []string{events.SubjectPrepayFailed}},
		{name: "in flight naks with the lease's remaining time", claim: &idempotency.Claim{State: idempotency.StateInFlight, ExpiresIn: 12 * time.Second},
			wantErr: &pipeline.RetryError{}, wantAfter: 12 * time.Second},
		{name: "conflict dead-letters the job, publishes nothing for the order", claim: &idempotency.Claim{State: idempotency.StateConflict},
			wantErr: &pipeline.TerminalError{}, wantSubjects: []string{dlSubject(events.ReasonConflict)}},
		{name: "store down holds the job without a call", claimErr: idempotency.ErrUnavailable,
			wantErr: &pipeline.RetryError{}, wantAfter: 4 * time.Second, wantHold: true},
		{name: "in flight on the last delivery holds", claim: &idempotency.Claim{State: idempotency.StateInFlight, ExpiresIn: 12 * time.Second},
			numDelivered: maxDeliver, wantErr: &pipeline.RetryError{}, wantAfter: 12 * time.Second, wantHold: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := setup(t, wechat.FlavourMerchant, tt.results...)
			if tt.claim != nil {
				b.store.claim = *tt.claim
			}
			b.store.claimErr = tt.claimErr
			b.payer.order = tt.order
			b.payer.queryErr = tt.queryErr
			d := delivery(t, newJob(wechat.TradeTypeJSAPI, "P00001"))
			d.NumDelivered = max(tt.numDelivered, 1)
			err := b.proc.Process(t.Context(), d)
			if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("Process() = %v, want %T", err, tt.wantErr)
			}
			var re *pipeline.RetryError
			if errors.As(err, &re) && (re.After != tt.wantAfter || re.Hold != tt.wantHold) {
				t.Errorf("Process() retry after %s (hold %v), want %s (hold %v)", re.After, re.Hold, tt.wantAfter, tt.wantHold)
			}
			if b.payer.queries != tt.wantQueries || b.payer.closes != tt.wantCloses {
				t.Errorf("queries, closes = %d, %d, want %d, %d", b.payer.queries, b.payer.closes, tt.wantQueries, tt.wantCloses)
			}
			if tt.wantFinal != nil {
				f := decodeFailed(t, b.pub.find(events.SubjectPrepayFailed))
				if f.Final != *tt.wantFinal {
					t.Errorf("failure %s final = %v, want %v", f.Code, f.Final, *tt.wantFinal)
				}
				id := b.pub.find(events.SubjectPrepayFailed).Header.Get(events.HeaderMsgID)
				if wantID := events.OutcomeMsgID(testMchID, "P00001"); f.Final != (id == wantID) {
					t.Errorf("failure final=%v published as %q: a final failure goes under %q, no other", f.Final, id, wantID)
				}
			}
			if b.payer.calls != tt.wantCalls {
				t.Errorf("WeChat calls = %d, want %d", b.payer.calls, tt.wantCalls)
			}
			if diff := cmp.Diff(tt.wantSubjects, b.pub.subjects()); diff != "" {
				t.Errorf("published subjects (-want +got):\n%s", diff)
			}
			if b.store.released != tt.wantReleased {
				t.Errorf("released = %v, want %v", b.store.released, tt.wantReleased)
			}
			if got := b.store.completed != nil; got != tt.wantStored {
				t.Errorf("outcome stored = %v, want %v", got, tt.wantStored)
			}
			for _, body := range b.payer.bodies[min(1, len(b.payer.bodies)):] {
				if diff := cmp.Diff(b.payer.bodies[0], body); diff != "" {
					t.Errorf("a retry changed the request (-first +retry):\n%s", diff)
				}
			}
		})
	}
}

func TestProcessor_Process_created(t *testing.T) {
	for _, tt := range wechat.TradeTypes {
		t.Run(string(tt), func(t *testing.T) {
			res := &wechat.PrepayResult{PrepayID: "wx-prepay-1"}
			switch tt {
			case wechat.TradeTypeH5:
				res = &wechat.PrepayResult{H5URL: "https://wx.tenpay.com/cgi-bin/mmpayweb-bin/checkmweb?prepay_id=wx1"}
			case wechat.TradeTypeNative:
				res = &wechat.PrepayResult{CodeURL: "weixin://wxpay/bizpayurl?pr=abc"}
			}
			b := setup(t, flavourOf(tt), payResult{res: res})
			job := newJob(tt, "P"+string(tt)+"0001")
			if err := b.proc.Process(t.Context(), delivery(t, job)); err != nil {
				t.Fatalf("Process() = %v, want nil", err)
			}
			m := b.pub.find(events.SubjectPrepayCreated)
			if m == nil {
				t.Fatal("no prepay.created event")
			}
			if got, want := m.Header.Get(events.HeaderMsgID), events.PrepayCreatedMsgID(testMchID, job.Request.CombineOutTradeNo); got != want {
				t.Errorf("Nats-Msg-Id = %q, want %q", got, want)
			}
			if got, want := m.Header.Get(events.HeaderCorrelationID), job.CorrelationID; got != want {
				t.Errorf("Correlation-Id = %q, want %q", got, want)
			}
			var ev events.PrepayCreated
			if err := json.Unmarshal(m.Data, &ev); err != nil {
				t.Fatal(err)
			}
			if ev.PrepayID != res.PrepayID || ev.H5URL != res.H5URL || ev.CodeURL != res.CodeURL || ev.TradeType != tt ||
				ev.CombineMchID != testMchID || ev.CorrelationID != job.CorrelationID || ev.Attempts != 1 || ev.Version != 1 {
				t.Errorf("event = %+v, want the order's identity and result %+v", ev, res)
			}
			verifyPayParams(t, testKey.Public(), testAppID, testMchID, ev)
			// The stored outcome is the published event.
			var stored struct{ Created json.RawMessage }
			if err := json.Unmarshal(b.store.completed, &stored); err != nil || string(stored.Created) != string(m.Data) {
				t.Errorf("stored outcome = %s, want the published event %s", b.store.completed, m.Data)
			}
		})
	}
}

// verifyPayParams checks the pay parameters of ev against the merchant's
// public key, per trade type.
func verifyPayParams(t *testing.T, pub *rsa.PublicKey, appID, mchID string, ev events.PrepayCreated) {
	t.Helper()
	p := ev.PayParams
	switch ev.TradeType {
	case wechat.TradeTypeH5, wechat.TradeTypeNative:
		if p != nil {
			t.Errorf("pay params = %+v, want none for %s", p, ev.TradeType)
		}
		return
	}
	if p == nil {
		t.Fatalf("no pay params for %s", ev.TradeType)
	}
	var msg []byte
	var sig string
	switch ev.TradeType {
	case wechat.TradeTypeJSAPI:
		j := p.JSAPI
		if j == nil || j.AppID != appID || j.Package != "prepay_id="+ev.PrepayID || j.SignType != "RSA" {
			t.Fatalf("jsapi pay params = %+v", j)
		}
		msg, sig = wechat.PaySignMessage(j.AppID, j.TimeStamp, j.NonceStr, j.Package), j.PaySign
	case wechat.TradeTypeMiniProgram:
		m := p.MiniProgram
		if m == nil || m.Package != "prepay_id="+ev.PrepayID {
			t.Fatalf("miniprogram pay params = %+v", m)
		}
		msg, sig = wechat.PaySignMessage(appID, m.TimeStamp, m.NonceStr, m.Package), m.PaySign
	case wechat.TradeTypeApp:
		a := p.App
		if a == nil || a.AppID != appID || a.PartnerID != mchID || a.PrepayID != ev.PrepayID || a.Package != "Sign=WXPay" {
			t.Fatalf("app pay params = %+v", a)
		}
		msg, sig = wechat.PaySignMessage(a.AppID, a.TimeStamp, a.NonceStr, a.PrepayID), a.Sign
	}
	if err := wechat.VerifySignature(pub, msg, sig); err != nil {
		t.Errorf("%s pay signature does not verify: %v", ev.TradeType, err)
	}
}

func TestProcessor_Process_rejected(t *testing.T) {
	valid := newJob(wechat.TradeTypeJSAPI, "P00001")
	tooMany := newJob(wechat.TradeTypeJSAPI, "P00051")
	tooMany.Request = newRequest(wechat.TradeTypeJSAPI, testMchID, "P00051", 51)
	wrongVersion := valid
	wrongVersion.Version = 2
	otherFlavour := valid
	otherFlavour.Flavour = wechat.FlavourPartner
	tests := []struct {
		name       string
		subject    string
		data       []byte
		wantReason events.Reason
		wantCode   string // "" means no failure event: the order cannot be named
		wantField  string
	}{
		{name: "malformed JSON", data: []byte(`{"version":1,"trade_type":"jsapi",`), wantReason: events.ReasonMalformed},
		{name: "wrong version", data: mustJSON(t, wrongVersion), wantReason: events.ReasonUnsupportedVersion, wantCode: events.CodeUnsupportedVersion},
		{name: "51 sub-orders", data: mustJSON(t, tooMany), wantReason: events.ReasonInvalid, wantCode: events.CodeInvalidJob, wantField: "/sub_orders"},
		{name: "oversized", data: append(mustJSON(t, valid), make([]byte, 70<<10)...), wantReason: events.ReasonTooLarge},
		{name: "subject does not match the trade type", subject: (events.Subjects{}).Job(wechat.TradeTypeApp), data: mustJSON(t, valid),
			wantReason: events.ReasonMalformed, wantCode: events.CodeMalformedJob, wantField: "trade_type"},
		{name: "flavour not served", data: mustJSON(t, otherFlavour), wantReason: events.ReasonInvalid, wantCode: events.CodeInvalidJob, wantField: "flavour"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := setup(t, wechat.FlavourMerchant)
			d := delivery(t, valid)
			d.Data = tt.data
			if tt.subject != "" {
				d.Subject = tt.subject
			}
			err := b.proc.Process(t.Context(), d)
			var te *pipeline.TerminalError
			if !errors.As(err, &te) || te.Reason != tt.wantReason {
				t.Fatalf("Process() = %v, want a TerminalError with reason %s", err, tt.wantReason)
			}
			if b.payer.calls != 0 || b.store.claims != 0 {
				t.Errorf("calls = %d, claims = %d, want none", b.payer.calls, b.store.claims)
			}
			dlMsg := b.pub.find((events.Subjects{}).DeadLetter(tt.wantReason))
			dl := decodeDeadLetter(t, dlMsg)
			if string(dl.OriginalData) != string(tt.data) || dl.OriginalSubject != d.Subject || dl.StreamSequence != 11 || dl.DeliveryCount != 1 ||
				dl.OriginalHeaders[events.HeaderMsgID][0] != valid.MsgID() || !dl.FirstFailedAt.Equal(d.Timestamp) {
				t.Errorf("dead letter = %+v, want the original job", dl)
			}
			if got, want := dlMsg.Header.Get(events.HeaderMsgID), events.DeadLetterMsgID(events.StreamJobs, 11); got != want {
				t.Errorf("dead letter Nats-Msg-Id = %q, want %q", got, want)
			}
			fm := b.pub.find(events.SubjectPrepayFailed)
			if tt.wantCode == "" {
				if fm != nil {
					t.Errorf("failure event published for an unnamed order: %s", fm.Data)
				}
				return
			}
			f := decodeFailed(t, fm)
			if f.Code != tt.wantCode || f.Field != tt.wantField || f.CombineOutTradeNo == "" || f.Attempts != 0 {
				t.Errorf("failure = %+v, want code %s field %q", f, tt.wantCode, tt.wantField)
			}
		})
	}
}

func TestProcessor_Process_failureEvents(t *testing.T) {
	tests := []struct {
		name    string
		err     error
		want    events.PrepayFailed
		wantMsg string
	}{
		{"param error", paramErr, events.PrepayFailed{Code: "PARAM_ERROR", Message: "bad field", Field: "/sub_orders/0/attach", HTTPStatus: 400, RequestID: "req-1", Attempts: 1}, ""},
		{"order closed needs a new number", closedErr, events.PrepayFailed{Code: "ORDER_CLOSED", Message: "closed", HTTPStatus: 400, RetryWithNewOrderNumber: true, Attempts: 1}, ""},
		{"local validation", &wechat.ValidationError{Field: "/notify_url", Issue: "must be an absolute https URL"},
			events.PrepayFailed{Code: events.CodeInvalidJob, Message: "must be an absolute https URL", Field: "/notify_url", Attempts: 1}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := setup(t, wechat.FlavourMerchant, payResult{err: tt.err})
			job := newJob(wechat.TradeTypeJSAPI, "P00001")
			if err := b.proc.Process(t.Context(), delivery(t, job)); !errors.Is(err, &pipeline.TerminalError{}) {
				t.Fatalf("Process() = %v, want TerminalError", err)
			}
			m := b.pub.find(events.SubjectPrepayFailed)
			got := decodeFailed(t, m)
			want := tt.want
			want.Version, want.TradeType, want.CombineMchID, want.CombineOutTradeNo, want.CorrelationID = 1, wechat.TradeTypeJSAPI, testMchID, "P00001", job.CorrelationID
			want.Final = true
			if diff := cmp.Diff(want, got, cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".CreatedAt" }, cmp.Ignore())); diff != "" {
				t.Errorf("failure event (-want +got):\n%s", diff)
			}
			if got, want := m.Header.Get(events.HeaderMsgID), events.PrepayFailedMsgID(testMchID, "P00001"); got != want {
				t.Errorf("Nats-Msg-Id = %q, want %q", got, want)
			}
			// A duplicate gets the stored failure, unchanged, with no call.
			stored := b.store.completed
			b2 := setup(t, wechat.FlavourMerchant)
			b2.store.claim = idempotency.Claim{State: idempotency.StateDone, Outcome: stored}
			dup := delivery(t, job)
			dup.Sequence++ // another job of the order: the dead letter is not its to publish
			if err := b2.proc.Process(t.Context(), dup); err != nil {
				t.Fatalf("duplicate Process() = %v, want nil", err)
			}
			if b2.payer.calls != 0 || len(b2.pub.msgs) != 1 || string(b2.pub.msgs[0].Data) != string(m.Data) {
				t.Errorf("duplicate: calls %d, events %v, want 0 calls and the same failure\n%s\n%s", b2.payer.calls, b2.pub.subjects(), b2.pub.msgs[0].Data, m.Data)
			}
		})
	}
}

func TestProcessor_Process_settleFailures(t *testing.T) {
	t.Run("publish failure after success keeps the outcome", func(t *testing.T) {
		b := setup(t, wechat.FlavourMerchant)
		b.pub.failures = 1
		job := newJob(wechat.TradeTypeJSAPI, "P00001")
		if err := b.proc.Process(t.Context(), delivery(t, job)); !errors.Is(err, &pipeline.RetryError{}) {
			t.Fatalf("Process() = %v, want RetryError", err)
		}
		if b.store.completed == nil {
			t.Fatal("outcome not stored before publishing")
		}
		// The redelivery finds it done and publishes the stored event.
		b.store.claim = idempotency.Claim{State: idempotency.StateDone, Outcome: b.store.completed}
		if err := b.proc.Process(t.Context(), delivery(t, job)); err != nil {
			t.Fatalf("redelivery Process() = %v, want nil", err)
		}
		if b.payer.calls != 1 || len(b.pub.msgs) != 1 {
			t.Errorf("calls = %d, events = %d, want 1 and 1", b.payer.calls, len(b.pub.msgs))
		}
	})
	t.Run("stale token publishes nothing", func(t *testing.T) {
		b := setup(t, wechat.FlavourMerchant)
		b.store.completeErr = idempotency.ErrStaleToken
		if err := b.proc.Process(t.Context(), delivery(t, newJob(wechat.TradeTypeJSAPI, "P00001"))); !errors.Is(err, &pipeline.RetryError{}) {
			t.Fatalf("Process() = %v, want RetryError", err)
		}
		if len(b.pub.msgs) != 0 {
			t.Errorf("published %v, want nothing", b.pub.subjects())
		}
	})
	t.Run("dead letter publish failure hands the job back", func(t *testing.T) {
		b := setup(t, wechat.FlavourMerchant)
		b.pub.failures = 1
		d := delivery(t, newJob(wechat.TradeTypeJSAPI, "P00001"))
		d.Data = []byte("{")
		if err := b.proc.Process(t.Context(), d); !errors.Is(err, &pipeline.RetryError{}) {
			t.Fatalf("Process() = %v, want RetryError", err)
		}
	})
	t.Run("store state is reported", func(t *testing.T) {
		b := setup(t, wechat.FlavourMerchant)
		b.store.claimErr = idempotency.ErrUnavailable
		_ = b.proc.Process(t.Context(), delivery(t, newJob(wechat.TradeTypeJSAPI, "P00001")))
		if err := b.proc.StoreErr(); !errors.Is(err, idempotency.ErrUnavailable) {
			t.Errorf("StoreErr() = %v, want ErrUnavailable", err)
		}
		b.store.claimErr = nil
		_ = b.proc.Process(t.Context(), delivery(t, newJob(wechat.TradeTypeJSAPI, "P00001")))
		if err := b.proc.StoreErr(); err != nil {
			t.Errorf("StoreErr() after a good claim = %v, want nil", err)
		}
	})
	t.Run("a malformed job naming a settled order never publishes under its outcome id", func(t *testing.T) {
		b := setup(t, wechat.FlavourMerchant)
		job := newJob(wechat.TradeTypeJSAPI, "P00001")
		job.Request.SubOrders = nil // invalid
		err := b.proc.Process(t.Context(), delivery(t, job))
		if !errors.Is(err, &pipeline.TerminalError{}) {
			t.Fatalf("Process() = %v, want TerminalError", err)
		}
		m := b.pub.find(events.SubjectPrepayFailed)
		if f := decodeFailed(t, m); f.Final {
			t.Errorf("an invalid job's failure is final: %+v", f)
		}
		if id, outcome := m.Header.Get(events.HeaderMsgID), events.OutcomeMsgID(testMchID, "P00001"); id == outcome {
			t.Errorf("an invalid job's failure was published under the order's outcome id %q", id)
		}
	})
}

func TestNew_errors(t *testing.T) {
	_, err := pipeline.New(pipeline.Config{Lease: time.Second})
	if err == nil {
		t.Fatal("New(empty) = nil error")
	}
	for _, want := range []string{"missing Payer", "missing Store", "missing Publisher", "bad Flavour", "lease 1s must cover"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("New() error = %q, want it to mention %q", err, want)
		}
	}
}

// BenchmarkProcessor_Process measures one successful jsapi job with
// in-memory collaborators: decode, validate, fingerprint, sign, encode.
func BenchmarkProcessor_Process(b *testing.B) {
	pub := &fakePublisher{}
	p, err := pipeline.New(pipeline.Config{
		Payer: &fakePayer{results: []payResult{ok}}, Signer: fakeSigner{key: testKey},
		Store: &fakeStore{claim: idempotency.Claim{State: idempotency.StateClaimed, Token: 1}}, Publisher: pub, Flavour: wechat.FlavourMerchant,
	})
	if err != nil {
		b.Fatal(err)
	}
	d := delivery(b, newJob(wechat.TradeTypeJSAPI, "BENCH001"))
	for b.Loop() {
		if err := p.Process(b.Context(), d); err != nil {
			b.Fatal(err)
		}
		pub.msgs = pub.msgs[:0]
	}
}

// TestProcess_deadLetterOwed: a final failure was stored and published,
// then its dead letter's publish failed (a dead-letter stream without a
// leader) and the job was handed back. The job's redelivery finds the
// order settled: it publishes the failure and, because the record says
// this job owes it, the dead letter. A duplicate job of the order (another
// stream sequence) republishes the failure alone.
func TestProcess_deadLetterOwed(t *testing.T) {
	b := setup(t, wechat.FlavourMerchant, payResult{err: paramErr})
	dl := (events.Subjects{}).DeadLetter(events.ReasonRejected)
	b.pub.refuse = func(m *nats.Msg) bool { return m.Subject == dl }
	job := newJob(wechat.TradeTypeJSAPI, "P00001")
	d := delivery(t, job)
	var re *pipeline.RetryError
	if err := b.proc.Process(t.Context(), d); !errors.As(err, &re) {
		t.Fatalf("Process() with the dead letter refused = %v, want the job handed back", err)
	}
	if b.store.completed == nil || b.pub.find(events.SubjectPrepayFailed) == nil || b.pub.find(dl) != nil {
		t.Fatalf("stored %v, published %v: want the failure stored and published, no dead letter yet", b.store.completed != nil, b.pub.subjects())
	}
	b.pub.refuse = nil
	b.pub.msgs = nil
	b.store.claim = idempotency.Claim{State: idempotency.StateDone, Outcome: b.store.completed}
	d.NumDelivered = 2
	if err := b.proc.Process(t.Context(), d); err != nil {
		t.Fatalf("redelivery: Process() = %v", err)
	}
	if got := b.pub.subjects(); !slices.Equal(got, []string{events.SubjectPrepayFailed, dl}) {
		t.Fatalf("redelivery published %v, want the failure and its dead letter", got)
	}
	letter := decodeDeadLetter(t, b.pub.find(dl))
	if letter.Reason != events.ReasonRejected || letter.StreamSequence != d.Sequence || !strings.Contains(letter.Error, "PARAM_ERROR") {
		t.Errorf("dead letter = %+v, want the rejected job %d with its error", letter, d.Sequence)
	}
	if id := b.pub.find(dl).Header.Get(events.HeaderMsgID); id != events.DeadLetterMsgID(events.StreamJobs, d.Sequence) {
		t.Errorf("dead letter id %q, want the job's own, so that a copy that got through stays one", id)
	}
	b.pub.msgs = nil
	dup := delivery(t, job)
	dup.Sequence = d.Sequence + 5
	if err := b.proc.Process(t.Context(), dup); err != nil {
		t.Fatalf("duplicate: Process() = %v", err)
	}
	if got := b.pub.subjects(); !slices.Equal(got, []string{events.SubjectPrepayFailed}) {
		t.Errorf("duplicate job published %v, want the failure alone", got)
	}
}
