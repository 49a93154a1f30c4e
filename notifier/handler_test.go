package notifier_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/metrics"
	"github.com/wxcombine/orderworker/notifier"
	"github.com/wxcombine/orderworker/wechat"
)

func TestHandler_ServeHTTP_paid(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	now := time.Now()
	tests := []struct {
		name   string
		key    wechat.PrivateKey
		serial string
		no     string
	}{
		{"platform certificate mode", b.keys.certKey, b.keys.certSerial, "C1001"},
		{"public-key mode", b.keys.pubKey, testPubKeyID, "C1002"},
	}
	for _, tt := range tests {
		n := notification(t, tt.key, tt.serial, b.keys.apiV3, "EV-"+tt.no, paidOrder(tt.no), now)
		if status, body := b.post(t, testMchID, n); status != http.StatusNoContent || len(body) != 0 {
			t.Errorf("%s: POST = %d %q, want 204 and no body", tt.name, status, body)
		}
	}
	got, ids := b.storedEvents(t)
	if len(got) != len(tests) {
		t.Fatalf("stored %d events, want %d", len(got), len(tests))
	}
	for i, tt := range tests {
		if want := events.PaymentSucceededMsgID(testMchID, tt.no); ids[i] != want {
			t.Errorf("%s: Nats-Msg-Id = %q, want %q", tt.name, ids[i], want)
		}
		if got[i].ReceivedAt.IsZero() {
			t.Errorf("%s: received_at is zero", tt.name)
		}
		want := events.PaymentSucceeded{
			Version:           events.Version,
			NotificationID:    "EV-" + tt.no,
			CombineAppID:      "wxd678efh567hg6787",
			CombineMchID:      testMchID,
			CombineOutTradeNo: tt.no,
			SuccessTime:       time.Date(2025, 5, 20, 5, 29, 36, 0, time.UTC),
			ReceivedAt:        got[i].ReceivedAt,
			SubOrders: []events.PaidSubOrder{
				{
					MchID: testMchID, OutTradeNo: tt.no + "-1", TransactionID: "4200000001" + tt.no,
					TradeType: "JSAPI", TradeState: "SUCCESS", BankType: "CMC", Attach: "shop 1",
					SuccessTime: time.Date(2025, 5, 20, 5, 29, 35, 0, time.UTC),
					Amount:      events.PaidAmount{TotalAmount: 10, Currency: "CNY", PayerAmount: 10, PayerCurrency: "CNY"},
				},
				{
					MchID: "1900000110", OutTradeNo: tt.no + "-2", TransactionID: "4200000002" + tt.no,
					TradeType: "JSAPI", TradeState: "SUCCESS", BankType: "CMC",
					SuccessTime: time.Date(2025, 5, 20, 5, 29, 36, 0, time.UTC),
					Amount:      events.PaidAmount{TotalAmount: 2345, Currency: "CNY", PayerAmount: 2345, PayerCurrency: "CNY"},
				},
			},
		}
		if diff := cmp.Diff(want, got[i], cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })); diff != "" {
			t.Errorf("%s: event mismatch (-want +got):\n%s", tt.name, diff)
		}
	}
	if n := b.results.count(notifier.ResultOK); n != len(tests) {
		t.Errorf("results[ok] = %d, want %d", n, len(tests))
	}
}

func TestHandler_ServeHTTP_openID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		publish bool
		want    string
	}{
		{"withheld by default", false, ""},
		{"published when configured", true, testOpenID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, func(c *notifier.Config) { c.PublishOpenID = tt.publish })
			n := notification(t, b.keys.pubKey, testPubKeyID, b.keys.apiV3, "EV-O1", paidOrder("O1"), time.Now())
			if status, body := b.post(t, testMchID, n); status != http.StatusNoContent {
				t.Fatalf("POST = %d %s, want 204", status, body)
			}
			got, _ := b.storedEvents(t)
			if len(got) != 1 {
				t.Fatalf("stored %d events, want 1", len(got))
			}
			if got[0].PayerOpenID != tt.want {
				t.Errorf("payer_openid = %q, want %q", got[0].PayerOpenID, tt.want)
			}
		})
	}
}

