package wechatsim

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"

	"github.com/wxcombine/orderworker/wechat"
)

const apiPrefix = "/v3/combine-transactions/"

// route names the operation of a request and its path parameter, decoded
// exactly once from the raw request target.
func route(r *http.Request) (op string, t wechat.TradeType, param string, err error) {
	raw, _, _ := strings.Cut(r.RequestURI, "?")
	rest, ok := strings.CutPrefix(raw, apiPrefix)
	if !ok {
		return OpUnknown, "", "", nil
	}
	seg := strings.Split(rest, "/")
	unescape := func(s string) (string, error) { return url.PathUnescape(s) }
	switch {
	case r.Method == http.MethodPost && len(seg) == 1 && wechat.TradeType(seg[0]).Valid():
		return OpCreate, wechat.TradeType(seg[0]), "", nil
	case r.Method == http.MethodGet && len(seg) == 2 && seg[0] == "out-trade-no" && seg[1] != "":
		param, err = unescape(seg[1])
		return OpQuery, "", param, err
	case r.Method == http.MethodGet && len(seg) == 2 && seg[0] == "id" && seg[1] != "":
		param, err = unescape(seg[1])
		return OpQueryByID, "", param, err
	case r.Method == http.MethodPost && len(seg) == 3 && seg[0] == "out-trade-no" && seg[1] != "" && seg[2] == "close":
		param, err = unescape(seg[1])
		return OpClose, "", param, err
	}
	return OpUnknown, "", "", nil
}

var errNotFound = &apiError{status: http.StatusNotFound, code: "NOT_FOUND", message: "请求的资源不存在"}

// serveAPI serves one WeChat Pay API request: latency, authentication, the
// per-merchant rate limit, injected faults, then the operation.
func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	op, tradeType, param, err := route(r)
	s.stats.request(op)
	if op == OpUnknown {
		s.writeError(w, r, errNotFound)
		return
	}
	if err != nil {
		s.writeError(w, r, paramError("combine_out_trade_no", "path segment is not validly escaped", "path"))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			s.writeError(w, r, paramError("", "request body is too large", "body"))
		}
		return // the client went away
	}
	m, ae := s.authenticate(r, body)
	if ae != nil {
		s.writeError(w, r, ae)
		return
	}
	f := s.rollFaults(m.MchID)
	if f.delay > 0 {
		s.stats.fault(FaultLatency)
		if !s.sleep(r.Context(), f.delay) {
			return
		}
	}
	switch op {
	case OpCreate:
		s.serveCreate(w, r, m, tradeType, body, f)
	case OpQuery, OpQueryByID:
		if s.injectFault(w, r, f) {
			return
		}
		s.serveQuery(w, r, m, op, param, f)
	case OpClose:
		if s.injectFault(w, r, f) {
			return
		}
		s.serveClose(w, r, m, param, body, f)
	}
}

// injectFault answers the error fault f rolled, if any, and reports whether
// it did. The timeout fault applies to creates only.
func (s *Server) injectFault(w http.ResponseWriter, r *http.Request, f roll) bool {
	var ae *apiError
	switch f.kind {
	case FaultSystemError:
		ae = &apiError{status: http.StatusInternalServerError, code: "SYSTEMERROR", message: "系统异常，请用相同参数重新调用"}
	case FaultBankError:
		ae = &apiError{status: http.StatusInternalServerError, code: "BANKERROR", message: "银行系统异常，请用相同参数重新调用"}
	case FaultFrequencyLimited, FaultRateLimited:
		ae = &apiError{status: http.StatusTooManyRequests, code: "FREQUENCY_LIMITED", message: "请降低请求接口频率"}
	case FaultBad502:
		s.stats.fault(f.kind)
		s.stats.answer(FaultBad502)
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusBadGateway)
		return true
	default:
		return false
	}
	s.stats.fault(f.kind)
	s.writeError(w, r, ae)
	return true
}

