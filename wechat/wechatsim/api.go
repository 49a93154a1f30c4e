package wechatsim

import (
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
	if ae == nil {
		ae = checkHeaders(r)
	}
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

// checkHeaders refuses a request without a User-Agent ("微信支付API v3将拒绝
// 处理无User-Agent的请求") or whose Accept does not admit application/json
// ("请求须设置HTTP头部 Accept: application/json"). Accept */* and
// application/* admit JSON: the official Go SDK sends */*.
func checkHeaders(r *http.Request) *apiError {
	if strings.TrimSpace(r.Header.Get("User-Agent")) == "" {
		return &apiError{status: http.StatusBadRequest, code: "INVALID_REQUEST", message: "HTTP头缺少User-Agent",
			detail: paramDetail{Field: "User-Agent", Issue: "User-Agent header is required", Location: "header"}}
	}
	ok := false
	for _, v := range r.Header.Values("Accept") {
		for _, part := range strings.Split(v, ",") {
			mt, _, _ := strings.Cut(strings.TrimSpace(part), ";")
			switch strings.ToLower(strings.TrimSpace(mt)) {
			case "application/json", "application/*", "*/*":
				ok = true
			}
		}
	}
	if !ok {
		return &apiError{status: http.StatusBadRequest, code: "INVALID_REQUEST", message: "HTTP头Accept须为application/json",
			detail: paramDetail{Field: "Accept", Issue: "Accept must admit application/json", Location: "header"}}
	}
	return nil
}

// injectFault answers the error fault f rolled, if any, and reports whether
// it did. The timeout fault applies to creates only.
func (s *Server) injectFault(w http.ResponseWriter, r *http.Request, f roll) bool {
	var ae *apiError
	switch f.kind {
	case FaultSystemError:
		ae = &apiError{status: http.StatusInternalServerError, code: s.spell("SYSTEMERROR"), message: "系统异常，请用相同参数重新调用"}
	case FaultServiceUnavailable:
		status := http.StatusServiceUnavailable
		if s.chance(0.5) {
			status = http.StatusBadGateway
		}
		ae = &apiError{status: status, code: "SERVICE_UNAVAILABLE", message: "服务不可用，请稍后重试"}
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
	no := peekOrderNo(body)
	k := orderKey{m.MchID, no}
	if no == "" {
		if v := s.checkCreateBody(string(t), body, nil); v != nil {
			s.writeError(w, r, paramError(v.field, v.issue, "body"))
		} else {
			s.writeError(w, r, paramError("/combine_out_trade_no", "is required", "body"))
		}
		return
	}
	if f.kind != "" && f.kind != FaultTimeoutAfterCreate {
		s.recordCreate(k, f.kind)
		s.injectFault(w, r, f)
		return
	}
	s.recordCreate(k, "")
	var req createBody
	if v := s.checkCreateBody(string(t), body, &req); v != nil {
		s.recordOutcome(k, "PARAM_ERROR")
		s.writeError(w, r, paramError(v.field, v.issue, "body"))
		return
	}
	if ae := s.checkBindings(m, &req); ae != nil {
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

// peekOrderNo reads combine_out_trade_no from a body, if it is a string.
func peekOrderNo(body []byte) string {
	var v struct {
		No any `json:"combine_out_trade_no"`
	}
	_ = json.Unmarshal(body, &v)
	no, _ := v.No.(string)
	return no
}

// checkCreateBody judges a create body of trade type t by the contract: the
// endpoint's OpenAPI schema (strict), the character set, then the rules the
// schema cannot say; into, if not nil, receives the decoded body.
func (s *Server) checkCreateBody(t string, body []byte, into *createBody) *violation {
	c, err := loadContract()
	if err != nil {
		return &violation{issue: err.Error()}
	}
	if v := c.checkSchema(t, body); v != nil {
		return v
	}
	if v := checkText(body, ""); v != nil {
		return v
	}
	var req createBody
	if err := json.Unmarshal(body, &req); err != nil {
		return &violation{issue: "body does not decode: " + err.Error()}
	}
	if v := checkCreateRules(string(s.cfg.Flavour), t, &req); v != nil {
		return v
	}
	if into != nil {
		*into = req
	}
	return nil
}

// checkBindings checks the merchant bindings of a valid create.
func (s *Server) checkBindings(m *MerchantConfig, req *createBody) *apiError {
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
		if so.SubMchID != nil && m.SubMchIDs != nil && !contains(m.SubMchIDs, *so.SubMchID) {
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

func (s *Server) serveQuery(w http.ResponseWriter, r *http.Request, m *MerchantConfig, op, key string, f roll) {
	if op == OpQueryByID && s.cfg.Flavour != wechat.FlavourIndividual {
		s.writeError(w, r, &apiError{status: http.StatusForbidden, code: "NOAUTH", message: "商户无权限"})
		return
	}
	if v := checkPathParam(op, key); v != nil {
		s.writeError(w, r, paramError(v.field, v.issue, "path"))
		return
	}
	v, ok := s.lookup(m.MchID, key, op == OpQueryByID)
	if !ok {
		s.writeError(w, r, s.orderNotExist())
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
	if v := checkPathParam(OpClose, no); v != nil {
		s.writeError(w, r, paramError(v.field, v.issue, "path"))
		return
	}
	c, err := loadContract()
	if err != nil {
		s.writeError(w, r, &apiError{status: 500, code: "SYSTEM_ERROR", message: "系统错误"})
		return
	}
	v := c.checkSchema(contractClose, body)
	if v == nil {
		v = checkText(body, "")
	}
	var req closeBody
	if v == nil {
		if err := json.Unmarshal(body, &req); err != nil {
			v = &violation{issue: "body does not decode"}
		}
	}
	if v == nil {
		v = checkCloseRules(string(s.cfg.Flavour), no, &req)
	}
	if v != nil {
		s.writeError(w, r, paramError(v.field, v.issue, "body"))
		return
	}
	if ae := s.closeOrder(m.MchID, no, &req); ae != nil {
		s.writeError(w, r, ae)
		return
	}
	s.writeOK(w, r, http.StatusNoContent, nil, f.signTst)
}

// checkPathParam checks the path parameter of a query or close:
// combine_out_trade_no (1–32 of the order-number alphabet) or
// combine_transaction_id (1–32 digits and letters).
func checkPathParam(op, key string) *violation {
	if op == OpQueryByID {
		if key == "" || len(key) > 32 || strings.ContainsFunc(key, func(r rune) bool {
			return (r < '0' || r > '9') && (r < 'a' || r > 'z') && (r < 'A' || r > 'Z')
		}) {
			return &violation{"combine_transaction_id", "must be 1 to 32 digits and letters"}
		}
		return nil
	}
	c := &ruleCheck{}
	c.orderNo("combine_out_trade_no", "", key, 1)
	return c.v
}
