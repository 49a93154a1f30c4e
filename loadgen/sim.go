package loadgen

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/wxcombine/orderworker/wechat/wechatsim"
)

// SimClient talks to the simulator's admin API (wechatsim's /sim/…).
type SimClient struct {
	// BaseURL is the simulator's URL, such as http://127.0.0.1:8090.
	// Required.
	BaseURL string
	// HTTPClient defaults to a client with a 10s timeout.
	HTTPClient *http.Client
}

// simConcurrency bounds parallel order look-ups.
const simConcurrency = 8

func (c *SimClient) client() *http.Client {
	if c.HTTPClient != nil {
		return c.HTTPClient
	}
	return &http.Client{Timeout: 10 * time.Second}
}

func (c *SimClient) do(ctx context.Context, method, path string, v any) (int, error) {
	return c.doBody(ctx, method, path, nil, v)
}

func (c *SimClient) doBody(ctx context.Context, method, path string, body []byte, v any) (int, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.BaseURL, "/")+path, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if err != nil {
		return 0, fmt.Errorf("loadgen: simulator %s %s: %w", method, path, err)
	}
	resp, err := c.client().Do(req)
	if err != nil {
		return 0, fmt.Errorf("loadgen: simulator %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("loadgen: simulator %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(answer, &e)
		return resp.StatusCode, fmt.Errorf("loadgen: simulator %s %s: status %d: %s", method, path, resp.StatusCode, cmp.Or(e.Error, "no error message"))
	}
	if v != nil {
		if err := json.Unmarshal(answer, v); err != nil {
			return resp.StatusCode, fmt.Errorf("loadgen: simulator %s %s: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

func orderPath(prefix string, key OrderKey) string {
	return prefix + url.PathEscape(key.MchID) + "/" + url.PathEscape(key.OutTradeNo)
}

// Pay pays an order (POST /sim/pay/{mchid}/{no}); the simulator then
// notifies the order's notify_url. It satisfies PayFunc.
func (c *SimClient) Pay(ctx context.Context, key OrderKey) error {
	_, err := c.do(ctx, http.MethodPost, orderPath("/sim/pay/", key), nil)
	return err
}

// Order answers the simulator's view of an order (GET /sim/orders/…), and
// false if no create ever named it.
func (c *SimClient) Order(ctx context.Context, key OrderKey) (wechatsim.OrderInfo, bool, error) {
	var info wechatsim.OrderInfo
	status, err := c.do(ctx, http.MethodGet, orderPath("/sim/orders/", key), &info)
	if status == http.StatusNotFound {
		return info, false, nil
	}
	return info, err == nil, err
}

// Orders answers the simulator's view of every key that a create named,
// looking them up simConcurrency at a time; keys no create named are
// absent. The first error is answered with whatever was read.
func (c *SimClient) Orders(ctx context.Context, keys []OrderKey) (map[OrderKey]wechatsim.OrderInfo, error) {
	var (
		mu    sync.Mutex
		out   = make(map[OrderKey]wechatsim.OrderInfo, len(keys))
		first error
		wg    sync.WaitGroup
		next  = make(chan OrderKey)
	)
	for range simConcurrency {
		wg.Add(1)
		go func() { // Owned by Orders; ends when next is closed.
			defer wg.Done()
			for key := range next {
				info, ok, err := c.Order(ctx, key)
				mu.Lock()
				switch {
				case err != nil && first == nil:
					first = err
				case ok:
					out[key] = info
				}
				mu.Unlock()
			}
		}()
	}
	for _, key := range keys {
		next <- key
	}
	close(next)
	wg.Wait()
	return out, first
}

// CreateCounts answers the create calls the simulator received for each
// key. It satisfies CreateCountsFunc.
func (c *SimClient) CreateCounts(ctx context.Context, keys []OrderKey) (map[OrderKey]int, error) {
	orders, err := c.Orders(ctx, keys)
	counts := make(map[OrderKey]int, len(orders))
	for key, info := range orders {
		counts[key] = info.CreateCalls
	}
	return counts, err
}

// Stats answers the simulator's accounting (GET /sim/stats).
func (c *SimClient) Stats(ctx context.Context) (wechatsim.Stats, error) {
	var st wechatsim.Stats
	_, err := c.do(ctx, http.MethodGet, "/sim/stats", &st)
	return st, err
}

// SetFaults replaces the simulator's faults (PUT /sim/faults).
func (c *SimClient) SetFaults(ctx context.Context, f wechatsim.FaultConfig) error {
	// The admin API writes the two durations as Go duration strings.
	b, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("loadgen: simulator faults: %w", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("loadgen: simulator faults: %w", err)
	}
	m["latency"], m["latency_jitter"] = f.Latency.String(), f.LatencyJitter.String()
	if b, err = json.Marshal(m); err != nil {
		return fmt.Errorf("loadgen: simulator faults: %w", err)
	}
	_, err = c.doBody(ctx, http.MethodPut, "/sim/faults", b, nil)
	return err
}
