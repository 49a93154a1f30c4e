package wechat

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// The official documentation vectors (testdata/jsapi.* and app.*).
const (
	vecAppID    = "wx2421b1c4370ec43b"
	vecTime     = 1554208460
	vecNonce    = "593BEC0C930BF1AFEB40B4A08C8FB242"
	vecPrepayID = "wx201410272009395522657a690389285100"
)

func TestSignJSAPIPayParams_Vector(t *testing.T) {
	want := strings.TrimSpace(readTestdata(t, "jsapi.sig"))
	if got := string(PaySignMessage(vecAppID, "1554208460", vecNonce, "prepay_id="+vecPrepayID)); got != readTestdata(t, "jsapi.msg") {
		t.Fatalf("PaySignMessage() = %q, want jsapi.msg", got)
	}
	p, err := SignJSAPIPayParams(docKey(t), vecAppID, vecPrepayID, vecTime, vecNonce)
	if err != nil {
		t.Fatal(err)
	}
	if p.PaySign != want {
		t.Errorf("paySign = %s, want %s", p.PaySign, want)
	}
	b, _ := json.Marshal(p)
	wantJSON := `{"appId":"wx2421b1c4370ec43b","timeStamp":"1554208460","nonceStr":"593BEC0C930BF1AFEB40B4A08C8FB242","package":"prepay_id=wx201410272009395522657a690389285100","signType":"RSA","paySign":"` + want + `"}`
	if string(b) != wantJSON {
		t.Errorf("JSON = %s, want %s", b, wantJSON)
	}
}

func TestSignMiniProgramPayParams_Vector(t *testing.T) {
	// wx.requestPayment takes no appId, but the signature starts with
	// combine_appid: the same message as JSAPI, hence the same vector.
	want := strings.TrimSpace(readTestdata(t, "jsapi.sig"))
	p, err := SignMiniProgramPayParams(docKey(t), vecAppID, vecPrepayID, vecTime, vecNonce)
	if err != nil {
		t.Fatal(err)
	}
	if p.PaySign != want {
		t.Errorf("paySign = %s, want %s", p.PaySign, want)
	}
	b, _ := json.Marshal(p)
	if strings.Contains(strings.ToLower(string(b)), "appid") {
		t.Errorf("mini-program JSON %s carries an appId", b)
	}
	var m map[string]string
	_ = json.Unmarshal(b, &m)
	for _, k := range []string{"timeStamp", "nonceStr", "package", "signType", "paySign"} {
		if m[k] == "" {
			t.Errorf("JSON %s lacks %s", b, k)
		}
	}
}

func TestSignAppPayParams_Vector(t *testing.T) {
	want := strings.TrimSpace(readTestdata(t, "app.sig"))
	if got := string(PaySignMessage(vecAppID, "1554208460", vecNonce, vecPrepayID)); got != readTestdata(t, "app.msg") {
		t.Fatalf("PaySignMessage() = %q, want app.msg", got)
	}
	p, err := SignAppPayParams(docKey(t), vecAppID, "1900000109", vecPrepayID, vecTime, vecNonce)
	if err != nil {
		t.Fatal(err)
	}
	if p.Sign != want {
		t.Errorf("sign = %s, want %s", p.Sign, want)
	}
	b, _ := json.Marshal(p)
	wantJSON := `{"appid":"wx2421b1c4370ec43b","partnerid":"1900000109","prepayid":"wx201410272009395522657a690389285100","package":"Sign=WXPay","noncestr":"593BEC0C930BF1AFEB40B4A08C8FB242","timestamp":"1554208460","sign":"` + want + `"}`
	if string(b) != wantJSON {
		t.Errorf("JSON = %s, want %s", b, wantJSON)
	}
}

func TestClient_PayParams(t *testing.T) {
	f := newFakeWeChat(t)
	now := time.Unix(1_700_000_000, 0)
	c := newTestClient(t, f, func(cfg *Config) { cfg.NowFunc = func() time.Time { return now } })
	pub := testKeys().merchant.Public()

	j, err := c.JSAPIPayParams(testMchID, testAppID, "wx1")
	if err != nil {
		t.Fatal(err)
	}
	if j.TimeStamp != "1700000000" || len(j.NonceStr) != NonceLength || j.SignType != "RSA" || j.Package != "prepay_id=wx1" {
		t.Errorf("JSAPIPayParams() = %+v", j)
	}
	if err := VerifySignature(pub, PaySignMessage(testAppID, j.TimeStamp, j.NonceStr, j.Package), j.PaySign); err != nil {
		t.Errorf("JSAPI paySign does not verify: %v", err)
	}
	mp, err := c.MiniProgramPayParams(testMchID, testAppID, "wx1")
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifySignature(pub, PaySignMessage(testAppID, mp.TimeStamp, mp.NonceStr, mp.Package), mp.PaySign); err != nil {
		t.Errorf("mini-program paySign does not verify over combine_appid: %v", err)
	}
	a, err := c.AppPayParams(testMchID, testAppID, "wx1")
	if err != nil {
		t.Fatal(err)
	}
	if a.PartnerID != testMchID || a.Package != PackageSignWXPay {
		t.Errorf("AppPayParams() = %+v", a)
	}
	if err := VerifySignature(pub, PaySignMessage(testAppID, a.TimeStamp, a.NonceStr, "wx1"), a.Sign); err != nil {
		t.Errorf("APP sign does not verify over the bare prepay_id: %v", err)
	}
	if _, err := c.AppPayParams("nobody", testAppID, "wx1"); err == nil {
		t.Errorf("AppPayParams(unknown merchant) = nil error")
	}
	if _, err := c.JSAPIPayParams(testMchID, testAppID, ""); err == nil {
		t.Errorf("JSAPIPayParams(empty prepay_id) = nil error")
	}
}
