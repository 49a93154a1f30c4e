// Package wechat is a WeChat Pay API v3 client for combine orders (合单支付):
// typed requests and answers, local validation, request signing, response
// and notification verification, AES-256-GCM decryption, client pay
// parameters and typed errors. It serves several merchants from one process
// and stays quiet unless given a [slog.Logger].
//
// # Endpoints
//
// [Client] covers every combine endpoint on https://api.mch.weixin.qq.com:
//
//	POST /v3/combine-transactions/{app,jsapi,h5,native,miniprogram}  CreateCombineOrder → prepay_id, h5_url or code_url
//	GET  /v3/combine-transactions/out-trade-no/{combine_out_trade_no}  QueryByOutTradeNo
//	GET  /v3/combine-transactions/id/{combine_transaction_id}         QueryByTransactionID (individual payees)
//	POST /v3/combine-transactions/out-trade-no/{…}/close              Close → 204, still signed
//
// jsapi also serves ordinary mini programs; miniprogram is the
// individual-payee (个人收款) endpoint. Path parameters are escaped exactly once
// with url.PathEscape, and the escaped target is what is both sent and
// signed. Bodies are JSON without null: optional fields are omitted.
//
// # Flavour
//
// The same paths are documented in four products with different rules, so
// the [Flavour] is configuration ([Config].Flavour), never inferred:
//
//	flavour     sub-orders  sub_mchid          other
//	merchant    2–10        absent             —
//	partner     1–50        required           sub_appid allowed
//	ecommerce   1–50        required           one sub-order per sub_mchid
//	individual  1–10        absent             individual_auth_id required; only miniprogram and app;
//	                                           notify_url optional; trade_scenario RECOMMERCE
//
// [Validate] checks a create request before anything is sent and answers the
// first problem as a [*ValidationError] with a JSON pointer
// (/sub_orders/3/out_trade_no) and the rule broken; errors.Is(err, ErrInvalid)
// matches it. [CombineOrderRequest] holds every field of the five endpoints'
// request tables and OpenAPI descriptions (among them sub_orders[].goods_tag,
// sub_appid, profit_sharing and settle_info{profit_sharing, subsidy_amount},
// combine_payer_info{openid, sub_openid, identity}, limit_pay,
// scene_info.h5_info, contract_info, subsidy_info.subsidy_detail); a field
// the endpoint does not define must be absent (detail, profit_sharing and
// subsidy_info not on h5 and native; time_start, limit_pay, goods_tag,
// settle_info not on miniprogram; order_service_type only there;
// trade_scenario and contract_info only on app and miniprogram, resp. app).
// The rules: required fields per trade type (jsapi and miniprogram need
// combine_payer_info.openid; h5 needs scene_info with device_id,
// payer_client_ip and h5_info.type); every string valid UTF-8 of 1- to 3-byte
// characters only ("仅支持UTF-8字符编码的一个子集：使用一至三个字节编码的字
// 符"); lengths in bytes (combine_appid, combine_mchid, mchid, sub_mchid,
// sub_appid, goods_tag ≤32; attach ≤128; description ≤127; detail ≤6000;
// openid, sub_openid ≤128; individual_auth_id ≤64; device_id 7–16;
// payer_client_ip an IP ≤45); order numbers of digits, letters and _-|*@
// ([ValidOrderNo], the merchant, partner and e-commerce tables) or _-|@ on
// the individual-payee miniprogram page ([ValidIndividualOrderNo]), with
// combine_out_trade_no of [MinCombineOutTradeNoLength] (6, e-commerce 2,
// individual 1) to 32 and out_trade_no of 6–32 characters, unique within the
// order; RFC 3339 time_start and time_expire (the leap second :60 of WeChat
// Pay's own examples included); notify_url an absolute https URL ≤255 bytes
// without query or fragment (http is accepted for loopback hosts only, for
// local development and the simulator); total_amount 1–[MaxSubOrderAmount]
// fen in CNY; limit_pay values no_balance, no_debit, balance_only, each once.
// [DecodeCreateRequest] reads a raw body as WeChat Pay does (exact,
// case-sensitive keys, no JSON null, valid UTF-8, typed numbers), which
// encoding/json does not; [CheckJSON] is that check alone, used by the job
// decoder. [ValidateClose] checks close requests. The simulator reads the
// same contract independently (package wechatsim, "Request rules"), and a
// contract test holds the two readings against each other.
//
// # Signing
//
// Every request carries Authorization: WECHATPAY2-SHA256-RSA2048 with mchid,
// serial_no (the merchant certificate serial), timestamp, a 32-character
// nonce from crypto/rand and the Base64 SHA256withRSA signature of
//
//	METHOD\nREQUEST-TARGET\nTIMESTAMP\nNONCE\nBODY\n
//
// over the exact bytes sent ([RequestMessage], [SignRequest]). The request's
// Wechatpay-Serial header names the platform key the client prefers
// ([Verifier.Serials], public key first), so WeChat Pay signs the answer
// with a key the client knows. Client pay parameters are signed with the
// same merchant key: [Client.JSAPIPayParams], [Client.MiniProgramPayParams]
// (signed with combine_appid, which wx.requestPayment does not take) and
// [Client.AppPayParams] (signed over the bare prepay_id); the Sign… functions
// take the timestamp and nonce for reproducible tests.
//
// # Verification
//
// Every 2xx answer, 204 included, is verified before it is trusted
// ([Verifier.Verify]): the four Wechatpay-Timestamp/-Nonce/-Signature/-Serial
// headers over TIMESTAMP\nNONCE\nBODY\n, a timestamp within five minutes of
// an injectable clock, a serial the merchant trusts — platform certificates
// (hex serials, several at once for rotation) and the WeChat Pay public key
// (PUB_KEY_ID_…), both together during a migration — and WECHATPAY/SIGNTEST/
// probes rejected. Failures wrap [ErrSignature]. Error answers (non-2xx) are
// not verified: they often lack the headers, and they are reported as the
// [*APIError] they are, never as a signature failure.
//
// # Retries
//
// The client never retries. [Retryable] says whether a failed call may be
// repeated with the same parameters: SYSTEMERROR, BANKERROR,
// FREQUENCY_LIMITED and any 429 (both spellings of each code:
// SYSTEM_ERROR, BANK_ERROR, RATELIMIT_EXCEEDED), and failures whose outcome
// is unknown — [*TransportError], timeouts, a 5xx without a WeChat code. A
// canceled context, a local [*ValidationError], a signature failure and
// every other WeChat code are not retryable. After an unknown outcome, query
// or re-send with the same order number, never a new one. A default per-call
// timeout ([Config].Timeout, 10s) applies only when the context has no
// deadline; answers are read up to [ResponseBodyLimit].
//
// # Notifications
//
// [ParseNotification] (or [Client.ParseNotification], which picks the
// merchant by Wechatpay-Serial) verifies the signature and time window over
// the raw body first, then decodes the envelope, decrypts the
// AEAD_AES_256_GCM resource with the 32-byte APIv3 key (other sizes are
// rejected) and parses the combine transaction with all sub-orders. Failures
// wrap exactly one of [ErrSignature], [ErrMalformedNotification] and
// [ErrDecrypt], so a notifier can count them apart. [BuildNotification] makes
// a signed, encrypted notification for the simulator and tests.
//
// Private keys and APIv3 keys print as REDACTED in every fmt verb, in slog
// records and in JSON; errors never quote bodies or keys.
package wechat
