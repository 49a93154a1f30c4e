package wechat

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// ErrInvalid matches every *ValidationError with errors.Is.
var ErrInvalid = errors.New("wechat: invalid request")

// ValidationError reports the first rule a request breaks, found locally
// before anything is sent. WeChat Pay would answer the same request with 400
// PARAM_ERROR; the simulator answers exactly that, with Field as detail.field.
type ValidationError struct {
	// Field is a JSON pointer into the request body, such as
	// /sub_orders/3/out_trade_no; the name of a path parameter, such as
	// combine_out_trade_no; or empty when the request as a whole is wrong
	// (an unknown trade type, a trade type the flavour does not offer).
	Field string
	// Issue is the rule broken, in words.
	Issue string
}

// Error formats "wechat: invalid request: <field>: <issue>".
func (e *ValidationError) Error() string {
	if e.Field == "" {
		return "wechat: invalid request: " + e.Issue
	}
	return "wechat: invalid request: " + e.Field + ": " + e.Issue
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

// Limits of the combine endpoints (sources in doc.go, "Validation").
const (
	// MaxSubOrderAmount is the largest total_amount of one sub-order, in
	// fen. The combine FAQ caps a sub-order at 10,000,000 ("1000万"); every
	// amount in API v3 is in fen, so this client reads it as fen (¥100,000).
	MaxSubOrderAmount = 10_000_000
	// MaxDescriptionBytes is the longest description, in UTF-8 bytes
	// (string(127) in the current docs; older tables said 128).
	MaxDescriptionBytes = 127
	// MaxNotifyURLBytes is the longest notify_url (string(255) in the
	// current docs; older tables said 256).
	MaxNotifyURLBytes = 255
	// MinOutTradeNoLength is the shortest sub-order out_trade_no ("最小字符长度为6").
	MinOutTradeNoLength = 6
	// MinDeviceIDBytes and MaxDeviceIDBytes bound scene_info.device_id
	// (string(16), "特殊规则：长度最小7个字节").
	MinDeviceIDBytes = 7
	MaxDeviceIDBytes = 16
	// CurrencyCNY is the only currency of combine orders.
	CurrencyCNY = "CNY"
	// OrderServiceTypeIndividualTrade is the one order_service_type value.
	OrderServiceTypeIndividualTrade = "INDIVIDUALTRADE"
	// TradeScenarioRecommerce is the one trade_scenario value (二手交易).
	TradeScenarioRecommerce = "RECOMMERCE"
)

// Limit-pay values of limit_pay.
const (
	LimitPayNoBalance   = "no_balance"
	LimitPayNoDebit     = "no_debit"
	LimitPayBalanceOnly = "balance_only"
)

// H5 scene types of scene_info.h5_info.type.
const (
	H5TypeIOS     = "iOS"
	H5TypeAndroid = "Android"
	H5TypeWap     = "Wap"
)

// MinCombineOutTradeNoLength answers the shortest combine_out_trade_no of
// flavour f: 6 on the merchant and partner pages ("6~32个字符"), 2 on the
// e-commerce page ("最短2个字符"), 1 for individual payees ("32个字符内").
func MinCombineOutTradeNoLength(f Flavour) int {
	switch f {
	case FlavourEcommerce:
		return 2
	case FlavourIndividual:
		return 1
	}
	return 6
}

// ValidOrderNo reports whether s uses only the order-number alphabet of the
// merchant, partner and e-commerce tables: digits, letters and _-|*@
// ("只能是数字、大小写字母_-|*@"). Length is checked separately.
func ValidOrderNo(s string) bool { return orderNoAlphabet(s, "_-|*@") }

// ValidIndividualOrderNo reports whether s uses only the alphabet of the
// individual-payee prepay page: digits, letters and _-|@ (no '*').
func ValidIndividualOrderNo(s string) bool { return orderNoAlphabet(s, "_-|@") }

func orderNoAlphabet(s, extra string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case strings.IndexByte(extra, c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validator collects the first problem; later checks are skipped once one is
// found, so the answer is the first problem in field order.
type validator struct{ err *ValidationError }

func (v *validator) fail(field, format string, args ...any) {
	if v.err == nil {
		v.err = &ValidationError{Field: field, Issue: fmt.Sprintf(format, args...)}
	}
}

func (v *validator) ok() bool { return v.err == nil }

// required checks a required string of at most maxBytes bytes.
func (v *validator) required(field, s string, maxBytes int) {
	if !v.ok() {
		return
	}
	if s == "" {
		v.fail(field, "is required")
		return
	}
	v.maxLen(field, s, maxBytes)
}

// maxLen checks an optional string's length in bytes.
func (v *validator) maxLen(field, s string, maxBytes int) {
	if v.ok() && len(s) > maxBytes {
		v.fail(field, "is %d bytes, longer than %d", len(s), maxBytes)
	}
}

func (v *validator) absent(field string, present bool, why string) {
	if v.ok() && present {
		v.fail(field, "must be absent: %s", why)
	}
}

// orderNo checks an order number of minLen..32 characters in the alphabet
// of endpoint t.
func (v *validator) orderNo(field, s string, minLen int, t TradeType) {
	if !v.ok() {
		return
	}
	valid, alphabet := ValidOrderNo, "_-|*@"
	if t == TradeTypeMiniProgram {
		valid, alphabet = ValidIndividualOrderNo, "_-|@"
	}
	switch {
	case s == "":
		v.fail(field, "is required")
	case len(s) < minLen:
		v.fail(field, "is %d characters, shorter than %d", len(s), minLen)
	case len(s) > 32:
		v.fail(field, "is %d characters, longer than 32", len(s))
	case !valid(s):
		v.fail(field, "may contain only digits, letters and %s", alphabet)
	}
}

// parseRFC3339 parses an RFC 3339 date-time, accepting the leap second 60
// that RFC 3339 allows and WeChat Pay's own examples use
// ("2019-12-31T15:59:60+08:00"), which time.Parse refuses.
func parseRFC3339(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339, s)
	if err == nil || len(s) < 19 || s[17:19] != "60" {
		return t, err
	}
	t, err = time.Parse(time.RFC3339, s[:17]+"59"+s[19:])
	return t.Add(time.Second), err
}

func (v *validator) rfc3339(field, s string) {
	if !v.ok() || s == "" {
		return
	}
	if len(s) > 32 {
		v.fail(field, "is %d bytes, longer than 32", len(s))
		return
	}
	if _, err := parseRFC3339(s); err != nil {
		v.fail(field, "is not an RFC 3339 time such as 2015-05-20T13:29:35+08:00")
	}
}

// tradeTypeAllowed answers why f cannot use t, or "" if it can.
func tradeTypeAllowed(f Flavour, t TradeType) string {
	if f == FlavourIndividual {
		if t != TradeTypeMiniProgram && t != TradeTypeApp {
			return fmt.Sprintf("trade type %s is not offered to individual payees (only miniprogram and app)", t)
		}
		return ""
	}
	if t == TradeTypeMiniProgram {
		return fmt.Sprintf("trade type miniprogram is the individual-payee endpoint, not offered to the %s flavour (mini programs use jsapi)", f)
	}
	return ""
}

func validFlavour(f Flavour) bool {
	_, err := ParseFlavour(string(f))
	return err == nil
}

// Validate checks a create request for flavour f and trade type t locally and
// answers the first problem in field order as a *ValidationError (which
// matches ErrInvalid), or nil. It is deterministic: the same input always
// gives the same answer, so the pipeline turns it into a failure event. It
// first checks the text of every string (valid UTF-8, no 4-byte
// characters), then the request as a whole, combine_appid, combine_mchid,
// combine_out_trade_no, scene_info, sub_orders (the count, then each
// sub-order's fields), combine_payer_info, time_start, time_expire,
// notify_url, limit_pay, trade_scenario, contract_info and subsidy_info. A
// field the endpoint t or the flavour f does not define must be absent. The
// rules and their sources are listed in doc.go.
func Validate(f Flavour, t TradeType, req *CombineOrderRequest) error {
	v := &validator{}
	switch {
	case req == nil:
		v.fail("", "request is nil")
	case !validFlavour(f):
		v.fail("", "unknown flavour %q", f)
	case !t.Valid():
		v.fail("", "unknown trade type %q", t)
	default:
		if why := tradeTypeAllowed(f, t); why != "" {
			v.fail("", "%s", why)
		}
	}
	if !v.ok() {
		return v.err
	}
	if e := checkText(reflect.ValueOf(req).Elem(), ""); e != nil {
		return e
	}

	v.required("/combine_appid", req.CombineAppID, 32)
	v.required("/combine_mchid", req.CombineMchID, 32)
	v.orderNo("/combine_out_trade_no", req.CombineOutTradeNo, MinCombineOutTradeNoLength(f), t)
	v.sceneInfo(t, req.SceneInfo)
	v.subOrders(f, t, req.SubOrders)
	v.payer(t, req.CombinePayerInfo)

	v.absent("/time_start", req.TimeStart != "" && t == TradeTypeMiniProgram, "the miniprogram endpoint takes only time_expire")
	v.rfc3339("/time_start", req.TimeStart)
	v.rfc3339("/time_expire", req.TimeExpire)

	v.notifyURL("/notify_url", req.NotifyURL, f != FlavourIndividual) // 选填 for individual payees only
	v.absent("/limit_pay", req.LimitPay != nil && t == TradeTypeMiniProgram, "the miniprogram endpoint has no limit_pay")
	v.limitPay(req.LimitPay)

	if v.ok() && req.TradeScenario != "" {
		switch {
		case t != TradeTypeApp && t != TradeTypeMiniProgram:
			v.fail("/trade_scenario", "must be absent: only the app and miniprogram endpoints take trade_scenario")
		case f != FlavourIndividual:
			v.fail("/trade_scenario", "must be absent: only individual payees have a trade scenario")
		case req.TradeScenario != TradeScenarioRecommerce:
			v.fail("/trade_scenario", "must be %s", TradeScenarioRecommerce)
		}
	}
	v.contractInfo(t, req.ContractInfo)
	v.subsidyInfo(t, req.SubsidyInfo)
	if v.ok() {
		return nil
	}
	return v.err
}

// checkText checks every string reachable from v, a request value: valid
// UTF-8 (a Go string may hold any bytes; encoding/json would send U+FFFD
// for each invalid byte) and only 1- to 3-byte characters ("仅支持UTF-8字符
// 编码的一个子集：使用一至三个字节编码的字符"). The field is the JSON pointer.
func checkText(v reflect.Value, ptr string) *ValidationError {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			return checkText(v.Elem(), ptr)
		}
	case reflect.Struct:
		t := v.Type()
		for i := range t.NumField() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
			if e := checkText(v.Field(i), ptr+"/"+name); e != nil {
				return e
			}
		}
	case reflect.Slice:
		for i := range v.Len() {
			if e := checkText(v.Index(i), ptr+"/"+strconv.Itoa(i)); e != nil {
				return e
			}
		}
	case reflect.String:
		s := v.String()
		if !utf8.ValidString(s) {
			return &ValidationError{Field: ptr, Issue: "is not valid UTF-8"}
		}
		for _, r := range s {
			if r > 0xFFFF {
				return &ValidationError{Field: ptr, Issue: "has a character outside the Basic Multilingual Plane (4 bytes in UTF-8)"}
			}
		}
	}
	return nil
}

