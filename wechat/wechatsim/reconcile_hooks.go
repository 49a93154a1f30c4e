package wechatsim

// Hooks for reconciliation tests: a payment whose notification is lost, and
// a notification WeChat Pay sends again.

import (
	"context"
	"fmt"
	"slices"
)

// PayWithoutNotification pays merchant mchID's order combineOutTradeNo as
// Pay does, but sends no notification: the notification is lost, as WeChat
// Pay warns it can be, and only a query tells that the order is paid.
func (s *Server) PayWithoutNotification(ctx context.Context, mchID, combineOutTradeNo string) error {
	_, err := s.PayWith(ctx, mchID, combineOutTradeNo, PayOptions{SkipNotification: true})
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
	url := deref(o.req.NotifyURL)
	if slices.ContainsFunc(o.states, func(st string) bool { return st != "SUCCESS" }) || url == "" {
		s.mu.Unlock()
		return fmt.Errorf("wechatsim: order %s/%s is %v with notify_url %q: nothing to re-send", mchID, combineOutTradeNo, o.states, url)
	}
	v := s.view(o)
	o.notifyDelivered = false
	s.mu.Unlock()
	s.startNotification(k, url, &v)
	return nil
}
