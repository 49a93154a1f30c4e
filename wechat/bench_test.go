package wechat

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/wechatpay-apiv3/wechatpay-go/core/auth/credentials"
	"github.com/wechatpay-apiv3/wechatpay-go/core/auth/signers"
	"github.com/wechatpay-apiv3/wechatpay-go/core/auth/validators"
	"github.com/wechatpay-apiv3/wechatpay-go/core/auth/verifiers"
)

// benchFixture is one jsapi create request and its signed answer.
type benchFixture struct {
	body     []byte
	path     string
	respBody []byte
	respHdr  http.Header
}

func newBenchFixture(b *testing.B) benchFixture {
	b.Helper()
	body, err := MarshalBody(validRequest(FlavourMerchant, TradeTypeJSAPI))
	if err != nil {
		b.Fatal(err)
	}
	resp := []byte(`{"prepay_id":"wx201410272009395522657a690389285100"}`)
	h := make(http.Header)
	if err := SignResponseHeaders(h, testKeys().pubKey, testPubKeyID, time.Now().Unix(), NewNonce(), resp); err != nil {
		b.Fatal(err)
	}
	return benchFixture{body: body, path: TradeTypeJSAPI.Path(), respBody: resp, respHdr: h}
}

// BenchmarkSignVerifyCreate signs one create request (Authorization header
// included) and verifies one signed answer with this package.
func BenchmarkSignVerifyCreate(b *testing.B) {
	fx := newBenchFixture(b)
	m := newTestMerchant(testMchID)
	b.ReportAllocs()
	for b.Loop() {
		a, err := SignRequest(m.PrivateKey, m.MchID, m.Serial, http.MethodPost, fx.path, time.Now().Unix(), NewNonce(), fx.body)
		if err != nil {
			b.Fatal(err)
		}
		_ = a.String()
		if err := m.Platform.Verify(fx.respHdr, fx.respBody); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSignCreate is the signing half of BenchmarkSignVerifyCreate, to
// compare with BenchmarkSDKSignCreate.
func BenchmarkSignCreate(b *testing.B) {
	fx := newBenchFixture(b)
	m := newTestMerchant(testMchID)
	b.ReportAllocs()
	for b.Loop() {
		a, err := SignRequest(m.PrivateKey, m.MchID, m.Serial, http.MethodPost, fx.path, time.Now().Unix(), NewNonce(), fx.body)
		if err != nil {
			b.Fatal(err)
		}
		_ = a.String()
	}
}

// BenchmarkSDKSignCreate signs the same request with the official SDK
// (credentials.WechatPayCredentials.GenerateAuthorizationHeader).
func BenchmarkSDKSignCreate(b *testing.B) {
	fx := newBenchFixture(b)
	cred := credentials.WechatPayCredentials{Signer: &signers.SHA256WithRSASigner{
		MchID: testMchID, CertificateSerialNo: testMchSerial, PrivateKey: testKeys().merchant.RSA(),
	}}
	ctx := context.Background()
	body := string(fx.body)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := cred.GenerateAuthorizationHeader(ctx, http.MethodPost, fx.path, body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSDKSignVerifyCreate is BenchmarkSignVerifyCreate with the SDK:
// its credentials sign, its response validator verifies.
func BenchmarkSDKSignVerifyCreate(b *testing.B) {
	fx := newBenchFixture(b)
	cred := credentials.WechatPayCredentials{Signer: &signers.SHA256WithRSASigner{
		MchID: testMchID, CertificateSerialNo: testMchSerial, PrivateKey: testKeys().merchant.RSA(),
	}}
	val := validators.NewWechatPayResponseValidator(verifiers.NewSHA256WithRSAPubkeyVerifier(testPubKeyID, *testKeys().pubKey.Public()))
	ctx := context.Background()
	body := string(fx.body)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := cred.GenerateAuthorizationHeader(ctx, http.MethodPost, fx.path, body); err != nil {
			b.Fatal(err)
		}
		resp := &http.Response{StatusCode: 200, Header: fx.respHdr, Body: io.NopCloser(bytes.NewReader(fx.respBody))}
		if err := val.Validate(ctx, resp); err != nil {
			b.Fatal(err)
		}
	}
}
