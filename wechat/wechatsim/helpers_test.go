package wechatsim_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/wxcombine/orderworker/wechat"
	"github.com/wxcombine/orderworker/wechat/wechatsim"
)

const (
	mchA   = "1900000109"
	mchB   = "1900000110"
	appA   = "wxd678efh567hg6787"
	appB   = "wxd678efh567hg6999"
	openID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
)

// keys are generated once per test binary: RSA generation is slow.
var keys = sync.OnceValues(func() (*fixture, error) {
	p, err := wechatsim.GeneratePlatform(0)
	if err != nil {
		return nil, err
	}
	f := &fixture{platform: p}
	for _, id := range []struct{ mch, app string }{{mchA, appA}, {mchB, appB}} {
		mc, m, err := wechatsim.GenerateMerchant(p, id.mch, id.app)
		if err != nil {
			return nil, err
		}
		f.sim = append(f.sim, mc)
		f.client = append(f.client, m)
	}
	return f, nil
})

type fixture struct {
	platform *wechatsim.Platform
	sim      []wechatsim.MerchantConfig
	client   []*wechat.Merchant
}

// env is one running simulator with a wechat client pointed at it.
type env struct {
	sim    *wechatsim.Server
	url    string
	client *wechat.Client
	fix    *fixture
	// merchant is mchA's client credentials, trusting what cfg.Mode needs.
	merchant *wechat.Merchant
}

// newEnv starts a simulator configured by cfg (Platform and Merchants are
// filled in) and a client trusting exactly the keys of cfg.Mode.
func newEnv(t testing.TB, cfg wechatsim.Config) *env {
	t.Helper()
	f, err := keys()
	if err != nil {
		t.Fatalf("generate keys: %v", err)
	}
	cfg.Platform = f.platform
	cfg.Merchants = f.sim
	s, err := wechatsim.New(cfg)
	if err != nil {
		t.Fatalf("wechatsim.New() = %v", err)
	}
	url, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatalf("Start() = %v", err)
	}
	t.Cleanup(s.Close)
	mode := cmpOr(cfg.Mode, wechatsim.ModePublicKey)
	var ms []*wechat.Merchant
	for _, m := range f.client {
		c := *m
		c.Platform = f.platform.Verifier(mode)
		ms = append(ms, &c)
	}
	flavour := cmpOr(cfg.Flavour, wechat.FlavourMerchant)
	c, err := wechat.New(wechat.Config{BaseURL: url, Merchants: ms, Flavour: flavour, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("wechat.New() = %v", err)
	}
	return &env{sim: s, url: url, client: c, fix: f, merchant: ms[0]}
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

var orderSeq struct {
	sync.Mutex
	n int
}

// newNo answers a fresh order number.
func newNo(prefix string) string {
	orderSeq.Lock()
	defer orderSeq.Unlock()
	orderSeq.n++
	return prefix + strconv.FormatInt(time.Now().UnixNano(), 10) + strconv.Itoa(orderSeq.n)
}

// merchantOrder answers a valid merchant-flavour jsapi create for mchA
// with two sub-orders (one of them mchB's).
func merchantOrder(no, notifyURL string) *wechat.CombineOrderRequest {
	if notifyURL == "" {
		notifyURL = "https://example.com/notify"
	}
	return &wechat.CombineOrderRequest{
		CombineAppID:      appA,
		CombineMchID:      mchA,
		CombineOutTradeNo: no,
		SceneInfo:         &wechat.SceneInfo{DeviceID: "POS1:123", PayerClientIP: "14.17.22.32"},
		SubOrders: []wechat.SubOrder{
			{MchID: mchA, Attach: "shop A", Amount: wechat.Amount{TotalAmount: 100, Currency: "CNY"}, OutTradeNo: no + "a", Description: "tea"},
			{MchID: mchB, Attach: "shop B", Amount: wechat.Amount{TotalAmount: 250, Currency: "CNY"}, OutTradeNo: no + "b", Description: "cake"},
		},
		CombinePayerInfo: &wechat.PayerInfo{OpenID: openID},
		NotifyURL:        notifyURL,
	}
}

// rawResponse is an answer read by do.
type rawResponse struct {
	status int
	header http.Header
	body   []byte
}

// signedRequest builds a request signed as merchant m at time ts; target
// is the raw request target.
func signedRequest(t testing.TB, m *wechat.Merchant, base, method, target string, body []byte, ts int64) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, base+target, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	a, err := wechat.SignRequest(m.PrivateKey, m.MchID, m.Serial, method, req.URL.RequestURI(), ts, wechat.NewNonce(), body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", a.String())
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "wechatsim-test/1")
	return req
}

func do(t testing.TB, req *http.Request) rawResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return rawResponse{status: resp.StatusCode, header: resp.Header, body: b}
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := wechat.MarshalBody(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
