package pipeline_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/wechat"
)

const (
	testAppID = "wxd678efh567hg6787"
	testMchID = "1900000109"
)

// newRequest answers a valid request of trade type t for the merchant
// flavour (the individual flavour for miniprogram) with subs sub-orders.
func newRequest(t wechat.TradeType, mchID, no string, subs int) wechat.CombineOrderRequest {
	req := wechat.CombineOrderRequest{
		CombineAppID:      testAppID,
		CombineMchID:      mchID,
		CombineOutTradeNo: no,
		SceneInfo:         &wechat.SceneInfo{PayerClientIP: "14.23.150.211"},
		NotifyURL:         "https://yourapp.example/wxpay/notify",
	}
	for i := range subs {
		s := wechat.SubOrder{
			MchID: mchID, Attach: "shop", Amount: wechat.Amount{TotalAmount: int64(10 + i), Currency: "CNY"},
			OutTradeNo: fmt.Sprintf("%s-%d", no, i), Description: "Tencent cup",
		}
		if t == wechat.TradeTypeMiniProgram {
			s.IndividualAuthID = fmt.Sprintf("AUTH%04d", i)
		}
		req.SubOrders = append(req.SubOrders, s)
	}
	switch t {
	case wechat.TradeTypeJSAPI, wechat.TradeTypeMiniProgram:
		req.CombinePayerInfo = &wechat.PayerInfo{OpenID: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}
	case wechat.TradeTypeH5:
		req.SceneInfo.H5Info = &wechat.H5Info{Type: "Wap"}
		req.SceneInfo.DeviceID = "POS1:123" // required for h5
	}
	return req
}

func flavourOf(t wechat.TradeType) wechat.Flavour {
	if t == wechat.TradeTypeMiniProgram {
		return wechat.FlavourIndividual
	}
	return wechat.FlavourMerchant
}

// newJob answers a job of trade type t with 2 sub-orders.
func newJob(t wechat.TradeType, no string) events.CreateOrderJob {
	return events.CreateOrderJob{
		Version: events.Version, CorrelationID: "corr-" + no, CreatedAt: time.Date(2025, 1, 16, 2, 0, 0, 0, time.UTC),
		TradeType: t, Request: newRequest(t, testMchID, no, 2),
	}
}

func mustJSON(tb testing.TB, v any) []byte {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}
