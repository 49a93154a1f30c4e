package wechat

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"
)

// TestRetryable_SeedCodes covers every row of the error tables of the combine
// create pages (seeds 002 and 003 carry the same table) plus the other
// spelling of each code that has one.
func TestRetryable_SeedCodes(t *testing.T) {
	tests := []struct {
		status    int
		code      string
		sentinel  *APIError
		retryable bool
	}{
		{202, "USERPAYING", ErrUserPaying, false},
		{403, "TRADE_ERROR", ErrTrade, false},
		{500, "SYSTEMERROR", ErrSystem, true},
		{500, "SYSTEM_ERROR", ErrSystem, true},
		{401, "SIGN_ERROR", ErrSign, false},
		{403, "RULELIMIT", ErrRuleLimit, false},
		{400, "PARAM_ERROR", ErrParam, false},
		{403, "OUT_TRADE_NO_USED", ErrOutTradeNoUsed, false},
		{404, "ORDERNOTEXIST", ErrOrderNotExist, false},
		{404, "ORDER_NOT_EXIST", ErrOrderNotExist, false},
		{400, "ORDER_CLOSED", ErrOrderClosed, false},
		{500, "OPENID_MISMATCH", ErrOpenIDMismatch, false},
		{403, "NOTENOUGH", ErrNotEnough, false},
		{403, "NOAUTH", ErrNoAuth, false},
		{403, "NO_AUTH", ErrNoAuth, false},
		{400, "MCH_NOT_EXISTS", ErrMchNotExists, false},
		{500, "INVALID_TRANSACTIONID", ErrInvalidTransactionID, false},
		{400, "INVALID_REQUEST", ErrInvalidRequest, false},
		{429, "FREQUENCY_LIMITED", ErrFrequencyLimited, true},
		{429, "RATELIMIT_EXCEEDED", ErrFrequencyLimited, true},
		{500, "BANKERROR", ErrBank, true},
		{500, "BANK_ERROR", ErrBank, true},
		{400, "APPID_MCHID_NOT_MATCH", ErrAppIDMchIDMismatch, false},
		{403, "ACCOUNTERROR", ErrAccount, false},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			body := fmt.Sprintf(`{"code":%q,"message":"m","detail":{"field":"/sub_orders/0/amount","issue":"x"}}`, tt.code)
			h := http.Header{}
			h.Set(HeaderRequestID, "08F78BB5AF0610D302-268435456")
			apiErr := ParseAPIError(tt.status, h, []byte(body))
			err := fmt.Errorf("create order: %w", apiErr)
			if got := Retryable(err); got != tt.retryable {
				t.Errorf("Retryable(%s) = %v, want %v", tt.code, got, tt.retryable)
			}
			if !errors.Is(err, tt.sentinel) {
				t.Errorf("errors.Is(%s, %s) = false, want true", tt.code, tt.sentinel.Code)
			}
			if errors.Is(err, ErrParam) != (tt.code == "PARAM_ERROR") {
				t.Errorf("errors.Is(%s, ErrParam) is wrong", tt.code)
			}
			var as *APIError
			if !errors.As(err, &as) || as.RequestID != "08F78BB5AF0610D302-268435456" || as.Field() != "/sub_orders/0/amount" || as.StatusCode != tt.status {
				t.Errorf("errors.As() = %+v, want status, request ID and field", as)
			}
			if UnknownOutcome(err) {
				t.Errorf("UnknownOutcome(%s) = true, want false: WeChat Pay answered", tt.code)
			}
		})
	}
}

