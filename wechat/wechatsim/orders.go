package wechatsim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
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
	req         createBody
	canonical   []byte // the request re-encoded: identical creates compare equal
	createdAt   time.Time
	answer      wechat.PrepayResult
	answerBody  []byte
	answeredAt  time.Time
	issued      []IssuedPrepay // every answer issued, oldest first
	combineTxID string
	states      []string // trade_state per sub-order
	successTime time.Time
	payerOpenID string
	txIDs       []string // per sub-order, once paid
	payer       []int64  // payer_amount per sub-order, once paid
	promotions  [][]wechat.Promotion

	notifyAttempts  int
	notifyDelivered bool
	notifyDropped   bool
}

// anyIn reports whether some sub-order is in one of states.
func (o *order) anyIn(states ...string) bool {
	for _, st := range o.states {
		if slices.Contains(states, st) {
			return true
		}
	}
	return false
}

// expiresAt answers when the order stops being payable: time_expire when
// it was in the future at creation, else the 7-day default lifetime.
func (o *order) expiresAt() time.Time {
	end := o.createdAt.Add(OrderLifetimeDefault)
	if o.req.TimeExpire != nil {
		if t, err := time.Parse(time.RFC3339, *o.req.TimeExpire); err == nil && t.After(o.createdAt) {
			return t
		}
	}
	return end
}

// Errors of Pay.
var (
	// ErrOrderNotFound reports an order number no create has created.
	ErrOrderNotFound = errors.New("wechatsim: order not found")
	// ErrOrderClosed reports paying a closed order.
	ErrOrderClosed = errors.New("wechatsim: order is closed")
	// ErrOrderPaid reports paying an order twice.
	ErrOrderPaid = errors.New("wechatsim: order is already paid")
	// ErrOrderExpired reports paying an order past its time_expire or its
	// 7-day lifetime.
	ErrOrderExpired = errors.New("wechatsim: order has expired")
	// ErrBadTradeState reports a trade state SetTradeState does not know, or
	// a count of states that is neither 1 nor the sub-order count.
	ErrBadTradeState = errors.New("wechatsim: bad trade state")
)

