package wechatsim

import (
	"encoding/json"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// This file is the simulator's second reading of the create and close
// rules that the OpenAPI schemas cannot say, written from the official
// tables, not from package wechat (see the package documentation, "Request
// rules", for each rule's source). Names of flavours and trade types are the
// strings of the configuration and the path.

// createBody is a create request as the simulator reads it, after the
// schema has checked its keys and types.
type createBody struct {
	CombineAppID      string        `json:"combine_appid"`
	CombineMchID      string        `json:"combine_mchid"`
	CombineOutTradeNo string        `json:"combine_out_trade_no"`
	SceneInfo         *sceneBody    `json:"scene_info,omitempty"`
	SubOrders         []subBody     `json:"sub_orders"`
	CombinePayerInfo  *payerBody    `json:"combine_payer_info,omitempty"`
	TimeStart         *string       `json:"time_start,omitempty"`
	TimeExpire        *string       `json:"time_expire,omitempty"`
	NotifyURL         *string       `json:"notify_url,omitempty"`
	LimitPay          []string      `json:"limit_pay,omitempty"`
	TradeScenario     *string       `json:"trade_scenario,omitempty"`
	ContractInfo      *contractBody `json:"contract_info,omitempty"`
	SubsidyInfo       *subsidyBody  `json:"subsidy_info,omitempty"`
}

type sceneBody struct {
	DeviceID      *string         `json:"device_id,omitempty"`
	PayerClientIP string          `json:"payer_client_ip"`
	H5Info        json.RawMessage `json:"h5_info,omitempty"`
}

type h5Body struct {
	Type        string  `json:"type"`
	AppName     *string `json:"app_name,omitempty"`
	AppURL      *string `json:"app_url,omitempty"`
	BundleID    *string `json:"bundle_id,omitempty"`
	PackageName *string `json:"package_name,omitempty"`
}

type subBody struct {
	MchID            string      `json:"mchid"`
	SubMchID         *string     `json:"sub_mchid,omitempty"`
	SubAppID         *string     `json:"sub_appid,omitempty"`
	IndividualAuthID *string     `json:"individual_auth_id,omitempty"`
	IndividualName   *string     `json:"individual_name,omitempty"`
	OrderServiceType *string     `json:"order_service_type,omitempty"`
	Attach           string      `json:"attach"`
	Amount           amountBody  `json:"amount"`
	OutTradeNo       string      `json:"out_trade_no"`
	Detail           *string     `json:"detail,omitempty"`
	Description      string      `json:"description"`
	GoodsTag         *string     `json:"goods_tag,omitempty"`
	SettleInfo       *settleBody `json:"settle_info,omitempty"`
	ProfitSharing    *bool       `json:"profit_sharing,omitempty"`
}

type amountBody struct {
	TotalAmount int64  `json:"total_amount"`
	Currency    string `json:"currency"`
}

type settleBody struct {
	ProfitSharing *bool  `json:"profit_sharing,omitempty"`
	SubsidyAmount *int64 `json:"subsidy_amount,omitempty"`
}

type payerBody struct {
	OpenID    *string `json:"openid,omitempty"`
	SubOpenID *string `json:"sub_openid,omitempty"`
	Identity  *struct {
		Type   string `json:"type"`
		Number string `json:"number"`
		Name   string `json:"name"`
	} `json:"identity,omitempty"`
}

type contractBody struct {
	MchID                  string  `json:"mchid"`
	AppID                  string  `json:"appid"`
	OutContractCode        string  `json:"out_contract_code"`
	PlanID                 float64 `json:"plan_id"`
	ContractDisplayAccount string  `json:"contract_display_account"`
	NotifyURL              string  `json:"notify_url"`
}

type subsidyBody struct {
	SubsidyDetail json.RawMessage `json:"subsidy_detail,omitempty"`
}

// closeBody is a close request as the simulator reads it.
type closeBody struct {
	CombineAppID string `json:"combine_appid"`
	SubOrders    []struct {
		MchID            string  `json:"mchid"`
		OutTradeNo       string  `json:"out_trade_no"`
		SubMchID         *string `json:"sub_mchid,omitempty"`
		SubAppID         *string `json:"sub_appid,omitempty"`
		IndividualAuthID *string `json:"individual_auth_id,omitempty"`
	} `json:"sub_orders"`
}

// Limits from the request tables.
const (
	maxFen            = 10_000_000 // 单笔子单金额上限 1000万 (分)
	maxDescription    = 127        // string(127), current pages
	maxNotifyURL      = 255        // string(255), current pages
	minSubOutTradeNo  = 6          // "特殊规则：最小字符长度为6"
	minDevice, maxDev = 7, 16      // string(16), "长度最小7个字节"
)

// subOrderRange answers the sub-order count a flavour allows.
func subOrderRange(flavour string) (int, int) {
	switch flavour {
	case "merchant":
		return 2, 10 // "目前最少一次可支持2笔,最多一次10笔"
	case "individual":
		return 1, 10 // "最多支持商品单条数:10"
	}
	return 1, 50 // "最多支持子单条数:50"
}

// minCombineNo answers the shortest combine_out_trade_no per flavour.
func minCombineNo(flavour string) int {
	switch flavour {
	case "ecommerce":
		return 2 // "最短2个字符"
	case "individual":
		return 1 // "32个字符内"
	}
	return 6 // "6~32个字符"
}

func isUTF8(b []byte) bool { return utf8.Valid(b) }

// has4Byte reports a character that takes 4 bytes in UTF-8.
func has4Byte(s string) bool {
	for _, r := range s {
		if utf8.RuneLen(r) == 4 {
			return true
		}
	}
	return false
}

// surrogateEscape reports a \uD800–\uDFFF escape in a raw JSON string.
func surrogateEscape(raw []byte) bool {
	s := string(raw)
	for i := strings.Index(s, `\`); i >= 0 && i+1 < len(s); {
		if s[i+1] == 'u' && i+6 <= len(s) {
			if n, err := strconv.ParseUint(s[i+2:i+6], 16, 16); err == nil && n >= 0xD800 && n <= 0xDFFF {
				return true
			}
		}
		next := strings.Index(s[i+2:], `\`)
		if next < 0 {
			break
		}
		i += 2 + next
	}
	return false
}

// orderNoOK checks an order number's alphabet: digits, letters and _-|*@
// on the merchant, partner and e-commerce tables; the individual-payee
// prepay page (the miniprogram endpoint) lists _-|@ only.
func orderNoOK(tradeType, s string) bool {
	extra := "_-|*@"
	if tradeType == "miniprogram" {
		extra = "_-|@"
	}
	for _, c := range []byte(s) {
		digitOrLetter := '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
		if !digitOrLetter && strings.IndexByte(extra, c) < 0 {
			return false
		}
	}
	return true
}

// ruleCheck accumulates the first violation.
type ruleCheck struct{ v *violation }

func (c *ruleCheck) failf(field, format string, args ...any) {
	if c.v == nil {
		c.v = &violation{field, fmtIssue(format, args...)}
	}
}

func fmtIssue(format string, args ...any) string {
	if len(args) == 0 {
		return format
	}
	s := format
	for _, a := range args {
		var v string
		switch x := a.(type) {
		case int:
			v = strconv.Itoa(x)
		case string:
			v = x
		}
		s = strings.Replace(s, "%v", v, 1)
	}
	return s
}

// str checks a string field of min..max bytes.
func (c *ruleCheck) str(field, s string, minB, maxB int) {
	switch {
	case c.v != nil:
	case len(s) < minB && minB == 1:
		c.failf(field, "must not be empty")
	case len(s) < minB:
		c.failf(field, "is shorter than %v bytes", minB)
	case len(s) > maxB:
		c.failf(field, "is longer than %v bytes", maxB)
	}
}

func (c *ruleCheck) optStr(field string, s *string, minB, maxB int) {
	if s != nil {
		c.str(field, *s, minB, maxB)
	}
}

func (c *ruleCheck) forbid(field string, present bool, why string) {
	if present {
		c.failf(field, why)
	}
}

func (c *ruleCheck) orderNo(field, tradeType, s string, minLen int) {
	c.str(field, s, minLen, 32)
	if c.v == nil && !orderNoOK(tradeType, s) {
		c.failf(field, "has a character outside the order-number alphabet")
	}
}

// rfc3339 parses an RFC 3339 date-time; RFC 3339 allows the leap second 60
// (and WeChat Pay's examples use it), Go's parser does not.
func rfc3339(s string) bool {
	if len(s) >= 19 && s[17:19] == "60" {
		s = s[:17] + "59" + s[19:]
	}
	_, err := time.Parse(time.RFC3339, s)
	return err == nil
}

// notifyOK checks a notification URL: "通知url必须为直接可访问的URL，不能携带
// 参数", https (plain http only to loopback, where the simulator's tests
// and demo listen).
func notifyOK(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "is not a URL"
	}
	host := u.Hostname()
	loopback := host == "localhost" || net.ParseIP(host) != nil && net.ParseIP(host).IsLoopback()
	switch {
	case u.Host == "" || (u.Scheme != "https" && (u.Scheme != "http" || !loopback)):
		return "must be an absolute https URL"
	case u.User != nil:
		return "must not carry user information"
	case strings.ContainsAny(s, "?#"):
		return "must not carry parameters"
	}
	return ""
}

// checkCreateRules applies the rules the schema cannot say to a create of
// trade type tradeType under flavour.
func checkCreateRules(flavour, tradeType string, r *createBody) *violation {
	c := &ruleCheck{}
	if flavour == "individual" && tradeType != "miniprogram" && tradeType != "app" {
		return &violation{"", "the individual-payee product offers only the miniprogram and app endpoints"}
	}
	if flavour != "individual" && tradeType == "miniprogram" {
		return &violation{"", "the miniprogram endpoint belongs to the individual-payee product"}
	}
	c.str("/combine_appid", r.CombineAppID, 1, 32)
	c.str("/combine_mchid", r.CombineMchID, 1, 32)
	c.orderNo("/combine_out_trade_no", tradeType, r.CombineOutTradeNo, minCombineNo(flavour))
	if si := r.SceneInfo; si != nil && c.v == nil {
		if si.DeviceID != nil {
			c.str("/scene_info/device_id", *si.DeviceID, minDevice, maxDev)
		}
		c.str("/scene_info/payer_client_ip", si.PayerClientIP, 1, 45)
		if c.v == nil && net.ParseIP(si.PayerClientIP) == nil {
			c.failf("/scene_info/payer_client_ip", "is not an IPv4 or IPv6 address")
		}
		if c.v == nil && len(si.H5Info) > 0 {
			var h h5Body
			_ = json.Unmarshal(si.H5Info, &h)
			switch h.Type {
			case "iOS", "Android", "Wap":
			default:
				c.failf("/scene_info/h5_info/type", "must be iOS, Android or Wap")
			}
			c.optStr("/scene_info/h5_info/app_name", h.AppName, 0, 64)
			c.optStr("/scene_info/h5_info/app_url", h.AppURL, 0, 128)
			c.optStr("/scene_info/h5_info/bundle_id", h.BundleID, 0, 128)
			c.optStr("/scene_info/h5_info/package_name", h.PackageName, 0, 128)
		}
	}
	if c.v != nil {
		return c.v
	}
	lo, hi := subOrderRange(flavour)
	if n := len(r.SubOrders); n < lo || n > hi {
		return &violation{"/sub_orders", "has " + strconv.Itoa(n) + " sub-orders; this product takes " + strconv.Itoa(lo) + " to " + strconv.Itoa(hi)}
	}
	nos := map[string]bool{}
	subs := map[string]bool{}
	for i := range r.SubOrders {
		s := &r.SubOrders[i]
		p := "/sub_orders/" + strconv.Itoa(i) + "/"
		c.str(p+"mchid", s.MchID, 1, 32)
		switch flavour {
		case "partner", "ecommerce":
			if s.SubMchID == nil {
				c.failf(p+"sub_mchid", "is required in the partner and e-commerce products")
			}
			c.optStr(p+"sub_mchid", s.SubMchID, 1, 32)
			c.optStr(p+"sub_appid", s.SubAppID, 1, 32)
			c.forbid(p+"individual_auth_id", s.IndividualAuthID != nil, "is for individual payees only")
			c.forbid(p+"individual_name", s.IndividualName != nil, "is for individual payees only")
			if c.v == nil && flavour == "ecommerce" {
				if subs[*s.SubMchID] {
					c.failf(p+"sub_mchid", "repeats a sub-merchant: one sub-order per sub-merchant")
				}
				subs[*s.SubMchID] = true
			}
		case "merchant":
			c.forbid(p+"sub_mchid", s.SubMchID != nil, "does not exist for a directly connected merchant")
			c.forbid(p+"sub_appid", s.SubAppID != nil, "does not exist for a directly connected merchant")
			c.forbid(p+"individual_auth_id", s.IndividualAuthID != nil, "is for individual payees only")
			c.forbid(p+"individual_name", s.IndividualName != nil, "is for individual payees only")
		case "individual":
			c.forbid(p+"sub_mchid", s.SubMchID != nil, "does not exist for individual payees")
			c.forbid(p+"sub_appid", s.SubAppID != nil, "does not exist for individual payees")
			if s.IndividualAuthID == nil {
				c.failf(p+"individual_auth_id", "is required for individual payees")
			}
			c.optStr(p+"individual_auth_id", s.IndividualAuthID, 1, 64)
			c.optStr(p+"individual_name", s.IndividualName, 0, 128)
		}
		c.str(p+"attach", s.Attach, 1, 128)
		switch a := s.Amount; {
		case c.v != nil:
		case a.TotalAmount <= 0:
			c.failf(p+"amount/total_amount", "must be a positive number of fen")
		case a.TotalAmount > maxFen:
			c.failf(p+"amount/total_amount", "exceeds the sub-order limit of 10000000 fen")
		case a.Currency != "CNY":
			c.failf(p+"amount/currency", "must be CNY")
		}
		c.orderNo(p+"out_trade_no", tradeType, s.OutTradeNo, minSubOutTradeNo)
		if c.v == nil && nos[s.OutTradeNo] {
			c.failf(p+"out_trade_no", "repeats another sub-order's out_trade_no")
		}
		nos[s.OutTradeNo] = true
		c.optStr(p+"detail", s.Detail, 0, 6000)
		c.str(p+"description", s.Description, 1, maxDescription)
		c.optStr(p+"goods_tag", s.GoodsTag, 0, 32)
		if si := s.SettleInfo; c.v == nil && si != nil && si.SubsidyAmount != nil && *si.SubsidyAmount < 0 {
			c.failf(p+"settle_info/subsidy_amount", "must not be negative")
		}
		if c.v != nil {
			return c.v
		}
	}
	if pi := r.CombinePayerInfo; pi != nil {
		if tradeType == "jsapi" || tradeType == "miniprogram" {
			c.optStr("/combine_payer_info/openid", pi.OpenID, 1, 128)
		}
		c.optStr("/combine_payer_info/openid", pi.OpenID, 0, 128)
		c.optStr("/combine_payer_info/sub_openid", pi.SubOpenID, 0, 128)
		if id := pi.Identity; id != nil { // encrypted values are never empty
			c.str("/combine_payer_info/identity/number", id.Number, 1, 2048)
			c.str("/combine_payer_info/identity/name", id.Name, 1, 2048)
		}
	}
	for _, t := range []struct {
		f string
		v *string
	}{{"/time_start", r.TimeStart}, {"/time_expire", r.TimeExpire}} {
		if t.v != nil {
			c.str(t.f, *t.v, 1, 32)
			if c.v == nil && !rfc3339(*t.v) {
				c.failf(t.f, "is not an RFC 3339 date-time")
			}
		}
	}
	switch {
	case c.v != nil:
	case r.NotifyURL == nil && flavour != "individual":
		c.failf("/notify_url", "is required")
	case r.NotifyURL != nil:
		c.str("/notify_url", *r.NotifyURL, 1, maxNotifyURL)
		if c.v == nil {
			if why := notifyOK(*r.NotifyURL); why != "" {
				c.failf("/notify_url", why)
			}
		}
	}
	seen := map[string]bool{}
	for i, lp := range r.LimitPay {
		if c.v == nil && seen[lp] {
			c.failf("/limit_pay/"+strconv.Itoa(i), "repeats a value")
		}
		seen[lp] = true
	}
	c.forbid("/trade_scenario", c.v == nil && r.TradeScenario != nil && flavour != "individual", "is for individual payees only")
	if ci := r.ContractInfo; c.v == nil && ci != nil {
		c.str("/contract_info/mchid", ci.MchID, 1, 32)
		c.str("/contract_info/appid", ci.AppID, 1, 32)
		c.str("/contract_info/out_contract_code", ci.OutContractCode, 1, 32)
		if c.v == nil && (ci.PlanID < 1 || ci.PlanID != float64(int64(ci.PlanID))) {
			c.failf("/contract_info/plan_id", "must be a positive integer")
		}
		c.str("/contract_info/contract_display_account", ci.ContractDisplayAccount, 1, 32)
		c.str("/contract_info/notify_url", ci.NotifyURL, 1, maxNotifyURL)
		if c.v == nil {
			if why := notifyOK(ci.NotifyURL); why != "" {
				c.failf("/contract_info/notify_url", why)
			}
		}
	}
	return c.v
}

// checkCloseRules applies the close rules the schema cannot say.
func checkCloseRules(flavour, no string, r *closeBody) *violation {
	c := &ruleCheck{}
	c.orderNo("combine_out_trade_no", "", no, 1)
	c.str("/combine_appid", r.CombineAppID, 1, 32)
	lo, hi := subOrderRange(flavour)
	if n := len(r.SubOrders); c.v == nil && (n < lo || n > hi) {
		c.failf("/sub_orders", "has "+strconv.Itoa(n)+" sub-orders; this product takes "+strconv.Itoa(lo)+" to "+strconv.Itoa(hi))
	}
	nos := map[string]bool{}
	for i, s := range r.SubOrders {
		p := "/sub_orders/" + strconv.Itoa(i) + "/"
		c.str(p+"mchid", s.MchID, 1, 32)
		c.orderNo(p+"out_trade_no", "", s.OutTradeNo, minSubOutTradeNo)
		if c.v == nil && nos[s.OutTradeNo] {
			c.failf(p+"out_trade_no", "repeats another sub-order's out_trade_no")
		}
		nos[s.OutTradeNo] = true
		switch flavour {
		case "partner", "ecommerce":
			if s.SubMchID == nil {
				c.failf(p+"sub_mchid", "is required in the partner and e-commerce products")
			}
			c.optStr(p+"sub_mchid", s.SubMchID, 1, 32)
			c.optStr(p+"sub_appid", s.SubAppID, 1, 32)
			c.forbid(p+"individual_auth_id", s.IndividualAuthID != nil, "is for individual payees only")
		case "merchant":
			c.forbid(p+"sub_mchid", s.SubMchID != nil, "does not exist for a directly connected merchant")
			c.forbid(p+"sub_appid", s.SubAppID != nil, "does not exist for a directly connected merchant")
			c.forbid(p+"individual_auth_id", s.IndividualAuthID != nil, "is for individual payees only")
		case "individual":
			c.forbid(p+"sub_mchid", s.SubMchID != nil, "does not exist for individual payees")
			c.forbid(p+"sub_appid", s.SubAppID != nil, "does not exist for individual payees")
			if s.IndividualAuthID == nil {
				c.failf(p+"individual_auth_id", "is required for individual payees")
			}
			c.optStr(p+"individual_auth_id", s.IndividualAuthID, 1, 64)
		}
	}
	return c.v
}
