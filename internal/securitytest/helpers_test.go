package securitytest_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/wxcombine/orderworker/internal/proc"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/chaos"
	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/wechat"
	"github.com/wxcombine/orderworker/wechat/wechatsim"
)

var (
	buildOnce sync.Once
	buildDir  string
	bins      map[string]string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// binaries builds worker, notifier and wechatsim once per test binary.
func binaries(t *testing.T) map[string]string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the services; skipped with -short")
	}
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "securitytest-bin-")
		if buildErr == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			bins, buildErr = chaos.Build(ctx, buildDir)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return bins
}

// setup holds the keys of one test.
type setup struct {
	dir         string // temp dir
	logs        string // every process log and captured output
	simKeys     string
	merchantDir string
	keys        *wechatsim.Keys
	mchID       string
}

func newSetup(t *testing.T) *setup {
	t.Helper()
	dir := t.TempDir()
	s := &setup{dir: dir, logs: filepath.Join(dir, "logs"), simKeys: filepath.Join(dir, "keys"), mchID: "1900000210"}
	s.merchantDir = s.simKeys // the simulator writes the services' layout
	if err := os.MkdirAll(s.logs, 0o755); err != nil {
		t.Fatal(err)
	}
	keys, err := chaos.GenerateKeys(s.simKeys, 2048, s.mchID)
	if err != nil {
		t.Fatal(err)
	}
	s.keys = keys
	return s
}

func (s *setup) apiV3() wechat.APIv3Key { return s.keys.Merchants[0].APIv3Key }

// start starts a process whose output goes to logs/<name>.log and stops it
// when the test ends.
func (s *setup) start(t *testing.T, name string, env []string, bin string, args ...string) *proc.Proc {
	t.Helper()
	p, err := chaos.Start(name, filepath.Join(s.logs, name+".log"), env, bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(5 * time.Second) })
	return p
}

func freeAddr(t *testing.T) string {
	t.Helper()
	port, err := proc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return proc.Addr(port)
}

// startNotifier starts the notifier binary and waits until it is ready;
// it answers its notification URL and admin URL.
func (s *setup) startNotifier(t *testing.T, natsURL string, extra ...string) (string, string) {
	t.Helper()
	addr, admin := freeAddr(t), freeAddr(t)
	env := append([]string{
		"NATS_URL=" + natsURL, "WECHAT_MERCHANTS=" + s.mchID, "WECHAT_MERCHANT_DIR=" + s.merchantDir,
		"HTTP_ADDR=" + addr, "ADMIN_ADDR=" + admin, "LOG_LEVEL=debug", "PAYMENTS_SEEN_BACKEND=kv",
	}, extra...)
	p := s.start(t, "notifier", env, binaries(t)["notifier"])
	if err := proc.WaitHTTP(t.Context(), p, "http://"+admin+"/readyz", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	return "http://" + addr, "http://" + admin
}

// ensureEventsStream creates the events stream the notifier publishes to
// (the worker creates it in production).
func ensureEventsStream(t *testing.T, natsURL string) {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	_, err = js.CreateOrUpdateStream(t.Context(), jetstream.StreamConfig{
		Name: events.StreamEvents, Subjects: events.Subjects{}.Events(), Storage: jetstream.FileStorage,
		Duplicates: 10 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
}

// paidOrders creates n jsapi orders at an in-process simulator with the
// setup's keys and pays them, and answers the paid transactions with the
// openid of each payer. Their notifications go to a local sink.
func (s *setup) paidOrders(t *testing.T, n int, prefix string) []*wechat.CombineOrder {
	t.Helper()
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(204) }))
	t.Cleanup(sink.Close)
	sim, err := wechatsim.New(wechatsim.Config{Merchants: s.keys.Merchants, Platform: s.keys.Platform})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	base, err := sim.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m, err := wechat.LoadMerchant(s.keys.Files[0])
	if err != nil {
		t.Fatal(err)
	}
	client, err := wechat.New(wechat.Config{BaseURL: base, Flavour: wechat.FlavourMerchant, Merchants: []*wechat.Merchant{m}})
	if err != nil {
		t.Fatal(err)
	}
	var out []*wechat.CombineOrder
	for i := range n {
		no := fmt.Sprintf("%s%04d", prefix, i)
		req := &wechat.CombineOrderRequest{
			CombineAppID: chaos.AppIDOf(s.mchID), CombineMchID: s.mchID, CombineOutTradeNo: no,
			SceneInfo: &wechat.SceneInfo{PayerClientIP: "14.17.22.32"},
			SubOrders: []wechat.SubOrder{
				{MchID: s.mchID, Attach: "shop", Amount: wechat.Amount{TotalAmount: 100, Currency: "CNY"}, OutTradeNo: no + "a", Description: "tea"},
				{MchID: s.mchID, Attach: "shop", Amount: wechat.Amount{TotalAmount: 250, Currency: "CNY"}, OutTradeNo: no + "b", Description: "cake"},
			},
			CombinePayerInfo: &wechat.PayerInfo{OpenID: fmt.Sprintf("oSecTest%s%020d", prefix, i)},
			NotifyURL:        sink.URL + "/notify",
		}
		if _, err := client.CreateCombineOrder(t.Context(), wechat.TradeTypeJSAPI, req); err != nil {
			t.Fatalf("CreateCombineOrder: %v", err)
		}
		paid, err := sim.Pay(t.Context(), s.mchID, no)
		if err != nil {
			t.Fatalf("Pay: %v", err)
		}
		out = append(out, paid)
	}
	return out
}

// notification builds the genuine notification of a paid order, signed now
// with the platform's public-key-mode key.
func (s *setup) notification(t *testing.T, tx *wechat.CombineOrder, id string) (http.Header, []byte) {
	t.Helper()
	p := s.keys.Platform
	h, body, err := wechat.BuildNotification(p.PubKey, p.PubKeyID, s.apiV3(), id, time.Now(), tx, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return h, body
}
