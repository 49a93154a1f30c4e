package wechatsim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/wxcombine/orderworker/wechat"
)

// notification is one TRANSACTION.SUCCESS notification being delivered.
type notification struct {
	key  orderKey
	url  string
	body []byte
}

// startNotification encrypts the paid order for its merchant and starts
// delivering it from a goroutine owned by s, which exits once the
// notification is delivered, its schedule is exhausted or s is closed.
func (s *Server) startNotification(k orderKey, url string, paid *wechat.CombineOrder) {
	log := s.cfg.Logger.With(slog.String("mchid", k.mchID), slog.String("combine_out_trade_no", k.no))
	body, err := s.buildNotification(k.mchID, paid)
	if err != nil {
		log.Error("wechatsim: build notification", slog.String("error", err.Error()))
		return
	}
	n := &notification{key: k, url: url, body: body}
	s.stats.notification(func(st *NotificationStats) { st.Pending++ })
	s.wg.Add(1)
	go func() { // owner: s; exits when delivered, exhausted or s.done closes
		defer s.wg.Done()
		defer s.stats.notification(func(st *NotificationStats) { st.Pending-- })
		s.deliver(n, log)
	}()
}

// buildNotification answers the JSON envelope for a paid order: the order
// encrypted with the merchant's APIv3 key (AEAD_AES_256_GCM, associated data
// "transaction").
func (s *Server) buildNotification(mchID string, paid *wechat.CombineOrder) ([]byte, error) {
	m := s.merchants[mchID]
	plain, err := json.Marshal(paid)
	if err != nil {
		return nil, fmt.Errorf("marshal order: %w", err)
	}
	res, err := wechat.EncryptResource(m.APIv3Key, wechat.AssociatedDataTransaction, wechat.AssociatedDataTransaction, plain)
	if err != nil {
		return nil, err
	}
	return json.Marshal(wechat.NotificationEnvelope{
		ID:           newUUID(),
		CreateTime:   s.now().In(chinaTime).Format(time.RFC3339),
		EventType:    wechat.EventTransactionSuccess,
		ResourceType: wechat.ResourceTypeEncrypted,
		Summary:      "支付成功",
		Resource:     res,
	})
}

// deliver posts n until a 2xx answer, following NotifySchedule scaled by
// NotifySpeedup.
func (s *Server) deliver(n *notification, log *slog.Logger) {
	for attempt := 0; attempt <= len(NotifySchedule); attempt++ {
		if attempt > 0 {
			d := time.Duration(float64(NotifySchedule[attempt-1]) / s.cfg.NotifySpeedup)
			if !s.sleep(s.ctx, d) {
				return
			}
		}
		if s.chance(s.Faults().SignTestRate) {
			status, _ := s.post(n, true)
			ok := status >= 200 && status < 300
			s.stats.notification(func(st *NotificationStats) {
				st.Probes++
				if ok {
					st.ProbesAccepted++
				}
			})
			s.stats.fault(FaultSignTest)
			if ok {
				log.Warn("wechatsim: receiver accepted a signature probe", slog.Int("status", status))
			}
		}
		status, err := s.post(n, false)
		ok := err == nil && status >= 200 && status < 300
		s.mu.Lock()
		if e := s.entries[n.key]; e != nil && e.order != nil {
			e.order.notifyAttempts++
			e.order.notifyDelivered = e.order.notifyDelivered || ok
		}
		s.mu.Unlock()
		s.stats.notification(func(st *NotificationStats) {
			if ok {
				st.Delivered++
			} else {
				st.Failed++
			}
		})
		if ok {
			log.Debug("wechatsim: notification delivered", slog.Int("attempt", attempt+1), slog.Int("status", status))
			return
		}
		if s.ctx.Err() != nil {
			return
		}
		attrs := []any{slog.Int("attempt", attempt+1), slog.Int("status", status)}
		if err != nil {
			attrs = append(attrs, slog.String("error", err.Error()))
		}
		log.Warn("wechatsim: notification not accepted", attrs...)
	}
	s.stats.notification(func(st *NotificationStats) { st.GaveUp++ })
	log.Warn("wechatsim: notification schedule exhausted")
}

// post sends one attempt, freshly signed (or a probe), and answers the
// status.
func (s *Server) post(n *notification, probe bool) (int, error) {
	s.stats.notification(func(st *NotificationStats) { st.Attempts++ })
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.NotifyTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.url, bytes.NewReader(n.body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Mozilla/4.0 (wechatsim)")
	key, serial := s.notificationKey()
	if err := s.sign(req.Header, key, serial, n.body, probe); err != nil {
		return 0, err
	}
	resp, err := s.cfg.NotifyHTTPClient.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// notificationKey picks the signing key of one notification attempt; in
// ModeMigration it is either key at random.
func (s *Server) notificationKey() (wechat.PrivateKey, string) {
	p := s.cfg.Platform
	switch {
	case s.cfg.Mode == ModeCert:
		return p.CertKey, p.CertSerial
	case s.cfg.Mode == ModePublicKey, s.chance(0.5):
		return p.PubKey, p.PubKeyID
	}
	return p.CertKey, p.CertSerial
}

// newUUID answers a random (version 4) UUID, the shape of real notification
// ids.
func newUUID() string {
	b := randomBytes(16)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
