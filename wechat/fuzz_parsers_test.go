package wechat

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Fuzz targets of the parsers of operator and untrusted input: key files,
// the Wechatpay-Timestamp header and create requests. Seed corpora live in
// testdata/fuzz/<FuzzName>/.

// FuzzParsePrivateKey: any bytes given as the merchant key file either load
// as an RSA key of at least 2048 bits that re-encodes to itself, or fail
// with an error that quotes no line of the input (a key file's content must
// never reach a log).
func FuzzParsePrivateKey(f *testing.F) {
	pkcs8, err := os.ReadFile("testdata/doc-test-key.pem")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(pkcs8)
	k, err := ParsePrivateKey(pkcs8)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k.RSA())}))
	f.Add(pkcs8[:len(pkcs8)/2])
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(ec)
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	pub, _ := MarshalPublicKeyPEM(k.Public())
	f.Add(pub)
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		key, err := ParsePrivateKey(data)
		if err != nil {
			msg := err.Error()
			for _, line := range strings.Split(string(data), "\n") {
				if line = strings.TrimSpace(line); len(line) >= 16 && strings.Contains(msg, line) {
					t.Fatalf("error %q quotes the input line %q", msg, line)
				}
			}
			return
		}
		if bits := key.RSA().N.BitLen(); bits < 2048 {
			t.Fatalf("accepted a %d-bit key", bits)
		}
		out, err := MarshalPrivateKeyPEM(key)
		if err != nil {
			t.Fatalf("MarshalPrivateKeyPEM: %v", err)
		}
		back, err := ParsePrivateKey(out)
		if err != nil || !back.RSA().Equal(key.RSA()) {
			t.Fatalf("re-encoded key does not parse to itself: %v", err)
		}
	})
}

// FuzzParsePublicKey: any bytes given as the platform key file either load
// as an RSA public key (with an upper-case hex serial for a certificate, none
// for a bare key) or fail; nothing panics.
func FuzzParsePublicKey(f *testing.F) {
	priv, err := LoadPrivateKey("testdata/doc-test-key.pem")
	if err != nil {
		f.Fatal(err)
	}
	pub, _ := MarshalPublicKeyPEM(priv.Public())
	f.Add(pub)
	f.Add(pub[:len(pub)-40])
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("not pem"))
	f.Fuzz(func(t *testing.T, data []byte) {
		key, serial, err := ParsePublicKey(data)
		if err != nil {
			if key != nil || serial != "" {
				t.Fatalf("failure answered a key or serial %q", serial)
			}
			return
		}
		if key == nil || key.N == nil || key.N.Sign() <= 0 {
			t.Fatal("success without a usable key")
		}
		if serial != strings.ToUpper(serial) || strings.Trim(serial, "0123456789ABCDEF") != "" {
			t.Fatalf("serial %q is not upper-case hex", serial)
		}
	})
}

