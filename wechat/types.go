package wechat

import "fmt"

// TradeType selects the combine create endpoint. The string is the last path
// segment of POST /v3/combine-transactions/{trade type} and the job subject's
// last token.
type TradeType string

// The combine create endpoints.
const (
	TradeTypeApp    TradeType = "app"    // APP payment; answers prepay_id.
	TradeTypeJSAPI  TradeType = "jsapi"  // Official account JSAPI and mini programs; answers prepay_id.
	TradeTypeH5     TradeType = "h5"     // Mobile browser; answers h5_url (valid 5 minutes).
	TradeTypeNative TradeType = "native" // QR code; answers code_url.
	// TradeTypeMiniProgram is the individual-payee (个人收款) mini-program
	// endpoint /v3/combine-transactions/miniprogram, not the ordinary mini
	// program flow, which uses TradeTypeJSAPI.
	TradeTypeMiniProgram TradeType = "miniprogram"
)

// TradeTypes lists every combine create endpoint.
var TradeTypes = []TradeType{TradeTypeApp, TradeTypeJSAPI, TradeTypeH5, TradeTypeNative, TradeTypeMiniProgram}

// Valid reports whether t names a combine create endpoint.
func (t TradeType) Valid() bool {
	switch t {
	case TradeTypeApp, TradeTypeJSAPI, TradeTypeH5, TradeTypeNative, TradeTypeMiniProgram:
		return true
	}
	return false
}

// Path is the create endpoint's path.
func (t TradeType) Path() string { return "/v3/combine-transactions/" + string(t) }

// Flavour is the WeChat Pay product a merchant signed up for. The same paths
// are documented in several products with different limits, so the flavour is
// configuration, never inferred from a request.
type Flavour string

// Each product flavour and its sub-order limits.
const (
	// FlavourMerchant is 直连商户 合单支付: 2–10 sub-orders, no sub_mchid.
	FlavourMerchant Flavour = "merchant"
	// FlavourPartner is 普通服务商: 1–50 sub-orders, sub_mchid required.
	FlavourPartner Flavour = "partner"
	// FlavourEcommerce is 电商收付通: up to 50 sub-orders, sub_mchid required,
	// at most one sub-order per sub_mchid.
	FlavourEcommerce Flavour = "ecommerce"
	// FlavourIndividual is 个人收款: up to 10 sub-orders, each naming an
	// individual_auth_id instead of a sub_mchid.
	FlavourIndividual Flavour = "individual"
)

// ParseFlavour parses a flavour name.
func ParseFlavour(s string) (Flavour, error) {
	switch f := Flavour(s); f {
	case FlavourMerchant, FlavourPartner, FlavourEcommerce, FlavourIndividual:
		return f, nil
	}
	return "", fmt.Errorf("wechat: unknown flavour %q (want merchant, partner, ecommerce or individual)", s)
}

// SubOrderLimits answers the inclusive range of sub-orders the flavour allows.
func (f Flavour) SubOrderLimits() (minimum, maximum int) {
	switch f {
	case FlavourMerchant:
		return 2, 10
	case FlavourIndividual:
		return 1, 10
	default:
		return 1, 50
	}
}

// CombineOrderRequest is the body of every combine create endpoint; it holds
// the union of the fields the five endpoints and four flavours define (the
// official request tables and OpenAPI descriptions, see doc.go), and
// [Validate] refuses the fields a given endpoint or flavour does not take.
// Fields left empty are omitted: WeChat Pay's interface rules forbid JSON
// null, so optional objects are pointers with omitempty and optional
// booleans are *bool.
type CombineOrderRequest struct {
	CombineAppID      string        `json:"combine_appid"`
	CombineMchID      string        `json:"combine_mchid"`
	CombineOutTradeNo string        `json:"combine_out_trade_no"`
	SceneInfo         *SceneInfo    `json:"scene_info,omitempty"`
	SubOrders         []SubOrder    `json:"sub_orders"`
	CombinePayerInfo  *PayerInfo    `json:"combine_payer_info,omitempty"`
	TimeStart         string        `json:"time_start,omitempty"`  // RFC 3339
	TimeExpire        string        `json:"time_expire,omitempty"` // RFC 3339
	NotifyURL         string        `json:"notify_url,omitempty"`
	LimitPay          []string      `json:"limit_pay,omitempty"` // no_balance, no_debit, balance_only
	TradeScenario     string        `json:"trade_scenario,omitempty"`
	ContractInfo      *ContractInfo `json:"contract_info,omitempty"` // app only
	SubsidyInfo       *SubsidyInfo  `json:"subsidy_info,omitempty"`  // app and jsapi
}

