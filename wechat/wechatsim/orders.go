package wechatsim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/wxcombine/orderworker/wechat"
)

// chinaTime is UTC+8, the zone WeChat Pay writes times in.
var chinaTime = time.FixedZone("CST", 8*3600)

type orderKey struct{ mchID, no string }

// entry is everything known about one (mchid, combine_out_trade_no).
type entry struct {
	createCalls int
	outcomes    map[string]int
	order       *order
}

func (e *entry) outcome(k string) {
	if e.outcomes == nil {
		e.outcomes = make(map[string]int, 2)
	}
	e.outcomes[k]++
}

func (e *entry) successes() int {
	n := 0
	for k := range e.outcomes {
		if strings.HasPrefix(k, successOutcomeOK) {
			n++
		}
	}
	return n
}

// order is a created combine order.
type order struct {
	mchID       string
	tradeType   wechat.TradeType
	req         wechat.CombineOrderRequest
	canonical   []byte // the request re-encoded: identical creates compare equal
	createdAt   time.Time
	answer      wechat.PrepayResult
	answerBody  []byte
	answeredAt  time.Time
	combineTxID string
	state       string // NOTPAY, SUCCESS or CLOSED
	successTime time.Time
	payerOpenID string
	txIDs       []string // per sub-order, once paid

	notifyAttempts  int
	notifyDelivered bool
}

// Errors of Pay.
var (
	// ErrOrderNotFound reports an order number no create has created.
	ErrOrderNotFound = errors.New("wechatsim: order not found")
	// ErrOrderClosed reports paying a closed order.
	ErrOrderClosed = errors.New("wechatsim: order is closed")
	// ErrOrderPaid reports paying an order twice.
	ErrOrderPaid = errors.New("wechatsim: order is already paid")
)

var (
	errOrderNotExist = &apiError{status: http.StatusNotFound, code: "ORDERNOTEXIST", message: "订单不存在"}
	errOrderClosed   = &apiError{status: http.StatusBadRequest, code: "ORDER_CLOSED", message: "当前订单已关闭，请重新下单"}
	errOrderPaid     = &apiError{status: http.StatusBadRequest, code: "INVALID_REQUEST", message: "订单已支付"}
	errNoTradeUsed   = &apiError{status: http.StatusForbidden, code: "OUT_TRADE_NO_USED", message: "商户订单号重复"}
	errCloseMismatch = &apiError{status: http.StatusBadRequest, code: "INVALID_REQUEST",
		message: "输入的请求非法,请求关单的子单信息与下单时的子单信息不一致"}
)

// newPrepay answers a fresh create answer for trade type t.
func (s *Server) newPrepay(t wechat.TradeType, now time.Time) wechat.PrepayResult {
	prepay := "wx" + now.In(chinaTime).Format("20060102150405") + strings.ToLower(randomAlnum(20))
	switch t {
	case wechat.TradeTypeH5:
		return wechat.PrepayResult{H5URL: "https://wx.tenpay.com/cgi-bin/mmpayweb-bin/checkmweb?prepay_id=" +
			prepay + "&package=" + randomDigits(10)}
	case wechat.TradeTypeNative:
		return wechat.PrepayResult{CodeURL: "weixin://wxpay/bizpayurl?pr=" + randomAlnum(7)}
	}
	return wechat.PrepayResult{PrepayID: prepay}
}

func answerKey(a wechat.PrepayResult) string {
	return successOutcomeOK + a.PrepayID + a.H5URL + a.CodeURL
}

