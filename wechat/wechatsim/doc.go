// Package wechatsim is a faithful WeChat Pay API v3 server for combine
// orders (合单支付), for tests (in process), the demo and load tests (the
// wechatsim command). Code that works against it should work against WeChat
// Pay: it checks what WeChat Pay checks and answers as WeChat Pay answers.
// It judges requests by the published contract, read independently of
// package wechat: it imports wechat only for the signing primitives, the
// configuration's flavour and trade-type names, and the answer types.
//
// Sources are cited as in the research notes the product was specified
// from: SEED000 (individual-payee miniprogram page), SEED002 (e-commerce
// JSAPI table), SEED003 (e-commerce APP table, 2022.03.17), OAPI
// (TheNorthMemory/wechatpay-openapi, vendored in package contract), RULES
// (the API v3 basic interface rules, pay.weixin.qq.com …/interface-rules/
// basic-rules.html and the wechatpay-api-v3 gitbook), SKILLS (the
// wechatpay-apiv3/wechatpay-skills handbooks).
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
// Config.ClockSkew of the wall clock, and a SHA256withRSA signature over the
// raw request target and raw body; any failure answers 401 SIGN_ERROR with
// WeChat Pay's nested detail. An authenticated request without a User-Agent
// ("将拒绝处理无User-Agent的请求", RULES) or whose Accept does not admit
// application/json ("请求须设置HTTP头部 Accept: application/json", RULES)
// answers 400 INVALID_REQUEST naming the header; Accept */* and
// application/* admit JSON (the official Go SDK sends */*). The docs give
// neither the code nor the order of these checks: authentication comes
// first, so a bad signature is a 401 whatever the headers. The path
// parameter is percent-decoded exactly once.
//
// # Request rules
//
// A create body is checked in three steps, each answering 400 PARAM_ERROR
// with detail.field as a JSON pointer and detail.location "body":
//
//  1. The endpoint's OpenAPI body schema (package contract, corrections in
//     contract/CORRECTIONS.md), compiled with santhosh-tekuri/jsonschema and
//     made strict: every object refuses keys it does not define, so an
//     unknown key and a case-variant key (Combine_AppID) name themselves;
//     JSON null is refused wherever a value is (a 2024 RULES page: "参数使
//     用 JSON 的数据类型 … 不允许使用 null"; other RULES pages say a null
//     value "可以省略" — the simulator takes the strict reading, so a client
//     that sends null is caught);
//     wrong types and enum values are refused.
//  2. The character set: every string must be valid UTF-8 of 1- to 3-byte
//     characters ("仅支持UTF-8字符编码的一个子集：使用一至三个字节编码的字
//     符", RULES); invalid bytes and \uD800–\uDFFF escapes (a 4-byte
//     character or a lone surrogate) are refused, which a JSON decoder
//     would silently turn into U+FFFD.
//  3. The rules a schema cannot say (rules.go): lengths in UTF-8 bytes
//     (string(N) of SEED002/SEED003: appid, mchid, sub_mchid, sub_appid,
//     goods_tag 32; attach 128; description 127, the current pages' limit
//     where SEED002 says 128; detail 6000; openid 128; individual_auth_id
//     64; payer_client_ip 45 and an IP; device_id 7–16, "特殊规则：长度最小7
//     个字节", required on h5 by OAPI h5.yaml; notify_url 255); order
//     numbers of digits, letters and _-|*@ (SEED002, SEED003), _-|@ on the
//     individual-payee prepay page (miniprogram); combine_out_trade_no at
//     least 6 characters in the merchant and partner flavours ("6~32个字
//     符"), 2 in e-commerce ("最短2个字符"), 1 for individual payees;
//     out_trade_no 6–32 ("最小字符长度为6"), unique in the order; sub-order
//     counts 2–10 (merchant), 1–50 (partner, e-commerce), 1–10 (individual);
//     one sub-order per sub_mchid in e-commerce ("合单中同一个二级商户只允许
//     有一笔子订单", SEED002; the merchant FAQ allows repeats); sub_mchid
//     required in partner and e-commerce and absent otherwise,
//     individual_auth_id required for and trade_scenario reserved to
//     individual payees; total_amount 1–10,000,000 fen ("1000万", SKILLS) in
//     CNY; notify_url https without parameters ("不能携带参数"; plain http
//     only to loopback); RFC 3339 times (the leap second :60 of OAPI's
//     examples accepted); limit_pay values each once.
//
// Then combine_mchid must be the signing merchant, combine_appid bound to it
// (APPID_MCHID_NOT_MATCH) and every sub-order merchant known
// (MCH_NOT_EXISTS). Close bodies go through close.yaml and the same rules.
//
// # Answers
//
// Repeating a create with the same parameters answers the same prepay_id
// while it is valid (2 h, "该值有效期为2小时", SEED003; h5_url 5 min), then
// a new one: the docs say nothing of an identical repeat after expiry;
// SKILLS ("同一单号只能用完全相同的参数重新请求") and the common advice to
// re-request an expired prepay_id with the same order number led to this
// reading, and the order stays payable. Different parameters or trade type
// answer 403 OUT_TRADE_NO_USED; a closed order 400 ORDER_CLOSED; an order
// past its lifetime (its time_expire when that was in the future at
// creation, else 7 days, SKILLS 排障手册 §六) 400 ORDER_CLOSED "该订单已失效"
// (268447914); a paid one 400 INVALID_REQUEST "订单已支付" (268449538).
// Close answers 204, repeatedly ("关单接口可重入"), if its sub-orders match
// the created ones exactly, else 400 INVALID_REQUEST; closing a paid order
// answers 400 INVALID_REQUEST "订单已支付" ("closing a paid order fails",
// SKILLS; the code is not given, INVALID_REQUEST is where WeChat Pay files
// business-state refusals); closing or querying an unknown order answers
// 404 ORDERNOTEXIST.
//
// Queries report each sub-order's trade_state: NOTPAY, SUCCESS, REFUND,
// CLOSED or PAYERROR (OAPI query.yaml); a paid sub-order carries
// transaction_id, trade_type, bank_type OTHERS, success_time and
// payer_amount, lower than total_amount with a promotion_detail when the
// payment had a discount ([PayOptions.Discount]). Answers validate against
// query.yaml's answer schema with two readings of what the docs leave open:
// payer_amount (required there) is left out until a sub-order is paid, and
// combine_transaction_id (required there, absent from the merchant page and
// the official Go sample) is answered to individual payees only.
//
// Error codes come in both spellings WeChat Pay uses: the combine tables'
// SYSTEMERROR and ORDERNOTEXIST (SEED002, SEED003) and the common table's
// SYSTEM_ERROR and ORDER_NOT_EXIST (RULES); FaultConfig.CodeSpelling picks
// one or mixes them. Every 2xx (204 included) is signed in the configured
// [KeyMode]; error answers are signed too unless FaultConfig.UnsignedErrors
// or UnsignedErrorRate says otherwise (real error answers may lack the
// headers, TheNorthMemory/wechatpay-axios-plugin#30). Every answer but an
// injected bodiless 502 carries a Request-ID, ending "-<code number>" for
// errors.
//
// # Faults
//
// [FaultConfig] injects, at configurable rates, 500 SYSTEMERROR, 500
// BANKERROR, 429 FREQUENCY_LIMITED, 502 with no body (a proxy), 502 or 503
// SERVICE_UNAVAILABLE with a JSON body (the common table's answer for both,
// RULES), a create that commits and then never answers, WECHATPAY/SIGNTEST/
// signature probes, unsigned error answers and dropped notifications, plus a
// per-merchant request rate limit and latency with jitter. [Server.SetFaults]
// and PUT /sim/faults change them at run time.
//
// # Payment and notifications
//
// [Server.Pay] (or POST /sim/pay/{mchid}/{combine_out_trade_no}) pays an
// order and POSTs a signed TRANSACTION.SUCCESS notification, its resource
// AES-256-GCM encrypted with the merchant's APIv3 key, to notify_url. A
// delivery counts when answered 2xx within NotifyTimeout; otherwise it is
// retried after 15s, 15s, 30s, 3m, 10m, 20m, 30m, 30m, 30m, 60m, 3h, 3h, 3h,
// 6h and 6h, each divided by Config.NotifySpeedup. [Server.PayWith] (or
// ?notify=false&discount=N) pays without sending the notification or with
// a discount; FaultConfig.NotifyDropRate loses a share of notifications for
// good (WeChat Pay does not guarantee delivery, SKILLS 回调通知处理.md): only
// a query tells the merchant.
// [Server.SetTradeState] (PUT /sim/orders/{mchid}/{no}/trade-state with
// {"trade_states": ["REFUND"]}) puts an order's sub-orders into any trade
// states, one for all or one each, without a notification.
//
// # Clock
//
// Orders follow a business clock: Config.NowFunc moved by [Server.SetNow]
// and [Server.Advance] (GET and POST /sim/clock with {"now": RFC 3339} or
// {"advance": "2h"}). Prepay validity, order lifetime, success times and
// notification times follow it; authentication, answer signatures and the
// rate limit follow the wall clock, so a client keeps working while the
// clock is hours ahead.
//
// # Accounting
//
// [Server.Stats] (GET /sim/stats) counts requests, answers, faults, order
// numbers, repeated and conflicting creates, and notifications;
// [Server.Order] (GET /sim/orders/{mchid}/{combine_out_trade_no}) answers an
// order with its create calls and their distinct outcomes. [Server.Ledger]
// and [Server.Ledgers] (GET /sim/ledger[/{mchid}/{no}]) answer, read-only,
// per order every prepay_id issued with its validity, and per sub-order the
// trade state, transaction_id, total and payer amounts: what WeChat Pay did,
// for checkers comparing a service's events against it.
//
// # Keys
//
// [GeneratePlatform] and [GenerateMerchant] make matching credentials for
// both sides; [WriteKeys] writes them in the layout [wechat.LoadMerchant]
// reads and [LoadKeys] reads them back.
package wechatsim
