package wechatsim

import (
	"net/http"
	"strings"
	"time"

	"github.com/wxcombine/orderworker/wechat"
)

// signError answers WeChat Pay's 401 SIGN_ERROR, whose detail nests another
// object (unlike PARAM_ERROR's).
func signError(field, issue string, info *signInformation) *apiError {
	d := map[string]any{
		"detail":   map[string]string{"issue": issue},
		"field":    field,
		"location": "authorization",
	}
	if info != nil {
		d["sign_information"] = info
	}
	return &apiError{status: http.StatusUnauthorized, code: "SIGN_ERROR", message: "验签失败，请检查签名\t", detail: d}
}

// signInformation echoes what the server signed, as the real SIGN_ERROR does.
type signInformation struct {
	Method               string `json:"method"`
	SignMessageLength    int    `json:"sign_message_length"`
	TruncatedSignMessage string `json:"truncated_sign_message"`
	URL                  string `json:"url"`
}

// authenticate checks the Authorization header of r against its raw request
// target and raw body and answers the calling merchant.
func (s *Server) authenticate(r *http.Request, body []byte) (*MerchantConfig, *apiError) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return nil, signError("authorization", "Authorization header is missing", nil)
	}
	a, err := wechat.ParseAuthorization(h)
	if err != nil {
		return nil, signError("authorization", strings.TrimPrefix(err.Error(), "wechat: "), nil)
	}
	m := s.merchants[a.MchID]
	if m == nil {
		return nil, signError("mchid", "mchid "+a.MchID+" does not exist", nil)
	}
	if a.Serial != m.Serial {
		return nil, signError("serial_no", "serial_no is not a certificate of merchant "+a.MchID, nil)
	}
	if d := s.wall().Sub(time.Unix(a.Timestamp, 0)); d > s.cfg.ClockSkew || d < -s.cfg.ClockSkew {
		return nil, signError("timestamp", "timestamp is too far from the server's clock", nil)
	}
	target := r.RequestURI // the raw request target, exactly as sent
	msg := wechat.RequestMessage(r.Method, target, a.Timestamp, a.Nonce, body)
	if err := wechat.VerifySignature(m.PublicKey, msg, a.Signature); err != nil {
		head := len(msg) - len(body) - 1 // method, target, timestamp and nonce lines
		n := min(len(msg)-1, head+8)
		path, _, _ := strings.Cut(target, "?")
		return nil, signError("signature", "sign not match", &signInformation{
			Method: r.Method, SignMessageLength: len(msg),
			TruncatedSignMessage: string(msg[:n]) + "\n", URL: path,
		})
	}
	return m, nil
}
