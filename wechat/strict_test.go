package wechat

import (
	"errors"
	"strings"
	"testing"
)

func TestDecodeCreateRequest(t *testing.T) {
	const good = `{"combine_appid":"wxd678efh567hg6787","combine_mchid":"1900000109","combine_out_trade_no":"P20150806125346",` +
		`"sub_orders":[{"mchid":"1900000109","attach":"a","amount":{"total_amount":10,"currency":"CNY"},"out_trade_no":"2015080612","description":"d",` +
		`"profit_sharing":true,"settle_info":{"profit_sharing":false,"subsidy_amount":0}}],"notify_url":"https://yourapp.com/notify"}`
	req, err := DecodeCreateRequest([]byte(good))
	if err != nil {
		t.Fatalf("DecodeCreateRequest(good) = %v", err)
	}
	if s := req.SubOrders[0]; s.ProfitSharing == nil || !*s.ProfitSharing || s.SettleInfo.SubsidyAmount == nil || *s.SettleInfo.SubsidyAmount != 0 {
		t.Errorf("decoded sub-order %+v lost profit_sharing or a zero subsidy_amount", s)
	}
	for _, tt := range []struct {
		name, from, to, field, issue string
	}{
		{"case-variant key", `"combine_appid"`, `"Combine_AppID"`, "/Combine_AppID", "not a field"},
		{"unknown key", `"attach":"a"`, `"attach":"a","shop":1`, "/sub_orders/0/shop", "not a field"},
		{"null", `"profit_sharing":true`, `"profit_sharing":null`, "/sub_orders/0/profit_sharing", "null"},
		{"invalid UTF-8", `"attach":"a"`, "\"attach\":\"a\xff\"", "/sub_orders/0/attach", "UTF-8"},
		{"escaped emoji", `"attach":"a"`, `"attach":"a\ud83d\ude00"`, "/sub_orders/0/attach", "4 bytes"},
		{"escaped backslash is no escape", `"attach":"a"`, `"attach":"a\\ud83d"`, "", ""},
		{"fraction", `"total_amount":10`, `"total_amount":10.5`, "/sub_orders/0/amount/total_amount", "integer"},
		{"string for bool", `"profit_sharing":true`, `"profit_sharing":"true"`, "/sub_orders/0/profit_sharing", "boolean"},
		{"missing required", `"attach":"a",`, ``, "/sub_orders/0/attach", "required"},
		{"object for array", `"sub_orders":[`, `"sub_orders":{"x":[`, "/sub_orders", "array"},
	} {
		body := strings.Replace(good, tt.from, tt.to, 1)
		if tt.name == "object for array" {
			body = strings.Replace(body, `}]`, `}]}`, 1)
		}
		_, err := DecodeCreateRequest([]byte(body))
		var ve *ValidationError
		switch {
		case tt.field == "" && err != nil:
			t.Errorf("%s: DecodeCreateRequest() = %v, want nil", tt.name, err)
		case tt.field == "":
		case !errors.As(err, &ve) || ve.Field != tt.field || !strings.Contains(ve.Issue, tt.issue):
			t.Errorf("%s: DecodeCreateRequest() = %v, want %s: …%s…", tt.name, err, tt.field, tt.issue)
		}
	}
	// CheckJSON leaves required fields to Validate.
	if err := CheckJSON([]byte(`{"combine_appid":"x"}`), &CombineOrderRequest{}); err != nil {
		t.Errorf("CheckJSON(partial) = %v, want nil", err)
	}
}