var (
	errOrderClosed  = &apiError{status: http.StatusBadRequest, code: "ORDER_CLOSED", message: "当前订单已关闭，请重新下单"}
	errOrderExpired = &apiError{status: http.StatusBadRequest, code: "ORDER_CLOSED", message: "该订单已失效"}
	// errOrderPaid answers a create or close of a paid order: "订单已支付"
	// (268449538 in the troubleshooting handbook) under INVALID_REQUEST,
	// the code WeChat Pay files business-state refusals under.
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
func (s *Server) create(m *MerchantConfig, t wechat.TradeType, req *createBody, canonical []byte) ([]byte, *apiError) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entryLocked(orderKey{m.MchID, req.CombineOutTradeNo})
	o := e.order
	if o == nil {
		o = &order{
			mchID: m.MchID, tradeType: t, req: *req, canonical: canonical, createdAt: now,
			states: make([]string, len(req.SubOrders)), combineTxID: newTransactionID(now),
		}
		for i := range o.states {
			o.states[i] = wechat.TradeStateNotPay
		}
		e.order = o
		s.byTxID[o.combineTxID] = e
		s.refreshAnswerLocked(o, now)
		e.outcome(answerKey(o.answer))
		return o.answerBody, nil
	}
	var ae *apiError
	switch {
	case o.anyIn(wechat.TradeStateSuccess, wechat.TradeStateRefund):
		ae = errOrderPaid
	case o.anyIn(wechat.TradeStateClosed):
		ae = errOrderClosed
	case o.tradeType != t || string(o.canonical) != string(canonical):
		ae = errNoTradeUsed
	case !now.Before(o.expiresAt()):
		ae = errOrderExpired
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
	validity := s.cfg.PrepayValidity
	if o.tradeType == wechat.TradeTypeH5 {
		validity = s.cfg.H5URLValidity
	}
	o.issued = append(o.issued, IssuedPrepay{
		PrepayID: o.answer.PrepayID, H5URL: o.answer.H5URL, CodeURL: o.answer.CodeURL,
		IssuedAt: now, ExpiresAt: now.Add(validity),
	})
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
// exactly. Closing a closed order answers 204 again (close is re-entrant);
// closing a paid one answers 400 INVALID_REQUEST "订单已支付".
func (s *Server) closeOrder(mchID, no string, req *closeBody) *apiError {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[orderKey{mchID, no}]
	if e == nil || e.order == nil {
		return s.orderNotExist()
	}
	o := e.order
	if !closeMatches(&o.req, req) {
		return errCloseMismatch
	}
	if o.anyIn(wechat.TradeStateSuccess, wechat.TradeStateRefund) {
		return errOrderPaid
	}
	for i := range o.states {
		o.states[i] = wechat.TradeStateClosed
	}
	return nil
}

// closeMatches reports whether a close names exactly the created
// sub-orders: same appid, count, and per sub-order mchid, out_trade_no,
// sub_mchid and individual_auth_id, in any order.
func closeMatches(c *createBody, req *closeBody) bool {
	if req.CombineAppID != c.CombineAppID || len(req.SubOrders) != len(c.SubOrders) {
		return false
	}
	type id struct{ mch, no, sub, ind string }
	want := make(map[id]int, len(c.SubOrders))
	for _, so := range c.SubOrders {
		want[id{so.MchID, so.OutTradeNo, deref(so.SubMchID), deref(so.IndividualAuthID)}]++
	}
	for _, so := range req.SubOrders {
		k := id{so.MchID, so.OutTradeNo, deref(so.SubMchID), deref(so.IndividualAuthID)}
		if want[k] == 0 {
			return false
		}
		want[k]--
	}
	return true
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
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
		TradeScenario: deref(r.TradeScenario), SubOrders: make([]wechat.OrderSubOrder, len(r.SubOrders)),
	}
	if s.cfg.Flavour == wechat.FlavourIndividual {
		v.CombineTransactionID = o.combineTxID
	}
	if r.SceneInfo != nil && r.SceneInfo.DeviceID != nil {
		v.SceneInfo = &wechat.SceneInfo{DeviceID: *r.SceneInfo.DeviceID}
	}
	if o.txIDs != nil {
		v.CombinePayerInfo = &wechat.PayerInfo{OpenID: o.payerOpenID}
	}
	for i, so := range r.SubOrders {
		st := o.states[i]
		out := wechat.OrderSubOrder{
			MchID: so.MchID, SubMchID: deref(so.SubMchID), SubAppID: deref(so.SubAppID),
			IndividualAuthID: deref(so.IndividualAuthID), IndividualName: deref(so.IndividualName),
			OutTradeNo: so.OutTradeNo, TradeState: st, Attach: so.Attach,
			Amount: wechat.Amount{TotalAmount: so.Amount.TotalAmount, Currency: so.Amount.Currency},
		}
		if (st == wechat.TradeStateSuccess || st == wechat.TradeStateRefund) && o.txIDs != nil {
			out.TransactionID = o.txIDs[i]
			out.TradeType = tradeTypeNames[o.tradeType]
			out.BankType = "OTHERS"
			out.SuccessTime = o.successTime.In(chinaTime).Format(time.RFC3339)
			out.Amount.PayerAmount = o.payer[i]
			out.Amount.PayerCurrency = so.Amount.Currency
			out.PromotionDetail = o.promotions[i]
			if p := r.CombinePayerInfo; p != nil && p.SubOpenID != nil && so.SubAppID != nil {
				out.SubOpenID = *p.SubOpenID
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

// PayOptions shapes a payment made by PayWith.
type PayOptions struct {
	// SkipNotification pays without sending the TRANSACTION.SUCCESS
	// notification, as when WeChat Pay's notification is lost for good; only
	// a query tells the merchant.
	SkipNotification bool `json:"skip_notification"`
	// Discount is the promotion, in fen, taken off each sub-order: its
	// payer_amount is total_amount minus the discount (at least 1 fen is
	// paid) and promotion_detail lists one GLOBAL CASH coupon of that
	// amount, paid by WeChat Pay. Defaults to 0: payer_amount equals
	// total_amount and there is no promotion_detail.
	Discount int64 `json:"discount"`
}

// Pay pays merchant mchID's order combineOutTradeNo as a payer would: every
// sub-order becomes SUCCESS with a transaction_id, the payer and success_time
// are set, and a TRANSACTION.SUCCESS notification is sent to the order's
// notify_url (retried on NotifySchedule until answered 2xx; dropped
// altogether at FaultConfig.NotifyDropRate). It answers the paid order, or
// ErrOrderNotFound, ErrOrderClosed, ErrOrderPaid or ErrOrderExpired. ctx is
// unused for now and reserved for a payment delay.
func (s *Server) Pay(ctx context.Context, mchID, combineOutTradeNo string) (*wechat.CombineOrder, error) {
	return s.PayWith(ctx, mchID, combineOutTradeNo, PayOptions{})
}

// PayWith is Pay shaped by opts.
func (s *Server) PayWith(ctx context.Context, mchID, combineOutTradeNo string, opts PayOptions) (*wechat.CombineOrder, error) {
	_ = ctx
	now := s.now()
	s.mu.Lock()
	e := s.entries[orderKey{mchID, combineOutTradeNo}]
	if e == nil || e.order == nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: %s/%s", ErrOrderNotFound, mchID, combineOutTradeNo)
	}
	o := e.order
	var err error
	switch {
	case o.anyIn(wechat.TradeStateSuccess, wechat.TradeStateRefund):
		err = ErrOrderPaid
	case o.anyIn(wechat.TradeStateClosed):
		err = ErrOrderClosed
	case !now.Before(o.expiresAt()):
		err = ErrOrderExpired
	}
	if err != nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: %s/%s", err, mchID, combineOutTradeNo)
	}
	s.settleLocked(o, now, opts.Discount, wechat.TradeStateSuccess)
	v := s.view(o)
	notifyURL := deref(o.req.NotifyURL)
	drop := !opts.SkipNotification && s.chance(s.Faults().NotifyDropRate)
	o.notifyDropped = drop || opts.SkipNotification
	s.mu.Unlock()
	switch {
	case drop:
		s.stats.notification(func(st *NotificationStats) { st.Dropped++ })
		s.stats.fault(FaultNotifyDropped)
	case opts.SkipNotification:
		s.stats.notification(func(st *NotificationStats) { st.Skipped++ })
	case notifyURL != "":
		s.startNotification(orderKey{mchID, combineOutTradeNo}, notifyURL, &v)
	}
	return &v, nil
}

// settleLocked records a payment of every sub-order of o not yet paid and
// puts each into state; s.mu is held.
func (s *Server) settleLocked(o *order, now time.Time, discount int64, state string) {
	if o.txIDs == nil {
		o.successTime = now.Truncate(time.Second)
		o.payerOpenID = "o" + randomAlnum(27)
		if p := o.req.CombinePayerInfo; p != nil && p.OpenID != nil && *p.OpenID != "" {
			o.payerOpenID = *p.OpenID
		}
		o.txIDs = make([]string, len(o.req.SubOrders))
		o.payer = make([]int64, len(o.req.SubOrders))
		o.promotions = make([][]wechat.Promotion, len(o.req.SubOrders))
		for i, so := range o.req.SubOrders {
			o.txIDs[i] = newTransactionID(now)
			d := min(max(discount, 0), so.Amount.TotalAmount-1)
			o.payer[i] = so.Amount.TotalAmount - d
			if d > 0 {
				o.promotions[i] = []wechat.Promotion{{
					CouponID: randomDigits(10), Name: "simulated coupon", Scope: "GLOBAL", Type: "CASH",
					Amount: d, StockID: randomDigits(8), WechatpayContribute: d, Currency: so.Amount.Currency,
				}}
			}
		}
	}
	for i := range o.states {
		o.states[i] = state
	}
}

// TradeStates are the trade_state values a sub-order can take.
var TradeStates = []string{wechat.TradeStateSuccess, wechat.TradeStateRefund, wechat.TradeStateNotPay,
	wechat.TradeStateClosed, wechat.TradeStatePayError}

// SetTradeState puts merchant mchID's order no into the given trade states
// without a payment or a notification: one state for every sub-order, or one
// per sub-order in order. SUCCESS and REFUND give a sub-order a
// transaction_id, success_time and payer_amount (as a payment would) if it
// has none. It is for tests of a merchant's handling of states the payer
// flow does not produce (REFUND, PAYERROR, mixed); it answers
// ErrOrderNotFound or ErrBadTradeState.
func (s *Server) SetTradeState(mchID, no string, states ...string) error {
	for _, st := range states {
		if !slices.Contains(TradeStates, st) {
			return fmt.Errorf("%w: %q (want one of %v)", ErrBadTradeState, st, TradeStates)
		}
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[orderKey{mchID, no}]
	if e == nil || e.order == nil {
		return fmt.Errorf("%w: %s/%s", ErrOrderNotFound, mchID, no)
	}
	o := e.order
	if len(states) != 1 && len(states) != len(o.states) {
		return fmt.Errorf("%w: %d states for %d sub-orders", ErrBadTradeState, len(states), len(o.states))
	}
	paidState := slices.ContainsFunc(states, func(st string) bool {
		return st == wechat.TradeStateSuccess || st == wechat.TradeStateRefund
	})
	if paidState {
		s.settleLocked(o, now, 0, o.states[0])
	}
	for i := range o.states {
		o.states[i] = states[min(i, len(states)-1)]
	}
	return nil
}
