package notifier_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/internal/testenv"
	"github.com/wxcombine/orderworker/metrics"
	"github.com/wxcombine/orderworker/notifier"
	"github.com/wxcombine/orderworker/wechat"
)

// Test identities. The keys in testdata/ are test-only keys made for this
// package; no real merchant uses them.
const (
	testMchID    = "1900000109"
	testPubKeyID = "PUB_KEY_ID_0119000001092025010100000000000001"
	testOpenID   = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
)

// testKeys holds WeChat Pay's side (both signing keys), a forger's key and
// the merchant's APIv3 key, plus a second APIv3 key that is not the
// merchant's.
type testKeys struct {
	certKey    wechat.PrivateKey
	certSerial string
	certPEM    []byte
	pubKey     wechat.PrivateKey
	pubPEM     []byte
	forger     wechat.PrivateKey
	apiV3      wechat.APIv3Key
	otherAPIv3 wechat.APIv3Key
}

func readTestdata(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func loadKeys(tb testing.TB) *testKeys {
	tb.Helper()
	parse := func(name string) wechat.PrivateKey {
		k, err := wechat.ParsePrivateKey(readTestdata(tb, name))
		if err != nil {
			tb.Fatalf("%s: %v", name, err)
		}
		return k
	}
	k := &testKeys{
		certKey:    parse("platform_cert_key.pem"),
		certPEM:    readTestdata(tb, "platform_cert.pem"),
		pubKey:     parse("wechatpay_pub_key_private.pem"),
		pubPEM:     readTestdata(tb, "wechatpay_pub_key.pem"),
		forger:     parse("forger_key.pem"),
		apiV3:      wechat.APIv3Key(readTestdata(tb, "apiv3_key")),
		otherAPIv3: wechat.APIv3Key(readTestdata(tb, "other_apiv3_key")),
	}
	_, serial, err := wechat.ParsePublicKey(k.certPEM)
	if err != nil {
		tb.Fatal(err)
	}
	k.certSerial = serial
	return k
}

// merchant answers the notifier's view of testMchID: both platform keys (a
// merchant migrating to public-key mode) and the APIv3 key.
func (k *testKeys) merchant() *wechat.Merchant {
	v := wechat.NewVerifier(nil)
	v.AddKey(k.certSerial, k.certKey.Public())
	v.AddKey(testPubKeyID, k.pubKey.Public())
	return &wechat.Merchant{MchID: testMchID, APIv3Key: k.apiV3, Platform: v}
}

// paidOrder answers a paid combine order of testMchID with two sub-orders.
func paidOrder(no string) *wechat.CombineOrder {
	return &wechat.CombineOrder{
		CombineAppID:      "wxd678efh567hg6787",
		CombineMchID:      testMchID,
		CombineOutTradeNo: no,
		SceneInfo:         &wechat.SceneInfo{DeviceID: "POS1:1"},
		SubOrders: []wechat.OrderSubOrder{
			{
				MchID: testMchID, OutTradeNo: no + "-1", TransactionID: "4200000001" + no,
				TradeType: "JSAPI", TradeState: wechat.TradeStateSuccess, BankType: "CMC", Attach: "shop 1",
				SuccessTime: "2025-05-20T13:29:35+08:00",
				Amount:      wechat.Amount{TotalAmount: 10, Currency: "CNY", PayerAmount: 10, PayerCurrency: "CNY"},
			},
			{
				MchID: "1900000110", OutTradeNo: no + "-2", TransactionID: "4200000002" + no,
				TradeType: "JSAPI", TradeState: wechat.TradeStateSuccess, BankType: "CMC",
				SuccessTime: "2025-05-20T13:29:36+08:00",
				Amount:      wechat.Amount{TotalAmount: 2345, Currency: "CNY", PayerAmount: 2345, PayerCurrency: "CNY"},
			},
		},
		CombinePayerInfo: &wechat.PayerInfo{OpenID: testOpenID},
	}
}

// signed is a notification as WeChat Pay would POST it.
type signed struct {
	header http.Header
	body   []byte
}

// notification builds a signed, encrypted TRANSACTION.SUCCESS notification.
func notification(tb testing.TB, key wechat.PrivateKey, serial string, apiV3 wechat.APIv3Key, id string, tx *wechat.CombineOrder, now time.Time) signed {
	tb.Helper()
	h, body, err := wechat.BuildNotification(key, serial, apiV3, id, now, tx, now)
	if err != nil {
		tb.Fatal(err)
	}
	return signed{h, body}
}

// results reads orderworker_notifier_notifications_total from a registry.
type results struct{ reg *prometheus.Registry }

func (r *results) count(res notifier.Result) int {
	mfs, err := r.reg.Gather()
	if err != nil {
		panic(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "orderworker_notifier_notifications_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == string(res) {
					return int(m.GetCounter().GetValue())
				}
			}
		}
	}
	return 0
}

