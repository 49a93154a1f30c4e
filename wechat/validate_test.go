package wechat

import (
	"errors"
	"strings"
	"testing"
)

func TestValidate_ValidRequests(t *testing.T) {
	for _, f := range []Flavour{FlavourMerchant, FlavourPartner, FlavourEcommerce, FlavourIndividual} {
		for _, tt := range TradeTypes {
			if tradeTypeAllowed(f, tt) != "" {
				continue
			}
			if err := Validate(f, tt, validRequest(f, tt)); err != nil {
				t.Errorf("Validate(%s, %s, valid) = %v, want nil", f, tt, err)
			}
		}
	}
}

func TestValidate_Rules(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n) }
	tests := []struct {
		name      string
		flavour   Flavour
		tradeType TradeType
		mod       func(r *CombineOrderRequest)
		wantField string
		wantIssue string // a substring of the issue
	}{
		// The request as a whole.
		{"unknown flavour", "bank", TradeTypeApp, nil, "", "unknown flavour"},
		{"unknown trade type", FlavourMerchant, "micropay", nil, "", "unknown trade type"},
		{"miniprogram only for individual", FlavourMerchant, TradeTypeMiniProgram, nil, "", "individual-payee endpoint"},
		{"miniprogram not for partner", FlavourPartner, TradeTypeMiniProgram, nil, "", "individual-payee endpoint"},
		{"individual not jsapi", FlavourIndividual, TradeTypeJSAPI, nil, "", "not offered to individual payees"},
		{"individual not h5", FlavourIndividual, TradeTypeH5, nil, "", "not offered to individual payees"},
		{"individual not native", FlavourIndividual, TradeTypeNative, nil, "", "not offered to individual payees"},
		// combine_*.
		{"combine_appid required", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.CombineAppID = "" }, "/combine_appid", "is required"},
		{"combine_appid length", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.CombineAppID = long(33) }, "/combine_appid", "longer than 32"},
		{"combine_mchid required", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.CombineMchID = "" }, "/combine_mchid", "is required"},
		{"combine_mchid length", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.CombineMchID = long(33) }, "/combine_mchid", "longer than 32"},
		{"combine_out_trade_no required", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.CombineOutTradeNo = "" }, "/combine_out_trade_no", "is required"},
		{"combine_out_trade_no length", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.CombineOutTradeNo = long(33) }, "/combine_out_trade_no", "longer than 32"},
		{"combine_out_trade_no charset", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.CombineOutTradeNo = "P2015 0806" }, "/combine_out_trade_no", "digits, letters"},
		{"combine_out_trade_no star on miniprogram", FlavourIndividual, TradeTypeMiniProgram, func(r *CombineOrderRequest) { r.CombineOutTradeNo = "P2015*0806" }, "/combine_out_trade_no", "digits, letters and _-|@"},
		{"combine_out_trade_no shorter than 6", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.CombineOutTradeNo = "P2015" }, "/combine_out_trade_no", "shorter than 6"},
		{"combine_out_trade_no e-commerce shorter than 2", FlavourEcommerce, TradeTypeApp, func(r *CombineOrderRequest) { r.CombineOutTradeNo = "P" }, "/combine_out_trade_no", "shorter than 2"},
		{"emoji in description", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.SubOrders[0].Description = "tea \U0001F375" }, "/sub_orders/0/description", "4 bytes"},
		{"invalid UTF-8 in attach", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.SubOrders[1].Attach = "shop\xff" }, "/sub_orders/1/attach", "UTF-8"},
		{"device_id shorter than 7", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) {
			r.SceneInfo = &SceneInfo{DeviceID: "POS1:1", PayerClientIP: "14.17.22.32"}
		}, "/scene_info/device_id", "shorter than 7"},
		{"h5 needs device_id", FlavourMerchant, TradeTypeH5, func(r *CombineOrderRequest) { r.SceneInfo.DeviceID = "" }, "/scene_info/device_id", "required for h5"},
		{"detail not on h5", FlavourMerchant, TradeTypeH5, func(r *CombineOrderRequest) { r.SubOrders[0].Detail = "x" }, "/sub_orders/0/detail", "no detail"},
		{"outer profit_sharing not on native", FlavourPartner, TradeTypeNative, func(r *CombineOrderRequest) { r.SubOrders[0].ProfitSharing = ptr(true) }, "/sub_orders/0/profit_sharing", "only the app and jsapi"},
		{"combine_out_trade_no non-ascii", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.CombineOutTradeNo = "订单123456" }, "/combine_out_trade_no", "digits, letters"},
		// scene_info.
		{"h5 needs scene_info", FlavourMerchant, TradeTypeH5, func(r *CombineOrderRequest) { r.SceneInfo = nil }, "/scene_info", "required for h5"},
		{"device_id length", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) {
			r.SceneInfo = &SceneInfo{DeviceID: long(17), PayerClientIP: "14.17.22.32"}
		}, "/scene_info/device_id", "longer than 16"},
		{"payer_client_ip required", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.SceneInfo = &SceneInfo{DeviceID: "POS1:123"} }, "/scene_info/payer_client_ip", "is required"},
		{"payer_client_ip not an IP", FlavourMerchant, TradeTypeH5, func(r *CombineOrderRequest) { r.SceneInfo.PayerClientIP = "14.17.22" }, "/scene_info/payer_client_ip", "IPv4 or IPv6"},
		{"payer_client_ip length", FlavourMerchant, TradeTypeH5, func(r *CombineOrderRequest) { r.SceneInfo.PayerClientIP = long(46) }, "/scene_info/payer_client_ip", "longer than 45"},
		{"h5_info required", FlavourMerchant, TradeTypeH5, func(r *CombineOrderRequest) { r.SceneInfo.H5Info = nil }, "/scene_info/h5_info", "required for h5"},
		{"h5_info type required", FlavourMerchant, TradeTypeH5, func(r *CombineOrderRequest) { r.SceneInfo.H5Info.Type = "" }, "/scene_info/h5_info/type", "is required"},
		{"h5_info type enum", FlavourMerchant, TradeTypeH5, func(r *CombineOrderRequest) { r.SceneInfo.H5Info.Type = "ios" }, "/scene_info/h5_info/type", "iOS, Android or Wap"},
		{"h5_info app_name length", FlavourMerchant, TradeTypeH5, func(r *CombineOrderRequest) { r.SceneInfo.H5Info.AppName = long(65) }, "/scene_info/h5_info/app_name", "longer than 64"},
		{"h5_info app_url length", FlavourMerchant, TradeTypeH5, func(r *CombineOrderRequest) { r.SceneInfo.H5Info.AppURL = long(129) }, "/scene_info/h5_info/app_url", "longer than 128"},
		{"h5_info bundle_id length", FlavourMerchant, TradeTypeH5, func(r *CombineOrderRequest) { r.SceneInfo.H5Info.BundleID = long(129) }, "/scene_info/h5_info/bundle_id", "longer than 128"},
		{"h5_info package_name length", FlavourMerchant, TradeTypeH5, func(r *CombineOrderRequest) { r.SceneInfo.H5Info.PackageName = long(129) }, "/scene_info/h5_info/package_name", "longer than 128"},
		{"h5_info only for h5", FlavourMerchant, TradeTypeNative, func(r *CombineOrderRequest) {
			r.SceneInfo = &SceneInfo{PayerClientIP: "::1", H5Info: &H5Info{Type: "Wap"}}
		}, "/scene_info/h5_info", "only the h5 endpoint"},
		// sub_orders count per flavour.
		{"sub_orders required", FlavourPartner, TradeTypeApp, func(r *CombineOrderRequest) { r.SubOrders = nil }, "/sub_orders", "is required"},
		{"merchant needs 2", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.SubOrders = r.SubOrders[:1] }, "/sub_orders", "at least 2"},
		{"merchant at most 10", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.SubOrders = subOrdersN(FlavourMerchant, 11) }, "/sub_orders", "at most 10"},
		{"partner at most 50", FlavourPartner, TradeTypeApp, func(r *CombineOrderRequest) { r.SubOrders = subOrdersN(FlavourPartner, 51) }, "/sub_orders", "at most 50"},
		{"ecommerce at most 50", FlavourEcommerce, TradeTypeApp, func(r *CombineOrderRequest) { r.SubOrders = subOrdersN(FlavourEcommerce, 51) }, "/sub_orders", "at most 50"},
		{"individual at most 10", FlavourIndividual, TradeTypeMiniProgram, func(r *CombineOrderRequest) { r.SubOrders = subOrdersN(FlavourIndividual, 11) }, "/sub_orders", "at most 10"},
		// sub-order identity per flavour.
		{"mchid required", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.SubOrders[1].MchID = "" }, "/sub_orders/1/mchid", "is required"},
		{"mchid length", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.SubOrders[0].MchID = long(33) }, "/sub_orders/0/mchid", "longer than 32"},
		{"partner needs sub_mchid", FlavourPartner, TradeTypeApp, func(r *CombineOrderRequest) { r.SubOrders[1].SubMchID = "" }, "/sub_orders/1/sub_mchid", "is required"},
		{"ecommerce needs sub_mchid", FlavourEcommerce, TradeTypeJSAPI, func(r *CombineOrderRequest) { r.SubOrders[0].SubMchID = "" }, "/sub_orders/0/sub_mchid", "is required"},
		{"sub_mchid length", FlavourPartner, TradeTypeApp, func(r *CombineOrderRequest) { r.SubOrders[0].SubMchID = long(33) }, "/sub_orders/0/sub_mchid", "longer than 32"},
		{"merchant has no sub_mchid", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.SubOrders[1].SubMchID = "1900001000" }, "/sub_orders/1/sub_mchid", "must be absent"},
		{"merchant has no sub_appid", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.SubOrders[0].SubAppID = testAppID }, "/sub_orders/0/sub_appid", "must be absent"},
		{"ecommerce one sub-order per sub_mchid", FlavourEcommerce, TradeTypeApp, func(r *CombineOrderRequest) { r.SubOrders[1].SubMchID = r.SubOrders[0].SubMchID }, "/sub_orders/1/sub_mchid", "one sub-order per sub-merchant"},
		{"sub_appid length", FlavourPartner, TradeTypeApp, func(r *CombineOrderRequest) { r.SubOrders[0].SubAppID = long(33) }, "/sub_orders/0/sub_appid", "longer than 32"},
		{"partner has no individual_auth_id", FlavourPartner, TradeTypeApp, func(r *CombineOrderRequest) { r.SubOrders[0].IndividualAuthID = "a" }, "/sub_orders/0/individual_auth_id", "must be absent"},
		{"merchant has no individual_name", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.SubOrders[0].IndividualName = "a" }, "/sub_orders/0/individual_name", "must be absent"},
		{"merchant has no order_service_type", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) {
			r.SubOrders[0].OrderServiceType = OrderServiceTypeIndividualTrade
		}, "/sub_orders/0/order_service_type", "must be absent"},
		{"individual needs individual_auth_id", FlavourIndividual, TradeTypeMiniProgram, func(r *CombineOrderRequest) { r.SubOrders[0].IndividualAuthID = "" }, "/sub_orders/0/individual_auth_id", "is required"},
		{"individual_auth_id length", FlavourIndividual, TradeTypeApp, func(r *CombineOrderRequest) { r.SubOrders[0].IndividualAuthID = long(65) }, "/sub_orders/0/individual_auth_id", "longer than 64"},
		{"individual has no sub_mchid", FlavourIndividual, TradeTypeMiniProgram, func(r *CombineOrderRequest) { r.SubOrders[0].SubMchID = "1900001000" }, "/sub_orders/0/sub_mchid", "must be absent"},
		{"order_service_type enum", FlavourIndividual, TradeTypeMiniProgram, func(r *CombineOrderRequest) { r.SubOrders[0].OrderServiceType = "TRADE" }, "/sub_orders/0/order_service_type", "INDIVIDUALTRADE"},
		// sub-order fields.
		{"attach required", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.SubOrders[0].Attach = "" }, "/sub_orders/0/attach", "is required"},
		{"attach length", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.SubOrders[0].Attach = long(129) }, "/sub_orders/0/attach", "longer than 128"},
		{"amount zero", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.SubOrders[1].Amount.TotalAmount = 0 }, "/sub_orders/1/amount/total_amount", "at least 1 fen"},
		{"amount negative", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.SubOrders[1].Amount.TotalAmount = -5 }, "/sub_orders/1/amount/total_amount", "at least 1 fen"},
		{"amount too large", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.SubOrders[0].Amount.TotalAmount = MaxSubOrderAmount + 1 }, "/sub_orders/0/amount/total_amount", "more than"},
		{"currency required", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.SubOrders[0].Amount.Currency = "" }, "/sub_orders/0/amount/currency", "is required"},
		{"currency CNY", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.SubOrders[0].Amount.Currency = "USD" }, "/sub_orders/0/amount/currency", "must be CNY"},
		{"payer_amount is an answer field", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.SubOrders[0].Amount.PayerAmount = 10 }, "/sub_orders/0/amount/payer_amount", "only in answers"},
		{"payer_currency is an answer field", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.SubOrders[0].Amount.PayerCurrency = "CNY" }, "/sub_orders/0/amount/payer_currency", "only in answers"},
		{"out_trade_no required", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.SubOrders[0].OutTradeNo = "" }, "/sub_orders/0/out_trade_no", "is required"},
		{"out_trade_no min length", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.SubOrders[0].OutTradeNo = "12345" }, "/sub_orders/0/out_trade_no", "shorter than 6"},
		{"out_trade_no max length", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.SubOrders[0].OutTradeNo = long(33) }, "/sub_orders/0/out_trade_no", "longer than 32"},
		{"out_trade_no charset", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.SubOrders[0].OutTradeNo = "1234/5678" }, "/sub_orders/0/out_trade_no", "digits, letters"},
		{"out_trade_no duplicate", FlavourPartner, TradeTypeApp, func(r *CombineOrderRequest) {
			r.SubOrders = append(r.SubOrders, r.SubOrders[0])
			r.SubOrders[2].SubMchID = "1900009999"
		}, "/sub_orders/2/out_trade_no", "repeats /sub_orders/0/out_trade_no"},
		{"detail length", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.SubOrders[0].Detail = long(6001) }, "/sub_orders/0/detail", "longer than 6000"},
		{"description required", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.SubOrders[0].Description = "" }, "/sub_orders/0/description", "is required"},
		{"description 127 bytes", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) {
			r.SubOrders[0].Description = strings.Repeat("充", 42) + "ab" // 128 bytes, 44 characters
		}, "/sub_orders/0/description", "128 bytes, longer than 127"},
		{"description utf-8", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.SubOrders[0].Description = "a\xffb" }, "/sub_orders/0/description", "UTF-8"},
		{"goods_tag length", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.SubOrders[0].GoodsTag = long(33) }, "/sub_orders/0/goods_tag", "longer than 32"},
		{"subsidy_amount negative", FlavourEcommerce, TradeTypeApp, func(r *CombineOrderRequest) {
			r.SubOrders[0].SettleInfo = &SettleInfo{SubsidyAmount: ptr(int64(-1))}
		}, "/sub_orders/0/settle_info/subsidy_amount", "negative"},
		{"first problem in field order", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) {
			r.SubOrders[1].Attach = ""
			r.SubOrders[0].Description = ""
			r.NotifyURL = ""
		}, "/sub_orders/0/description", "is required"},
		// combine_payer_info.
		{"jsapi needs payer", FlavourPartner, TradeTypeJSAPI, func(r *CombineOrderRequest) { r.CombinePayerInfo = nil }, "/combine_payer_info", "required for jsapi"},
		{"jsapi needs openid", FlavourMerchant, TradeTypeJSAPI, func(r *CombineOrderRequest) { r.CombinePayerInfo.OpenID = "" }, "/combine_payer_info/openid", "is required"},
		{"miniprogram needs openid", FlavourIndividual, TradeTypeMiniProgram, func(r *CombineOrderRequest) { r.CombinePayerInfo = &PayerInfo{} }, "/combine_payer_info/openid", "is required"},
		{"openid length", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.CombinePayerInfo = &PayerInfo{OpenID: long(129)} }, "/combine_payer_info/openid", "longer than 128"},
		{"sub_openid length", FlavourPartner, TradeTypeJSAPI, func(r *CombineOrderRequest) { r.CombinePayerInfo.SubOpenID = long(129) }, "/combine_payer_info/sub_openid", "longer than 128"},
		{"identity type enum", FlavourMerchant, TradeTypeNative, func(r *CombineOrderRequest) {
			r.CombinePayerInfo = &PayerInfo{Identity: &Identity{Type: "PASSPORT", Number: "x", Name: "y"}}
		}, "/combine_payer_info/identity/type", "must be one of"},
		// Times.
		{"time_start rfc3339", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.TimeStart = "20180608103456" }, "/time_start", "RFC 3339"},
		{"time_start no zone", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.TimeStart = "2018-06-08T10:34:56" }, "/time_start", "RFC 3339"},
		{"time_start not on miniprogram", FlavourIndividual, TradeTypeMiniProgram, func(r *CombineOrderRequest) { r.TimeStart = "2018-06-08T10:34:56+08:00" }, "/time_start", "only time_expire"},
		{"time_expire rfc3339", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.TimeExpire = "2018-06-08 10:34:56+08:00" }, "/time_expire", "RFC 3339"},
		// notify_url.
		{"notify_url required", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.NotifyURL = "" }, "/notify_url", "is required"},
		{"notify_url https", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.NotifyURL = "http://yourapp.com/notify" }, "/notify_url", "absolute https"},
		{"notify_url absolute", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.NotifyURL = "/notify" }, "/notify_url", "absolute https"},
		{"notify_url query", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.NotifyURL = "https://yourapp.com/notify?order=1" }, "/notify_url", "query string"},
		{"notify_url empty query", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.NotifyURL = "https://yourapp.com/notify?" }, "/notify_url", "query string"},
		{"notify_url loopback query", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.NotifyURL = "http://127.0.0.1:8080/notify?x=1" }, "/notify_url", "query string"},
		{"notify_url fragment", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.NotifyURL = "https://yourapp.com/notify#x" }, "/notify_url", "fragment"},
		{"notify_url userinfo", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.NotifyURL = "https://u:p@yourapp.com/notify" }, "/notify_url", "user information"},
		{"notify_url length", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.NotifyURL = "https://yourapp.com/" + long(236) }, "/notify_url", "256 bytes, longer than 255"},
		// limit_pay, trade_scenario, subsidy_info.
		{"limit_pay enum", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.LimitPay = []string{"no_debit", "no_credit"} }, "/limit_pay/1", "no_balance, no_debit or balance_only"},
		{"limit_pay duplicate", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.LimitPay = []string{"no_debit", "no_debit"} }, "/limit_pay/1", "repeats no_debit"},
		{"trade_scenario only individual", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.TradeScenario = TradeScenarioRecommerce }, "/trade_scenario", "only individual payees"},
		{"trade_scenario enum", FlavourIndividual, TradeTypeApp, func(r *CombineOrderRequest) { r.TradeScenario = "SECONDHAND" }, "/trade_scenario", "RECOMMERCE"},
		{"subsidy_info only app and jsapi", FlavourMerchant, TradeTypeNative, func(r *CombineOrderRequest) { r.SubsidyInfo = &SubsidyInfo{} }, "/subsidy_info", "only the app and jsapi endpoints"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tradeType := tt.tradeType
			base := tradeType
			if !base.Valid() || tradeTypeAllowed(tt.flavour, base) != "" {
				base = TradeTypeApp
			}
			req := validRequest(tt.flavour, base)
			if tt.mod != nil {
				tt.mod(req)
			}
			err := Validate(tt.flavour, tradeType, req)
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Validate() = %v, want *ValidationError", err)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("errors.Is(%v, ErrInvalid) = false, want true", err)
			}
			if ve.Field != tt.wantField || !strings.Contains(ve.Issue, tt.wantIssue) {
				t.Errorf("Validate() = {%q, %q}, want {%q, …%q…}", ve.Field, ve.Issue, tt.wantField, tt.wantIssue)
			}
			if again := Validate(tt.flavour, tradeType, req); again.Error() != err.Error() {
				t.Errorf("Validate() is not deterministic: %v then %v", err, again)
			}
		})
	}
}

