package wechat

import (
	"bytes"
	"crypto/rsa"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestSign_RequestVector(t *testing.T) {
	msg := readTestdata(t, "req.msg")
	want := strings.TrimSpace(readTestdata(t, "req.sig"))
	lines := strings.SplitN(msg, "\n", 5)
	if len(lines) != 5 {
		t.Fatalf("req.msg has %d lines, want 5", len(lines))
	}
	ts, err := strconv.ParseInt(lines[2], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(strings.TrimSuffix(lines[4], "\n"))
	if got := RequestMessage(lines[0], lines[1], ts, lines[3], body); string(got) != msg {
		t.Fatalf("RequestMessage() = %q, want %q", got, msg)
	}
	a, err := SignRequest(docKey(t), "1900007291", "SERIAL", lines[0], lines[1], ts, lines[3], body)
	if err != nil {
		t.Fatalf("SignRequest: %v", err)
	}
	if a.Signature != want {
		t.Errorf("signature = %s, want %s", a.Signature, want)
	}
	if err := VerifySignature(docKey(t).Public(), []byte(msg), want); err != nil {
		t.Errorf("VerifySignature(vector) = %v, want nil", err)
	}
}

func TestRequestMessage_BodyEndingInNewline(t *testing.T) {
	got := string(RequestMessage("POST", "/v3/certificates", 1624523846, "A1B2C3D4E5F6G7", []byte("Hello World!\n")))
	// The same layout as wechatpay-go's credentials test.
	want := "POST\n/v3/certificates\n1624523846\nA1B2C3D4E5F6G7\nHello World!\n\n"
	if got != want {
		t.Errorf("RequestMessage() = %q, want %q", got, want)
	}
}

func TestNewNonce(t *testing.T) {
	seen := map[string]bool{}
	for range 200 {
		n := NewNonce()
		if len(n) != NonceLength {
			t.Fatalf("len(NewNonce()) = %d, want %d", len(n), NonceLength)
		}
		if strings.Trim(n, nonceAlphabet) != "" {
			t.Fatalf("NewNonce() = %q has characters outside [0-9A-Za-z]", n)
		}
		if seen[n] {
			t.Fatalf("NewNonce() repeated %q", n)
		}
		seen[n] = true
	}
}

func TestParseAuthorization(t *testing.T) {
	good := Authorization{MchID: "1900000109", Serial: "ABC", Timestamp: 1554208460, Nonce: "n1", Signature: "c2ln"}
	tests := []struct {
		name    string
		header  string
		want    Authorization
		wantErr bool
	}{
		{"sdk order", good.String(), good, false},
		{"php order", AuthScheme + ` mchid="1900000109",serial_no="ABC",timestamp="1554208460",nonce_str="n1",signature="c2ln"`, good, false},
		{"spaces after commas", AuthScheme + ` mchid="1900000109", serial_no="ABC", timestamp="1554208460", nonce_str="n1", signature="c2ln"`, good, false},
		{"wrong scheme", `WECHATPAY2-SM2-WITH-SM3 mchid="1"`, Authorization{}, true},
		{"missing signature", AuthScheme + ` mchid="1900000109",serial_no="ABC",timestamp="1554208460",nonce_str="n1"`, Authorization{}, true},
		{"duplicate key", AuthScheme + ` mchid="1",mchid="2",serial_no="ABC",timestamp="1",nonce_str="n1",signature="s"`, Authorization{}, true},
		{"unknown key", AuthScheme + ` mchid="1",serial_no="ABC",timestamp="1",nonce_str="n1",signature="s",x="y"`, Authorization{}, true},
		{"unquoted", AuthScheme + ` mchid=1,serial_no="ABC",timestamp="1",nonce_str="n1",signature="s"`, Authorization{}, true},
		{"bad timestamp", AuthScheme + ` mchid="1",serial_no="ABC",timestamp="x",nonce_str="n1",signature="s"`, Authorization{}, true},
		{"trailing comma", AuthScheme + ` mchid="1",serial_no="ABC",timestamp="1",nonce_str="n1",signature="s",`, Authorization{}, true},
		{"empty value", AuthScheme + ` mchid="",serial_no="ABC",timestamp="1",nonce_str="n1",signature="s"`, Authorization{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseAuthorization(tt.header)
			if tt.wantErr {
				if !errors.Is(err, ErrAuthorization) {
					t.Fatalf("ParseAuthorization(%q) error = %v, want ErrAuthorization", tt.header, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseAuthorization(%q) = %+v, %v, want %+v", tt.header, got, err, tt.want)
			}
		})
	}
}

func signedHeaders(t testing.TB, key PrivateKey, serial string, ts int64, body []byte) http.Header {
	t.Helper()
	h := make(http.Header)
	if err := SignResponseHeaders(h, key, serial, ts, NewNonce(), body); err != nil {
		t.Fatal(err)
	}
	return h
}

func TestVerifier_Verify(t *testing.T) {
	ks := testKeys()
	now := time.Unix(1_700_000_000, 0)
	v := NewVerifier(map[string]*rsa.PublicKey{ks.certSerial: ks.platform.Public(), testPubKeyID: ks.pubKey.Public()})
	v.NowFunc = func() time.Time { return now }
	body := []byte(`{"prepay_id":"wx1"}`)
	ts := now.Unix()

	tests := []struct {
		name    string
		header  func() http.Header
		body    []byte
		wantErr bool
	}{
		{"certificate", func() http.Header { return signedHeaders(t, ks.platform, ks.certSerial, ts, body) }, body, false},
		{"public key", func() http.Header { return signedHeaders(t, ks.pubKey, testPubKeyID, ts, body) }, body, false},
		{"empty body (204)", func() http.Header { return signedHeaders(t, ks.pubKey, testPubKeyID, ts, nil) }, nil, false},
		{"5 minutes old is accepted", func() http.Header { return signedHeaders(t, ks.pubKey, testPubKeyID, ts-300, body) }, body, false},
		{"5 minutes ahead is accepted", func() http.Header { return signedHeaders(t, ks.pubKey, testPubKeyID, ts+300, body) }, body, false},
		{"stale timestamp", func() http.Header { return signedHeaders(t, ks.pubKey, testPubKeyID, ts-301, body) }, body, true},
		{"future timestamp", func() http.Header { return signedHeaders(t, ks.pubKey, testPubKeyID, ts+301, body) }, body, true},
		{"unknown serial", func() http.Header { return signedHeaders(t, ks.other, "UNKNOWN", ts, body) }, body, true},
		{"wrong key for serial", func() http.Header { return signedHeaders(t, ks.platform, testPubKeyID, ts, body) }, body, true},
		{"tampered body", func() http.Header { return signedHeaders(t, ks.pubKey, testPubKeyID, ts, body) }, []byte(`{"prepay_id":"wx2"}`), true},
		{"probe", func() http.Header {
			h := signedHeaders(t, ks.pubKey, testPubKeyID, ts, body)
			h.Set(HeaderSignature, SignTestPrefix+h.Get(HeaderSignature))
			return h
		}, body, true},
		{"not base64", func() http.Header {
			h := signedHeaders(t, ks.pubKey, testPubKeyID, ts, body)
			h.Set(HeaderSignature, "***")
			return h
		}, body, true},
		{"sm2 signature type", func() http.Header {
			h := signedHeaders(t, ks.pubKey, testPubKeyID, ts, body)
			h.Set(HeaderSignatureType, "WECHATPAY2-SM2-WITH-SM3")
			return h
		}, body, true},
	}
	for _, name := range []string{HeaderTimestamp, HeaderNonce, HeaderSignature, HeaderSerial} {
		tests = append(tests, struct {
			name    string
			header  func() http.Header
			body    []byte
			wantErr bool
		}{"missing " + name, func() http.Header {
			h := signedHeaders(t, ks.pubKey, testPubKeyID, ts, body)
			h.Del(name)
			return h
		}, body, true})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := v.Verify(tt.header(), tt.body)
			if tt.wantErr != (err != nil) {
				t.Fatalf("Verify() = %v, want error %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrSignature) {
				t.Fatalf("Verify() = %v, want ErrSignature", err)
			}
		})
	}
}

func TestVerifier_Serials(t *testing.T) {
	ks := testKeys()
	v := NewVerifier(nil)
	v.AddKey("CERT_B", ks.platform.Public())
	v.AddKey("CERT_A", ks.platform.Public())
	v.AddKey(testPubKeyID, ks.pubKey.Public())
	want := []string{testPubKeyID, "CERT_B", "CERT_A"}
	for range 20 { // the order must not depend on map iteration
		if got := v.Serials(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("Serials() = %v, want %v", got, want)
		}
	}
	v.RemoveKey(testPubKeyID)
	if got := v.Serials(); fmt.Sprint(got) != "[CERT_B CERT_A]" {
		t.Errorf("Serials() after RemoveKey = %v, want [CERT_B CERT_A]", got)
	}
	if v.Has(testPubKeyID) || !v.Has("CERT_A") {
		t.Errorf("Has() disagrees with the keys")
	}
}

func TestSecrets_Redacted(t *testing.T) {
	m := newTestMerchant(testMchID)
	der := m.PrivateKey.RSA().D.String()
	secrets := []string{testAPIv3KeyStr, der[:20], "MDEyMzQ1Njc4OWFiY2RlZkFCQ0RFRjAxMjM0NTY3ODk"}
	var out bytes.Buffer
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%q"} {
		fmt.Fprintf(&out, verb+"\n", m.PrivateKey)
		fmt.Fprintf(&out, verb+"\n", m.APIv3Key)
		fmt.Fprintf(&out, verb+"\n", *m)
		fmt.Fprintf(&out, verb+"\n", m)
	}
	for _, h := range []slog.Handler{slog.NewTextHandler(&out, nil), slog.NewJSONHandler(&out, nil)} {
		l := slog.New(h)
		l.Info("m", "merchant", m, "key", m.PrivateKey, "apiv3", m.APIv3Key, "struct", *m)
		l.Info("g", slog.Any("any", struct{ K APIv3Key }{m.APIv3Key}))
	}
	for _, s := range secrets {
		if strings.Contains(out.String(), s) {
			t.Fatalf("output contains a secret:\n%s", out.String())
		}
	}
	if !strings.Contains(out.String(), testMchID) {
		t.Errorf("output lacks the mchid; the redaction test printed nothing useful:\n%s", out.String())
	}
}