func TestHandler_ServeHTTP_duplicate(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	n := notification(t, b.keys.pubKey, testPubKeyID, b.keys.apiV3, "EV-D1", paidOrder("D1"), time.Now())
	wantStatus := []int{http.StatusNoContent, http.StatusOK, http.StatusOK}
	for i, want := range wantStatus {
		if status, body := b.post(t, testMchID, n); status != want {
			t.Errorf("delivery %d: POST = %d %s, want %d", i+1, status, body, want)
		}
	}
	if got, _ := b.storedEvents(t); len(got) != 1 {
		t.Errorf("stored %d events after 3 deliveries, want 1", len(got))
	}
	if got := b.results.count(notifier.ResultDuplicate); got != 2 {
		t.Errorf("results[duplicate] = %d, want 2", got)
	}
}

func TestHandler_ServeHTTP_rejects(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *notifier.Config) { c.MaxBodySize = 4 << 10 })
	k := b.keys
	now := time.Now()
	good := func(no string) signed {
		return notification(t, k.pubKey, testPubKeyID, k.apiV3, "EV-"+no, paidOrder(no), now)
	}
	// resign signs body again with WeChat Pay's key, for bodies that must
	// pass the signature and fail later.
	resign := func(body []byte) signed {
		h := http.Header{}
		if err := wechat.SignResponseHeaders(h, k.pubKey, testPubKeyID, now.Unix(), wechat.NewNonce(), body); err != nil {
			t.Fatal(err)
		}
		return signed{h, body}
	}
	withHeader := func(n signed, key, value string) signed {
		h := n.header.Clone()
		if value == "" {
			h.Del(key)
		} else {
			h.Set(key, value)
		}
		return signed{h, n.body}
	}
	otherMerchant := paidOrder("R13")
	otherMerchant.CombineMchID = "1900000999"
	noSubOrders := paidOrder("R14")
	noSubOrders.SubOrders = nil
	tampered := good("R2")
	tampered.body = bytes.Replace(tampered.body, []byte(`"EV-R2"`), []byte(`"EV-X2"`), 1)
	padded := good("R8")
	padded.body = append(bytes.TrimSuffix(padded.body, []byte("}")), []byte(`,"pad":"`+strings.Repeat("x", 5<<10)+`"}`)...)
	padded = resign(padded.body)

	tests := []struct {
		name       string
		method     string
		mchID      string
		n          signed
		wantStatus int
		wantResult notifier.Result
	}{
		{"forged with another key", "", testMchID, notification(t, k.forger, testPubKeyID, k.apiV3, "EV-R1", paidOrder("R1"), now), 401, notifier.ResultBadSignature},
		{"tampered body", "", testMchID, tampered, 401, notifier.ResultBadSignature},
		{"stale timestamp", "", testMchID, notification(t, k.pubKey, testPubKeyID, k.apiV3, "EV-R3", paidOrder("R3"), now.Add(-6*time.Minute)), 401, notifier.ResultStale},
		{"future timestamp", "", testMchID, notification(t, k.pubKey, testPubKeyID, k.apiV3, "EV-R4", paidOrder("R4"), now.Add(6*time.Minute)), 401, notifier.ResultStale},
		{"signature probe", "", testMchID, withHeader(good("R5"), wechat.HeaderSignature, wechat.SignTestPrefix+"aW52YWxpZA=="), 401, notifier.ResultSignatureProbe},
		{"unknown serial", "", testMchID, withHeader(good("R6"), wechat.HeaderSerial, "PUB_KEY_ID_0000"), 401, notifier.ResultUnknownSerial},
		{"missing nonce", "", testMchID, withHeader(good("R7"), wechat.HeaderNonce, ""), 401, notifier.ResultBadHeaders},
		{"timestamp not a number", "", testMchID, withHeader(good("R7b"), wechat.HeaderTimestamp, "soon"), 401, notifier.ResultBadHeaders},
		{"signature not base64", "", testMchID, withHeader(good("R7c"), wechat.HeaderSignature, "!!"), 401, notifier.ResultBadSignature},
		{"oversized", "", testMchID, padded, 413, notifier.ResultTooLarge},
		{"wrong APIv3 key", "", testMchID, notification(t, k.pubKey, testPubKeyID, k.otherAPIv3, "EV-R9", paidOrder("R9"), now), 400, notifier.ResultDecryptError},
		{"unknown merchant", "", "1900000999", good("R10"), 404, notifier.ResultUnknownMerchant},
		{"no merchant in path", "", "", good("R11"), 404, notifier.ResultUnknownMerchant},
		{"wrong method", http.MethodGet, testMchID, good("R12"), 405, notifier.ResultMethodNotAllowed},
		{"another merchant's order", "", testMchID, notification(t, k.pubKey, testPubKeyID, k.apiV3, "EV-R13", otherMerchant, now), 400, notifier.ResultMalformed},
		{"no sub-orders", "", testMchID, notification(t, k.pubKey, testPubKeyID, k.apiV3, "EV-R14", noSubOrders, now), 400, notifier.ResultMalformed},
		{"signed garbage", "", testMchID, resign([]byte("not json")), 400, notifier.ResultMalformed},
		{"refund event", "", testMchID, resign(bytes.Replace(good("R16").body, []byte(wechat.EventTransactionSuccess), []byte("REFUND.SUCCESS"), 1)), 400, notifier.ResultMalformed},
	}
	for _, tt := range tests {
		method := cmpOr(tt.method, http.MethodPost)
		before := b.results.count(tt.wantResult)
		status, body := do(t, method, b.url+notifier.PathPrefix+tt.mchID, tt.n.header, bytes.NewReader(tt.n.body))
		wantFail(t, status, body, tt.wantStatus)
		if got := b.results.count(tt.wantResult) - before; got != 1 {
			t.Errorf("%s: results[%s] grew by %d, want 1", tt.name, tt.wantResult, got)
		}
	}
	if got, _ := b.storedEvents(t); len(got) != 0 {
		t.Errorf("stored %d events after %d bad requests, want 0", len(got), len(tests))
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// TestHandler_ServeHTTP_tooLargeStreamed covers a body with no
// Content-Length: http.MaxBytesReader stops it.
func TestHandler_ServeHTTP_tooLargeStreamed(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *notifier.Config) { c.MaxBodySize = 4 << 10 })
	n := notification(t, b.keys.pubKey, testPubKeyID, b.keys.apiV3, "EV-L1", paidOrder("L1"), time.Now())
	body := io.MultiReader(bytes.NewReader(n.body), strings.NewReader(strings.Repeat(" ", 8<<10)))
	// A plain io.Reader makes the request chunked, without Content-Length.
	status, resp := do(t, http.MethodPost, b.url+notifier.PathPrefix+testMchID, n.header, struct{ io.Reader }{body})
	wantFail(t, status, resp, http.StatusRequestEntityTooLarge)
	if got := b.results.count(notifier.ResultTooLarge); got != 1 {
		t.Errorf("results[too_large] = %d, want 1", got)
	}
}