// create applies a validated create of merchant m to the order state and
// answers the body to send (the new or the still-valid earlier answer), or
// an error answer.
func (s *Server) create(m *MerchantConfig, t wechat.TradeType, req *wechat.CombineOrderRequest, canonical []byte) ([]byte, *apiError) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entryLocked(orderKey{m.MchID, req.CombineOutTradeNo})
	o := e.order
	if o == nil {
		o = &order{
			mchID: m.MchID, tradeType: t, req: *req, canonical: canonical, createdAt: now,
			state: wechat.TradeStateNotPay, combineTxID: newTransactionID(now),
		}
		e.order = o
		s.byTxID[o.combineTxID] = e
		s.refreshAnswerLocked(o, now)
		e.outcome(answerKey(o.answer))
		return o.answerBody, nil
	}
	var ae *apiError
	switch {
	case o.state == wechat.TradeStateClosed:
		ae = errOrderClosed
	case o.state == wechat.TradeStateSuccess:
		ae = errOrderPaid
	case o.tradeType != t || string(o.canonical) != string(canonical):
		ae = errNoTradeUsed
	}
	if ae != nil {
		e.outcome(ae.code)
		return nil, ae
	}
	validity := s.cfg.PrepayValidity
	if t == wechat.TradeTypeH5 {
		validity = s.cfg.H5URLValidity
	}
	if now.Sub(o.answeredAt) >= validity {
		s.refreshAnswerLocked(o, now)
	}
	e.outcome(answerKey(o.answer))
	return o.answerBody, nil
}

func (s *Server) refreshAnswerLocked(o *order, now time.Time) {
	o.answer = s.newPrepay(o.tradeType, now)
	o.answerBody, _ = json.Marshal(o.answer) // a struct of strings always marshals
	o.answeredAt = now
}

// entryLocked answers the entry of k, creating it; s.mu is held.
func (s *Server) entryLocked(k orderKey) *entry {
	e := s.entries[k]
	if e == nil {
		e = &entry{}
		s.entries[k] = e
	}
	return e
}

// recordCreate counts a create call naming k and, if outcome is set, its
// outcome (an error code or fault kind).
func (s *Server) recordCreate(k orderKey, outcome string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entryLocked(k)
	e.createCalls++
	if outcome != "" {
		e.outcome(outcome)
	}
}

// recordOutcome adds an outcome to the entry of k without counting a call.
func (s *Server) recordOutcome(k orderKey, outcome string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entryLocked(k).outcome(outcome)
}

// closeOrder closes merchant mchID's order no if req names its sub-orders
// exactly.
func (s *Server) closeOrder(mchID, no string, req *wechat.CloseRequest) *apiError {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[orderKey{mchID, no}]
	if e == nil || e.order == nil {
		return errOrderNotExist
	}
	o := e.order
	if !closeMatches(&o.req, req) {
		return errCloseMismatch
	}
	if o.state == wechat.TradeStateSuccess {
		return errOrderPaid
	}
	o.state = wechat.TradeStateClosed
	return nil
}

// closeMatches reports whether a close names exactly the created
// sub-orders: same appid, count, and per sub-order mchid, out_trade_no,
// sub_mchid and individual_auth_id, in any order.
func closeMatches(c *wechat.CombineOrderRequest, req *wechat.CloseRequest) bool {
	if req.CombineAppID != c.CombineAppID || len(req.SubOrders) != len(c.SubOrders) {
		return false
	}
	type id struct{ mch, no, sub, ind string }
	want := make(map[id]int, len(c.SubOrders))
	for _, so := range c.SubOrders {
		want[id{so.MchID, so.OutTradeNo, so.SubMchID, so.IndividualAuthID}]++
	}
	for _, so := range req.SubOrders {
		k := id{so.MchID, so.OutTradeNo, so.SubMchID, so.IndividualAuthID}
		if want[k] == 0 {
			return false
		}
		want[k]--
	}
	return true
}

// lookup answers the order of merchant mchID by order number, or by
// combine_transaction_id when byID.
func (s *Server) lookup(mchID, key string, byID bool) (wechat.CombineOrder, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var e *entry
	if byID {
		e = s.byTxID[key]
	} else {
		e = s.entries[orderKey{mchID, key}]
	}
	if e == nil || e.order == nil || e.order.mchID != mchID {
		return wechat.CombineOrder{}, false
	}
	return s.view(e.order), true
}

var tradeTypeNames = map[wechat.TradeType]string{
	wechat.TradeTypeApp: "APP", wechat.TradeTypeJSAPI: "JSAPI", wechat.TradeTypeMiniProgram: "JSAPI",
	wechat.TradeTypeH5: "MWEB", wechat.TradeTypeNative: "NATIVE",
}

