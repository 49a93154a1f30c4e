package wechat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
)

// APIError is an error answer from WeChat Pay: a non-2xx status with the
// {"code","message","detail"} body. It matches sentinels by code with
// errors.Is, both spellings included (SYSTEMERROR and SYSTEM_ERROR):
//
//	if errors.Is(err, wechat.ErrOutTradeNoUsed) { … }
//	var apiErr *wechat.APIError
//	if errors.As(err, &apiErr) { log(apiErr.RequestID) }
type APIError struct {
	StatusCode int
	Code       string // WeChat's code, e.g. "PARAM_ERROR"; empty when the body had none
	Message    string
	// Detail is the raw "detail" object. Its shape varies: PARAM_ERROR has
	// {field, value, issue, location}; SIGN_ERROR nests another object.
	Detail json.RawMessage
	// RequestID is the Request-ID header; quote it to WeChat Pay support.
	RequestID string
}

// Error formats the status, code and message, never the request.
func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "wechat: HTTP %d", e.StatusCode)
	if e.Code != "" {
		b.WriteString(" " + e.Code)
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	if f := e.Field(); f != "" {
		b.WriteString(" (field " + f + ")")
	}
	if e.RequestID != "" {
		b.WriteString(" [request " + e.RequestID + "]")
	}
	return b.String()
}

// Is matches another *APIError by code, so sentinels work with errors.Is.
// SYSTEMERROR/SYSTEM_ERROR and the other spelling pairs are the same code. A
// sentinel with only a StatusCode matches by status.
func (e *APIError) Is(target error) bool {
	t, ok := target.(*APIError)
	if !ok {
		return false
	}
	if t.Code == "" {
		return t.StatusCode != 0 && t.StatusCode == e.StatusCode
	}
	return NormalizeCode(t.Code) == NormalizeCode(e.Code)
}

// Field answers detail.field, the JSON pointer of a PARAM_ERROR, if any.
func (e *APIError) Field() string {
	var d struct {
		Field string `json:"field"`
	}
	if len(e.Detail) > 0 && json.Unmarshal(e.Detail, &d) == nil {
		return d.Field
	}
	return ""
}

// NormalizeCode maps the spellings of one code to a single form: WeChat's
// newer docs write SYSTEM_ERROR, ORDER_NOT_EXIST and NO_AUTH where the combine
// tables write SYSTEMERROR, ORDERNOTEXIST and NOAUTH; RATELIMIT_EXCEEDED is
// the generic name of FREQUENCY_LIMITED.
func NormalizeCode(code string) string {
	switch c := strings.ToUpper(code); c {
	case "SYSTEM_ERROR":
		return "SYSTEMERROR"
	case "BANK_ERROR":
		return "BANKERROR"
	case "ORDER_NOT_EXIST", "ORDER_NOT_EXISTS":
		return "ORDERNOTEXIST"
	case "NO_AUTH":
		return "NOAUTH"
	case "RATELIMIT_EXCEEDED", "RATE_LIMIT_EXCEEDED":
		return "FREQUENCY_LIMITED"
	default:
		return c
	}
}

// Sentinels for the codes of the combine endpoints, for errors.Is.
var (
	ErrSystem               = &APIError{Code: "SYSTEMERROR"}           // 500: retry with the same parameters
	ErrBank                 = &APIError{Code: "BANKERROR"}             // 500: retry with the same parameters
	ErrFrequencyLimited     = &APIError{Code: "FREQUENCY_LIMITED"}     // 429: slow down and retry
	ErrParam                = &APIError{Code: "PARAM_ERROR"}           // 400
	ErrInvalidRequest       = &APIError{Code: "INVALID_REQUEST"}       // 400
	ErrOrderClosed          = &APIError{Code: "ORDER_CLOSED"}          // 400: create again with a new order number
	ErrMchNotExists         = &APIError{Code: "MCH_NOT_EXISTS"}        // 400
	ErrAppIDMchIDMismatch   = &APIError{Code: "APPID_MCHID_NOT_MATCH"} // 400
	ErrSign                 = &APIError{Code: "SIGN_ERROR"}            // 401
	ErrNoAuth               = &APIError{Code: "NOAUTH"}                // 403
	ErrTrade                = &APIError{Code: "TRADE_ERROR"}           // 403
	ErrRuleLimit            = &APIError{Code: "RULELIMIT"}             // 403
	ErrOutTradeNoUsed       = &APIError{Code: "OUT_TRADE_NO_USED"}     // 403: same number, different parameters
	ErrAccount              = &APIError{Code: "ACCOUNTERROR"}          // 403
	ErrNotEnough            = &APIError{Code: "NOTENOUGH"}             // 403
	ErrOrderNotExist        = &APIError{Code: "ORDERNOTEXIST"}         // 404
	ErrOpenIDMismatch       = &APIError{Code: "OPENID_MISMATCH"}       // 500: not retryable, the openid is wrong
	ErrInvalidTransactionID = &APIError{Code: "INVALID_TRANSACTIONID"} // 500
	ErrUserPaying           = &APIError{Code: "USERPAYING"}            // 202
	ErrServiceUnavailable   = &APIError{Code: "SERVICE_UNAVAILABLE"}   // 502/503: retry with the same parameters
)