func TestHandler_ServeHTTP_publishFailure(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *notifier.Config) { c.PublishTimeout = 500 * time.Millisecond })
	n := notification(t, b.keys.pubKey, testPubKeyID, b.keys.apiV3, "EV-P1", paidOrder("P1"), time.Now())

	b.nats.Stop()
	start := time.Now()
	status, body := b.post(t, testMchID, n)
	wantFail(t, status, body, http.StatusInternalServerError)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("answer took %s, beyond WeChat Pay's 5s", d)
	}
	if got := b.results.count(notifier.ResultPublishError); got != 1 {
		t.Errorf("results[publish_error] = %d, want 1", got)
	}

	b.nats.Start()
	deadline := time.Now().Add(10 * time.Second)
	for {
		status, body = b.post(t, testMchID, n) // WeChat Pay's retry
		if status == http.StatusNoContent || status == http.StatusOK || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if status != http.StatusNoContent && status != http.StatusOK {
		t.Fatalf("retry after restart = %d %s, want 204 or 200", status, body)
	}
	if got, _ := b.storedEvents(t); len(got) != 1 {
		t.Errorf("stored %d events, want 1", len(got))
	}
}

// gatedPublisher holds every publication until gate is closed, announcing
// each on entered.
type gatedPublisher struct {
	notifier.Publisher
	entered chan struct{}
	gate    chan struct{}
}

func (g gatedPublisher) PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	g.entered <- struct{}{}
	<-g.gate
	return g.Publisher.PublishMsg(ctx, msg, opts...)
}

