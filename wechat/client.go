package wechat

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"time"

	"github.com/wxcombine/orderworker/internal/tracing"
)

// Client defaults.
const (
	// BaseURLDefault is WeChat Pay's primary API host.
	BaseURLDefault = "https://api.mch.weixin.qq.com"
	// TimeoutDefault bounds one call whose context has no deadline.
	TimeoutDefault = 10 * time.Second
	// ResponseBodyLimit is the most of an answer the client reads; a longer
	// answer fails as a *TransportError.
	ResponseBodyLimit = 1 << 20
	// MaxIdleConnsPerHostDefault is how many idle keep-alive connections
	// the default transport keeps per host. It must cover the calls in
	// flight: net/http's default of 2 closes and redials a connection for
	// almost every call under concurrency.
	MaxIdleConnsPerHostDefault = 256
)

// UserAgentDefault is the User-Agent sent unless Config.UserAgent is set.
var UserAgentDefault = "orderworker-wechat/1 (" + runtime.GOOS + ") " + runtime.Version()

// ErrUnknownMerchant reports a mchid for which the Client holds no
// credentials.
var ErrUnknownMerchant = errors.New("wechat: no credentials for merchant")

// Config configures a Client.
type Config struct {
	// BaseURL is scheme and host, with no path, query or fragment.
	// Defaults to BaseURLDefault (https://api.mch.weixin.qq.com).
	BaseURL string
	// Merchants are the credentials the client signs and verifies with,
	// looked up by combine_mchid. At least one is required; mchids must be
	// unique. Defaults to none (an error).
	Merchants []*Merchant
	// Flavour is the WeChat Pay product of every merchant here; it decides
	// the validation rules. Required. Defaults to none (an error).
	Flavour Flavour
	// HTTPClient sends the requests. Its own Timeout, if any, applies on top
	// of the per-call timeout. Defaults to a new http.Client with no timeout
	// whose transport (a clone of http.DefaultTransport) keeps up to
	// MaxIdleConnsPerHostDefault idle connections per host, with a trace
	// span per request (internal/tracing.Transport; off, nearly free).
	HTTPClient *http.Client
	// Timeout bounds one call, only when ctx has no deadline.
	// Defaults to TimeoutDefault (10s).
	Timeout time.Duration
	// NowFunc answers the current time, for request timestamps, client pay
	// parameters and the response signature window. Defaults to time.Now;
	// when nil, each merchant Verifier's own NowFunc applies to responses.
	NowFunc func() time.Time
	// Logger receives one Debug record per call (operation, status, request
	// ID, duration), never bodies or keys. Defaults to a discarding logger.
	Logger *slog.Logger
	// UserAgent is the User-Agent header. Defaults to UserAgentDefault.
	UserAgent string
}

// Client calls the WeChat Pay API v3 combine endpoints for several merchants.
// It validates requests locally, signs them, and verifies every 2xx answer
// before trusting it. It never retries: Retryable tells the caller when a
// retry with the same parameters is safe. It is safe for concurrent use.
type Client struct {
	base      string
	merchants map[string]*Merchant
	order     []*Merchant
	flavour   Flavour
	hc        *http.Client
	timeout   time.Duration
	nowFunc   func() time.Time
	log       *slog.Logger
	ua        string
}

// New checks cfg, applies its defaults and answers a Client.
func New(cfg Config) (*Client, error) {
	cfg.BaseURL = strings.TrimSuffix(cmp.Or(cfg.BaseURL, BaseURLDefault), "/")
	cfg.Timeout = cmp.Or(cfg.Timeout, TimeoutDefault)
	cfg.UserAgent = cmp.Or(cfg.UserAgent, UserAgentDefault)
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Transport: tracing.Transport(defaultTransport())}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	u, err := url.Parse(cfg.BaseURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" ||
		u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("wechat: BaseURL %q must be scheme://host with no path or query", cfg.BaseURL)
	}
	if cfg.Timeout < 0 {
		return nil, errors.New("wechat: Timeout must not be negative")
	}
	if _, err := ParseFlavour(string(cfg.Flavour)); err != nil {
		return nil, fmt.Errorf("wechat: Flavour: %w", err)
	}
	if len(cfg.Merchants) == 0 {
		return nil, errors.New("wechat: at least one merchant is required")
	}
	c := &Client{
		base:      cfg.BaseURL,
		merchants: make(map[string]*Merchant, len(cfg.Merchants)),
		flavour:   cfg.Flavour,
		hc:        cfg.HTTPClient,
		timeout:   cfg.Timeout,
		nowFunc:   cfg.NowFunc,
		log:       cfg.Logger,
		ua:        cfg.UserAgent,
	}
	for i, m := range cfg.Merchants {
		if m == nil {
			return nil, fmt.Errorf("wechat: merchant %d is nil", i)
		}
		if err := m.Validate(); err != nil {
			return nil, err
		}
		if _, dup := c.merchants[m.MchID]; dup {
			return nil, fmt.Errorf("wechat: merchant %s given twice", m.MchID)
		}
		c.merchants[m.MchID] = m
		c.order = append(c.order, m)
	}
	return c, nil
}

