package wechatsim

import (
	"errors"
	"strings"

	"github.com/wxcombine/orderworker/wechat"
)

// validateCreate applies the flavour's create rules, shared with the client.
func validateCreate(f wechat.Flavour, t wechat.TradeType, req *wechat.CombineOrderRequest) error {
	return wechat.Validate(f, t, req)
}

// validateClose applies the flavour's close rules, shared with the client.
func validateClose(f wechat.Flavour, combineOutTradeNo string, req *wechat.CloseRequest) error {
	return wechat.ValidateClose(f, combineOutTradeNo, req)
}

// validationAnswer turns a validation error into 400 PARAM_ERROR whose
// detail.field is the JSON pointer (body) or parameter name (path).
func validationAnswer(err error) *apiError {
	var ve *wechat.ValidationError
	if !errors.As(err, &ve) {
		return paramError("", err.Error(), "body")
	}
	loc := "body"
	if ve.Field != "" && !strings.HasPrefix(ve.Field, "/") {
		loc = "path"
	}
	return paramError(ve.Field, ve.Issue, loc)
}