// finalServerCodes are the 5xx codes that are not retried: WeChat Pay's
// tables give them for a wrong parameter, not for a failure of its own
// (OPENID_MISMATCH: the openid does not belong to the appid;
// INVALID_TRANSACTIONID: no such transaction).
var finalServerCodes = map[string]bool{"OPENID_MISMATCH": true, "INVALID_TRANSACTIONID": true}

// operatorCodes are the codes an operator fixes, never the order: the
// request was refused before WeChat Pay looked at the order (a wrong key,
// serial or clock: SIGN_ERROR; a product not enabled: NOAUTH; a wrong
// merchant or appid binding).
var operatorCodes = map[string]bool{"SIGN_ERROR": true, "NOAUTH": true, "MCH_NOT_EXISTS": true, "APPID_MCHID_NOT_MATCH": true}

// Retryable reports whether a call that failed with err may be retried with
// the same parameters: every 429 (FREQUENCY_LIMITED, RATELIMIT_EXCEEDED),
// every 5xx with or without a code (SYSTEMERROR/SYSTEM_ERROR, BANKERROR,
// 502/503 SERVICE_UNAVAILABLE, a proxy's bare 502) except OPENID_MISMATCH and
// INVALID_TRANSACTIONID, and failures whose outcome is unknown — transport
// errors, timeouts and 2xx answers whose signature does not verify (see
// UnknownOutcome). The interface rules say of every 5xx: "使用原请求参数重试即
// 可". Every other WeChat error and a local validation error are not
// retryable. A canceled parent context is not retryable either: the caller
// gave up.
func Retryable(err error) bool {
	if err == nil {
		return false
	}
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		if apiErr.StatusCode == http.StatusTooManyRequests {
			return true
		}
		code := NormalizeCode(apiErr.Code)
		if apiErr.StatusCode >= 500 {
			return !finalServerCodes[code]
		}
		return code == "SYSTEMERROR" || code == "BANKERROR" || code == "FREQUENCY_LIMITED" || code == "SERVICE_UNAVAILABLE"
	}
	if errors.Is(err, context.Canceled) {
		return false
	}
	return UnknownOutcome(err)
}

// OperatorError reports whether err is a refusal an operator fixes rather
// than a verdict on the order: SIGN_ERROR (a wrong key or serial, or a
// skewed clock), NOAUTH, MCH_NOT_EXISTS, APPID_MCHID_NOT_MATCH, any 401, an
// unknown merchant, or a missing or unreadable key. WeChat Pay did not act
// on such a request, so the same order may be sent again after the fix.
func OperatorError(err error) bool {
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		return apiErr.StatusCode == http.StatusUnauthorized || operatorCodes[NormalizeCode(apiErr.Code)]
	}
	return errors.Is(err, ErrUnknownMerchant) || errors.Is(err, ErrNoKey)
}

// OrderMayExist reports whether a create answer says the order number is
// taken — already paid (INVALID_REQUEST "订单已支付", ORDERPAID), closed
// (ORDER_CLOSED) or used with other parameters (OUT_TRADE_NO_USED) — so
// that WeChat Pay's own record of the order, not the answer alone, says
// what happened to it.
func OrderMayExist(err error) bool {
	var apiErr *APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	switch NormalizeCode(apiErr.Code) {
	case "INVALID_REQUEST", "ORDERPAID", "ORDER_CLOSED", "OUT_TRADE_NO_USED":
		return true
	}
	return false
}

// UnknownOutcome reports whether err leaves it unknown if WeChat Pay acted on
// the request: a timeout, a transport error, a 5xx without a WeChat code, or
// an answer whose signature does not verify. The last one includes the
// WECHATPAY/SIGNTEST/ probes WeChat Pay deliberately sends: the order may
// well exist, but an unverified answer must not be trusted, so the call is
// repeated and WeChat Pay answers the same prepay_id, properly signed. A
// retry must always use the same parameters (the same order number), never
// a new one.
func UnknownOutcome(err error) bool {
	if errors.Is(err, ErrSignature) {
		return true
	}
	var te *TransportError
	if errors.As(err, &te) {
		return true
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	var apiErr *APIError
	return errors.As(err, &apiErr) && apiErr.Code == "" && apiErr.StatusCode >= 500
}

// TransportError reports a request whose answer never arrived or could not be
// read. Whether WeChat Pay acted on it is unknown.
type TransportError struct {
	Op  string // e.g. "POST /v3/combine-transactions/jsapi"
	Err error
}

// Error names the operation and the cause.
func (e *TransportError) Error() string { return "wechat: " + e.Op + ": " + e.Err.Error() }

// Unwrap answers the cause.
func (e *TransportError) Unwrap() error { return e.Err }