func (v *validator) sceneInfo(t TradeType, s *SceneInfo) {
	if !v.ok() {
		return
	}
	if s == nil {
		if t == TradeTypeH5 {
			v.fail("/scene_info", "is required for h5")
		}
		return
	}
	switch n := len(s.DeviceID); {
	case n == 0:
		if t == TradeTypeH5 {
			v.fail("/scene_info/device_id", "is required for h5")
		}
	case n < MinDeviceIDBytes:
		v.fail("/scene_info/device_id", "is %d bytes, shorter than %d", n, MinDeviceIDBytes)
	case n > MaxDeviceIDBytes:
		v.fail("/scene_info/device_id", "is %d bytes, longer than %d", n, MaxDeviceIDBytes)
	}
	if v.ok() {
		switch {
		case s.PayerClientIP == "":
			v.fail("/scene_info/payer_client_ip", "is required")
		case len(s.PayerClientIP) > 45:
			v.fail("/scene_info/payer_client_ip", "is %d bytes, longer than 45", len(s.PayerClientIP))
		default:
			if _, err := netip.ParseAddr(s.PayerClientIP); err != nil {
				v.fail("/scene_info/payer_client_ip", "is not an IPv4 or IPv6 address")
			}
		}
	}
	if !v.ok() {
		return
	}
	if t != TradeTypeH5 {
		v.absent("/scene_info/h5_info", s.H5Info != nil, "only the h5 endpoint takes h5_info")
		return
	}
	h := s.H5Info
	if h == nil {
		v.fail("/scene_info/h5_info", "is required for h5")
		return
	}
	switch h.Type {
	case "":
		v.fail("/scene_info/h5_info/type", "is required")
	case H5TypeIOS, H5TypeAndroid, H5TypeWap:
	default:
		v.fail("/scene_info/h5_info/type", "must be iOS, Android or Wap")
	}
	v.maxLen("/scene_info/h5_info/app_name", h.AppName, 64)
	v.maxLen("/scene_info/h5_info/app_url", h.AppURL, 128)
	v.maxLen("/scene_info/h5_info/bundle_id", h.BundleID, 128)
	v.maxLen("/scene_info/h5_info/package_name", h.PackageName, 128)
}

