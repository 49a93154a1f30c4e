package notifier_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/notifier"
	"github.com/wxcombine/orderworker/wechat"
)

// memPublisher is an in-memory JetStream stand-in with JetStream's
// deduplication by Nats-Msg-Id, for tests that need no broker.
type memPublisher struct {
	mu   sync.Mutex
	msgs []*nats.Msg
	ids  map[string]uint64
}

func (p *memPublisher) PublishMsg(_ context.Context, msg *nats.Msg, _ ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ids == nil {
		p.ids = map[string]uint64{}
	}
	id := msg.Header.Get(events.HeaderMsgID)
	if seq, ok := p.ids[id]; ok && id != "" {
		return &jetstream.PubAck{Stream: events.StreamEvents, Sequence: seq, Duplicate: true}, nil
	}
	p.msgs = append(p.msgs, msg)
	p.ids[id] = uint64(len(p.msgs))
	return &jetstream.PubAck{Stream: events.StreamEvents, Sequence: uint64(len(p.msgs))}, nil
}

func (p *memPublisher) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.msgs)
}

func (p *memPublisher) last() *nats.Msg {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.msgs[len(p.msgs)-1]
}

// fuzzNow is the fuzz target's fixed clock, so that seeds signed once stay
// within the five-minute window forever.
var fuzzNow = time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)

// Fuzz input modes.
const (
	modeRaw      = 0 // headers and body as given
	modeSign     = 1 // body signed with WeChat Pay's public-key-mode key
	modeEncrypt  = 2 // body is the transaction: encrypted, wrapped and signed
	fuzzNonce    = "5K8264ILTKCH16CQ2502SI8ZNMTM67VS"
	fuzzNotifyID = "EV-FUZZ"
)