// FuzzVerifyTimestamp signs an answer whose Wechatpay-Timestamp is any
// string — non-numeric, signed, padded, huge — exactly as sent: Verify
// accepts it only when it is an integer within the allowed skew of now, and
// accepts every such canonical decimal; every refusal is ErrSignature.
func FuzzVerifyTimestamp(f *testing.F) {
	now := time.Unix(1_700_000_000, 0)
	for _, s := range []string{"1700000000", "1700000300", "1700000301", "", " 1700000000", "1700000000 ", "+1700000000",
		"01700000000", "1.7e9", "0x6553F100", "9223372036854775808", "-1", "١٧٠٠٠٠٠٠٠٠", "1700000000\r\nX: y"} {
		f.Add(s, int64(0))
	}
	f.Add("", int64(-300))
	f.Fuzz(func(t *testing.T, ts string, offset int64) {
		offset %= 1000
		if ts == "" {
			ts = strconv.FormatInt(now.Unix()+offset, 10)
		}
		key := fuzzKey()
		v := NewVerifier(map[string]*rsa.PublicKey{testPubKeyID: key.Public()})
		body := []byte(`{"prepay_id":"wx1"}`)
		sig, err := Sign(key, ResponseMessage(ts, "nonce", body))
		if err != nil {
			t.Fatal(err)
		}
		h := make(http.Header)
		h.Set(HeaderTimestamp, ts)
		h.Set(HeaderNonce, "nonce")
		h.Set(HeaderSignature, sig)
		h.Set(HeaderSerial, testPubKeyID)
		err = v.VerifyAt(h, body, now)
		sec, perr := strconv.ParseInt(ts, 10, 64)
		within := perr == nil && sec >= now.Unix()-300 && sec <= now.Unix()+300
		switch {
		case err == nil && !within:
			t.Fatalf("VerifyAt accepted timestamp %q", ts)
		case err != nil && !errors.Is(err, ErrSignature):
			t.Fatalf("VerifyAt(%q) = %v, want ErrSignature", ts, err)
		case err != nil && within && ts == strconv.FormatInt(sec, 10):
			t.Fatalf("VerifyAt refused the valid timestamp %q: %v", ts, err)
		case err != nil && perr != nil && !strings.Contains(err.Error(), "not an integer"):
			t.Fatalf("VerifyAt(%q) = %v, want it to say the timestamp is not an integer", ts, err)
		}
	})
}

// FuzzValidate decodes arbitrary create bodies as a worker would and
// validates them for any flavour and trade type: nothing panics; the answer
// is nil or ErrInvalid, and the same every time; a request found valid stays
// valid after the JSON round trip the worker makes, has a sub-order count
// within the flavour's limits, and an order number that the query and close
// paths accept too (else an order could be created that can never be looked
// up).
func FuzzValidate(f *testing.F) {
	for _, fl := range []Flavour{FlavourMerchant, FlavourPartner, FlavourEcommerce, FlavourIndividual} {
		for _, tt := range TradeTypes {
			b, _ := json.Marshal(validRequest(fl, tt))
			f.Add(b, string(fl), string(tt))
		}
	}
	f.Add([]byte(`{"combine_out_trade_no":"a b","sub_orders":[]}`), "merchant", "app")
	f.Add([]byte(`{}`), "vip", "pos")
	f.Fuzz(func(t *testing.T, body []byte, flavour, tradeType string) {
		var req CombineOrderRequest
		if json.Unmarshal(body, &req) != nil {
			return
		}
		fl, tt := Flavour(flavour), TradeType(tradeType)
		err := Validate(fl, tt, &req)
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("Validate = %v, want nil or ErrInvalid", err)
		}
		again := Validate(fl, tt, &req)
		if (err == nil) != (again == nil) || (err != nil && err.Error() != again.Error()) {
			t.Fatalf("Validate is not deterministic: %v, then %v", err, again)
		}
		if err != nil {
			return
		}
		enc, merr := json.Marshal(&req)
		if merr != nil {
			t.Fatalf("a valid request does not encode: %v", merr)
		}
		var back CombineOrderRequest
		if uerr := json.Unmarshal(enc, &back); uerr != nil {
			t.Fatalf("a valid request does not decode again: %v", uerr)
		}
		if verr := Validate(fl, tt, &back); verr != nil {
			t.Fatalf("valid request became invalid after a JSON round trip: %v\n%s", verr, enc)
		}
		if lo, hi := fl.SubOrderLimits(); len(req.SubOrders) < lo || len(req.SubOrders) > hi {
			t.Fatalf("valid request with %d sub-orders, the limits are %d–%d", len(req.SubOrders), lo, hi)
		}
		if qerr := ValidateOrderNoParam(req.CombineOutTradeNo); qerr != nil {
			t.Fatalf("order number %q passes Validate but not ValidateOrderNoParam: %v", req.CombineOutTradeNo, qerr)
		}
		if !bytes.Contains(enc, []byte(`"combine_out_trade_no"`)) {
			t.Fatalf("a valid request encodes without its order number: %s", enc)
		}
	})
}