func (v *validator) subOrders(f Flavour, t TradeType, subs []SubOrder) {
	if !v.ok() {
		return
	}
	lo, hi := f.SubOrderLimits()
	switch {
	case len(subs) == 0 && subs == nil:
		v.fail("/sub_orders", "is required")
		return
	case len(subs) < lo:
		v.fail("/sub_orders", "has %d sub-orders, the %s flavour needs at least %d", len(subs), f, lo)
		return
	case len(subs) > hi:
		v.fail("/sub_orders", "has %d sub-orders, the %s flavour allows at most %d", len(subs), f, hi)
		return
	}
	seenNo := make(map[string]int, len(subs))
	seenSub := make(map[string]int, len(subs))
	for i := range subs {
		s := &subs[i]
		p := "/sub_orders/" + strconv.Itoa(i) + "/"
		v.required(p+"mchid", s.MchID, 32)
		v.subOrderPayee(f, t, p, s)
		if j, dup := seenSub[s.SubMchID]; v.ok() && dup && f == FlavourEcommerce {
			v.fail(p+"sub_mchid", "repeats /sub_orders/%d/sub_mchid: e-commerce allows one sub-order per sub-merchant", j)
		}
		seenSub[s.SubMchID] = i
		v.required(p+"attach", s.Attach, 128)
		v.amount(p+"amount/", s.Amount)
		v.orderNo(p+"out_trade_no", s.OutTradeNo, MinOutTradeNoLength, t)
		if j, dup := seenNo[s.OutTradeNo]; v.ok() && dup {
			v.fail(p+"out_trade_no", "repeats /sub_orders/%d/out_trade_no", j)
		}
		seenNo[s.OutTradeNo] = i
		noDetail := t == TradeTypeH5 || t == TradeTypeNative || t == TradeTypeMiniProgram
		v.absent(p+"detail", s.Detail != "" && noDetail, "the "+string(t)+" endpoint has no detail")
		v.maxLen(p+"detail", s.Detail, 6000)
		v.required(p+"description", s.Description, MaxDescriptionBytes)
		v.absent(p+"goods_tag", s.GoodsTag != "" && t == TradeTypeMiniProgram, "the miniprogram endpoint has no goods_tag")
		v.maxLen(p+"goods_tag", s.GoodsTag, 32)
		v.absent(p+"settle_info", s.SettleInfo != nil && t == TradeTypeMiniProgram, "the miniprogram endpoint has no settle_info")
		if v.ok() && s.SettleInfo != nil && s.SettleInfo.SubsidyAmount != nil && *s.SettleInfo.SubsidyAmount < 0 {
			v.fail(p+"settle_info/subsidy_amount", "must not be negative")
		}
		v.absent(p+"profit_sharing", s.ProfitSharing != nil && t != TradeTypeApp && t != TradeTypeJSAPI,
			"only the app and jsapi endpoints take the outer profit_sharing (use settle_info.profit_sharing)")
		if !v.ok() {
			return
		}
	}
}

