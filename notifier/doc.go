// Package notifier receives WeChat Pay's payment notifications for combine
// orders and publishes them to JetStream as [events.PaymentSucceeded], losing
// none and accepting no forgery.
//
// # Endpoint
//
// [Handler] serves POST /v3/notify/{mchid}: the merchant is in the path
// because one URL cannot tell merchants apart before the signature is
// verified, and WeChat Pay forbids a query string in notify_url. Configure
// each combine order's notify_url as
//
//	https://<public host>/v3/notify/<combine_mchid>
//
// # Order of checks
//
// Work before the signature is verified is bounded and cheap first, so a
// flood of forgeries cannot starve genuine notifications:
//
//  1. method, path and merchant (405, 404);
//  2. Content-Length against [Config.MaxBodySize] (413);
//  3. the Wechatpay-* headers: present, a timestamp within five minutes, a
//     known serial, not a WECHATPAY/SIGNTEST/ probe (401) — no body read yet;
//  4. the body, at most MaxBodySize bytes through [http.MaxBytesReader]
//     (413), within [Config.BodyTimeout] set as the connection's read
//     deadline (408): it is read before any shared place is taken, so a
//     sender that trickles its body in holds nothing a genuine notification
//     needs, and is cut off;
//  5. admission among [Config.MaxConcurrentRequests] (complete bodies
//     waiting), then a slot among [Config.MaxConcurrentVerifications], which
//     bounds the CPU-bound work, then the RSA signature over the raw body
//     (401). Each wait for capacity lasts at most [Config.SlotWait], then
//     503 (WeChat Pay retries) and orderworker_notifier_shed_total counts
//     the stage: forgeries that carry a real serial delay a genuine
//     notification by milliseconds instead of turning it away;
//  6. decryption with the merchant's APIv3 key (400) and the combine
//     transaction (400);
//  7. the payment check ([events.CheckPaid]: every sub-order SUCCESS,
//     consistent amounts; otherwise 200 and nothing published, see
//     payments.go) and the payments-seen record shared with the workers
//     ([Config.Seen]: a payment already published answers 200);
//  8. publication with Nats-Msg-Id [events.PaymentSucceededMsgID] (one per
//     order, shared with the workers' reconciliation), waiting
//     for JetStream's PubAck at most [Config.PublishTimeout] (500 on
//     failure, so WeChat Pay retries), then the record.
//
// Only a stored event is acknowledged: 204 No Content when JetStream stored
// it, 200 {"code":"SUCCESS"} when JetStream reported a duplicate (WeChat Pay
// sent the notification again). Every failure answers WeChat Pay's
// {"code":"FAIL","message":…} with a fixed message per [Result]; details go
// to the log only.
//
// [NewServer] builds the public server with the limits slow senders meet:
// ReadHeaderTimeout, MaxHeaderBytes, the per-request body deadline.
//
// # Logs and personal data
//
// Records carry the merchant, the notification id, the combine order number,
// the number of sub-orders, the stream sequence and the result. They never
// carry the body, the plaintext, openids, amounts, attach or bank types; the
// APIv3 key and private keys redact themselves.
package notifier
