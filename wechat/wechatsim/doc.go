// Package wechatsim is a faithful WeChat Pay API v3 server for combine
// orders (合单支付), for tests (in process), the demo and load tests (the
// wechatsim command). Code that works against it should work against WeChat
// Pay: it checks what WeChat Pay checks and answers as WeChat Pay answers.
//
// # API
//
//	POST /v3/combine-transactions/{app|jsapi|h5|native|miniprogram}   create
//	GET  /v3/combine-transactions/out-trade-no/{combine_out_trade_no}   query
//	GET  /v3/combine-transactions/id/{combine_transaction_id}           query (individual flavour)
//	POST /v3/combine-transactions/out-trade-no/{combine_out_trade_no}/close  close (204)
//
// Every request is authenticated: the five Authorization pairs in any order,
// a known merchant and certificate serial, a timestamp within
// Config.ClockSkew, and a SHA256withRSA signature over the raw request target
// and raw body; any failure answers 401 SIGN_ERROR with WeChat Pay's nested
// detail. The path parameter is percent-decoded exactly once.
//
// Creates are validated with the flavour's rules ([wechat.Validate]; 400
// PARAM_ERROR with detail.field as a JSON pointer), combine_appid must be
// bound to the merchant (APPID_MCHID_NOT_MATCH) and every sub-order merchant
// must exist (MCH_NOT_EXISTS). Repeating a create with the same parameters
// answers the same prepay_id for PrepayValidity (h5_url: H5URLValidity), then
// a fresh one; different parameters or trade type answer 403
// OUT_TRADE_NO_USED; a closed order answers 400 ORDER_CLOSED and a paid one
// 400 INVALID_REQUEST. Close answers 204 repeatedly if its sub-orders match
// the created ones exactly, else 400 INVALID_REQUEST.
//
// Every 2xx (204 included) is signed in the configured [KeyMode]; every
// answer but an injected 502 carries a Request-ID, ending "-<code number>"
// for errors.
//
// # Faults
//
// [FaultConfig] injects, at configurable rates, 500 SYSTEMERROR, 500
// BANKERROR, 429 FREQUENCY_LIMITED, 502 with no body, a create that commits
// and then never answers, WECHATPAY/SIGNTEST/ signature probes and unsigned
// error answers, plus a per-merchant request rate limit and latency with
// jitter. [Server.SetFaults] and PUT /sim/faults change them at run time.
//
// # Payment and notifications
//
// [Server.Pay] (or POST /sim/pay/{mchid}/{combine_out_trade_no}) pays an
// order and POSTs a signed TRANSACTION.SUCCESS notification, its resource
// AES-256-GCM encrypted with the merchant's APIv3 key, to notify_url. A
// delivery counts when answered 2xx within NotifyTimeout; otherwise it is
// retried after 15s, 15s, 30s, 3m, 10m, 20m, 30m, 30m, 30m, 60m, 3h, 3h, 3h,
// 6h and 6h, each divided by Config.NotifySpeedup.
//
// # Accounting
//
// [Server.Stats] (GET /sim/stats) counts requests, answers, faults, order
// numbers, repeated and conflicting creates, and notifications;
// [Server.Order] (GET /sim/orders/{mchid}/{combine_out_trade_no}) answers an
// order with its create calls and their distinct outcomes.
//
// # Keys
//
// [GeneratePlatform] and [GenerateMerchant] make matching credentials for
// both sides; [WriteKeys] writes them in the layout [wechat.LoadMerchant]
// reads and [LoadKeys] reads them back.
package wechatsim
