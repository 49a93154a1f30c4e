package main

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wxcombine/orderworker/metrics"
	"github.com/wxcombine/orderworker/pipeline"
	"github.com/wxcombine/orderworker/wechat"
)

// answer creates with a fixed error; its queries and closes are never
// called.
type answer struct {
	pipeline.Payer
	err error
}

func (a answer) CreateCombineOrder(context.Context, wechat.TradeType, *wechat.CombineOrderRequest) (*wechat.PrepayResult, error) {
	return &wechat.PrepayResult{}, a.err
}

// TestMeteredPayer: calls are counted per configured merchant and code;
// an unconfigured mchid adds no series.
func TestMeteredPayer(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.NewWorkerWith(reg, metrics.WorkerConfig{Merchants: []string{"1900000109", "1900000110"}})
	limited := &wechat.APIError{StatusCode: http.StatusTooManyRequests, Code: "FREQUENCY_LIMITED"}
	for _, c := range []struct {
		mchID string
		err   error
	}{{"1900000109", nil}, {"1900000109", limited}, {"1900000110", limited}, {"evil-\"}", nil}, {"1900000110", context.DeadlineExceeded}} {
		_, _ = meteredPayer{Payer: answer{err: c.err}, m: m}.CreateCombineOrder(t.Context(), wechat.TradeTypeNative, &wechat.CombineOrderRequest{CombineMchID: c.mchID})
	}
	want := `
# HELP orderworker_wechat_merchant_requests_total WeChat Pay create calls, by configured combine_mchid (or other) and code (WeChat code, OK, TIMEOUT, TRANSPORT_ERROR or ERROR).
# TYPE orderworker_wechat_merchant_requests_total counter
orderworker_wechat_merchant_requests_total{code="FREQUENCY_LIMITED",mchid="1900000109"} 1
orderworker_wechat_merchant_requests_total{code="FREQUENCY_LIMITED",mchid="1900000110"} 1
orderworker_wechat_merchant_requests_total{code="OK",mchid="1900000109"} 1
orderworker_wechat_merchant_requests_total{code="OK",mchid="1900000110"} 0
orderworker_wechat_merchant_requests_total{code="OK",mchid="other"} 1
orderworker_wechat_merchant_requests_total{code="TIMEOUT",mchid="1900000110"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "orderworker_wechat_merchant_requests_total"); err != nil {
		t.Error(err)
	}
}