func TestValidate_Accepts(t *testing.T) {
	tests := []struct {
		name      string
		flavour   Flavour
		tradeType TradeType
		mod       func(r *CombineOrderRequest)
	}{
		{"order number symbols", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) {
			r.CombineOutTradeNo = "P|2015*08-06_1"
			r.SubOrders[0].OutTradeNo = "a|b*c-d_e"
		}},
		{"combine_out_trade_no of 1 for individual payees", FlavourIndividual, TradeTypeApp, func(r *CombineOrderRequest) { r.CombineOutTradeNo = "P" }},
		{"at sign and star in order numbers", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.CombineOutTradeNo = "P2015@0806*1" }},
		{"leap second", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.TimeStart = "2019-12-31T15:59:60+08:00" }},
		{"h5 payer", FlavourMerchant, TradeTypeH5, func(r *CombineOrderRequest) { r.CombinePayerInfo = &PayerInfo{OpenID: testOpenID} }},
		{"e-commerce fields", FlavourEcommerce, TradeTypeJSAPI, func(r *CombineOrderRequest) {
			r.SubOrders[0].ProfitSharing = ptr(false)
			r.SubOrders[0].SettleInfo = &SettleInfo{ProfitSharing: ptr(true), SubsidyAmount: ptr(int64(10))}
			r.SubOrders[0].GoodsTag = "WXG"
			r.SubOrders[0].SubAppID = "wxd678efh567hg6999"
			r.CombinePayerInfo.SubOpenID = testOpenID
		}},
		{"32-character numbers", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.SubOrders[0].OutTradeNo = strings.Repeat("9", 32) }},
		{"amount limits", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) {
			r.SubOrders[0].Amount.TotalAmount, r.SubOrders[1].Amount.TotalAmount = 1, MaxSubOrderAmount
		}},
		{"description of 127 bytes", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.SubOrders[0].Description = strings.Repeat("充", 42) + "a" }},
		{"partner one sub-order", FlavourPartner, TradeTypeApp, func(r *CombineOrderRequest) { r.SubOrders = r.SubOrders[:1] }},
		{"partner 50 sub-orders", FlavourPartner, TradeTypeApp, func(r *CombineOrderRequest) { r.SubOrders = subOrdersN(FlavourPartner, 50) }},
		{"partner same sub_mchid twice", FlavourPartner, TradeTypeApp, func(r *CombineOrderRequest) { r.SubOrders[1].SubMchID = r.SubOrders[0].SubMchID }},
		{"merchant same mchid twice", FlavourMerchant, TradeTypeApp, nil},
		{"merchant 10 sub-orders", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.SubOrders = subOrdersN(FlavourMerchant, 10) }},
		{"individual without notify_url", FlavourIndividual, TradeTypeMiniProgram, func(r *CombineOrderRequest) { r.NotifyURL = "" }},
		{"individual app with trade_scenario", FlavourIndividual, TradeTypeApp, func(r *CombineOrderRequest) {
			r.TradeScenario = TradeScenarioRecommerce
			r.SubOrders[0].IndividualName = "哈哈哈小店"
		}},
		{"app with optional payer", FlavourEcommerce, TradeTypeApp, func(r *CombineOrderRequest) { r.CombinePayerInfo = &PayerInfo{OpenID: testOpenID} }},
		{"ipv6 payer", FlavourMerchant, TradeTypeH5, func(r *CombineOrderRequest) { r.SceneInfo.PayerClientIP = "2001:db8::1" }},
		{"loopback http notify_url", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.NotifyURL = "http://127.0.0.1:8080/notify" }},
		{"limit_pay values", FlavourMerchant, TradeTypeJSAPI, func(r *CombineOrderRequest) { r.LimitPay = []string{"no_balance", "no_debit"} }},
		{"jsapi subsidy", FlavourMerchant, TradeTypeJSAPI, func(r *CombineOrderRequest) {
			r.SubsidyInfo = &SubsidyInfo{SubsidyDetail: []SubsidyDetail{{SubsidyPeriodType: "PERIOD", SubsidyPlan: []SubsidyPlan{{SubsidyInstallmentNum: 3, SubsidyPercent: 100}}}}}
		}},
		{"fractional seconds", FlavourMerchant, TradeTypeApp, func(r *CombineOrderRequest) { r.TimeStart = "2030-05-20T13:29:35.120+08:00" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := validRequest(tt.flavour, tt.tradeType)
			if tt.mod != nil {
				tt.mod(req)
			}
			if err := Validate(tt.flavour, tt.tradeType, req); err != nil {
				t.Errorf("Validate() = %v, want nil", err)
			}
		})
	}
}