// defaultTransport answers http.DefaultTransport's settings with enough idle
// connections per host for concurrent calls.
func defaultTransport() http.RoundTripper {
	dt, ok := http.DefaultTransport.(*http.Transport)
	if !ok {
		return http.DefaultTransport
	}
	t := dt.Clone()
	t.MaxIdleConns = max(t.MaxIdleConns, MaxIdleConnsPerHostDefault)
	t.MaxIdleConnsPerHost = MaxIdleConnsPerHostDefault
	return t
}

// Flavour answers the configured product flavour.
func (c *Client) Flavour() Flavour { return c.flavour }

// Merchant answers the credentials of mchID.
func (c *Client) Merchant(mchID string) (*Merchant, bool) {
	m, ok := c.merchants[mchID]
	return m, ok
}

func (c *Client) merchant(mchID string) (*Merchant, error) {
	m, ok := c.merchants[mchID]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownMerchant, mchID)
	}
	return m, nil
}

func (c *Client) now() time.Time {
	if c.nowFunc != nil {
		return c.nowFunc()
	}
	return time.Now()
}

// Paths of the query and close endpoints. Each escapes its parameter exactly
// once with url.PathEscape ('|' → %7C, '*' → %2A); the escaped path is both
// what is sent and what is signed.
const (
	PathPrefixOutTradeNo    = "/v3/combine-transactions/out-trade-no/"
	PathPrefixTransactionID = "/v3/combine-transactions/id/"
)

// QueryByOutTradeNoPath answers GET's path for combineOutTradeNo.
func QueryByOutTradeNoPath(combineOutTradeNo string) string {
	return PathPrefixOutTradeNo + url.PathEscape(combineOutTradeNo)
}

// QueryByTransactionIDPath answers GET's path for combineTransactionID.
func QueryByTransactionIDPath(combineTransactionID string) string {
	return PathPrefixTransactionID + url.PathEscape(combineTransactionID)
}

// ClosePath answers the close endpoint's path for combineOutTradeNo.
func ClosePath(combineOutTradeNo string) string {
	return QueryByOutTradeNoPath(combineOutTradeNo) + "/close"
}

// MarshalBody encodes a request body as the client sends and signs it: JSON
// with no HTML escaping and no trailing newline. Optional fields are
// omitted rather than sent as null.
func MarshalBody(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("wechat: encode request: %w", err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// CreateCombineOrder validates req for the configured flavour and trade type
// t, then POSTs it to /v3/combine-transactions/{t} as req.CombineMchID.
// It answers the verified result: PrepayID for app, jsapi and miniprogram,
// H5URL for h5, CodeURL for native. Errors: *ValidationError (ErrInvalid)
// before any call; ErrUnknownMerchant; *APIError for a WeChat error answer;
// *TransportError when the answer never arrived (outcome unknown); an
// ErrSignature wrap when a 2xx answer does not verify.
func (c *Client) CreateCombineOrder(ctx context.Context, t TradeType, req *CombineOrderRequest) (*PrepayResult, error) {
	if err := Validate(c.flavour, t, req); err != nil {
		return nil, err
	}
	m, err := c.merchant(req.CombineMchID)
	if err != nil {
		return nil, err
	}
	body, err := MarshalBody(req)
	if err != nil {
		return nil, err
	}
	var res PrepayResult
	if err := c.do(ctx, m, http.MethodPost, t.Path(), body, http.StatusOK, &res); err != nil {
		return nil, err
	}
	var got, field string
	switch t {
	case TradeTypeH5:
		got, field = res.H5URL, "h5_url"
	case TradeTypeNative:
		got, field = res.CodeURL, "code_url"
	default:
		got, field = res.PrepayID, "prepay_id"
	}
	if got == "" {
		return nil, fmt.Errorf("wechat: POST %s: verified answer has no %s", t.Path(), field)
	}
	return &res, nil
}

// QueryByOutTradeNo answers the combine order combineOutTradeNo of merchant
// mchID (GET /v3/combine-transactions/out-trade-no/{combine_out_trade_no}).
// A missing order is an *APIError matching ErrOrderNotExist.
func (c *Client) QueryByOutTradeNo(ctx context.Context, mchID, combineOutTradeNo string) (*CombineOrder, error) {
	if err := ValidateOrderNoParam(combineOutTradeNo); err != nil {
		return nil, err
	}
	return c.query(ctx, mchID, QueryByOutTradeNoPath(combineOutTradeNo))
}

// QueryByTransactionID answers the combine order with WeChat Pay's
// combine_transaction_id (GET /v3/combine-transactions/id/{…}), an
// individual-payee endpoint.
func (c *Client) QueryByTransactionID(ctx context.Context, mchID, combineTransactionID string) (*CombineOrder, error) {
	if err := ValidateTransactionIDParam(combineTransactionID); err != nil {
		return nil, err
	}
	return c.query(ctx, mchID, QueryByTransactionIDPath(combineTransactionID))
}

func (c *Client) query(ctx context.Context, mchID, path string) (*CombineOrder, error) {
	m, err := c.merchant(mchID)
	if err != nil {
		return nil, err
	}
	var o CombineOrder
	if err := c.do(ctx, m, http.MethodGet, path, nil, http.StatusOK, &o); err != nil {
		return nil, err
	}
	return &o, nil
}

// Close closes the combine order combineOutTradeNo of merchant mchID; req
// must name exactly the created sub-orders (see CloseRequestFor). WeChat Pay
// answers 204 with an empty, still signed, body; closing twice succeeds.
func (c *Client) Close(ctx context.Context, mchID, combineOutTradeNo string, req *CloseRequest) error {
	if err := ValidateClose(c.flavour, combineOutTradeNo, req); err != nil {
		return err
	}
	m, err := c.merchant(mchID)
	if err != nil {
		return err
	}
	body, err := MarshalBody(req)
	if err != nil {
		return err
	}
	return c.do(ctx, m, http.MethodPost, ClosePath(combineOutTradeNo), body, http.StatusNoContent, nil)
}

// do sends one signed request and handles its answer: non-2xx → *APIError
// (never signature-checked: error answers often lack the headers); 2xx →
// verified, then the status must be want and the body decodes into out.
func (c *Client) do(ctx context.Context, m *Merchant, method, path string, body []byte, want int, out any) error {
	op := method + " " + path
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return fmt.Errorf("wechat: %s: build request: %w", op, err)
	}
	// Sign exactly the request target the transport will write.
	target := req.URL.RequestURI()
	auth, err := SignRequest(m.PrivateKey, m.MchID, m.Serial, method, target, c.now().Unix(), NewNonce(), body)
	if err != nil {
		return fmt.Errorf("wechat: %s: %w", op, err)
	}
	req.Header.Set("Authorization", auth.String())
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("User-Agent", c.ua)
	if serials := m.Platform.Serials(); len(serials) > 0 {
		req.Header.Set(HeaderSerial, serials[0])
	}

	start := time.Now()
	resp, err := c.hc.Do(req)
	if err != nil {
		c.log.DebugContext(ctx, "wechat call failed", slog.String("operation", op), slog.Duration("duration", time.Since(start)))
		return &TransportError{Op: op, Err: err}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, ResponseBodyLimit+1))
	if err != nil {
		return &TransportError{Op: op, Err: fmt.Errorf("read answer: %w", err)}
	}
	if len(raw) > ResponseBodyLimit {
		return &TransportError{Op: op, Err: fmt.Errorf("answer longer than %d bytes", ResponseBodyLimit)}
	}
	reqID := resp.Header.Get(HeaderRequestID)
	c.log.DebugContext(ctx, "wechat call",
		slog.String("operation", op), slog.Int("status", resp.StatusCode),
		slog.String("request_id", reqID), slog.Duration("duration", time.Since(start)))
	return c.handle(m, op, resp.StatusCode, resp.Header, raw, want, out)
}

