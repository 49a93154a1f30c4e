package wechat

// Interoperability with an implementation nobody here wrote: the official Go
// SDK, github.com/wechatpay-apiv3/wechatpay-go v0.2.21 (a test-only
// dependency). Each direction is checked: the SDK verifies what this package
// signs, and this package verifies what the SDK signs, in certificate mode,
// public-key mode and the combined (migration) mode.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"testing"
	"time"

	"github.com/wechatpay-apiv3/wechatpay-go/core"
	"github.com/wechatpay-apiv3/wechatpay-go/core/auth"
	"github.com/wechatpay-apiv3/wechatpay-go/core/auth/credentials"
	"github.com/wechatpay-apiv3/wechatpay-go/core/auth/signers"
	"github.com/wechatpay-apiv3/wechatpay-go/core/auth/validators"
	"github.com/wechatpay-apiv3/wechatpay-go/core/auth/verifiers"
	"github.com/wechatpay-apiv3/wechatpay-go/core/consts"
	"github.com/wechatpay-apiv3/wechatpay-go/core/notify"
	"github.com/wechatpay-apiv3/wechatpay-go/core/option"
	"github.com/wechatpay-apiv3/wechatpay-go/utils"
)

// sdkPlatformVerifiers answers the SDK's three verifier kinds for the
// platform keys of the test merchant.
func sdkPlatformVerifiers(t *testing.T) map[string]auth.Verifier {
	t.Helper()
	ks := testKeys()
	if got := utils.GetCertificateSerialNumber(*ks.cert); got != ks.certSerial {
		t.Fatalf("SDK certificate serial = %s, this package's = %s", got, ks.certSerial)
	}
	certs := core.NewCertificateMapWithList([]*x509.Certificate{ks.cert})
	return map[string]auth.Verifier{
		"certificate": verifiers.NewSHA256WithRSAVerifier(certs),
		"public key":  verifiers.NewSHA256WithRSAPubkeyVerifier(testPubKeyID, *ks.pubKey.Public()),
		"combined":    verifiers.NewSHA256WithRSACombinedVerifier(certs, testPubKeyID, *ks.pubKey.Public()),
	}
}

