package wechat

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Test identities. The keys are generated once per test binary.
const (
	testMchID       = "1900000109"
	testMchSerial   = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
	testPubKeyID    = "PUB_KEY_ID_0114232134912410000000000000"
	testAppID       = "wxd678efh567hg6787"
	testOpenID      = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
	testOtherMchID  = "1900000110"
	testAPIv3KeyStr = "0123456789abcdefABCDEF0123456789"
)

type testKeySet struct {
	merchant   PrivateKey        // signs requests
	platform   PrivateKey        // platform certificate key
	pubKey     PrivateKey        // WeChat Pay public key (public-key mode)
	other      PrivateKey        // a key nobody trusts
	cert       *x509.Certificate // self-signed platform certificate of platform
	certSerial string            // its serial, upper-case hex
}

var testKeys = sync.OnceValue(func() *testKeySet {
	gen := func() PrivateKey {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		return NewPrivateKey(k)
	}
	ks := &testKeySet{merchant: gen(), platform: gen(), pubKey: gen(), other: gen()}
	serial := new(big.Int).SetBytes([]byte{0x4A, 0x1B, 0x2C, 0x3D, 0x4E, 0x5F, 0x60, 0x71})
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "Tenpay.com Root CA test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, ks.platform.Public(), ks.platform.RSA())
	if err != nil {
		panic(err)
	}
	if ks.cert, err = x509.ParseCertificate(der); err != nil {
		panic(err)
	}
	ks.certSerial = strings.ToUpper(hex.EncodeToString(serial.Bytes()))
	return ks
})

// docKey loads the official documentation test key.
func docKey(tb testing.TB) PrivateKey {
	tb.Helper()
	k, err := LoadPrivateKey("testdata/doc-test-key.pem")
	if err != nil {
		tb.Fatalf("LoadPrivateKey: %v", err)
	}
	return k
}

func readTestdata(tb testing.TB, name string) string {
	tb.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// newTestMerchant answers a merchant that trusts both the platform
// certificate and the WeChat Pay public key.
func newTestMerchant(mchID string) *Merchant {
	ks := testKeys()
	v := NewVerifier(nil)
	v.AddKey(testPubKeyID, ks.pubKey.Public())
	v.AddKey(ks.certSerial, ks.platform.Public())
	return &Merchant{
		MchID: mchID, Serial: testMchSerial, PrivateKey: ks.merchant,
		APIv3Key: APIv3Key(testAPIv3KeyStr), Platform: v,
	}
}

// validRequest answers a create request valid for flavour f and trade type t.
func validRequest(f Flavour, t TradeType) *CombineOrderRequest {
	req := &CombineOrderRequest{
		CombineAppID:      testAppID,
		CombineMchID:      testMchID,
		CombineOutTradeNo: "P20150806125346",
		TimeExpire:        "2030-06-08T10:34:56+08:00",
		NotifyURL:         "https://yourapp.com/notify",
	}
	n, _ := f.SubOrderLimits()
	if n < 2 {
		n = 2
	}
	for i := range n {
		s := SubOrder{
			MchID:       testMchID,
			Attach:      "深圳分店",
			Amount:      Amount{TotalAmount: 10, Currency: "CNY"},
			OutTradeNo:  "20150806125346" + strconv.Itoa(i),
			Description: "腾讯充值中心-QQ会员充值",
		}
		switch f {
		case FlavourPartner, FlavourEcommerce:
			s.SubMchID = "190000" + strconv.Itoa(1000+i)
		case FlavourIndividual:
			s.IndividualAuthID = "auth" + strconv.Itoa(1000+i)
		}
		req.SubOrders = append(req.SubOrders, s)
	}
	switch t {
	case TradeTypeJSAPI, TradeTypeMiniProgram:
		req.CombinePayerInfo = &PayerInfo{OpenID: testOpenID}
	case TradeTypeH5:
		req.SceneInfo = &SceneInfo{DeviceID: "POS1:123", PayerClientIP: "14.17.22.32", H5Info: &H5Info{Type: "iOS"}}
	}
	return req
}

// fakeWeChat plays WeChat Pay over HTTP: it checks each request's signature
// with the merchant's public key and signs its answers like WeChat Pay. The
// answer and signing hooks let a test inject faults.
type fakeWeChat struct {
	*httptest.Server
	t *testing.T

	mu       sync.Mutex
	requests []recordedRequest

	// answer picks the status and body; nil uses defaultAnswer.
	answer func(r *http.Request, body []byte) (int, []byte)
	// sign sets the signature headers of a 2xx answer; nil signs with the
	// public key under testPubKeyID (or with the request's Wechatpay-Serial).
	sign func(h http.Header, body []byte)
}

type recordedRequest struct {
	Method     string
	RequestURI string
	Header     http.Header
	Body       []byte
}

func newFakeWeChat(t *testing.T) *fakeWeChat {
	t.Helper()
	f := &fakeWeChat{t: t}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeWeChat) last() recordedRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.requests) == 0 {
		f.t.Fatal("no request reached the fake")
	}
	return f.requests[len(f.requests)-1]
}

