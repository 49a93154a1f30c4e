package wechat

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// ErrMalformedNotification reports a notification whose signature verified
// but whose envelope or decrypted transaction is not what a combine payment
// notification must be.
var ErrMalformedNotification = errors.New("wechat: malformed notification")

// SummaryPaid is the summary of TRANSACTION.SUCCESS notifications.
const SummaryPaid = "支付成功"

// Notification is a verified, decrypted combine payment notification.
type Notification struct {
	Envelope    NotificationEnvelope
	Transaction CombineOrder
}

// ParseNotification handles the body WeChat Pay POSTed to notify_url for
// merchant m, in this order:
//
//  1. verify the Wechatpay-* headers over the raw body with m.Platform
//     (window, probes, serials) — failures wrap ErrSignature;
//  2. decode the envelope and require id, event_type TRANSACTION.SUCCESS,
//     resource_type encrypt-resource and the resource fields — failures
//     wrap ErrMalformedNotification;
//  3. decrypt the resource with m.APIv3Key — failures wrap ErrDecrypt;
//  4. parse the combine transaction and require combine_mchid = m.MchID,
//     combine_out_trade_no and sub-orders each with out_trade_no and
//     trade_state — failures wrap ErrMalformedNotification.
//
// A notifier answers 4xx/5xx on any error (WeChat Pay then retries) and
// 200/204 on success. Errors never include the body or the plaintext.
func ParseNotification(m *Merchant, h http.Header, body []byte) (*Notification, error) {
	if m == nil || m.Platform == nil {
		return nil, errors.New("wechat: notification: no merchant credentials")
	}
	if err := m.Platform.Verify(h, body); err != nil {
		return nil, fmt.Errorf("wechat: notification: %w", err)
	}
	var n Notification
	if err := json.Unmarshal(body, &n.Envelope); err != nil {
		return nil, fmt.Errorf("%w: envelope is not JSON of the expected shape", ErrMalformedNotification)
	}
	env := &n.Envelope
	switch {
	case env.ID == "":
		return nil, fmt.Errorf("%w: id is missing", ErrMalformedNotification)
	case env.EventType != EventTransactionSuccess:
		return nil, fmt.Errorf("%w: event_type %q is not %s", ErrMalformedNotification, env.EventType, EventTransactionSuccess)
	case env.ResourceType != ResourceTypeEncrypted:
		return nil, fmt.Errorf("%w: resource_type %q is not %s", ErrMalformedNotification, env.ResourceType, ResourceTypeEncrypted)
	case env.Resource.Algorithm == "":
		return nil, fmt.Errorf("%w: resource.algorithm is missing", ErrMalformedNotification)
	case env.Resource.Ciphertext == "":
		return nil, fmt.Errorf("%w: resource.ciphertext is missing", ErrMalformedNotification)
	case env.Resource.Nonce == "":
		return nil, fmt.Errorf("%w: resource.nonce is missing", ErrMalformedNotification)
	}
	pt, err := DecryptResource(m.APIv3Key, env.Resource)
	if err != nil {
		return nil, fmt.Errorf("wechat: notification %s: %w", env.ID, err)
	}
	if err := json.Unmarshal(pt, &n.Transaction); err != nil {
		return nil, fmt.Errorf("%w: notification %s: transaction is not JSON of the expected shape", ErrMalformedNotification, env.ID)
	}
	tx := &n.Transaction
	switch {
	case tx.CombineMchID != m.MchID:
		return nil, fmt.Errorf("%w: notification %s: combine_mchid %q is not merchant %s", ErrMalformedNotification, env.ID, tx.CombineMchID, m.MchID)
	case tx.CombineOutTradeNo == "":
		return nil, fmt.Errorf("%w: notification %s: combine_out_trade_no is missing", ErrMalformedNotification, env.ID)
	case len(tx.SubOrders) == 0:
		return nil, fmt.Errorf("%w: notification %s: sub_orders is empty", ErrMalformedNotification, env.ID)
	}
	for i, s := range tx.SubOrders {
		if s.OutTradeNo == "" || s.TradeState == "" {
			return nil, fmt.Errorf("%w: notification %s: sub_orders/%d lacks out_trade_no or trade_state", ErrMalformedNotification, env.ID, i)
		}
	}
	return &n, nil
}

// BuildNotification builds what WeChat Pay POSTs when combine order tx is
// paid: the TRANSACTION.SUCCESS envelope with tx encrypted under apiV3
// (AES-256-GCM, associated data and original type "transaction"), signed with
// the platform key under serial at time now. It answers the headers
// (Wechatpay-*, Content-Type) and the body. It is the counterpart of
// ParseNotification, for the simulator and for tests.
func BuildNotification(key PrivateKey, serial string, apiV3 APIv3Key, id string, createTime time.Time, tx *CombineOrder, now time.Time) (http.Header, []byte, error) {
	if tx == nil {
		return nil, nil, errors.New("wechat: build notification: transaction is nil")
	}
	pt, err := json.Marshal(tx)
	if err != nil {
		return nil, nil, fmt.Errorf("wechat: build notification: %w", err)
	}
	res, err := EncryptResource(apiV3, AssociatedDataTransaction, AssociatedDataTransaction, pt)
	if err != nil {
		return nil, nil, fmt.Errorf("wechat: build notification: %w", err)
	}
	body, err := MarshalBody(NotificationEnvelope{
		ID:           id,
		CreateTime:   createTime.Format(time.RFC3339),
		EventType:    EventTransactionSuccess,
		ResourceType: ResourceTypeEncrypted,
		Summary:      SummaryPaid,
		Resource:     res,
	})
	if err != nil {
		return nil, nil, err
	}
	h := make(http.Header)
	h.Set("Content-Type", "application/json")
	if err := SignResponseHeaders(h, key, serial, now.Unix(), NewNonce(), body); err != nil {
		return nil, nil, fmt.Errorf("wechat: build notification: %w", err)
	}
	return h, body, nil
}