// TestInterop_SDKVerifiesRequestSignature: the bytes this client sends, as
// the server received them, verify with the SDK's verifiers over the SDK's
// own message format.
func TestInterop_SDKVerifiesRequestSignature(t *testing.T) {
	ks := testKeys()
	f := newFakeWeChat(t)
	c := newTestClient(t, f, nil)
	ctx := t.Context()
	if _, err := c.CreateCombineOrder(ctx, TradeTypeJSAPI, validRequest(FlavourMerchant, TradeTypeJSAPI)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.QueryByOutTradeNo(ctx, testMchID, "P2015|08*06"); err != nil {
		t.Fatal(err)
	}
	closeReq := CloseRequestFor(validRequest(FlavourMerchant, TradeTypeApp))
	if err := c.Close(ctx, testMchID, "P2015|08*06", &closeReq); err != nil {
		t.Fatal(err)
	}
	merchantCert := selfSignedCert(t, ks.merchant, testMchSerial)
	sdk := map[string]auth.Verifier{
		"public key":  verifiers.NewSHA256WithRSAPubkeyVerifier(testMchSerial, *ks.merchant.Public()),
		"certificate": verifiers.NewSHA256WithRSAVerifier(core.NewCertificateMap(map[string]*x509.Certificate{testMchSerial: merchantCert})),
	}
	f.mu.Lock()
	reqs := append([]recordedRequest(nil), f.requests...)
	f.mu.Unlock()
	if len(reqs) != 3 {
		t.Fatalf("%d requests recorded, want 3", len(reqs))
	}
	for _, r := range reqs {
		a, err := ParseAuthorization(r.Header.Get("Authorization"))
		if err != nil {
			t.Fatal(err)
		}
		msg := fmt.Sprintf(consts.SignatureMessageFormat, r.Method, r.RequestURI, a.Timestamp, a.Nonce, r.Body)
		for name, v := range sdk {
			if err := v.Verify(ctx, a.Serial, msg, a.Signature); err != nil {
				t.Errorf("SDK %s verifier rejects %s %s: %v", name, r.Method, r.RequestURI, err)
			}
		}
		// The SDK's signer produces the very same signature (PKCS#1 v1.5 is
		// deterministic), and the same Authorization layout.
		s := &signers.SHA256WithRSASigner{MchID: testMchID, CertificateSerialNo: testMchSerial, PrivateKey: ks.merchant.RSA()}
		res, err := s.Sign(ctx, msg)
		if err != nil || res.Signature != a.Signature {
			t.Errorf("SDK signer = %v (%v), this package = %s", res, err, a.Signature)
		}
		sdkHeader := fmt.Sprintf(consts.HeaderAuthorizationFormat, "WECHATPAY2-"+s.Algorithm(), a.MchID, a.Nonce, a.Timestamp, a.Serial, a.Signature)
		if got := r.Header.Get("Authorization"); got != sdkHeader {
			t.Errorf("Authorization = %s, SDK layout %s", got, sdkHeader)
		}
	}
}

// TestInterop_SDKCredentialsWeVerify: Authorization headers made by the
// SDK's credentials parse and verify here.
func TestInterop_SDKCredentialsWeVerify(t *testing.T) {
	ks := testKeys()
	cred := credentials.WechatPayCredentials{Signer: &signers.SHA256WithRSASigner{
		MchID: testMchID, CertificateSerialNo: testMchSerial, PrivateKey: ks.merchant.RSA(),
	}}
	body, _ := MarshalBody(validRequest(FlavourPartner, TradeTypeApp))
	for _, tc := range []struct{ method, target, body string }{
		{"POST", "/v3/combine-transactions/app", string(body)},
		{"GET", QueryByOutTradeNoPath("P2015|08*06"), ""},
		{"POST", ClosePath("P1"), "{\"combine_appid\":\"wx\"}\n"},
	} {
		h, err := cred.GenerateAuthorizationHeader(t.Context(), tc.method, tc.target, tc.body)
		if err != nil {
			t.Fatal(err)
		}
		a, err := ParseAuthorization(h)
		if err != nil {
			t.Fatalf("ParseAuthorization(SDK header %q) = %v", h, err)
		}
		if a.MchID != testMchID || a.Serial != testMchSerial || len(a.Nonce) != NonceLength {
			t.Errorf("parsed SDK header = %+v", a)
		}
		msg := RequestMessage(tc.method, tc.target, a.Timestamp, a.Nonce, []byte(tc.body))
		if err := VerifySignature(ks.merchant.Public(), msg, a.Signature); err != nil {
			t.Errorf("VerifySignature(SDK %s %s) = %v", tc.method, tc.target, err)
		}
	}
}

// TestInterop_SDKClientAgainstOurSigning: the SDK's HTTP client calls a
// server that verifies requests with this package and signs answers with
// SignResponseHeaders; the SDK's response validator accepts them in every
// key mode.
func TestInterop_SDKClientAgainstOurSigning(t *testing.T) {
	ks := testKeys()
	for name, v := range sdkPlatformVerifiers(t) {
		t.Run(name, func(t *testing.T) {
			f := newFakeWeChat(t)
			client, err := core.NewClient(t.Context(),
				option.WithMerchantCredential(testMchID, testMchSerial, ks.merchant.RSA()),
				option.WithVerifier(v),
				option.WithHTTPClient(f.Client()),
			)
			if err != nil {
				t.Fatal(err)
			}
			res, err := client.Post(t.Context(), f.URL+"/v3/combine-transactions/app", validRequest(FlavourMerchant, TradeTypeApp))
			if err != nil {
				t.Fatalf("SDK Post() = %v", err)
			}
			b, _ := io.ReadAll(res.Response.Body)
			if !bytes.Contains(b, []byte("prepay_id")) {
				t.Errorf("SDK answer = %s", b)
			}
			// The SDK's query path escaping differs; a plain number works.
			if _, err := client.Get(t.Context(), f.URL+QueryByOutTradeNoPath("P20150806125346")); err != nil {
				t.Errorf("SDK Get() = %v", err)
			}
		})
	}
}

// TestInterop_SDKValidatorAcceptsOurResponses runs the SDK's response
// validator directly on SignResponseHeaders output, 204 included.
func TestInterop_SDKValidatorAcceptsOurResponses(t *testing.T) {
	ks := testKeys()
	for name, v := range sdkPlatformVerifiers(t) {
		for _, signer := range []struct {
			key    PrivateKey
			serial string
		}{{ks.platform, ks.certSerial}, {ks.pubKey, testPubKeyID}} {
			if name == "certificate" && signer.serial == testPubKeyID || name == "public key" && signer.serial == ks.certSerial {
				continue // that SDK verifier cannot know the key
			}
			for _, body := range []string{`{"prepay_id":"wx1"}`, ""} {
				h := signedHeaders(t, signer.key, signer.serial, time.Now().Unix(), []byte(body))
				resp := &http.Response{StatusCode: 200, Header: h, Body: io.NopCloser(bytes.NewBufferString(body))}
				if err := validators.NewWechatPayResponseValidator(v).Validate(t.Context(), resp); err != nil {
					t.Errorf("SDK %s validator rejects our %s signature over %q: %v", name, signer.serial, body, err)
				}
			}
		}
	}
}

// TestInterop_OurVerifierAcceptsSDKSigner: answers signed by the SDK's
// signer over the SDK validator's message format verify here.
func TestInterop_OurVerifierAcceptsSDKSigner(t *testing.T) {
	ks := testKeys()
	ctx := context.Background()
	verifiersHere := map[string]*Verifier{
		"certificate": NewVerifier(map[string]*rsa.PublicKey{ks.certSerial: ks.platform.Public()}),
		"public key":  NewVerifier(map[string]*rsa.PublicKey{testPubKeyID: ks.pubKey.Public()}),
		"combined":    newTestMerchant(testMchID).Platform,
	}
	signersSDK := map[string]*signers.SHA256WithRSASigner{
		ks.certSerial: {MchID: testMchID, CertificateSerialNo: utils.GetCertificateSerialNumber(*ks.cert), PrivateKey: ks.platform.RSA()},
		testPubKeyID:  {MchID: testMchID, CertificateSerialNo: testPubKeyID, PrivateKey: ks.pubKey.RSA()},
	}
	body := []byte(testOrderJSON)
	for vname, v := range verifiersHere {
		for serial, s := range signersSDK {
			if vname == "certificate" && serial == testPubKeyID || vname == "public key" && serial == ks.certSerial {
				continue
			}
			ts, nonce := time.Now().Unix(), "d824f2e086d3c1df967785d13fcd22ef"
			res, err := s.Sign(ctx, fmt.Sprintf("%d\n%s\n%s\n", ts, nonce, body))
			if err != nil {
				t.Fatal(err)
			}
			h := http.Header{}
			h.Set(consts.WechatPayTimestamp, fmt.Sprint(ts))
			h.Set(consts.WechatPayNonce, nonce)
			h.Set(consts.WechatPaySignature, res.Signature)
			h.Set(consts.WechatPaySerial, res.CertificateSerialNo)
			if err := v.Verify(h, body); err != nil {
				t.Errorf("%s Verifier rejects the SDK's %s signature: %v", vname, serial, err)
			}
			if err := v.Verify(h, append([]byte(" "), body...)); err == nil {
				t.Errorf("%s Verifier accepts a changed body", vname)
			}
		}
	}
}

// TestInterop_SDKNotifyHandler: the SDK's notification handler verifies,
// decrypts and decodes what BuildNotification makes.
func TestInterop_SDKNotifyHandler(t *testing.T) {
	ks := testKeys()
	tx := testTransaction(t)
	for name, v := range sdkPlatformVerifiers(t) {
		key, serial := ks.pubKey, testPubKeyID
		if name == "certificate" {
			key, serial = ks.platform, ks.certSerial
		}
		h, body, err := BuildNotification(key, serial, APIv3Key(testAPIv3KeyStr), "EV-1", time.Now(), tx, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		handler, err := notify.NewRSANotifyHandler(testAPIv3KeyStr, v)
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, "https://merchant.example/notify", bytes.NewReader(body))
		req.Header = h
		var got CombineOrder
		n, err := handler.ParseNotifyRequest(t.Context(), req, &got)
		if err != nil {
			t.Fatalf("SDK %s ParseNotifyRequest() = %v", name, err)
		}
		if n.EventType != EventTransactionSuccess || n.Resource.OriginalType != "transaction" {
			t.Errorf("SDK notification = %+v", n)
		}
		want, _ := json.Marshal(tx)
		gotJSON, _ := json.Marshal(got)
		if !bytes.Equal(want, gotJSON) {
			t.Errorf("SDK decoded %s, want %s", gotJSON, want)
		}
	}
}

func selfSignedCert(t *testing.T, k PrivateKey, serialHex string) *x509.Certificate {
	t.Helper()
	serial, ok := new(big.Int).SetString(serialHex, 16)
	if !ok {
		t.Fatalf("bad serial %s", serialHex)
	}
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "merchant"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k.RSA())
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
