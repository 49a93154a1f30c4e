package main

import (
	"context"
	"errors"
	"strconv"

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
	p.m.MerchantRequest(req.CombineMchID, merchantCallCode(err))
	return res, err
}

// merchantCallCode labels a call's answer: OK, the WeChat Pay code, HTTP_<status>
// without one, TIMEOUT, CANCELED, INVALID (refused locally),
// TRANSPORT_ERROR (outcome unknown) or ERROR.
func merchantCallCode(err error) string {
	var apiErr *wechat.APIError
	switch {
	case err == nil:
		return "OK"
	case errors.As(err, &apiErr):
		if apiErr.Code == "" {
			return "HTTP_" + strconv.Itoa(apiErr.StatusCode)
		}
		return wechat.NormalizeCode(apiErr.Code)
	case errors.Is(err, context.DeadlineExceeded):
		return "TIMEOUT"
	case errors.Is(err, context.Canceled):
		return "CANCELED"
	case errors.Is(err, wechat.ErrInvalid):
		return "INVALID"
	case wechat.UnknownOutcome(err):
		return "TRANSPORT_ERROR"
	default:
		return "ERROR"
	}
}