// TestHandler_ServeHTTP_overloaded: the only admission place is held by a
// complete notification whose publication hangs; a second one waits
// SlotWait for it, then is shed with 503 and counted as shed at admission.
func TestHandler_ServeHTTP_overloaded(t *testing.T) {
	t.Parallel()
	gp := gatedPublisher{entered: make(chan struct{}, 4), gate: make(chan struct{})}
	b := setup(t, func(c *notifier.Config) {
		gp.Publisher = c.Publisher
		c.Publisher = gp
		c.MaxConcurrentVerifications, c.MaxConcurrentRequests, c.SlotWait = 1, 1, 50*time.Millisecond
	})
	first := make(chan int, 1)
	go func() { // Ends when the gate opens below.
		status, _ := b.post(t, testMchID, notification(t, b.keys.pubKey, testPubKeyID, b.keys.apiV3, "EV-V1", paidOrder("V1"), time.Now()))
		first <- status
	}()
	<-gp.entered
	status, body := b.post(t, testMchID, notification(t, b.keys.pubKey, testPubKeyID, b.keys.apiV3, "EV-V2", paidOrder("V2"), time.Now()))
	wantFail(t, status, body, http.StatusServiceUnavailable)
	close(gp.gate)
	if got := <-first; got != http.StatusNoContent {
		t.Errorf("first notification = %d, want 204", got)
	}
	if got := b.results.count(notifier.ResultOverloaded); got != 1 {
		t.Errorf("results[overloaded] = %d, want 1", got)
	}
	if got := shed(t, b, metrics.ShedAdmission); got != 1 {
		t.Errorf("shed_total{stage=admission} = %v, want 1", got)
	}
}

// shed answers orderworker_notifier_shed_total{stage}.
func shed(t *testing.T, b *bundle, stage string) float64 {
	t.Helper()
	mfs, err := b.results.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "orderworker_notifier_shed_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "stage" && l.GetValue() == stage {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no shed_total{stage=%q} series", stage)
	return 0
}

// TestHandler_ServeHTTP_slowBodyHoldsNoPlace: a body that trickles in holds
// no admission place (the only one is free for genuine notifications
// meanwhile) and is cut off with 408 after BodyTimeout.
func TestHandler_ServeHTTP_slowBodyHoldsNoPlace(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *notifier.Config) {
		c.MaxConcurrentVerifications, c.MaxConcurrentRequests, c.SlotWait = 1, 1, 50*time.Millisecond
		c.BodyTimeout = 500 * time.Millisecond
	})
	n := notification(t, b.keys.pubKey, testPubKeyID, b.keys.apiV3, "EV-S1", paidOrder("S1"), time.Now())
	pr, pw := io.Pipe()
	defer pw.Close()
	slow := make(chan int, 1)
	go func() { // Ends when the server answers the slow request.
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, b.url+notifier.PathPrefix+testMchID, pr)
		req.Header = n.header.Clone()
		req.ContentLength = int64(len(n.body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			slow <- 0
			return
		}
		resp.Body.Close()
		slow <- resp.StatusCode
	}()
	if _, err := pw.Write(n.body[:10]); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		no := "S2-" + strconv.Itoa(i)
		status, body := b.post(t, testMchID, notification(t, b.keys.pubKey, testPubKeyID, b.keys.apiV3, "EV-"+no, paidOrder(no), time.Now()))
		if status != http.StatusNoContent {
			t.Fatalf("genuine notification while a body trickles in = %d %s, want 204", status, body)
		}
	}
	select {
	case got := <-slow:
		if got != http.StatusRequestTimeout {
			t.Errorf("slow body = %d, want 408", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("slow body not cut off within 5s")
	}
	if got := b.results.count(notifier.ResultSlowBody); got != 1 {
		t.Errorf("results[slow_body] = %d, want 1", got)
	}
}

func TestNew(t *testing.T) {
	t.Parallel()
	k := loadKeys(t)
	pub := memPublisher{}
	short := k.merchant()
	short.APIv3Key = wechat.APIv3Key("short")
	noKeys := k.merchant()
	noKeys.Platform = wechat.NewVerifier(nil)
	tests := []struct {
		name    string
		cfg     notifier.Config
		wantErr string
	}{
		{"valid", notifier.Config{Merchants: []*wechat.Merchant{k.merchant()}, Publisher: &pub}, ""},
		{"no publisher", notifier.Config{Merchants: []*wechat.Merchant{k.merchant()}}, "Publisher is required"},
		{"no merchants", notifier.Config{Publisher: &pub}, "Merchants is empty"},
		{"merchant twice", notifier.Config{Merchants: []*wechat.Merchant{k.merchant(), k.merchant()}, Publisher: &pub}, "configured twice"},
		{"short APIv3 key", notifier.Config{Merchants: []*wechat.Merchant{short}, Publisher: &pub}, "APIv3 key is 5 bytes"},
		{"no platform keys", notifier.Config{Merchants: []*wechat.Merchant{noKeys}, Publisher: &pub}, "no platform certificate"},
		{"tiny body limit", notifier.Config{Merchants: []*wechat.Merchant{k.merchant()}, Publisher: &pub, MaxBodySize: 10}, "MaxBodySize"},
	}
	for _, tt := range tests {
		_, err := notifier.New(tt.cfg)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%s: New() = %v, want nil", tt.name, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%s: New() = %v, want an error containing %q", tt.name, err, tt.wantErr)
		}
	}
}