// bundle is one test's notifier in front of a real JetStream server.
type bundle struct {
	keys    *testKeys
	nats    *testenv.NATS
	nc      *nats.Conn
	js      jetstream.JetStream
	stream  jetstream.Stream
	url     string // the httptest server's base URL
	logs    *testenv.Buffer
	results *results
}

// eventsStreamConfig is the events stream as the deployment creates it.
func eventsStreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:       events.StreamEvents,
		Subjects:   events.Subjects{}.Events(),
		Storage:    jetstream.FileStorage,
		Duplicates: 2 * time.Minute,
	}
}

// connect opens a NATS connection that fails publishes at once while
// disconnected (no reconnect buffer) and reconnects quickly forever, as
// cmd/notifier does.
func connect(tb testing.TB, url string) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond),
		nats.ReconnectBufSize(-1))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// setup starts NATS with the events stream and a notifier in front of it;
// mutate adjusts the configuration.
func setup(t *testing.T, mutate func(*notifier.Config)) *bundle {
	t.Helper()
	b := &bundle{keys: loadKeys(t), nats: testenv.StartNATS(t), logs: &testenv.Buffer{}, results: &results{reg: prometheus.NewRegistry()}}
	b.nc = connect(t, b.nats.URL)
	js, err := jetstream.New(b.nc)
	if err != nil {
		t.Fatal(err)
	}
	b.js = js
	b.stream, err = js.CreateStream(t.Context(), eventsStreamConfig())
	if err != nil {
		t.Fatal(err)
	}
	cfg := notifier.Config{
		Merchants:      []*wechat.Merchant{b.keys.merchant()},
		Publisher:      js,
		PublishTimeout: time.Second,
		Metrics:        metrics.NewNotifier(b.results.reg),
		Logger:         slog.New(slog.NewJSONHandler(b.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mutate != nil {
		mutate(&cfg)
	}
	h, err := notifier.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	b.url = srv.URL
	return b
}

// post delivers n to the merchant's path and answers the status and body.
func (b *bundle) post(t *testing.T, mchID string, n signed) (int, []byte) {
	t.Helper()
	return do(t, http.MethodPost, b.url+notifier.PathPrefix+mchID, n.header, bytes.NewReader(n.body))
}

func do(t *testing.T, method, url string, h http.Header, body io.Reader) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, rb
}

// storedEvents answers every PaymentSucceeded in the events stream with its
// Nats-Msg-Id.
func (b *bundle) storedEvents(t *testing.T) ([]events.PaymentSucceeded, []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	info, err := b.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var (
		evs []events.PaymentSucceeded
		ids []string
	)
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := b.stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("GetMsg(%d): %v", seq, err)
		}
		if m.Subject != events.SubjectPaymentSucceeded {
			t.Errorf("event subject = %q, want %q", m.Subject, events.SubjectPaymentSucceeded)
		}
		var e events.PaymentSucceeded
		if err := json.Unmarshal(m.Data, &e); err != nil {
			t.Fatalf("event %d: %v", seq, err)
		}
		evs = append(evs, e)
		ids = append(ids, m.Header.Get(events.HeaderMsgID))
	}
	return evs, ids
}

// wantFail checks a WeChat Pay failure answer.
func wantFail(t *testing.T, status int, body []byte, wantStatus int) {
	t.Helper()
	if status != wantStatus {
		t.Errorf("status = %d (%s), want %d", status, body, wantStatus)
	}
	var fb struct{ Code, Message string }
	if err := json.Unmarshal(body, &fb); err != nil || fb.Code != "FAIL" || fb.Message == "" || len(fb.Message) > 64 {
		t.Errorf("body = %s, want {\"code\":\"FAIL\",\"message\":<1..64 bytes>}", body)
	}
}
