package wechatsim

// Hooks for reconciliation tests: a payment whose notification is lost, and
// a notification WeChat Pay sends again. Both are additive; they reuse Pay
// and the notification sender unchanged.

import (
	"context"
	"fmt"
)

// PayWithoutNotification pays merchant mchID's order combineOutTradeNo as
// Pay does, but sends no notification: the notification is lost, as WeChat
// Pay warns it can be, and only a query tells that the order is paid.
func (s *Server) PayWithoutNotification(ctx context.Context, mchID, combineOutTradeNo string) error {
	k := orderKey{mchID, combineOutTradeNo}
	s.mu.Lock()
	var url string
	if e := s.entries[k]; e != nil && e.order != nil {
		url, e.order.req.NotifyURL = e.order.req.NotifyURL, ""
	}
	s.mu.Unlock()
	_, err := s.Pay(ctx, mchID, combineOutTradeNo)
	s.mu.Lock()
	if e := s.entries[k]; e != nil && e.order != nil {
		e.order.req.NotifyURL = url
	}
	s.mu.Unlock()
	return err
}

// ResendNotification sends the payment notification of a paid order again
// to its notify_url, freshly signed with the simulator's current time and
// a new notification id, as WeChat Pay does when it re-sends one (its
// retries last up to 24 hours). It answers ErrOrderNotFound for an unknown
// order and an error for an unpaid one or one without notify_url.
func (s *Server) ResendNotification(mchID, combineOutTradeNo string) error {
	k := orderKey{mchID, combineOutTradeNo}
	s.mu.Lock()
	e := s.entries[k]
	if e == nil || e.order == nil {
		s.mu.Unlock()
		return fmt.Errorf("%w: %s/%s", ErrOrderNotFound, mchID, combineOutTradeNo)
	}
	o := e.order
	if o.state != "SUCCESS" || o.req.NotifyURL == "" {
		s.mu.Unlock()
		return fmt.Errorf("wechatsim: order %s/%s is %s with notify_url %q: nothing to re-send", mchID, combineOutTradeNo, o.state, o.req.NotifyURL)
	}
	v := s.view(o)
	url := o.req.NotifyURL
	o.notifyDelivered = false
	s.mu.Unlock()
	s.startNotification(k, url, &v)
	return nil
}

// SetTradeState puts every sub-order of merchant mchID's order
// combineOutTradeNo in trade state state (REFUND, PAYERROR, …) as a query
// then answers it, without any of the bookkeeping of a payment: for
// testing what a client does with states other than NOTPAY, SUCCESS and
// CLOSED. It answers ErrOrderNotFound for an unknown order.
func (s *Server) SetTradeState(mchID, combineOutTradeNo, state string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[orderKey{mchID, combineOutTradeNo}]
	if e == nil || e.order == nil {
		return fmt.Errorf("%w: %s/%s", ErrOrderNotFound, mchID, combineOutTradeNo)
	}
	e.order.state = state
	return nil
}