// TestHandler_ServeHTTP_noSecretsLeak drives every kind of request and scans
// the logs and answers for the APIv3 key, private key material and the
// payer's openid.
func TestHandler_ServeHTTP_noSecretsLeak(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *notifier.Config) { c.MaxBodySize = 4 << 10 })
	k := b.keys
	now := time.Now()
	var answers bytes.Buffer
	send := func(mchID string, n signed) {
		status, body := b.post(t, mchID, n)
		answers.WriteString(strconv.Itoa(status) + " ")
		answers.Write(body)
		answers.WriteByte('\n')
	}
	send(testMchID, notification(t, k.pubKey, testPubKeyID, k.apiV3, "EV-S1", paidOrder("S1"), now))
	send(testMchID, notification(t, k.pubKey, testPubKeyID, k.apiV3, "EV-S1", paidOrder("S1"), now))
	send(testMchID, notification(t, k.certKey, k.certSerial, k.otherAPIv3, "EV-S2", paidOrder("S2"), now))
	send(testMchID, notification(t, k.forger, testPubKeyID, k.apiV3, "EV-S3", paidOrder("S3"), now))
	send(testMchID, notification(t, k.pubKey, testPubKeyID, k.apiV3, "EV-S4", paidOrder("S4"), now.Add(-time.Hour)))
	send("1900000999", notification(t, k.pubKey, testPubKeyID, k.apiV3, "EV-S5", paidOrder("S5"), now))
	other := paidOrder("S6")
	other.CombineMchID = "1900000999"
	send(testMchID, notification(t, k.pubKey, testPubKeyID, k.apiV3, "EV-S6", other, now))
	b.nats.Stop()
	send(testMchID, notification(t, k.pubKey, testPubKeyID, k.apiV3, "EV-S7", paidOrder("S7"), now))

	logs := b.logs.String()
	if !strings.Contains(logs, "EV-S1") {
		t.Fatalf("logs do not mention the notification id; did logging break?\n%s", logs)
	}
	secrets := map[string]string{
		"APIv3 key":       string(k.apiV3),
		"other APIv3 key": string(k.otherAPIv3),
		"openid":          testOpenID,
		"PEM header":      "PRIVATE KEY",
		"attach":          "shop 1",
	}
	for _, name := range []string{"platform_cert_key.pem", "wechatpay_pub_key_private.pem", "forger_key.pem"} {
		// A line from the middle of each private key.
		lines := strings.Split(string(readTestdata(t, name)), "\n")
		secrets[name] = lines[len(lines)/2]
	}
	for _, key := range []wechat.PrivateKey{k.pubKey, k.certKey} {
		secrets["private exponent"] = base64.StdEncoding.EncodeToString(key.RSA().D.Bytes())[:24]
	}
	for name, s := range secrets {
		for where, text := range map[string]string{"logs": logs, "answers": answers.String()} {
			if strings.Contains(text, s) {
				t.Errorf("%s contain the %s", where, name)
			}
		}
	}
	for _, field := range []string{"amount", "openid", "attach", "bank_type"} {
		if strings.Contains(logs, field) {
			t.Errorf("logs contain a %s field", field)
		}
	}
}

// TestHandler_ServeHTTP_burstWaits sends a burst of genuine notifications
// larger than the verification slots: each waits for a slot, none is shed.
func TestHandler_ServeHTTP_burstWaits(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *notifier.Config) { c.MaxConcurrentVerifications, c.SlotWait = 1, 3*time.Second })
	const burst = 16
	statuses := make(chan int, burst)
	var wg sync.WaitGroup
	for i := range burst {
		no := "B" + strconv.Itoa(i)
		n := notification(t, b.keys.pubKey, testPubKeyID, b.keys.apiV3, "EV-"+no, paidOrder(no), time.Now())
		wg.Go(func() {
			status, _ := b.post(t, testMchID, n)
			statuses <- status
		})
	}
	wg.Wait()
	close(statuses)
	for status := range statuses {
		if status != http.StatusNoContent {
			t.Errorf("POST in a burst = %d, want 204", status)
		}
	}
	if got := b.results.count(notifier.ResultOverloaded); got != 0 {
		t.Errorf("results[overloaded] = %d, want 0", got)
	}
	if got, _ := b.storedEvents(t); len(got) != burst {
		t.Errorf("stored %d events, want %d", len(got), burst)
	}
}