// subOrderPayee checks who a sub-order pays: sub_mchid and sub_appid
// (partner, e-commerce), or individual_auth_id, individual_name and
// order_service_type (individual payees).
func (v *validator) subOrderPayee(f Flavour, t TradeType, p string, s *SubOrder) {
	const indiv = "only individual payees have one"
	switch f {
	case FlavourPartner, FlavourEcommerce:
		v.required(p+"sub_mchid", s.SubMchID, 32)
		v.absent(p+"sub_appid", s.SubAppID != "" && t == TradeTypeMiniProgram, "the miniprogram endpoint has no sub_appid")
		v.maxLen(p+"sub_appid", s.SubAppID, 32)
		v.absent(p+"individual_auth_id", s.IndividualAuthID != "", indiv)
		v.absent(p+"individual_name", s.IndividualName != "", indiv)
		v.absent(p+"order_service_type", s.OrderServiceType != "", indiv)
	case FlavourMerchant:
		v.absent(p+"sub_mchid", s.SubMchID != "", "the merchant flavour has no sub-merchants")
		v.absent(p+"sub_appid", s.SubAppID != "", "the merchant flavour has no sub-merchants")
		v.absent(p+"individual_auth_id", s.IndividualAuthID != "", indiv)
		v.absent(p+"individual_name", s.IndividualName != "", indiv)
		v.absent(p+"order_service_type", s.OrderServiceType != "", indiv)
	case FlavourIndividual:
		v.absent(p+"sub_mchid", s.SubMchID != "", "individual payees are named by individual_auth_id")
		v.absent(p+"sub_appid", s.SubAppID != "", "individual payees are named by individual_auth_id")
		v.required(p+"individual_auth_id", s.IndividualAuthID, 64)
		v.maxLen(p+"individual_name", s.IndividualName, 128)
		if v.ok() && s.OrderServiceType != "" {
			switch {
			case t != TradeTypeMiniProgram:
				v.fail(p+"order_service_type", "must be absent: only the miniprogram endpoint takes order_service_type")
			case s.OrderServiceType != OrderServiceTypeIndividualTrade:
				v.fail(p+"order_service_type", "must be %s", OrderServiceTypeIndividualTrade)
			}
		}
	}
}