func TestValidate_NilRequest(t *testing.T) {
	err := Validate(FlavourMerchant, TradeTypeApp, nil)
	if got, want := err.Error(), "wechat: invalid request: request is nil"; got != want {
		t.Errorf("Validate(nil) = %q, want %q", got, want)
	}
}

func TestValidationError_Error(t *testing.T) {
	err := &ValidationError{Field: "/sub_orders/3/out_trade_no", Issue: "is required"}
	if got, want := err.Error(), "wechat: invalid request: /sub_orders/3/out_trade_no: is required"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestValidateClose(t *testing.T) {
	tests := []struct {
		name      string
		flavour   Flavour
		no        string
		mod       func(r *CloseRequest)
		wantField string // "-" means valid
	}{
		{"valid merchant", FlavourMerchant, "P2015|08*06", nil, "-"},
		{"valid partner", FlavourPartner, "P20150806", nil, "-"},
		{"valid individual", FlavourIndividual, "P20150806", nil, "-"},
		{"path number charset", FlavourMerchant, "P2015/0806", nil, "combine_out_trade_no"},
		{"path number required", FlavourMerchant, "", nil, "combine_out_trade_no"},
		{"combine_appid", FlavourMerchant, "P1", func(r *CloseRequest) { r.CombineAppID = "" }, "/combine_appid"},
		{"sub_orders count", FlavourMerchant, "P1", func(r *CloseRequest) { r.SubOrders = r.SubOrders[:1] }, "/sub_orders"},
		{"sub_orders required", FlavourPartner, "P1", func(r *CloseRequest) { r.SubOrders = nil }, "/sub_orders"},
		{"mchid", FlavourMerchant, "P1", func(r *CloseRequest) { r.SubOrders[1].MchID = "" }, "/sub_orders/1/mchid"},
		{"out_trade_no", FlavourMerchant, "P1", func(r *CloseRequest) { r.SubOrders[0].OutTradeNo = "123" }, "/sub_orders/0/out_trade_no"},
		{"duplicate out_trade_no", FlavourMerchant, "P1", func(r *CloseRequest) { r.SubOrders[1].OutTradeNo = r.SubOrders[0].OutTradeNo }, "/sub_orders/1/out_trade_no"},
		{"partner sub_mchid", FlavourPartner, "P1", func(r *CloseRequest) { r.SubOrders[0].SubMchID = "" }, "/sub_orders/0/sub_mchid"},
		{"merchant no sub_mchid", FlavourMerchant, "P1", func(r *CloseRequest) { r.SubOrders[0].SubMchID = "1" }, "/sub_orders/0/sub_mchid"},
		{"individual auth id", FlavourIndividual, "P1", func(r *CloseRequest) { r.SubOrders[0].IndividualAuthID = "" }, "/sub_orders/0/individual_auth_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tradeType := TradeTypeApp
			req := CloseRequestFor(validRequest(tt.flavour, tradeType))
			if tt.mod != nil {
				tt.mod(&req)
			}
			err := ValidateClose(tt.flavour, tt.no, &req)
			if tt.wantField == "-" {
				if err != nil {
					t.Fatalf("ValidateClose() = %v, want nil", err)
				}
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) || ve.Field != tt.wantField {
				t.Fatalf("ValidateClose() = %v, want a ValidationError on %s", err, tt.wantField)
			}
		})
	}
}