// handle interprets an answer; it is separate from do for fuzzing.
func (c *Client) handle(m *Merchant, op string, status int, h http.Header, raw []byte, want int, out any) error {
	reqID := h.Get(HeaderRequestID)
	if status < 200 || status > 299 {
		return ParseAPIError(status, h, raw)
	}
	var verr error
	if c.nowFunc != nil {
		verr = m.Platform.VerifyAt(h, raw, c.nowFunc())
	} else {
		verr = m.Platform.Verify(h, raw)
	}
	if verr != nil {
		if reqID != "" {
			return fmt.Errorf("wechat: %s [request %s]: %w", op, reqID, verr)
		}
		return fmt.Errorf("wechat: %s: %w", op, verr)
	}
	if status != want {
		// A signed 2xx other than the one expected, e.g. 202 USERPAYING.
		return ParseAPIError(status, h, raw)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("wechat: %s: decode verified answer: %w", op, err)
	}
	return nil
}

// ParseAPIError builds the *APIError of an answer with the given status:
// the {"code","message","detail"} body when there is one (a body that is not
// JSON leaves Code empty) and the Request-ID header.
func ParseAPIError(status int, h http.Header, body []byte) *APIError {
	e := &APIError{StatusCode: status, RequestID: h.Get(HeaderRequestID)}
	var b struct {
		Code    string          `json:"code"`
		Message string          `json:"message"`
		Detail  json.RawMessage `json:"detail"`
	}
	if json.Unmarshal(body, &b) == nil {
		e.Code, e.Message = b.Code, b.Message
		if len(b.Detail) > 0 && string(b.Detail) != "null" {
			e.Detail = b.Detail
		}
	}
	return e
}

// ParseNotification verifies and decrypts a notification for any configured
// merchant: the one whose Verifier trusts the Wechatpay-Serial header (in
// configuration order, the first that verifies). See the package function
// ParseNotification for the errors.
func (c *Client) ParseNotification(h http.Header, body []byte) (*Notification, error) {
	serial := h.Get(HeaderSerial)
	var firstErr error
	for _, m := range c.order {
		if !m.Platform.Has(serial) {
			continue
		}
		n, err := ParseNotification(m, h, body)
		if err == nil {
			return n, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	if firstErr != nil {
		return nil, firstErr
	}
	return nil, fmt.Errorf("%w: unknown serial %q", ErrSignature, serial)
}