func (v *validator) amount(p string, a Amount) {
	if !v.ok() {
		return
	}
	switch {
	case a.TotalAmount < 1:
		v.fail(p+"total_amount", "must be at least 1 fen")
	case a.TotalAmount > MaxSubOrderAmount:
		v.fail(p+"total_amount", "is %d fen, more than %d", a.TotalAmount, MaxSubOrderAmount)
	case a.Currency == "":
		v.fail(p+"currency", "is required")
	case a.Currency != CurrencyCNY:
		v.fail(p+"currency", "must be CNY")
	case a.PayerAmount != 0:
		v.fail(p+"payer_amount", "must be absent: it appears only in answers")
	case a.PayerCurrency != "":
		v.fail(p+"payer_currency", "must be absent: it appears only in answers")
	}
}

// Identity document types of combine_payer_info.identity.type.
var identityTypes = []string{"IDCARD", "HONGKONG_MACAO", "HONGKONG_MACAO_RESIDENT", "TAIWAN_RESIDENT",
	"FOREIGN_RESIDENT", "OVERSEA_PASSPORT", "PHONE_NUMBER"}

func (v *validator) payer(t TradeType, p *PayerInfo) {
	const f = "/combine_payer_info"
	if !v.ok() {
		return
	}
	if p == nil {
		if t == TradeTypeJSAPI || t == TradeTypeMiniProgram {
			v.fail(f, "is required for %s", t)
		}
		return
	}
	if t == TradeTypeJSAPI || t == TradeTypeMiniProgram {
		v.required(f+"/openid", p.OpenID, 128)
	}
	v.maxLen(f+"/openid", p.OpenID, 128)
	v.absent(f+"/sub_openid", p.SubOpenID != "" && t == TradeTypeMiniProgram, "the miniprogram endpoint has no sub_openid")
	v.maxLen(f+"/sub_openid", p.SubOpenID, 128)
	if id := p.Identity; v.ok() && id != nil {
		switch {
		case t == TradeTypeMiniProgram:
			v.fail(f+"/identity", "must be absent: the miniprogram endpoint has no identity")
		case id.Type == "":
			v.fail(f+"/identity/type", "is required")
		case !slices.Contains(identityTypes, id.Type):
			v.fail(f+"/identity/type", "must be one of %s", strings.Join(identityTypes, ", "))
		case id.Number == "":
			v.fail(f+"/identity/number", "is required")
		case id.Name == "":
			v.fail(f+"/identity/name", "is required")
		}
	}
}