// SceneInfo describes the payer's device.
type SceneInfo struct {
	DeviceID      string  `json:"device_id,omitempty"`
	PayerClientIP string  `json:"payer_client_ip,omitempty"`
	H5Info        *H5Info `json:"h5_info,omitempty"`
}

// H5Info is required for the H5 endpoint.
type H5Info struct {
	Type        string `json:"type"` // iOS, Android or Wap
	AppName     string `json:"app_name,omitempty"`
	AppURL      string `json:"app_url,omitempty"`
	BundleID    string `json:"bundle_id,omitempty"`
	PackageName string `json:"package_name,omitempty"`
}

// PayerInfo identifies the payer. The openid must belong to combine_appid;
// sub_openid to a sub-order's sub_appid (partner and e-commerce).
type PayerInfo struct {
	OpenID    string    `json:"openid,omitempty"`
	SubOpenID string    `json:"sub_openid,omitempty"`
	Identity  *Identity `json:"identity,omitempty"`
}

// Identity is 实名支付: the payer's identity document, number and name
// RSA-encrypted with the platform key (a permission granted separately).
type Identity struct {
	Type   string `json:"type"`   // IDCARD, HONGKONG_MACAO, …, PHONE_NUMBER
	Number string `json:"number"` // encrypted, base64
	Name   string `json:"name"`   // encrypted, base64
}

// ContractInfo is the APP endpoint's pre-signing of a deduction contract
// (预签约).
type ContractInfo struct {
	MchID                  string `json:"mchid"`
	AppID                  string `json:"appid"`
	OutContractCode        string `json:"out_contract_code"`
	PlanID                 int64  `json:"plan_id"`
	ContractDisplayAccount string `json:"contract_display_account"`
	NotifyURL              string `json:"notify_url"`
}

// SubsidyInfo is the 微信分付 interest-subsidy offer of the app and jsapi
// endpoints.
type SubsidyInfo struct {
	SubsidyDetail []SubsidyDetail `json:"subsidy_detail,omitempty"`
}

// SubsidyDetail is one subsidy scheme.
type SubsidyDetail struct {
	SubsidyPeriodType string        `json:"subsidy_period_type"` // DAILY or PERIOD
	SubsidyPlan       []SubsidyPlan `json:"subsidy_plan"`
}

// SubsidyPlan is one instalment count and the share of interest the
// merchant pays.
type SubsidyPlan struct {
	SubsidyInstallmentNum int `json:"subsidy_installment_num"` // 3, 6 or 12
	SubsidyPercent        int `json:"subsidy_percent"`         // 0 or 100
}

// SubOrder is one merchant's part of a combine order.
type SubOrder struct {
	MchID            string      `json:"mchid"`
	SubMchID         string      `json:"sub_mchid,omitempty"`
	SubAppID         string      `json:"sub_appid,omitempty"`
	IndividualAuthID string      `json:"individual_auth_id,omitempty"`
	IndividualName   string      `json:"individual_name,omitempty"`
	OrderServiceType string      `json:"order_service_type,omitempty"` // INDIVIDUALTRADE
	Attach           string      `json:"attach"`
	Amount           Amount      `json:"amount"`
	OutTradeNo       string      `json:"out_trade_no"`
	Detail           string      `json:"detail,omitempty"` // not on h5 and native
	Description      string      `json:"description"`
	GoodsTag         string      `json:"goods_tag,omitempty"`
	SettleInfo       *SettleInfo `json:"settle_info,omitempty"`
	// ProfitSharing is the older e-commerce spelling of
	// settle_info.profit_sharing, which wins when both are set (app and
	// jsapi only).
	ProfitSharing *bool `json:"profit_sharing,omitempty"`
}

// Amount is a sub-order's amount in fen (分), the smallest currency unit.
type Amount struct {
	TotalAmount int64  `json:"total_amount"`
	Currency    string `json:"currency"`
	// PayerAmount and PayerCurrency appear only in query answers and
	// notifications.
	PayerAmount   int64  `json:"payer_amount,omitempty"`
	PayerCurrency string `json:"payer_currency,omitempty"`
}

// SettleInfo carries a sub-order's settlement options.
type SettleInfo struct {
	ProfitSharing *bool `json:"profit_sharing,omitempty"`
	// SubsidyAmount (补差, fen) applies only when ProfitSharing is true.
	SubsidyAmount *int64 `json:"subsidy_amount,omitempty"`
}

