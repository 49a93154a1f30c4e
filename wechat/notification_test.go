package wechat

import (
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func testTransaction(t testing.TB) *CombineOrder {
	t.Helper()
	var o CombineOrder
	if err := json.Unmarshal([]byte(testOrderJSON), &o); err != nil {
		t.Fatal(err)
	}
	return &o
}

func TestParseNotification_RoundTrip(t *testing.T) {
	ks := testKeys()
	m := newTestMerchant(testMchID)
	tx := testTransaction(t)
	created := time.Date(2024, 1, 2, 3, 4, 5, 0, time.FixedZone("CST", 8*3600))
	for _, mode := range []struct {
		name   string
		key    PrivateKey
		serial string
	}{{"public key", ks.pubKey, testPubKeyID}, {"certificate", ks.platform, ks.certSerial}} {
		t.Run(mode.name, func(t *testing.T) {
			h, body, err := BuildNotification(mode.key, mode.serial, m.APIv3Key, "EV-2018022511223320873", created, tx, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			n, err := ParseNotification(m, h, body)
			if err != nil {
				t.Fatalf("ParseNotification() = %v", err)
			}
			if diff := cmp.Diff(tx, &n.Transaction); diff != "" {
				t.Errorf("transaction mismatch (-want +got):\n%s", diff)
			}
			e := n.Envelope
			if e.ID != "EV-2018022511223320873" || e.CreateTime != "2024-01-02T03:04:05+08:00" || e.EventType != EventTransactionSuccess ||
				e.ResourceType != ResourceTypeEncrypted || e.Summary != SummaryPaid || e.Resource.AssociatedData != "transaction" ||
				e.Resource.OriginalType != "transaction" || len(e.Resource.Nonce) != 12 {
				t.Errorf("envelope = %+v", e)
			}
		})
	}
}

func TestClient_ParseNotification(t *testing.T) {
	ks := testKeys()
	f := newFakeWeChat(t)
	other := newTestMerchant(testOtherMchID)
	other.Platform = NewVerifier(nil)
	other.Platform.AddKey("OTHER_SERIAL", ks.other.Public())
	c := newTestClient(t, f, func(cfg *Config) { cfg.Merchants = []*Merchant{newTestMerchant(testMchID), other} })

	tx := testTransaction(t)
	tx.CombineMchID = testOtherMchID
	h, body, err := BuildNotification(ks.other, "OTHER_SERIAL", other.APIv3Key, "EV-1", time.Now(), tx, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	n, err := c.ParseNotification(h, body)
	if err != nil || n.Transaction.CombineMchID != testOtherMchID {
		t.Fatalf("ParseNotification() = %v, %v, want merchant %s", n, err, testOtherMchID)
	}
	h.Set(HeaderSerial, "NOBODY")
	if _, err := c.ParseNotification(h, body); !errors.Is(err, ErrSignature) {
		t.Errorf("ParseNotification(unknown serial) = %v, want ErrSignature", err)
	}
}

func TestParseNotification_Errors(t *testing.T) {
	ks := testKeys()
	m := newTestMerchant(testMchID)
	now := time.Now()
	sign := func(body []byte) http.Header {
		h := make(http.Header)
		if err := SignResponseHeaders(h, ks.pubKey, testPubKeyID, now.Unix(), NewNonce(), body); err != nil {
			t.Fatal(err)
		}
		return h
	}
	build := func(mod func(*CombineOrder), key APIv3Key) (http.Header, []byte) {
		tx := testTransaction(t)
		if mod != nil {
			mod(tx)
		}
		h, b, err := BuildNotification(ks.pubKey, testPubKeyID, key, "EV-1", now, tx, now)
		if err != nil {
			t.Fatal(err)
		}
		return h, b
	}
	envelope := func(mod func(*NotificationEnvelope)) (http.Header, []byte) {
		_, b := build(nil, m.APIv3Key)
		var e NotificationEnvelope
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatal(err)
		}
		mod(&e)
		b, _ = json.Marshal(e)
		return sign(b), b
	}
	tests := []struct {
		name string
		in   func() (http.Header, []byte)
		want error
	}{
		{"tampered body", func() (http.Header, []byte) {
			h, b := build(nil, m.APIv3Key)
			b[len(b)-2] = ' '
			return h, b
		}, ErrSignature},
		{"stale", func() (http.Header, []byte) {
			tx := testTransaction(t)
			h, b, _ := BuildNotification(ks.pubKey, testPubKeyID, m.APIv3Key, "EV-1", now, tx, now.Add(-10*time.Minute))
			return h, b
		}, ErrSignature},
		{"probe", func() (http.Header, []byte) {
			h, b := build(nil, m.APIv3Key)
			h.Set(HeaderSignature, SignTestPrefix+"abc")
			return h, b
		}, ErrSignature},
		{"unsigned", func() (http.Header, []byte) {
			_, b := build(nil, m.APIv3Key)
			return http.Header{}, b
		}, ErrSignature},
		{"not json", func() (http.Header, []byte) { b := []byte("not json"); return sign(b), b }, ErrMalformedNotification},
		{"no id", func() (http.Header, []byte) { return envelope(func(e *NotificationEnvelope) { e.ID = "" }) }, ErrMalformedNotification},
		{"refund event", func() (http.Header, []byte) {
			return envelope(func(e *NotificationEnvelope) { e.EventType = "REFUND.SUCCESS" })
		}, ErrMalformedNotification},
		{"plain resource", func() (http.Header, []byte) {
			return envelope(func(e *NotificationEnvelope) { e.ResourceType = "plain" })
		}, ErrMalformedNotification},
		{"no ciphertext", func() (http.Header, []byte) {
			return envelope(func(e *NotificationEnvelope) { e.Resource.Ciphertext = "" })
		}, ErrMalformedNotification},
		{"no nonce", func() (http.Header, []byte) { return envelope(func(e *NotificationEnvelope) { e.Resource.Nonce = "" }) }, ErrMalformedNotification},
		{"no algorithm", func() (http.Header, []byte) {
			return envelope(func(e *NotificationEnvelope) { e.Resource.Algorithm = "" })
		}, ErrMalformedNotification},
		{"other algorithm", func() (http.Header, []byte) {
			return envelope(func(e *NotificationEnvelope) { e.Resource.Algorithm = "AEAD_SM4_GCM" })
		}, ErrDecrypt},
		{"wrong APIv3 key", func() (http.Header, []byte) { return build(nil, APIv3Key("ffffffffffffffffffffffffffffffff")) }, ErrDecrypt},
		{"wrong associated data", func() (http.Header, []byte) {
			return envelope(func(e *NotificationEnvelope) { e.Resource.AssociatedData = "certificate" })
		}, ErrDecrypt},
		{"bad nonce length", func() (http.Header, []byte) {
			return envelope(func(e *NotificationEnvelope) { e.Resource.Nonce = "short" })
		}, ErrDecrypt},
		{"ciphertext not base64", func() (http.Header, []byte) {
			return envelope(func(e *NotificationEnvelope) { e.Resource.Ciphertext = "%%%" })
		}, ErrDecrypt},
		{"another merchant's order", func() (http.Header, []byte) {
			return build(func(o *CombineOrder) { o.CombineMchID = testOtherMchID }, m.APIv3Key)
		}, ErrMalformedNotification},
		{"no sub-orders", func() (http.Header, []byte) { return build(func(o *CombineOrder) { o.SubOrders = nil }, m.APIv3Key) }, ErrMalformedNotification},
		{"sub-order without state", func() (http.Header, []byte) {
			return build(func(o *CombineOrder) { o.SubOrders[0].TradeState = "" }, m.APIv3Key)
		}, ErrMalformedNotification},
		{"no order number", func() (http.Header, []byte) {
			return build(func(o *CombineOrder) { o.CombineOutTradeNo = "" }, m.APIv3Key)
		}, ErrMalformedNotification},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, b := tt.in()
			_, err := ParseNotification(m, h, b)
			if !errors.Is(err, tt.want) {
				t.Fatalf("ParseNotification() = %v, want %v", err, tt.want)
			}
			for _, other := range []error{ErrSignature, ErrDecrypt, ErrMalformedNotification} {
				if !errors.Is(tt.want, other) && errors.Is(err, other) {
					t.Errorf("ParseNotification() = %v also matches %v; reasons must be distinct", err, other)
				}
			}
		})
	}
}

func TestDecryptResource_KeySize(t *testing.T) {
	r, err := EncryptResource(APIv3Key(testAPIv3KeyStr), "transaction", "transaction", []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []APIv3Key{APIv3Key("testAPIv3Key0000"), APIv3Key("0123456789abcdef01234567")} {
		if _, err := DecryptResource(k, r); !errors.Is(err, ErrDecrypt) {
			t.Errorf("DecryptResource(%d-byte key) = %v, want ErrDecrypt", len(k), err)
		}
	}
	if _, err := EncryptResource(APIv3Key("short"), "transaction", "transaction", nil); err == nil {
		t.Errorf("EncryptResource(short key) = nil error")
	}
	pt, err := DecryptResource(APIv3Key(testAPIv3KeyStr), r)
	if err != nil || string(pt) != `{}` {
		t.Errorf("DecryptResource() = %q, %v", pt, err)
	}
}