// FuzzHandler sends arbitrary requests to the handler. Depending on mode the
// target signs the body or encrypts it as the transaction, so the fuzzer
// reaches the envelope and transaction parsing behind the signature. It
// checks that every answer is a known status, that 2xx answers exactly when
// one valid event was stored for the path's merchant, and that failures are
// WeChat Pay's FAIL body and store nothing.
func FuzzHandler(f *testing.F) {
	k := loadKeys(f)
	m := k.merchant()
	m.Platform.NowFunc = func() time.Time { return fuzzNow }
	pub := &memPublisher{}
	h, err := notifier.New(notifier.Config{
		Merchants: []*wechat.Merchant{m},
		Publisher: pub,
		NowFunc:   func() time.Time { return fuzzNow },
	})
	if err != nil {
		f.Fatal(err)
	}
	tx, err := json.Marshal(paidOrder("F1"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add("POST", testMchID, uint8(modeEncrypt), int64(0), testPubKeyID, "", tx)
	f.Add("POST", testMchID, uint8(modeSign), int64(-299), k.certSerial, "", []byte(`{"id":"EV-1","event_type":"TRANSACTION.SUCCESS"}`))
	f.Add("GET", testMchID, uint8(modeRaw), int64(0), testPubKeyID, "", []byte{})
	f.Add("POST", testMchID, uint8(modeRaw), int64(0), testPubKeyID, wechat.SignTestPrefix+"AAAA", []byte(`{}`))

	// The target must reach publication, or fuzzing only exercises refusals.
	sanity := httptest.NewRecorder()
	h.ServeHTTP(sanity, fuzzRequest(f, k, "POST", testMchID, modeEncrypt, 0, k.certSerial, "", tx))
	if sanity.Code != http.StatusNoContent || pub.len() != 1 {
		f.Fatalf("genuine notification answered %d with %d events stored, want 204 and 1", sanity.Code, pub.len())
	}

	f.Fuzz(func(t *testing.T, method, mchID string, mode uint8, tsOffset int64, serial, signature string, body []byte) {
		req := fuzzRequest(t, k, method, mchID, mode, tsOffset, serial, signature, body)
		before := pub.len()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		stored := pub.len() - before

		switch rec.Code {
		case http.StatusNoContent, http.StatusOK:
			if rec.Code == http.StatusNoContent && stored != 1 {
				t.Fatalf("204 but %d events stored", stored)
			}
			if stored == 0 { // a duplicate: the earlier copy must exist
				return
			}
			msg := pub.last()
			var e events.PaymentSucceeded
			if err := json.Unmarshal(msg.Data, &e); err != nil {
				t.Fatalf("stored event does not decode: %v", err)
			}
			if e.CombineMchID != mchID || e.CombineOutTradeNo == "" || len(e.SubOrders) == 0 {
				t.Fatalf("stored event for %q/%q with %d sub-orders at path merchant %q", e.CombineMchID, e.CombineOutTradeNo, len(e.SubOrders), mchID)
			}
			if got, want := msg.Header.Get(events.HeaderMsgID), events.PaymentSucceededMsgID(e.CombineMchID, e.CombineOutTradeNo); got != want {
				t.Fatalf("Nats-Msg-Id = %q, want %q", got, want)
			}
			if e.PayerOpenID != "" {
				t.Fatalf("openid published without PublishOpenID")
			}
		case http.StatusBadRequest, http.StatusUnauthorized, http.StatusNotFound, http.StatusMethodNotAllowed,
			http.StatusRequestEntityTooLarge, http.StatusInternalServerError, http.StatusServiceUnavailable:
			if stored != 0 {
				t.Fatalf("status %d but %d events stored", rec.Code, stored)
			}
			var fb struct{ Code, Message string }
			if err := json.Unmarshal(rec.Body.Bytes(), &fb); err != nil || fb.Code != "FAIL" || fb.Message == "" || len(fb.Message) > 64 {
				t.Fatalf("status %d with body %q, want a FAIL body", rec.Code, rec.Body.Bytes())
			}
		default:
			t.Fatalf("unexpected status %d", rec.Code)
		}
		if bytes.Contains(rec.Body.Bytes(), k.apiV3) {
			t.Fatal("answer contains the APIv3 key")
		}
	})
}

// fuzzRequest builds the request of one fuzz input.
func fuzzRequest(tb testing.TB, k *testKeys, method, mchID string, mode uint8, tsOffset int64, serial, signature string, body []byte) *http.Request {
	tb.Helper()
	if tsOffset > 1e9 || tsOffset < -1e9 {
		tsOffset %= 1e9
	}
	ts := fuzzNow.Unix() + tsOffset
	hd := http.Header{}
	switch mode % 3 {
	case modeEncrypt:
		res, err := wechat.EncryptResource(k.apiV3, wechat.AssociatedDataTransaction, wechat.AssociatedDataTransaction, body)
		if err != nil {
			tb.Fatal(err)
		}
		body, err = wechat.MarshalBody(wechat.NotificationEnvelope{
			ID: fuzzNotifyID, CreateTime: fuzzNow.Format(time.RFC3339), EventType: wechat.EventTransactionSuccess,
			ResourceType: wechat.ResourceTypeEncrypted, Summary: wechat.SummaryPaid, Resource: res,
		})
		if err != nil {
			tb.Fatal(err)
		}
		fallthrough
	case modeSign:
		key := k.pubKey // signs whatever serial the input names
		if serial == k.certSerial {
			key = k.certKey
		}
		if err := wechat.SignResponseHeaders(hd, key, serial, ts, fuzzNonce, body); err != nil {
			tb.Fatal(err)
		}
		if strings.HasPrefix(signature, wechat.SignTestPrefix) {
			hd.Set(wechat.HeaderSignature, signature)
		}
	default:
		hd.Set(wechat.HeaderTimestamp, strconv.FormatInt(ts, 10))
		hd.Set(wechat.HeaderNonce, fuzzNonce)
		hd.Set(wechat.HeaderSerial, serial)
		hd.Set(wechat.HeaderSignature, signature)
	}
	// Method and path are set after parsing so that any bytes reach the
	// handler, as they would after a proxy's decoding.
	req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
	req.Method, req.URL.Path = method, notifier.PathPrefix+mchID
	for key, v := range hd {
		req.Header[key] = v
	}
	return req
}