func (f *fakeWeChat) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.requests)
}

func (f *fakeWeChat) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.requests = append(f.requests, recordedRequest{r.Method, r.RequestURI, r.Header.Clone(), body})
	answer, sign := f.answer, f.sign
	f.mu.Unlock()

	w.Header().Set(HeaderRequestID, "08F78BB5AF0610D302-268435456")
	if err := verifyTestRequest(r, body); err != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"code":"SIGN_ERROR","message":"签名错误"}`))
		return
	}
	if answer == nil {
		answer = defaultAnswer
	}
	status, out := answer(r, body)
	if status >= 200 && status < 300 {
		if sign == nil {
			ks := testKeys()
			key, serial := ks.pubKey, testPubKeyID
			if r.Header.Get(HeaderSerial) == ks.certSerial {
				key, serial = ks.platform, ks.certSerial
			}
			if err := SignResponseHeaders(w.Header(), key, serial, time.Now().Unix(), NewNonce(), out); err != nil {
				f.t.Errorf("SignResponseHeaders: %v", err)
			}
		} else {
			sign(w.Header(), out)
		}
	}
	if len(out) > 0 {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(status)
	_, _ = w.Write(out)
}

// verifyTestRequest checks a request's Authorization as WeChat Pay does.
func verifyTestRequest(r *http.Request, body []byte) error {
	a, err := ParseAuthorization(r.Header.Get("Authorization"))
	if err != nil {
		return err
	}
	if a.MchID != testMchID && a.MchID != testOtherMchID || a.Serial != testMchSerial {
		return ErrSignature
	}
	return VerifySignature(testKeys().merchant.Public(), RequestMessage(r.Method, r.RequestURI, a.Timestamp, a.Nonce, body), a.Signature)
}

func defaultAnswer(r *http.Request, _ []byte) (int, []byte) {
	p := r.URL.EscapedPath()
	switch {
	case r.Method == http.MethodPost && strings.HasSuffix(p, "/close"):
		return http.StatusNoContent, nil
	case r.Method == http.MethodPost && p == "/v3/combine-transactions/h5":
		return 200, []byte(`{"h5_url":"https://wx.tenpay.com/cgi-bin/mmpayweb-bin/checkmweb?prepay_id=wx1&package=1"}`)
	case r.Method == http.MethodPost && p == "/v3/combine-transactions/native":
		return 200, []byte(`{"code_url":"weixin://wxpay/bizpayurl?pr=JyC91EIz1"}`)
	case r.Method == http.MethodPost && strings.HasPrefix(p, "/v3/combine-transactions/"):
		return 200, []byte(`{"prepay_id":"wx201410272009395522657a690389285100"}`)
	case r.Method == http.MethodGet && (strings.HasPrefix(p, PathPrefixOutTradeNo) || strings.HasPrefix(p, PathPrefixTransactionID)):
		return 200, []byte(testOrderJSON)
	}
	return 404, []byte(`{"code":"NOT_FOUND","message":"no such path"}`)
}

const testOrderJSON = `{"combine_appid":"wxd678efh567hg6787","combine_out_trade_no":"P20150806125346","combine_mchid":"1900000109","combine_transaction_id":"4200000001202401010000000001",` +
	`"scene_info":{"device_id":"POS1:1"},"sub_orders":[{"mchid":"1900000109","trade_type":"JSAPI","trade_state":"SUCCESS","bank_type":"CMC","attach":"深圳分店",` +
	`"amount":{"total_amount":10,"currency":"CNY","payer_amount":10,"payer_currency":"CNY"},"success_time":"2015-05-20T13:29:35.120+08:00",` +
	`"transaction_id":"1009660380201506130728806387","out_trade_no":"20150806125346"}],"combine_payer_info":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}}`

// newTestClient answers a client for the fake with two merchants.
func newTestClient(t *testing.T, f *fakeWeChat, mod func(*Config)) *Client {
	t.Helper()
	cfg := Config{
		BaseURL:    f.URL,
		Merchants:  []*Merchant{newTestMerchant(testMchID), newTestMerchant(testOtherMchID)},
		Flavour:    FlavourMerchant,
		HTTPClient: f.Client(),
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}