func (s *Server) serveCreate(w http.ResponseWriter, r *http.Request, m *MerchantConfig, t wechat.TradeType, body []byte, f roll) {
	var req wechat.CombineOrderRequest
	if err := json.Unmarshal(body, &req); err != nil {
		s.writeError(w, r, jsonError(err))
		return
	}
	k := orderKey{m.MchID, req.CombineOutTradeNo}
	if req.CombineOutTradeNo == "" {
		s.writeError(w, r, paramError("/combine_out_trade_no", "combine_out_trade_no is required", "body"))
		return
	}
	if f.kind != "" && f.kind != FaultTimeoutAfterCreate {
		s.recordCreate(k, f.kind)
		s.injectFault(w, r, f)
		return
	}
	s.recordCreate(k, "")
	if ae := s.checkCreate(m, t, &req); ae != nil {
		s.recordOutcome(k, ae.code)
		s.writeError(w, r, ae)
		return
	}
	canonical, err := json.Marshal(&req)
	if err != nil {
		s.writeError(w, r, &apiError{status: 500, code: "SYSTEM_ERROR", message: "系统错误"})
		return
	}
	answer, ae := s.create(m, t, &req, canonical)
	if ae != nil {
		s.writeError(w, r, ae)
		return
	}
	if f.kind == FaultTimeoutAfterCreate {
		s.stats.fault(f.kind)
		s.recordOutcome(k, f.kind)
		s.cfg.Logger.DebugContext(r.Context(), "wechatsim: order created, answer withheld",
			slog.String("mchid", m.MchID), slog.String("combine_out_trade_no", req.CombineOutTradeNo))
		s.hang(r.Context())
		return
	}
	s.writeOK(w, r, http.StatusOK, answer, f.signTst)
}

// checkCreate applies the flavour's validation and the merchant bindings.
func (s *Server) checkCreate(m *MerchantConfig, t wechat.TradeType, req *wechat.CombineOrderRequest) *apiError {
	if err := validateCreate(s.cfg.Flavour, t, req); err != nil {
		return validationAnswer(err)
	}
	if req.CombineMchID != m.MchID {
		return paramError("/combine_mchid", "combine_mchid must be the mchid that signed the request", "body")
	}
	if !m.hasAppID(req.CombineAppID) {
		return &apiError{status: http.StatusBadRequest, code: "APPID_MCHID_NOT_MATCH", message: "appid和mch_id不匹配"}
	}
	for _, so := range req.SubOrders {
		if !s.known[so.MchID] && !contains(m.SubMchIDs, so.MchID) {
			return &apiError{status: http.StatusBadRequest, code: "MCH_NOT_EXISTS", message: "商户号不存在"}
		}
		if so.SubMchID != "" && m.SubMchIDs != nil && !contains(m.SubMchIDs, so.SubMchID) {
			return &apiError{status: http.StatusBadRequest, code: "MCH_NOT_EXISTS", message: "二级商户号不存在"}
		}
	}
	return nil
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// jsonError turns a decoding error into a PARAM_ERROR naming the field.
func jsonError(err error) *apiError {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return paramError("/"+strings.ReplaceAll(te.Field, ".", "/"), "expected "+te.Type.String()+", got JSON "+te.Value, "body")
	}
	return paramError("", "body is not valid JSON", "body")
}

func (s *Server) serveQuery(w http.ResponseWriter, r *http.Request, m *MerchantConfig, op, key string, f roll) {
	if op == OpQueryByID && s.cfg.Flavour != wechat.FlavourIndividual {
		s.writeError(w, r, &apiError{status: http.StatusForbidden, code: "NOAUTH", message: "商户无权限"})
		return
	}
	check := wechat.ValidateOrderNoParam
	if op == OpQueryByID {
		check = wechat.ValidateTransactionIDParam
	}
	if err := check(key); err != nil {
		s.writeError(w, r, validationAnswer(err))
		return
	}
	v, ok := s.lookup(m.MchID, key, op == OpQueryByID)
	if !ok {
		s.writeError(w, r, errOrderNotExist)
		return
	}
	body, err := json.Marshal(v)
	if err != nil {
		s.writeError(w, r, &apiError{status: 500, code: "SYSTEM_ERROR", message: "系统错误"})
		return
	}
	s.writeOK(w, r, http.StatusOK, body, f.signTst)
}

func (s *Server) serveClose(w http.ResponseWriter, r *http.Request, m *MerchantConfig, no string, body []byte, f roll) {
	var req wechat.CloseRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&req); err != nil {
		s.writeError(w, r, jsonError(err))
		return
	}
	if err := validateClose(s.cfg.Flavour, no, &req); err != nil {
		s.writeError(w, r, validationAnswer(err))
		return
	}
	if ae := s.closeOrder(m.MchID, no, &req); ae != nil {
		s.writeError(w, r, ae)
		return
	}
	s.writeOK(w, r, http.StatusNoContent, nil, f.signTst)
}
