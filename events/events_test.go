package events_test

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/wechat"
)

func TestSubjects(t *testing.T) {
	tests := []struct {
		name   string
		prefix string
		got    func(events.Subjects) string
		want   string
	}{
		{"default job", "", func(s events.Subjects) string { return s.Job(wechat.TradeTypeJSAPI) }, "combine.orders.create.jsapi"},
		{"default jobs wildcard", "", events.Subjects.Jobs, "combine.orders.create.*"},
		{"default created", "", events.Subjects.PrepayCreated, events.SubjectPrepayCreated},
		{"default failed", "", events.Subjects.PrepayFailed, events.SubjectPrepayFailed},
		{"default payment", "", events.Subjects.PaymentSucceeded, events.SubjectPaymentSucceeded},
		{"default dead letter", "", func(s events.Subjects) string { return s.DeadLetter(events.ReasonTooLarge) }, events.SubjectDeadLetterPrefix + ".too_large"},
		{"custom job", "acme.pay", func(s events.Subjects) string { return s.Job(wechat.TradeTypeH5) }, "acme.pay.orders.create.h5"},
		{"custom created", "acme", events.Subjects.PrepayCreated, "acme.orders.prepay.created"},
		{"custom dead letters", "acme", events.Subjects.DeadLetters, "acme.orders.deadletter.*"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.got(events.Subjects{Prefix: tt.prefix}); got != tt.want {
				t.Errorf("subject = %q, want %q", got, tt.want)
			}
		})
	}
	if got, want := events.SubjectJobPrefix+".app", (events.Subjects{}).Job(wechat.TradeTypeApp); got != want {
		t.Errorf("SubjectJobPrefix job = %q, want %q", got, want)
	}
}

