package main

import (
	"context"

	"github.com/wxcombine/orderworker/metrics"
	"github.com/wxcombine/orderworker/pipeline"
	"github.com/wxcombine/orderworker/wechat"
)

// meteredPayer counts every WeChat Pay create call per combine_mchid in
// orderworker_wechat_merchant_requests_total: WeChat Pay's frequency limit
// is per merchant, so FREQUENCY_LIMITED must be visible per merchant. The
// label is bounded by WECHAT_MERCHANTS (metrics.WorkerConfig.Merchants).
type meteredPayer struct {
	pipeline.Payer
	m *metrics.Worker
}

// CreateCombineOrder calls the wrapped Payer and counts the answer.
func (p meteredPayer) CreateCombineOrder(ctx context.Context, t wechat.TradeType, req *wechat.CombineOrderRequest) (*wechat.PrepayResult, error) {
	res, err := p.Payer.CreateCombineOrder(ctx, t, req)
	p.m.MerchantRequest(req.CombineMchID, pipeline.CallCode(err))
	return res, err
}
