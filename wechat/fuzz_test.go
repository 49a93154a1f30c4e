package wechat

import (
	"bytes"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"
)

// Seed corpora live in testdata/fuzz/<FuzzName>/; CI runs each target
// briefly: go test -run '^$' -fuzz '^FuzzX$' -fuzztime 10s -fuzzminimizetime 10x ./wechat
// (minimizing re-runs RSA signing many times; capping it keeps runs short).
//
// The targets sign with the documentation test key from testdata rather than
// generated keys: RSA key generation is very slow under coverage
// instrumentation.

var fuzzKey = sync.OnceValue(func() PrivateKey {
	k, err := LoadPrivateKey("testdata/doc-test-key.pem")
	if err != nil {
		panic(err)
	}
	return k
})

// fuzzMerchant trusts fuzzKey under testPubKeyID.
func fuzzMerchant() *Merchant {
	k := fuzzKey()
	return &Merchant{
		MchID: testMchID, Serial: testMchSerial, PrivateKey: k, APIv3Key: APIv3Key(testAPIv3KeyStr),
		Platform: NewVerifier(map[string]*rsa.PublicKey{testPubKeyID: k.Public()}),
	}
}

// FuzzParseAuthorization: parsing never panics, and whatever parses
// formats back into a header that parses to the same pairs.
func FuzzParseAuthorization(f *testing.F) {
	f.Add(Authorization{MchID: "1900000109", Serial: "ABC", Timestamp: 1554208460, Nonce: "n", Signature: "c2ln"}.String())
	f.Fuzz(func(t *testing.T, header string) {
		a, err := ParseAuthorization(header)
		if err != nil {
			if !errors.Is(err, ErrAuthorization) {
				t.Fatalf("ParseAuthorization() = %v, want ErrAuthorization", err)
			}
			return
		}
		b, err := ParseAuthorization(a.String())
		if err != nil || b != a {
			t.Fatalf("round trip: %+v → %q → %+v, %v", a, a.String(), b, err)
		}
	})
}

// FuzzVerify signs body, then verifies got with a timestamp offset: it must
// succeed exactly when got equals body and the offset is within the window.
func FuzzVerify(f *testing.F) {
	f.Add([]byte(`{"prepay_id":"wx1"}`), []byte(`{"prepay_id":"wx1"}`), int64(0), "nonce")
	f.Fuzz(func(t *testing.T, body, got []byte, offset int64, nonce string) {
		key := fuzzKey()
		now := time.Unix(1_700_000_000, 0)
		v := NewVerifier(map[string]*rsa.PublicKey{testPubKeyID: key.Public()})
		v.NowFunc = func() time.Time { return now }
		offset %= 1000
		h := make(http.Header)
		if err := SignResponseHeaders(h, key, testPubKeyID, now.Unix()+offset, nonce, body); err != nil {
			t.Fatal(err)
		}
		err := v.Verify(h, got)
		// A nonce that is empty or loses characters in a header cannot verify.
		intact := nonce != "" && h.Get(HeaderNonce) == nonce
		want := intact && bytes.Equal(body, got) && offset >= -300 && offset <= 300
		if (err == nil) != want {
			t.Fatalf("Verify() = %v, want success %v (offset %d)", err, want, offset)
		}
		if err != nil && !errors.Is(err, ErrSignature) {
			t.Fatalf("Verify() = %v, want ErrSignature", err)
		}
	})
}

// FuzzHandleResponse feeds arbitrary answers to the client's response
// handling: a non-2xx is always an *APIError with its status; an unsigned 2xx
// is always a signature failure; a signed 2xx either decodes or fails to
// decode, never as a signature failure.
func FuzzHandleResponse(f *testing.F) {
	f.Add(200, []byte(testOrderJSON), true)
	f.Add(400, []byte(`{"code":"PARAM_ERROR","message":"x","detail":{"field":"/a"}}`), false)
	f.Add(204, []byte{}, true)
	f.Fuzz(func(t *testing.T, status int, body []byte, signed bool) {
		status = 100 + (status%500+500)%500
		m := fuzzMerchant()
		c := &Client{}
		h := make(http.Header)
		h.Set(HeaderRequestID, "R-1")
		if signed {
			if err := SignResponseHeaders(h, fuzzKey(), testPubKeyID, time.Now().Unix(), NewNonce(), body); err != nil {
				t.Fatal(err)
			}
		}
		var out CombineOrder
		err := c.handle(m, "GET /x", status, h, body, 200, &out)
		var apiErr *APIError
		switch {
		case status < 200 || status > 299:
			if !errors.As(err, &apiErr) || apiErr.StatusCode != status || apiErr.RequestID != "R-1" {
				t.Fatalf("handle(%d) = %v, want *APIError", status, err)
			}
		case !signed:
			if !errors.Is(err, ErrSignature) {
				t.Fatalf("handle(unsigned %d) = %v, want ErrSignature", status, err)
			}
		default:
			if errors.Is(err, ErrSignature) {
				t.Fatalf("handle(signed %d) = %v", status, err)
			}
			if status == 200 && err == nil && !json.Valid(body) {
				t.Fatalf("handle() accepted invalid JSON %q", body)
			}
		}
	})
}

// FuzzParseNotification signs arbitrary bodies, and encrypts arbitrary
// plaintexts into a well-formed envelope: every failure is one of the three
// reasons, and every success is a transaction of the merchant.
func FuzzParseNotification(f *testing.F) {
	f.Add([]byte(`{"id":"EV-1","event_type":"TRANSACTION.SUCCESS","resource_type":"encrypt-resource","resource":{}}`), []byte(testOrderJSON))
	f.Fuzz(func(t *testing.T, body, plaintext []byte) {
		key := fuzzKey()
		m := fuzzMerchant()
		check := func(h http.Header, b []byte) {
			n, err := ParseNotification(m, h, b)
			if err != nil {
				if !errors.Is(err, ErrMalformedNotification) && !errors.Is(err, ErrDecrypt) && !errors.Is(err, ErrSignature) {
					t.Fatalf("ParseNotification() = %v, not one of the three reasons", err)
				}
				return
			}
			if n.Transaction.CombineMchID != testMchID || len(n.Transaction.SubOrders) == 0 {
				t.Fatalf("ParseNotification() accepted %+v", n.Transaction)
			}
		}
		h := make(http.Header)
		if err := SignResponseHeaders(h, key, testPubKeyID, time.Now().Unix(), NewNonce(), body); err != nil {
			t.Fatal(err)
		}
		check(h, body)

		res, err := EncryptResource(m.APIv3Key, AssociatedDataTransaction, AssociatedDataTransaction, plaintext)
		if err != nil {
			t.Fatal(err)
		}
		env, _ := MarshalBody(NotificationEnvelope{ID: "EV-1", CreateTime: "2024-01-01T00:00:00+08:00", EventType: EventTransactionSuccess, ResourceType: ResourceTypeEncrypted, Resource: res})
		h = make(http.Header)
		if err := SignResponseHeaders(h, key, testPubKeyID, time.Now().Unix(), NewNonce(), env); err != nil {
			t.Fatal(err)
		}
		check(h, env)
	})
}