func TestSubjects_TradeTypeOf(t *testing.T) {
	s := events.Subjects{Prefix: "acme"}
	tests := []struct {
		subject string
		want    wechat.TradeType
		wantOK  bool
	}{
		{"acme.orders.create.native", wechat.TradeTypeNative, true},
		{"acme.orders.create.miniprogram", wechat.TradeTypeMiniProgram, true},
		{"acme.orders.create.pos", "pos", false},
		{"combine.orders.create.app", "", false},
		{"acme.orders.prepay.created", "", false},
	}
	for _, tt := range tests {
		got, ok := s.TradeTypeOf(tt.subject)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("TradeTypeOf(%q) = %q, %v, want %q, %v", tt.subject, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestMsgIDs(t *testing.T) {
	tests := []struct{ got, want string }{
		{events.JobMsgID("1900000109", "P1"), "1900000109:P1"},
		{events.OutcomeMsgID("1900000109", "P1"), "outcome:1900000109:P1"},
		{events.PrepayCreatedMsgID("1900000109", "P1"), "outcome:1900000109:P1"},
		{events.PrepayFailedMsgID("1900000109", "P1"), "outcome:1900000109:P1"},
		{events.JobFailedMsgID("1900000109", "P1", "COMBINE_ORDER_JOBS", 42), "prepay.failed:1900000109:P1:COMBINE_ORDER_JOBS:42"},
		{events.PaymentSucceededMsgID("1900000109", "P1"), "payment:1900000109:P1"},
		{events.DeadLetterMsgID(events.StreamJobs, 42), "deadletter:COMBINE_ORDER_JOBS:42"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("msg id = %q, want %q", tt.got, tt.want)
		}
	}
	job := events.CreateOrderJob{Request: wechat.CombineOrderRequest{CombineMchID: "1900000109", CombineOutTradeNo: "P1"}}
	if got, want := job.MsgID(), "1900000109:P1"; got != want {
		t.Errorf("job.MsgID() = %q, want %q", got, want)
	}
}

func readJob(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/job_jsapi.json")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// edit decodes the sample job into a map, applies f and re-encodes it.
func edit(t *testing.T, f func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(readJob(t), &m); err != nil {
		t.Fatal(err)
	}
	f(m)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeJob(t *testing.T) {
	valid := readJob(t)
	tests := []struct {
		name      string
		data      []byte
		maxSize   int
		wantErr   error
		wantNo    string // combine_out_trade_no read despite the error
		wantField string // substring of the error
	}{
		{"valid", valid, 0, nil, "P20150806125346", ""},
		{"too large", valid, 100, events.ErrTooLarge, "", "limit 100"},
		{"not json", []byte("{not json"), 0, events.ErrMalformed, "", "no version"},
		{"empty", nil, 0, events.ErrMalformed, "", ""},
		{"array", []byte("[1,2]"), 0, events.ErrMalformed, "", ""},
		{"version 2", edit(t, func(m map[string]any) { m["version"] = 2 }), 0, events.ErrUnsupportedVersion, "P20150806125346", "version 2"},
		{"no version", edit(t, func(m map[string]any) { delete(m, "version") }), 0, events.ErrMalformed, "P20150806125346", "no version"},
		{"unknown field", edit(t, func(m map[string]any) { m["priority"] = 1 }), 0, events.ErrMalformed, "P20150806125346", "priority"},
		{"unknown request field", edit(t, func(m map[string]any) {
			m["request"].(map[string]any)["combine_mch_id"] = "x"
		}), 0, events.ErrMalformed, "P20150806125346", "combine_mch_id"},
		{"wrong type", edit(t, func(m map[string]any) {
			m["request"].(map[string]any)["sub_orders"] = "none"
		}), 0, events.ErrMalformed, "P20150806125346", "sub_orders"},
		{"trailing data", append(append([]byte{}, valid...), []byte(` {}`)...), 0, events.ErrMalformed, "P20150806125346", "after"},
		{"unknown trade type", edit(t, func(m map[string]any) { m["trade_type"] = "pos" }), 0, events.ErrMalformed, "P20150806125346", "trade_type"},
		{"unknown flavour", edit(t, func(m map[string]any) { m["flavour"] = "vip" }), 0, events.ErrMalformed, "P20150806125346", "flavour"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			job, err := events.DecodeJob(tt.data, tt.maxSize)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("DecodeJob() error = %v, want %v", err, tt.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), tt.wantField) {
				t.Errorf("DecodeJob() error = %q, want it to mention %q", err, tt.wantField)
			}
			if got := job.Request.CombineOutTradeNo; got != tt.wantNo {
				t.Errorf("DecodeJob() combine_out_trade_no = %q, want %q", got, tt.wantNo)
			}
		})
	}
}

func TestDecodeJob_Fields(t *testing.T) {
	job, err := events.DecodeJob(readJob(t), 0)
	if err != nil {
		t.Fatal(err)
	}
	want := events.CreateOrderJob{
		Version:       1,
		CorrelationID: "c0a8f3e2-5b1d-4c7e-9f00-1d2e3f4a5b6c",
		CreatedAt:     time.Date(2025, 1, 16, 2, 0, 0, 0, time.UTC),
		TradeType:     wechat.TradeTypeJSAPI,
		Flavour:       wechat.FlavourMerchant,
		Request: wechat.CombineOrderRequest{
			CombineAppID:      "wxd678efh567hg6787",
			CombineMchID:      "1900000109",
			CombineOutTradeNo: "P20150806125346",
			SceneInfo:         &wechat.SceneInfo{PayerClientIP: "14.23.150.211"},
			SubOrders: []wechat.SubOrder{
				{MchID: "1900000109", Attach: "shop-1", Amount: wechat.Amount{TotalAmount: 10, Currency: "CNY"}, OutTradeNo: "20150806125346-1", Description: "Tencent cup"},
				{MchID: "1900000109", Attach: "shop-2", Amount: wechat.Amount{TotalAmount: 20, Currency: "CNY"}, OutTradeNo: "20150806125346-2", Description: "Tencent pen"},
			},
			CombinePayerInfo: &wechat.PayerInfo{OpenID: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
			TimeExpire:       "2025-01-16T12:00:00+08:00",
			NotifyURL:        "https://yourapp.example/wxpay/notify",
		},
	}
	if diff := cmp.Diff(want, job, cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })); diff != "" {
		t.Errorf("DecodeJob() mismatch (-want +got):\n%s", diff)
	}
	if got, want := job.MsgID(), "1900000109:P20150806125346"; got != want {
		t.Errorf("MsgID() = %q, want %q", got, want)
	}
}

func TestReasonAndCodeOf(t *testing.T) {
	tests := []struct {
		err        error
		wantReason events.Reason
		wantCode   string
	}{
		{events.ErrTooLarge, events.ReasonTooLarge, events.CodeJobTooLarge},
		{events.ErrUnsupportedVersion, events.ReasonUnsupportedVersion, events.CodeUnsupportedVersion},
		{events.ErrMalformed, events.ReasonMalformed, events.CodeMalformedJob},
		{errors.New("other"), events.ReasonMalformed, events.CodeMalformedJob},
	}
	for _, tt := range tests {
		if got := events.ReasonOf(tt.err); got != tt.wantReason {
			t.Errorf("ReasonOf(%v) = %q, want %q", tt.err, got, tt.wantReason)
		}
		if got := events.CodeOf(tt.err); got != tt.wantCode {
			t.Errorf("CodeOf(%v) = %q, want %q", tt.err, got, tt.wantCode)
		}
	}
}

// TestEventJSON pins the wire names of the events, as docs/events.md shows
// them.
func TestEventJSON(t *testing.T) {
	at := time.Date(2025, 1, 16, 10, 0, 1, 0, time.UTC)
	tests := []struct {
		name string
		v    any
		want string
	}{
		{"prepay created jsapi", events.PrepayCreated{
			Version: 1, CorrelationID: "c1", TradeType: wechat.TradeTypeJSAPI, CombineAppID: "wxd678efh567hg6787",
			CombineMchID: "1900000109", CombineOutTradeNo: "P1", PrepayID: "wx201410272009395522657a690389285100",
			PayParams: &events.PayParams{JSAPI: &events.JSAPIPayParams{
				AppID: "wxd678efh567hg6787", TimeStamp: "1554208460", NonceStr: "593BEC0C930BF1AFEB40B4A08C8FB242",
				Package: "prepay_id=wx201410272009395522657a690389285100", SignType: "RSA", PaySign: "c2ln",
			}},
			Attempts: 1, CreatedAt: at,
		}, `{"version":1,"correlation_id":"c1","trade_type":"jsapi","combine_appid":"wxd678efh567hg6787","combine_mchid":"1900000109","combine_out_trade_no":"P1","prepay_id":"wx201410272009395522657a690389285100","pay_params":{"jsapi":{"appId":"wxd678efh567hg6787","timeStamp":"1554208460","nonceStr":"593BEC0C930BF1AFEB40B4A08C8FB242","package":"prepay_id=wx201410272009395522657a690389285100","signType":"RSA","paySign":"c2ln"}},"attempts":1,"created_at":"2025-01-16T10:00:01Z"}`},
		{"prepay created app", events.PrepayCreated{
			Version: 1, TradeType: wechat.TradeTypeApp, CombineAppID: "wxa", CombineMchID: "1900000109", CombineOutTradeNo: "P2", PrepayID: "wx1",
			PayParams: &events.PayParams{App: &events.AppPayParams{AppID: "wxa", PartnerID: "1900000109", PrepayID: "wx1", Package: "Sign=WXPay", NonceStr: "n", TimeStamp: "1", Sign: "s"}},
			Attempts:  2, CreatedAt: at,
		}, `{"version":1,"trade_type":"app","combine_appid":"wxa","combine_mchid":"1900000109","combine_out_trade_no":"P2","prepay_id":"wx1","pay_params":{"app":{"appid":"wxa","partnerid":"1900000109","prepayid":"wx1","package":"Sign=WXPay","noncestr":"n","timestamp":"1","sign":"s"}},"attempts":2,"created_at":"2025-01-16T10:00:01Z"}`},
		{"prepay created native", events.PrepayCreated{
			Version: 1, TradeType: wechat.TradeTypeNative, CombineAppID: "wxa", CombineMchID: "1900000109", CombineOutTradeNo: "P3", CodeURL: "weixin://wxpay/bizpayurl?pr=abc", Attempts: 1, CreatedAt: at,
		}, `{"version":1,"trade_type":"native","combine_appid":"wxa","combine_mchid":"1900000109","combine_out_trade_no":"P3","code_url":"weixin://wxpay/bizpayurl?pr=abc","attempts":1,"created_at":"2025-01-16T10:00:01Z"}`},
		{"prepay failed", events.PrepayFailed{
			Version: 1, TradeType: wechat.TradeTypeH5, CombineMchID: "1900000109", CombineOutTradeNo: "P4", Code: "ORDER_CLOSED", Message: "order closed",
			RetryWithNewOrderNumber: true, HTTPStatus: 400, RequestID: "r1", Attempts: 1, CreatedAt: at,
		}, `{"version":1,"trade_type":"h5","combine_mchid":"1900000109","combine_out_trade_no":"P4","code":"ORDER_CLOSED","message":"order closed","retry_with_new_order_number":true,"final":false,"http_status":400,"request_id":"r1","attempts":1,"created_at":"2025-01-16T10:00:01Z"}`},
		{"dead letter", events.DeadLetter{
			Version: 1, Reason: events.ReasonMalformed, Error: "malformed job", OriginalSubject: "combine.orders.create.app",
			OriginalHeaders: map[string][]string{"Nats-Msg-Id": {"x"}}, OriginalData: []byte("{oops"), StreamSequence: 7, DeliveryCount: 1,
			FirstFailedAt: at, DeadAt: at,
		}, `{"version":1,"reason":"malformed","error":"malformed job","original_subject":"combine.orders.create.app","original_headers":{"Nats-Msg-Id":["x"]},"original_data":"e29vcHM=","stream_sequence":7,"delivery_count":1,"first_failed_at":"2025-01-16T10:00:01Z","dead_at":"2025-01-16T10:00:01Z"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := json.Marshal(tt.v)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("json.Marshal() =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestPaymentSucceededJSON(t *testing.T) {
	at := time.Date(2025, 1, 16, 10, 5, 0, 0, time.UTC)
	in := events.PaymentSucceeded{
		Version: 1, NotificationID: "EV-2018022511223320873", CombineAppID: "wxa", CombineMchID: "1900000109",
		CombineOutTradeNo: "P1", CombineTransactionID: "4200000000000000000",
		SubOrders: []events.PaidSubOrder{{
			MchID: "1900000109", OutTradeNo: "P1-1", TransactionID: "4200000000000000001", TradeType: "JSAPI",
			TradeState: wechat.TradeStateSuccess, SuccessTime: at, Amount: events.PaidAmount{TotalAmount: 10, Currency: "CNY", PayerAmount: 10, PayerCurrency: "CNY"},
		}},
		SuccessTime: at, ReceivedAt: at,
	}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "payer_openid") {
		t.Errorf("json.Marshal() = %s, want no payer_openid when it is not set", b)
	}
	var out events.PaymentSucceeded
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(in, out); diff != "" {
		t.Errorf("round trip mismatch (-want +got):\n%s", diff)
	}
}

func BenchmarkDecodeJob(b *testing.B) {
	data, err := os.ReadFile("testdata/job_jsapi.json")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := events.DecodeJob(data, 0); err != nil {
			b.Fatal(err)
		}
	}
}
