package wechatsim

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/wxcombine/orderworker/wechat"
)

// apiError is an error answer: status, code, message and an optional detail.
type apiError struct {
	status  int
	code    string
	message string
	detail  any
}

// paramDetail is the detail of a PARAM_ERROR.
type paramDetail struct {
	Field    string `json:"field"`
	Value    any    `json:"value,omitempty"`
	Issue    string `json:"issue"`
	Location string `json:"location"`
}

func paramError(field, issue, location string) *apiError {
	return &apiError{status: http.StatusBadRequest, code: "PARAM_ERROR", message: "参数错误",
		detail: paramDetail{Field: field, Issue: issue, Location: location}}
}

// errorNumbers are the numeric codes Request-ID ends with for the codes the
// reference names; others end with the HTTP status.
var errorNumbers = map[string]string{
	"OUT_TRADE_NO_USED": "268498688",
	"FREQUENCY_LIMITED": "268447840",
	"ORDER_CLOSED":      "268447914",
	"ORDERPAID":         "268449538",
}

// newRequestID answers a Request-ID in WeChat Pay's style: hex, and for an
// error a "-<number>" suffix.
func newRequestID(code string, status int) string {
	id := strings.ToUpper(hex.EncodeToString(randomBytes(20)))
	if status < 300 {
		return id + "-0"
	}
	if n, ok := errorNumbers[code]; ok {
		return id + "-" + n
	}
	return id + "-" + strconv.Itoa(status)
}

// signingKey answers the key and serial an answer to r is signed with.
func (s *Server) signingKey(r *http.Request) (wechat.PrivateKey, string) {
	p := s.cfg.Platform
	switch s.cfg.Mode {
	case ModeCert:
		return p.CertKey, p.CertSerial
	case ModePublicKey:
		return p.PubKey, p.PubKeyID
	}
	if r != nil && r.Header.Get(wechat.HeaderSerial) == p.PubKeyID {
		return p.PubKey, p.PubKeyID
	}
	return p.CertKey, p.CertSerial
}

// sign sets the Wechatpay-* headers over body; with probe the signature is a
// WECHATPAY/SIGNTEST/ probe that no key verifies.
func (s *Server) sign(h http.Header, key wechat.PrivateKey, serial string, body []byte, probe bool) error {
	if probe {
		h.Set(wechat.HeaderTimestamp, strconv.FormatInt(s.wall().Unix(), 10))
		h.Set(wechat.HeaderNonce, wechat.NewNonce())
		h.Set(wechat.HeaderSignature, wechat.SignTestPrefix+base64.StdEncoding.EncodeToString(randomBytes(237)))
		h.Set(wechat.HeaderSerial, serial)
		h.Set(wechat.HeaderSignatureType, wechat.AuthScheme)
		return nil
	}
	ts, nonce := strconv.FormatInt(s.wall().Unix(), 10), wechat.NewNonce()
	sig, err := signMessage(key, wechat.ResponseMessage(ts, nonce, body))
	if err != nil {
		return err
	}
	h.Set(wechat.HeaderTimestamp, ts)
	h.Set(wechat.HeaderNonce, nonce)
	h.Set(wechat.HeaderSignature, sig)
	h.Set(wechat.HeaderSerial, serial)
	h.Set(wechat.HeaderSignatureType, wechat.AuthScheme)
	return nil
}

// writeOK writes a signed 2xx answer; body is nil for 204.
func (s *Server) writeOK(w http.ResponseWriter, r *http.Request, status int, body []byte, probe bool) {
	h := w.Header()
	h.Set(wechat.HeaderRequestID, newRequestID("", status))
	key, serial := s.signingKey(r)
	if err := s.sign(h, key, serial, body, probe); err != nil {
		s.writeError(w, r, &apiError{status: 500, code: "SYSTEM_ERROR", message: "系统错误"})
		return
	}
	if probe {
		s.stats.fault(FaultSignTest)
	}
	if body != nil {
		h.Set("Content-Type", "application/json; charset=utf-8")
		h.Set("Content-Length", strconv.Itoa(len(body)))
	}
	w.WriteHeader(status)
	if body != nil {
		_, _ = w.Write(body)
	}
	s.stats.answer(strconv.Itoa(status))
}

// spell answers code in the spelling FaultConfig.CodeSpelling asks for.
func (s *Server) spell(code string) string {
	common := map[string]string{"SYSTEMERROR": "SYSTEM_ERROR", "ORDERNOTEXIST": "ORDER_NOT_EXIST"}[code]
	if common == "" {
		return code
	}
	switch s.Faults().CodeSpelling {
	case SpellingCommon:
		return common
	case SpellingMixed:
		if s.chance(0.5) {
			return common
		}
	}
	return code
}

// orderNotExist answers 404 ORDERNOTEXIST (or ORDER_NOT_EXIST).
func (s *Server) orderNotExist() *apiError {
	return &apiError{status: http.StatusNotFound, code: s.spell("ORDERNOTEXIST"), message: "订单不存在"}
}

// writeError writes an error answer, signed unless faults say otherwise.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, e *apiError) {
	body, err := json.Marshal(struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Detail  any    `json:"detail,omitempty"`
	}{e.code, e.message, e.detail})
	if err != nil {
		body = []byte(`{"code":"SYSTEM_ERROR","message":"系统错误"}`)
	}
	h := w.Header()
	h.Set(wechat.HeaderRequestID, newRequestID(e.code, e.status))
	h.Set("Content-Type", "application/json; charset=utf-8")
	switch f := s.Faults(); {
	case f.UnsignedErrors:
	case s.chance(f.UnsignedErrorRate):
		s.stats.fault(FaultUnsigned)
	default:
		key, serial := s.signingKey(r)
		_ = s.sign(h, key, serial, body, false)
	}
	w.WriteHeader(e.status)
	_, _ = w.Write(body)
	s.stats.answer(e.code)
}
