package chaos

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestRecorder(t *testing.T) {
	var gotURI string
	sim := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotURI = r.RequestURI
		switch {
		case strings.HasSuffix(r.URL.Path, "/app"):
			w.Header().Set("Wechatpay-Serial", "PUB_KEY_ID_1")
			_, _ = io.WriteString(w, `{"prepay_id":"wx123"}`)
		case strings.HasSuffix(r.URL.Path, "/jsapi"):
			w.WriteHeader(500)
			_, _ = io.WriteString(w, `{"code":"SYSTEMERROR","message":"x"}`)
		default:
			_, _ = io.WriteString(w, `{}`)
		}
	}))
	defer sim.Close()
	rec := NewRecorder(sim.URL)
	defer rec.Close()
	base, err := rec.Listen("worker-1")
	if err != nil {
		t.Fatal(err)
	}
	body := `{"combine_mchid":"1900000110","combine_out_trade_no":"CH1"}`
	tests := []struct {
		path       string
		wantStatus int
		wantCalls  int
	}{
		{"/v3/combine-transactions/app", 200, 1},
		{"/v3/combine-transactions/jsapi", 500, 2},
		{"/v3/combine-transactions/out-trade-no/CH%2F1", 200, 2}, // a query, not recorded
	}
	for _, tt := range tests {
		method := http.MethodPost
		if strings.Contains(tt.path, "out-trade-no") {
			method = http.MethodGet
		}
		req, _ := http.NewRequest(method, base+tt.path, bytes.NewReader([]byte(body)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.wantStatus {
			t.Errorf("%s: status %d, want %d", tt.path, resp.StatusCode, tt.wantStatus)
		}
		if gotURI != tt.path {
			t.Errorf("simulator got request target %q, want %q unchanged", gotURI, tt.path)
		}
		// The proxy records a call after it has written the answer back (it
		// records whether the answer was delivered), so the client may see
		// the answer a moment before the record exists.
		n := len(rec.Calls())
		for deadline := time.Now().Add(2 * time.Second); n < tt.wantCalls && time.Now().Before(deadline); n = len(rec.Calls()) {
			time.Sleep(5 * time.Millisecond)
		}
		if n != tt.wantCalls {
			t.Errorf("after %s: %d calls recorded, want %d", tt.path, n, tt.wantCalls)
		}
	}
	calls := rec.Calls()
	if c := calls[0]; c.Instance != "worker-1" || c.Order.OutTradeNo != "CH1" || c.Status != 200 || c.Ref != "wx123" || !c.Delivered {
		t.Errorf("first call = %+v, want worker-1 CH1 200 wx123 delivered", c)
	}
	if c := calls[1]; c.Status != 500 || c.Code != "SYSTEMERROR" || c.Ref != "" {
		t.Errorf("second call = %+v, want 500 SYSTEMERROR", c)
	}
}

// TestRun runs a small chaos run with real processes when CHAOS is set:
//
//	CHAOS=1 CHAOS_ORDERS=300 go test -run TestRun -v ./chaos
//
// CHAOS_DIR keeps the report and logs (default: the test's temp dir).
func TestRun(t *testing.T) {
	if os.Getenv("CHAOS") == "" {
		t.Skip("set CHAOS=1 to run the chaos suite (or use make chaos/short)")
	}
	orders := 300
	if v := os.Getenv("CHAOS_ORDERS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("CHAOS_ORDERS=%q: %v", v, err)
		}
		orders = n
	}
	dir := os.Getenv("CHAOS_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	var seed uint64
	if v := os.Getenv("CHAOS_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	var out bytes.Buffer
	rep, err := Run(t.Context(), Config{Dir: dir, Orders: orders, PublishRate: 30, Seed: seed, Timeout: 8 * time.Minute, Progress: &out})
	t.Log(out.String())
	if rep != nil {
		var text bytes.Buffer
		_ = rep.WriteText(&text)
		t.Log(text.String())
	}
	if err != nil {
		t.Fatalf("Run() error: %v", err)
	}
	if !rep.OK {
		t.Errorf("Run() found %d violations, want 0 (seed %d)", rep.ViolationTotal, rep.Seed)
	}
	if rep.Figures.Kills != KillsDefault || rep.Figures.RedisRestarts != 1 || rep.Figures.NATSRestarts != 1 {
		t.Errorf("disruptions = %d kills, %d redis, %d nats restarts, want %d, 1, 1", rep.Figures.Kills, rep.Figures.RedisRestarts, rep.Figures.NATSRestarts, KillsDefault)
	}
}
