package wechat

import (
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
)

// TestNew_defaultTransportKeepsConnections checks that concurrent calls
// reuse their connections: net/http's default of 2 idle connections per
// host would close and redial most of them on every round.
func TestNew_defaultTransportKeepsConnections(t *testing.T) {
	const concurrent, rounds = 16, 3
	f := &fakeWeChat{t: t}
	f.Server = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	var dialled atomic.Int64
	f.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			dialled.Add(1)
		}
	}
	f.Start()
	t.Cleanup(f.Close)
	c := newTestClient(t, f, func(cfg *Config) { cfg.HTTPClient = nil })
	for range rounds {
		var wg sync.WaitGroup
		for range concurrent {
			wg.Go(func() {
				if _, err := c.QueryByOutTradeNo(t.Context(), testMchID, "P20150806125346"); err != nil {
					t.Errorf("QueryByOutTradeNo = %v", err)
				}
			})
		}
		wg.Wait()
	}
	if got := dialled.Load(); got > concurrent {
		t.Errorf("%d rounds of %d concurrent calls opened %d connections, want at most %d", rounds, concurrent, got, concurrent)
	}
}
