package wechat_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/wxcombine/orderworker/wechat"
)

// A merchant-flavour client creates a JSAPI combine order for two
// sub-orders and turns the prepay_id into the page's pay parameters.
// (Not run: it needs real credentials and WeChat Pay.)
func ExampleClient_CreateCombineOrder() {
	m, err := wechat.LoadMerchant(wechat.MerchantFiles{
		MchID:          "1900000109",
		Serial:         "5157F09EFDC096DE15EBE81A47057A7232F1B8E1",
		PrivateKeyFile: "/run/secrets/wechat/apiclient_key.pem",
		APIv3KeyFile:   "/run/secrets/wechat/apiv3_key",
		PublicKeyFile:  "/run/secrets/wechat/pub_key.pem",
		PublicKeyID:    "PUB_KEY_ID_0114232134912410000000000000",
	})
	if err != nil {
		log.Fatal(err)
	}
	c, err := wechat.New(wechat.Config{Merchants: []*wechat.Merchant{m}, Flavour: wechat.FlavourMerchant})
	if err != nil {
		log.Fatal(err)
	}
	req := &wechat.CombineOrderRequest{
		CombineAppID:      "wxd678efh567hg6787",
		CombineMchID:      "1900000109",
		CombineOutTradeNo: "P20150806125346",
		SubOrders: []wechat.SubOrder{
			{MchID: "1900000109", Attach: "shop A", Amount: wechat.Amount{TotalAmount: 100, Currency: "CNY"}, OutTradeNo: "20150806125346A", Description: "QQ 公仔"},
			{MchID: "1900000109", Attach: "shop B", Amount: wechat.Amount{TotalAmount: 250, Currency: "CNY"}, OutTradeNo: "20150806125346B", Description: "会员充值"},
		},
		CombinePayerInfo: &wechat.PayerInfo{OpenID: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
		TimeExpire:       time.Now().Add(30 * time.Minute).Format(time.RFC3339),
		NotifyURL:        "https://shop.example.com/wechat/notify",
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	res, err := c.CreateCombineOrder(ctx, wechat.TradeTypeJSAPI, req)
	switch {
	case errors.Is(err, wechat.ErrInvalid):
		log.Fatalf("fix the request: %v", err) // field-precise, nothing was sent
	case wechat.Retryable(err):
		log.Fatalf("retry later with the same order number: %v", err)
	case err != nil:
		log.Fatal(err)
	}
	pay, err := c.JSAPIPayParams(req.CombineMchID, req.CombineAppID, res.PrepayID)
	if err != nil {
		log.Fatal(err)
	}
	b, _ := json.Marshal(pay)
	fmt.Println(string(b)) // hand to WeixinJSBridge.invoke("getBrandWCPayRequest", …)
}

// The official documentation's JSAPI vector: the same key, appid,
// timestamp, nonce and prepay_id always give the same paySign.
func ExampleSignJSAPIPayParams() {
	key, err := wechat.LoadPrivateKey("testdata/doc-test-key.pem")
	if err != nil {
		log.Fatal(err)
	}
	p, err := wechat.SignJSAPIPayParams(key, "wx2421b1c4370ec43b", "wx201410272009395522657a690389285100", 1554208460, "593BEC0C930BF1AFEB40B4A08C8FB242")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(p.Package, p.SignType)
	fmt.Println(p.PaySign[:24], "…", p.PaySign[len(p.PaySign)-24:])
	// Output:
	// prepay_id=wx201410272009395522657a690389285100 RSA
	// mI35pfNEQV6777ke/1T+LJLQ … KJ+qk5N61J7caYoepHFaxw==
}

// Validate answers the first problem as a JSON pointer and the rule broken.
func ExampleValidate() {
	req := &wechat.CombineOrderRequest{
		CombineAppID: "wxd678efh567hg6787", CombineMchID: "1900000109", CombineOutTradeNo: "P20150806125346",
		SubOrders: []wechat.SubOrder{
			{MchID: "1900000109", Attach: "a", Amount: wechat.Amount{TotalAmount: 1, Currency: "CNY"}, OutTradeNo: "SUB0001", Description: "d"},
			{MchID: "1900000109", Attach: "b", Amount: wechat.Amount{TotalAmount: 1, Currency: "CNY"}, OutTradeNo: "SUB01", Description: "d"},
		},
		NotifyURL: "https://shop.example.com/notify",
	}
	err := wechat.Validate(wechat.FlavourMerchant, wechat.TradeTypeNative, req)
	var ve *wechat.ValidationError
	if errors.As(err, &ve) {
		fmt.Println(ve.Field)
	}
	fmt.Println(err)
	// Output:
	// /sub_orders/1/out_trade_no
	// wechat: invalid request: /sub_orders/1/out_trade_no: is 5 characters, shorter than 6
}
