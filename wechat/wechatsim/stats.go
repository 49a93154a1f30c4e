package wechatsim

import (
	"maps"
	"sync"

	"github.com/wxcombine/orderworker/wechat"
)

// Operations, as counted in Stats.Requests.
const (
	OpCreate         = "create"
	OpQuery          = "query"
	OpQueryByID      = "query_by_id"
	OpClose          = "close"
	OpUnknown        = "unknown"
	successOutcomeOK = "ok:"
)

// Stats is the simulator's accounting, for tests and load tests.
type Stats struct {
	// Requests counts API requests by operation (create, query, query_by_id,
	// close, unknown).
	Requests map[string]int64 `json:"requests"`
	// Answers counts API answers by HTTP status for 2xx and by code for
	// errors (a 502 counts as BAD_GATEWAY).
	Answers map[string]int64 `json:"answers"`
	// Faults counts injected faults by kind (the Fault* constants).
	Faults map[string]int64 `json:"faults"`
	// CreateCalls counts create requests that passed authentication and named
	// a combine_out_trade_no.
	CreateCalls int64 `json:"create_calls"`
	// OrderNumbers counts distinct (mchid, combine_out_trade_no) pairs seen by
	// creates; Orders those for which an order exists.
	OrderNumbers int `json:"order_numbers"`
	Orders       int `json:"orders"`
	// RepeatedCreates counts order numbers created more than once.
	RepeatedCreates int `json:"repeated_creates"`
	// ConflictingCreates counts order numbers whose successful creates were
	// answered with more than one distinct prepay_id/h5_url/code_url; with
	// faults and a correct client it stays 0 unless a prepay expired.
	ConflictingCreates int `json:"conflicting_creates"`
	// Paid and Closed count orders in those states.
	Paid   int `json:"paid"`
	Closed int `json:"closed"`
	// Notifications counts notification deliveries.
	Notifications NotificationStats `json:"notifications"`
}

// NotificationStats counts notification deliveries.
type NotificationStats struct {
	// Attempts counts POSTs to notify URLs, probes included.
	Attempts int64 `json:"attempts"`
	// Delivered counts notifications answered 2xx.
	Delivered int64 `json:"delivered"`
	// Failed counts attempts answered otherwise or not at all.
	Failed int64 `json:"failed"`
	// GaveUp counts notifications whose whole schedule failed.
	GaveUp int64 `json:"gave_up"`
	// Probes counts WECHATPAY/SIGNTEST/ probe notifications sent;
	// ProbesAccepted those the receiver wrongly answered 2xx.
	Probes         int64 `json:"probes"`
	ProbesAccepted int64 `json:"probes_accepted"`
	// Pending counts notifications still being retried.
	Pending int64 `json:"pending"`
	// Dropped counts payments whose notification was never sent
	// (FaultConfig.NotifyDropRate); Skipped those paid with
	// PayOptions.SkipNotification.
	Dropped int64 `json:"dropped"`
	Skipped int64 `json:"skipped"`
}

// counters holds the counters that are not derived from the order map.
type counters struct {
	mu       sync.Mutex
	requests map[string]int64
	answers  map[string]int64
	faults   map[string]int64
	notify   NotificationStats
}

func (c *counters) init() {
	c.requests = map[string]int64{}
	c.answers = map[string]int64{}
	c.faults = map[string]int64{}
}

func (c *counters) add(m map[string]int64, k string) {
	c.mu.Lock()
	m[k]++
	c.mu.Unlock()
}

func (c *counters) request(op string)  { c.add(c.requests, op) }
func (c *counters) answer(code string) { c.add(c.answers, code) }
func (c *counters) fault(kind string)  { c.add(c.faults, kind) }

func (c *counters) notification(f func(n *NotificationStats)) {
	c.mu.Lock()
	f(&c.notify)
	c.mu.Unlock()
}

// Stats answers a snapshot of the accounting.
func (s *Server) Stats() Stats {
	s.stats.mu.Lock()
	st := Stats{
		Requests:      maps.Clone(s.stats.requests),
		Answers:       maps.Clone(s.stats.answers),
		Faults:        maps.Clone(s.stats.faults),
		Notifications: s.stats.notify,
	}
	s.stats.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.entries {
		if e.createCalls == 0 {
			continue
		}
		st.OrderNumbers++
		st.CreateCalls += int64(e.createCalls)
		if e.createCalls > 1 {
			st.RepeatedCreates++
		}
		if e.successes() > 1 {
			st.ConflictingCreates++
		}
		if o := e.order; o != nil {
			st.Orders++
			switch {
			case o.anyIn(wechat.TradeStateSuccess, wechat.TradeStateRefund):
				st.Paid++
			case o.anyIn(wechat.TradeStateClosed):
				st.Closed++
			}
		}
	}
	return st
}

// OrderInfo is one order number's state and accounting.
type OrderInfo struct {
	MchID             string           `json:"mchid"`
	CombineOutTradeNo string           `json:"combine_out_trade_no"`
	TradeType         wechat.TradeType `json:"trade_type,omitempty"`
	// CreateCalls counts the creates naming this order number.
	CreateCalls int `json:"create_calls"`
	// Outcomes counts the creates' answers: "ok:<prepay_id|h5_url|code_url>"
	// for successes, the error code or fault kind otherwise.
	Outcomes map[string]int `json:"outcomes"`
	// Answer is the current successful create answer, if any.
	Answer *wechat.PrepayResult `json:"answer,omitempty"`
	// Order is the order as a query answers it; nil until created.
	Order *wechat.CombineOrder `json:"order,omitempty"`
	// NotifyAttempts counts notification POSTs for the order; NotifyDelivered
	// reports whether one was answered 2xx; NotifyDropped whether its
	// payment sent no notification at all (dropped or skipped).
	NotifyAttempts  int  `json:"notify_attempts"`
	NotifyDelivered bool `json:"notify_delivered"`
	NotifyDropped   bool `json:"notify_dropped,omitempty"`
}

// DistinctSuccesses counts the distinct successful answers among Outcomes.
func (o OrderInfo) DistinctSuccesses() int {
	n := 0
	for k := range o.Outcomes {
		if len(k) > len(successOutcomeOK) && k[:len(successOutcomeOK)] == successOutcomeOK {
			n++
		}
	}
	return n
}

// Order answers the state and accounting of merchant mchID's order number
// no, and false if no create or order ever named it.
func (s *Server) Order(mchID, no string) (OrderInfo, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[orderKey{mchID, no}]
	if e == nil {
		return OrderInfo{}, false
	}
	info := OrderInfo{MchID: mchID, CombineOutTradeNo: no, CreateCalls: e.createCalls, Outcomes: maps.Clone(e.outcomes)}
	if info.Outcomes == nil {
		info.Outcomes = map[string]int{}
	}
	if o := e.order; o != nil {
		info.TradeType = o.tradeType
		a := o.answer
		info.Answer = &a
		v := s.view(o)
		info.Order = &v
		info.NotifyAttempts = o.notifyAttempts
		info.NotifyDelivered = o.notifyDelivered
		info.NotifyDropped = o.notifyDropped
	}
	return info, true
}