// PrepayResult is a create endpoint's answer. Exactly one field is set:
// PrepayID (app, jsapi, miniprogram), H5URL (h5) or CodeURL (native).
type PrepayResult struct {
	PrepayID string `json:"prepay_id,omitempty"`
	H5URL    string `json:"h5_url,omitempty"`
	CodeURL  string `json:"code_url,omitempty"`
}

// Trade states of a sub-order.
const (
	TradeStateSuccess  = "SUCCESS"
	TradeStateRefund   = "REFUND"
	TradeStateNotPay   = "NOTPAY"
	TradeStateClosed   = "CLOSED"
	TradeStatePayError = "PAYERROR"
)

// CombineOrder is the answer of both combine queries and, once paid, the
// decrypted resource of a TRANSACTION.SUCCESS notification.
type CombineOrder struct {
	CombineAppID         string          `json:"combine_appid"`
	CombineMchID         string          `json:"combine_mchid"`
	CombineOutTradeNo    string          `json:"combine_out_trade_no"`
	CombineTransactionID string          `json:"combine_transaction_id,omitempty"`
	TradeScenario        string          `json:"trade_scenario,omitempty"`
	SceneInfo            *SceneInfo      `json:"scene_info,omitempty"`
	SubOrders            []OrderSubOrder `json:"sub_orders"`
	CombinePayerInfo     *PayerInfo      `json:"combine_payer_info,omitempty"`
}

// OrderSubOrder is a sub-order as WeChat Pay reports it.
type OrderSubOrder struct {
	MchID            string `json:"mchid"`
	SubMchID         string `json:"sub_mchid,omitempty"`
	SubAppID         string `json:"sub_appid,omitempty"`
	SubOpenID        string `json:"sub_openid,omitempty"`
	IndividualAuthID string `json:"individual_auth_id,omitempty"`
	IndividualName   string `json:"individual_name,omitempty"`
	OutTradeNo       string `json:"out_trade_no"`
	TransactionID    string `json:"transaction_id,omitempty"`
	TradeType        string `json:"trade_type,omitempty"` // NATIVE, JSAPI, APP, MWEB
	TradeState       string `json:"trade_state"`
	BankType         string `json:"bank_type,omitempty"`
	Attach           string `json:"attach,omitempty"`
	SuccessTime      string `json:"success_time,omitempty"` // RFC 3339
	Amount           Amount `json:"amount"`
	// PromotionDetail lists the discounts that made payer_amount lower than
	// total_amount.
	PromotionDetail []Promotion `json:"promotion_detail,omitempty"`
}

// Promotion is one discount applied to a paid sub-order.
type Promotion struct {
	CouponID            string `json:"coupon_id,omitempty"`
	Name                string `json:"name,omitempty"`
	Scope               string `json:"scope,omitempty"` // GLOBAL or SINGLE
	Type                string `json:"type,omitempty"`  // CASH or NOCASH
	Amount              int64  `json:"amount"`
	StockID             string `json:"stock_id,omitempty"`
	WechatpayContribute int64  `json:"wechatpay_contribute,omitempty"`
	MerchantContribute  int64  `json:"merchant_contribute,omitempty"`
	OtherContribute     int64  `json:"other_contribute,omitempty"`
	Currency            string `json:"currency,omitempty"`
}

// CloseRequest is the body of POST …/out-trade-no/{combine_out_trade_no}/close.
// Its sub-orders must match the created ones exactly.
type CloseRequest struct {
	CombineAppID string          `json:"combine_appid"`
	SubOrders    []CloseSubOrder `json:"sub_orders"`
}

// CloseSubOrder names one sub-order to close.
type CloseSubOrder struct {
	MchID            string `json:"mchid"`
	OutTradeNo       string `json:"out_trade_no"`
	SubMchID         string `json:"sub_mchid,omitempty"`
	SubAppID         string `json:"sub_appid,omitempty"`
	IndividualAuthID string `json:"individual_auth_id,omitempty"`
}

// CloseRequestFor builds the close body that matches a create request.
func CloseRequestFor(req *CombineOrderRequest) CloseRequest {
	c := CloseRequest{CombineAppID: req.CombineAppID, SubOrders: make([]CloseSubOrder, len(req.SubOrders))}
	for i, s := range req.SubOrders {
		c.SubOrders[i] = CloseSubOrder{
			MchID: s.MchID, OutTradeNo: s.OutTradeNo, SubMchID: s.SubMchID,
			SubAppID: s.SubAppID, IndividualAuthID: s.IndividualAuthID,
		}
	}
	return c
}