// isLoopbackHost reports whether host is localhost or a loopback IP.
func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// notifyURL checks a notification URL: absolute https (plain http only to a
// loopback host, for local development), at most MaxNotifyURLBytes, no
// user information, query ("不能携带参数") or fragment.
func (v *validator) notifyURL(p, s string, required bool) {
	if !v.ok() {
		return
	}
	if s == "" {
		if required {
			v.fail(p, "is required")
		}
		return
	}
	if len(s) > MaxNotifyURLBytes {
		v.fail(p, "is %d bytes, longer than %d", len(s), MaxNotifyURLBytes)
		return
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		v.fail(p, "is not a URL")
	case u.Scheme == "http" && u.Host != "" && isLoopbackHost(u.Hostname()):
		// Local development and the simulator only; WeChat Pay cannot
		// reach a loopback address anyway.
		if u.RawQuery != "" || u.ForceQuery {
			v.fail(p, "must not carry a query string")
		}
	case u.Scheme != "https" || u.Host == "" || u.Opaque != "":
		v.fail(p, "must be an absolute https URL")
	case u.User != nil:
		v.fail(p, "must not carry user information")
	case u.RawQuery != "" || u.ForceQuery:
		v.fail(p, "must not carry a query string")
	}
	if v.ok() && (u.Fragment != "" || strings.Contains(s, "#")) {
		v.fail(p, "must not carry a fragment")
	}
}

func (v *validator) limitPay(vals []string) {
	seen := make(map[string]bool, len(vals))
	for i, s := range vals {
		if !v.ok() {
			return
		}
		p := "/limit_pay/" + strconv.Itoa(i)
		switch s {
		case LimitPayNoBalance, LimitPayNoDebit, LimitPayBalanceOnly:
		default:
			v.fail(p, "must be no_balance, no_debit or balance_only")
			return
		}
		if seen[s] {
			v.fail(p, "repeats %s", s)
		}
		seen[s] = true
	}
}

func (v *validator) contractInfo(t TradeType, c *ContractInfo) {
	const p = "/contract_info/"
	if !v.ok() || c == nil {
		return
	}
	if t != TradeTypeApp {
		v.fail("/contract_info", "must be absent: only the app endpoint takes contract_info")
		return
	}
	v.required(p+"mchid", c.MchID, 32)
	v.required(p+"appid", c.AppID, 32)
	v.required(p+"out_contract_code", c.OutContractCode, 32)
	if v.ok() && c.PlanID < 1 {
		v.fail(p+"plan_id", "is required")
	}
	v.required(p+"contract_display_account", c.ContractDisplayAccount, 32)
	v.notifyURL(p+"notify_url", c.NotifyURL, true)
}

func (v *validator) subsidyInfo(t TradeType, s *SubsidyInfo) {
	const p = "/subsidy_info"
	if !v.ok() || s == nil {
		return
	}
	if t != TradeTypeApp && t != TradeTypeJSAPI {
		v.fail(p, "must be absent: only the app and jsapi endpoints take subsidy_info")
		return
	}
	for i, d := range s.SubsidyDetail {
		q := p + "/subsidy_detail/" + strconv.Itoa(i)
		switch d.SubsidyPeriodType {
		case "DAILY", "PERIOD":
		case "":
			v.fail(q+"/subsidy_period_type", "is required")
		default:
			v.fail(q+"/subsidy_period_type", "must be DAILY or PERIOD")
		}
		if v.ok() && d.SubsidyPlan == nil {
			v.fail(q+"/subsidy_plan", "is required")
		}
		for j, pl := range d.SubsidyPlan {
			r := q + "/subsidy_plan/" + strconv.Itoa(j)
			if v.ok() && pl.SubsidyInstallmentNum != 3 && pl.SubsidyInstallmentNum != 6 && pl.SubsidyInstallmentNum != 12 {
				v.fail(r+"/subsidy_installment_num", "must be 3, 6 or 12")
			}
			if v.ok() && pl.SubsidyPercent != 0 && pl.SubsidyPercent != 100 {
				v.fail(r+"/subsidy_percent", "must be 0 or 100")
			}
		}
		if !v.ok() {
			return
		}
	}
}