// view answers o as a query answers it; s.mu is held.
func (s *Server) view(o *order) wechat.CombineOrder {
	r := &o.req
	v := wechat.CombineOrder{
		CombineAppID: r.CombineAppID, CombineMchID: r.CombineMchID, CombineOutTradeNo: r.CombineOutTradeNo,
		TradeScenario: r.TradeScenario, SubOrders: make([]wechat.OrderSubOrder, len(r.SubOrders)),
	}
	if s.cfg.Flavour == wechat.FlavourIndividual {
		v.CombineTransactionID = o.combineTxID
	}
	if r.SceneInfo != nil && r.SceneInfo.DeviceID != "" {
		v.SceneInfo = &wechat.SceneInfo{DeviceID: r.SceneInfo.DeviceID}
	}
	paid := o.state == wechat.TradeStateSuccess
	if paid {
		v.CombinePayerInfo = &wechat.PayerInfo{OpenID: o.payerOpenID}
	}
	for i, so := range r.SubOrders {
		out := wechat.OrderSubOrder{
			MchID: so.MchID, SubMchID: so.SubMchID, SubAppID: so.SubAppID,
			IndividualAuthID: so.IndividualAuthID, IndividualName: so.IndividualName,
			OutTradeNo: so.OutTradeNo, TradeState: o.state, Attach: so.Attach,
			Amount: wechat.Amount{TotalAmount: so.Amount.TotalAmount, Currency: so.Amount.Currency},
		}
		if paid {
			out.TransactionID = o.txIDs[i]
			out.TradeType = tradeTypeNames[o.tradeType]
			out.BankType = "OTHERS"
			out.SuccessTime = o.successTime.In(chinaTime).Format(time.RFC3339)
			out.Amount.PayerAmount = so.Amount.TotalAmount
			out.Amount.PayerCurrency = so.Amount.Currency
			if r.CombinePayerInfo != nil && r.CombinePayerInfo.SubOpenID != "" && so.SubAppID != "" {
				out.SubOpenID = r.CombinePayerInfo.SubOpenID
			}
		}
		v.SubOrders[i] = out
	}
	return v
}

// newTransactionID answers a 28-digit WeChat Pay transaction id.
func newTransactionID(now time.Time) string {
	return "4200" + now.In(chinaTime).Format("20060102") + randomDigits(16)
}

// Pay pays merchant mchID's order combineOutTradeNo as a payer would: every
// sub-order becomes SUCCESS with a transaction_id, the payer and success_time
// are set, and a TRANSACTION.SUCCESS notification is sent to the order's
// notify_url (retried on NotifySchedule until answered 2xx). It answers the
// paid order, or ErrOrderNotFound, ErrOrderClosed or ErrOrderPaid. ctx is
// unused for now and reserved for a payment delay.
func (s *Server) Pay(ctx context.Context, mchID, combineOutTradeNo string) (*wechat.CombineOrder, error) {
	_ = ctx
	now := s.now()
	s.mu.Lock()
	e := s.entries[orderKey{mchID, combineOutTradeNo}]
	if e == nil || e.order == nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: %s/%s", ErrOrderNotFound, mchID, combineOutTradeNo)
	}
	o := e.order
	switch o.state {
	case wechat.TradeStateClosed:
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: %s/%s", ErrOrderClosed, mchID, combineOutTradeNo)
	case wechat.TradeStateSuccess:
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: %s/%s", ErrOrderPaid, mchID, combineOutTradeNo)
	}
	o.state = wechat.TradeStateSuccess
	o.successTime = now.Truncate(time.Second)
	o.payerOpenID = "o" + randomAlnum(27)
	if o.req.CombinePayerInfo != nil && o.req.CombinePayerInfo.OpenID != "" {
		o.payerOpenID = o.req.CombinePayerInfo.OpenID
	}
	o.txIDs = make([]string, len(o.req.SubOrders))
	for i := range o.txIDs {
		o.txIDs[i] = newTransactionID(now)
	}
	v := s.view(o)
	notifyURL := o.req.NotifyURL
	s.mu.Unlock()
	if notifyURL != "" {
		s.startNotification(orderKey{mchID, combineOutTradeNo}, notifyURL, &v)
	}
	return &v, nil
}