func TestValidateParams(t *testing.T) {
	if err := ValidateTransactionIDParam("4200000001202401010000000001"); err != nil {
		t.Errorf("ValidateTransactionIDParam(digits) = %v, want nil", err)
	}
	for _, id := range []string{"", "42/00", strings.Repeat("1", 33)} {
		if err := ValidateTransactionIDParam(id); !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidateTransactionIDParam(%q) = %v, want ErrInvalid", id, err)
		}
	}
}

// subOrdersN answers n valid sub-orders for flavour f.
func subOrdersN(f Flavour, n int) []SubOrder {
	r := validRequest(f, TradeTypeApp)
	base := r.SubOrders[0]
	out := make([]SubOrder, n)
	for i := range out {
		s := base
		s.OutTradeNo = "SUB" + strings.Repeat("0", 4) + itoa3(i)
		if s.SubMchID != "" {
			s.SubMchID = "19" + itoa3(i)
		}
		if s.IndividualAuthID != "" {
			s.IndividualAuthID = "auth" + itoa3(i)
		}
		out[i] = s
	}
	return out
}

func itoa3(i int) string {
	return string([]byte{byte('0' + i/100%10), byte('0' + i/10%10), byte('0' + i%10)})
}

func ptr[T any](v T) *T { return &v }