// ValidateOrderNoParam checks a combine_out_trade_no given as a path
// parameter (query and close); Field is "combine_out_trade_no".
func ValidateOrderNoParam(combineOutTradeNo string) error {
	v := &validator{}
	v.orderNo("combine_out_trade_no", combineOutTradeNo, 1, "")
	if v.ok() {
		return nil
	}
	return v.err
}

// ValidateTransactionIDParam checks a combine_transaction_id path parameter:
// 1–32 digits or letters. Field is "combine_transaction_id".
func ValidateTransactionIDParam(id string) error {
	const p = "combine_transaction_id"
	v := &validator{}
	v.required(p, id, 32)
	if v.ok() && strings.ContainsFunc(id, func(r rune) bool {
		return (r < '0' || r > '9') && (r < 'a' || r > 'z') && (r < 'A' || r > 'Z')
	}) {
		v.fail(p, "may contain only digits and letters")
	}
	if v.ok() {
		return nil
	}
	return v.err
}

// ValidateClose checks a close request for flavour f: the path's
// combine_out_trade_no (Field "combine_out_trade_no"), then combine_appid and
// each sub-order (mchid, out_trade_no, sub_mchid, sub_appid,
// individual_auth_id). The sub-orders must be the created ones, so the
// flavour's sub-order count applies. WeChat Pay also requires them to match
// the created order exactly; only the server can check that.
func ValidateClose(f Flavour, combineOutTradeNo string, req *CloseRequest) error {
	v := &validator{}
	switch {
	case req == nil:
		v.fail("", "request is nil")
	case !validFlavour(f):
		v.fail("", "unknown flavour %q", f)
	}
	if !v.ok() {
		return v.err
	}
	v.orderNo("combine_out_trade_no", combineOutTradeNo, 1, "")
	v.required("/combine_appid", req.CombineAppID, 32)
	if v.ok() {
		lo, hi := f.SubOrderLimits()
		switch n := len(req.SubOrders); {
		case n == 0:
			v.fail("/sub_orders", "is required")
		case n < lo:
			v.fail("/sub_orders", "has %d sub-orders, the %s flavour needs at least %d", n, f, lo)
		case n > hi:
			v.fail("/sub_orders", "has %d sub-orders, the %s flavour allows at most %d", n, f, hi)
		}
	}
	seen := make(map[string]int, len(req.SubOrders))
	for i, s := range req.SubOrders {
		if !v.ok() {
			break
		}
		p := "/sub_orders/" + strconv.Itoa(i) + "/"
		v.required(p+"mchid", s.MchID, 32)
		v.orderNo(p+"out_trade_no", s.OutTradeNo, MinOutTradeNoLength, "")
		if j, dup := seen[s.OutTradeNo]; v.ok() && dup {
			v.fail(p+"out_trade_no", "repeats /sub_orders/%d/out_trade_no", j)
		}
		seen[s.OutTradeNo] = i
		switch f {
		case FlavourPartner, FlavourEcommerce:
			v.required(p+"sub_mchid", s.SubMchID, 32)
			v.maxLen(p+"sub_appid", s.SubAppID, 32)
			v.absent(p+"individual_auth_id", s.IndividualAuthID != "", "only individual payees have one")
		case FlavourMerchant:
			v.absent(p+"sub_mchid", s.SubMchID != "", "the merchant flavour has no sub-merchants")
			v.absent(p+"sub_appid", s.SubAppID != "", "the merchant flavour has no sub-merchants")
			v.absent(p+"individual_auth_id", s.IndividualAuthID != "", "only individual payees have one")
		case FlavourIndividual:
			v.absent(p+"sub_mchid", s.SubMchID != "", "individual payees are named by individual_auth_id")
			v.absent(p+"sub_appid", s.SubAppID != "", "individual payees are named by individual_auth_id")
			v.required(p+"individual_auth_id", s.IndividualAuthID, 64)
		}
	}
	if v.ok() {
		return nil
	}
	return v.err
}