func TestRetryable_Other(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"429 without code", &APIError{StatusCode: 429}, true},
		{"502 from a proxy", &APIError{StatusCode: 502}, true},
		{"503 SERVICE_UNAVAILABLE (interface rules: retry every 5xx)", &APIError{StatusCode: 503, Code: "SERVICE_UNAVAILABLE"}, true},
		{"502 SERVICE_UNAVAILABLE", &APIError{StatusCode: 502, Code: "SERVICE_UNAVAILABLE"}, true},
		{"500 SYSTEM_ERROR, newer spelling", &APIError{StatusCode: 500, Code: "SYSTEM_ERROR"}, true},
		{"500 with a code the tables do not list", &APIError{StatusCode: 500, Code: "INTERNAL"}, true},
		{"429 RATELIMIT_EXCEEDED", &APIError{StatusCode: 429, Code: "RATELIMIT_EXCEEDED"}, true},
		{"500 OPENID_MISMATCH is a parameter error", &APIError{StatusCode: 500, Code: "OPENID_MISMATCH"}, false},
		{"500 INVALID_TRANSACTIONID is a parameter error", &APIError{StatusCode: 500, Code: "INVALID_TRANSACTIONID"}, false},
		{"401 SIGN_ERROR", &APIError{StatusCode: 401, Code: "SIGN_ERROR"}, false},
		{"404 without code", &APIError{StatusCode: 404}, false},
		{"transport error", &TransportError{Op: "POST /v3/combine-transactions/app", Err: errors.New("connection reset")}, true},
		{"deadline", fmt.Errorf("call: %w", context.DeadlineExceeded), true},
		{"caller canceled", &TransportError{Op: "GET x", Err: context.Canceled}, false},
		{"net error", &net.OpError{Op: "dial", Err: errors.New("refused")}, true},
		{"validation", &ValidationError{Field: "/combine_appid", Issue: "is required"}, false},
		{"unverified answer: outcome unknown", fmt.Errorf("verify: %w", ErrSignature), true},
		{"unknown merchant", ErrUnknownMerchant, false},
		{"plain", errors.New("boom"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Retryable(tt.err); got != tt.want {
				t.Errorf("Retryable(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestAPIError_Error(t *testing.T) {
	e := ParseAPIError(400, http.Header{HeaderRequestID: {"R-1"}}, []byte(`{"code":"PARAM_ERROR","message":"参数错误","detail":{"field":"/amount/currency","value":"XYZ","issue":"bad","location":"body"}}`))
	want := "wechat: HTTP 400 PARAM_ERROR: 参数错误 (field /amount/currency) [request R-1]"
	if got := e.Error(); got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	e = ParseAPIError(502, http.Header{}, []byte("<html>bad gateway</html>"))
	if e.Code != "" || e.Error() != "wechat: HTTP 502" {
		t.Errorf("ParseAPIError(html) = %+v (%q), want no code", e, e.Error())
	}
	// SIGN_ERROR nests its detail: the raw detail is kept.
	e = ParseAPIError(401, http.Header{}, []byte(`{"code":"SIGN_ERROR","detail":{"detail":{"issue":"sign not match"},"field":"signature"},"message":"验签失败"}`))
	if e.Field() != "signature" || len(e.Detail) == 0 {
		t.Errorf("ParseAPIError(SIGN_ERROR) = %+v, want its detail kept", e)
	}
}

func TestOperatorError(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"SIGN_ERROR", &APIError{StatusCode: 401, Code: "SIGN_ERROR"}, true},
		{"401 without a code", &APIError{StatusCode: 401}, true},
		{"NOAUTH", &APIError{StatusCode: 403, Code: "NOAUTH"}, true},
		{"NO_AUTH, newer spelling", &APIError{StatusCode: 403, Code: "NO_AUTH"}, true},
		{"MCH_NOT_EXISTS", &APIError{StatusCode: 400, Code: "MCH_NOT_EXISTS"}, true},
		{"APPID_MCHID_NOT_MATCH", &APIError{StatusCode: 400, Code: "APPID_MCHID_NOT_MATCH"}, true},
		{"unknown merchant", fmt.Errorf("%w %q", ErrUnknownMerchant, "1"), true},
		{"missing key", fmt.Errorf("sign: %w", ErrNoKey), true},
		{"PARAM_ERROR is the order's", &APIError{StatusCode: 400, Code: "PARAM_ERROR"}, false},
		{"OUT_TRADE_NO_USED is the order's", &APIError{StatusCode: 403, Code: "OUT_TRADE_NO_USED"}, false},
		{"SYSTEMERROR", &APIError{StatusCode: 500, Code: "SYSTEMERROR"}, false},
		{"timeout", context.DeadlineExceeded, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := OperatorError(tt.err); got != tt.want {
				t.Errorf("OperatorError(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestOrderMayExist(t *testing.T) {
	for code, want := range map[string]bool{
		"INVALID_REQUEST": true, "ORDERPAID": true, "ORDER_CLOSED": true, "OUT_TRADE_NO_USED": true,
		"PARAM_ERROR": false, "SYSTEMERROR": false, "RULELIMIT": false, "SIGN_ERROR": false,
	} {
		if got := OrderMayExist(&APIError{StatusCode: 400, Code: code}); got != want {
			t.Errorf("OrderMayExist(%s) = %v, want %v", code, got, want)
		}
	}
	if OrderMayExist(context.DeadlineExceeded) {
		t.Error("OrderMayExist(timeout) = true, want false: no answer is no statement about the order")
	}
}
