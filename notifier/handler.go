package notifier

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/idempotency"
	"github.com/wxcombine/orderworker/internal/tracing"
	"github.com/wxcombine/orderworker/metrics"
	"github.com/wxcombine/orderworker/wechat"
)

// PathPrefix starts the notification path; the merchant number follows:
// /v3/notify/1900000109.
const PathPrefix = "/v3/notify/"

// Defaults.
const (
	// MaxBodySizeDefault caps a notification body. Real ones are under 4 KiB
	// even with 50 sub-orders' worth of ids; 64 KiB leaves room and still
	// bounds the work a forgery costs.
	MaxBodySizeDefault = 64 << 10
	// PublishTimeoutDefault bounds the wait for JetStream's PubAck, so the
	// answer leaves within WeChat Pay's 5 seconds.
	PublishTimeoutDefault = 4 * time.Second
	// MaxConcurrentRequestsDefault admits at most 256 requests past the
	// header checks: at most 16 MiB of bodies with MaxBodySizeDefault.
	MaxConcurrentRequestsDefault = 256
	// SlotWaitDefault bounds each of the two waits for capacity: with the
	// PublishTimeoutDefault, the answer leaves within 4.8 seconds.
	SlotWaitDefault = 400 * time.Millisecond
	// BodyTimeoutDefault is how long a sender gets to deliver the whole
	// body once its headers passed. WeChat Pay sends a few KiB at once; a
	// body still trickling in after 2 seconds is a slow or malicious
	// sender, answered 408 without ever holding an admission place.
	BodyTimeoutDefault = 2 * time.Second
)

// Publisher stores a message in a JetStream stream and answers the PubAck.
// jetstream.JetStream satisfies it.
type Publisher interface {
	PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

// Config configures a Handler.
type Config struct {
	// Merchants are the merchants whose notifications are accepted, each with
	// its platform verifier (certificates and/or public key) and APIv3 key.
	// Required; the private key is not used.
	Merchants []*wechat.Merchant
	// Publisher stores the events. Required.
	Publisher Publisher
	// Subjects names the event subject. Defaults to the "combine" prefix.
	Subjects events.Subjects
	// Stream is the stream the event must land in (WithExpectStream), so a
	// misconfigured subject fails loudly instead of being stored elsewhere or
	// nowhere. Defaults to events.StreamEvents.
	Stream string
	// MaxBodySize caps a body in bytes. Defaults to MaxBodySizeDefault.
	MaxBodySize int64
	// BodyTimeout bounds the read of one body, from the end of the
	// headers; it is set as the connection's read deadline (HTTP/1.1 and
	// HTTP/2 alike), so the server's ReadTimeout does not decide it.
	// Defaults to BodyTimeoutDefault.
	BodyTimeout time.Duration
	// PublishTimeout bounds the wait for the PubAck. Defaults to
	// PublishTimeoutDefault; keep it under WeChat Pay's 5 seconds.
	PublishTimeout time.Duration
	// MaxConcurrentRequests bounds how many genuine-looking requests whose
	// body is complete are admitted at once: they wait for a verification
	// slot and publish. A body is read before admission, under BodyTimeout,
	// so a slow sender never holds a place. Defaults to
	// MaxConcurrentRequestsDefault.
	MaxConcurrentRequests int
	// MaxConcurrentVerifications bounds how many admitted requests verify
	// an RSA signature and decrypt at once, the CPU-bound part. Defaults to
	// 4 × GOMAXPROCS.
	MaxConcurrentVerifications int
	// SlotWait is how long a request waits for admission, and then for a
	// verification slot, before it is answered 503 (WeChat Pay retries it).
	// Waiting rather than refusing at once lets a burst of forgeries that
	// carry a real serial delay genuine notifications by a few milliseconds
	// instead of turning them away; 2 × SlotWait plus PublishTimeout should
	// stay under WeChat Pay's 5 seconds. Defaults to SlotWaitDefault.
	SlotWait time.Duration
	// PublishOpenID copies combine_payer_info.openid into the event.
	// Defaults to false: the event carries no personal data.
	PublishOpenID bool
	// Metrics counts requests by Result and times publications. Defaults to
	// nil, nothing recorded.
	Metrics *metrics.Notifier
	// Logger receives one record per request (Info for accepted ones, Warn
	// for rejected ones, Error for publish failures). Defaults to a logger
	// that discards everything.
	Logger *slog.Logger
	// NowFunc answers the current time, the event's received_at. Defaults to
	// time.Now. The timestamp window follows each merchant's
	// Platform.NowFunc, as wechat.ParseNotification does.
	NowFunc func() time.Time
	// Seen is the record of payments published, shared with the workers'
	// reconciler (see payments.go); SeenTTL is how long it lasts. Seen
	// defaults to none: only the stream's duplicate window drops a
	// notification re-sent later. SeenTTL defaults to
	// idempotency.SeenTTLDefault.
	Seen    idempotency.Seen
	SeenTTL time.Duration
	// Anomalies counts verified notifications that are not a consistent
	// payment. Defaults to none.
	Anomalies *metrics.PaymentAnomalies
}

// Handler is the http.Handler of the notification endpoint. It is safe for
// concurrent use.
type Handler struct {
	merchants map[string]*wechat.Merchant
	pub       Publisher
	subject   string
	stream    string
	maxBody   int64
	bodyWait  time.Duration
	timeout   time.Duration
	admitted  chan struct{} // requests past the header checks
	slots     chan struct{} // RSA verifications and decryptions
	slotWait  time.Duration
	openID    bool
	metrics   *metrics.Notifier
	log       *slog.Logger
	now       func() time.Time
	pay       payments
}

// New validates cfg, applies its defaults and answers a Handler.
func New(cfg Config) (*Handler, error) {
	cfg.Stream = cmp.Or(cfg.Stream, events.StreamEvents)
	cfg.MaxBodySize = cmp.Or(cfg.MaxBodySize, MaxBodySizeDefault)
	cfg.BodyTimeout = cmp.Or(cfg.BodyTimeout, BodyTimeoutDefault)
	cfg.PublishTimeout = cmp.Or(cfg.PublishTimeout, PublishTimeoutDefault)
	cfg.MaxConcurrentVerifications = cmp.Or(cfg.MaxConcurrentVerifications, 4*runtime.GOMAXPROCS(0))
	cfg.MaxConcurrentRequests = cmp.Or(cfg.MaxConcurrentRequests, max(MaxConcurrentRequestsDefault, cfg.MaxConcurrentVerifications))
	cfg.SlotWait = cmp.Or(cfg.SlotWait, SlotWaitDefault)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.NowFunc == nil {
		cfg.NowFunc = time.Now
	}
	switch {
	case cfg.Publisher == nil:
		return nil, errors.New("notifier: Config.Publisher is required")
	case len(cfg.Merchants) == 0:
		return nil, errors.New("notifier: Config.Merchants is empty")
	case cfg.MaxBodySize < 1<<10:
		return nil, fmt.Errorf("notifier: MaxBodySize is %d bytes, want at least 1024", cfg.MaxBodySize)
	case cfg.BodyTimeout < 0:
		return nil, errors.New("notifier: BodyTimeout is negative")
	case cfg.PublishTimeout < 0:
		return nil, errors.New("notifier: PublishTimeout is negative")
	case cfg.MaxConcurrentVerifications < 0:
		return nil, errors.New("notifier: MaxConcurrentVerifications is negative")
	case cfg.MaxConcurrentRequests < cfg.MaxConcurrentVerifications:
		return nil, fmt.Errorf("notifier: MaxConcurrentRequests %d is below MaxConcurrentVerifications %d", cfg.MaxConcurrentRequests, cfg.MaxConcurrentVerifications)
	case cfg.SlotWait < 0:
		return nil, errors.New("notifier: SlotWait is negative")
	}
	ms := make(map[string]*wechat.Merchant, len(cfg.Merchants))
	for i, m := range cfg.Merchants {
		switch {
		case m == nil || m.MchID == "":
			return nil, fmt.Errorf("notifier: Merchants[%d] has no MchID", i)
		case ms[m.MchID] != nil:
			return nil, fmt.Errorf("notifier: merchant %s configured twice", m.MchID)
		case m.Platform == nil || len(m.Platform.Serials()) == 0:
			return nil, fmt.Errorf("notifier: merchant %s: no platform certificate or WeChat Pay public key", m.MchID)
		}
		if err := m.APIv3Key.Validate(); err != nil {
			return nil, fmt.Errorf("notifier: merchant %s: %w", m.MchID, err)
		}
		ms[m.MchID] = m
	}
	return &Handler{
		merchants: ms,
		pub:       tracing.WrapJetStream(cfg.Publisher),
		subject:   cfg.Subjects.PaymentSucceeded(),
		stream:    cfg.Stream,
		maxBody:   cfg.MaxBodySize,
		bodyWait:  cfg.BodyTimeout,
		timeout:   cfg.PublishTimeout,
		admitted:  make(chan struct{}, cfg.MaxConcurrentRequests),
		slots:     make(chan struct{}, cfg.MaxConcurrentVerifications),
		slotWait:  cfg.SlotWait,
		openID:    cfg.PublishOpenID,
		metrics:   cfg.Metrics,
		log:       cfg.Logger,
		now:       cfg.NowFunc,
		pay:       payments{seen: cfg.Seen, seenTTL: cmp.Or(cfg.SeenTTL, idempotency.SeenTTLDefault), anomalies: cfg.Anomalies},
	}, nil
}

// Result is the outcome of one request, the "result" label of
// orderworker_notifier_notifications_total.
type Result string

// The results, each the metrics package's constant of the same name, so the
// metric, its HELP and the alerts share one list. ResultOK and
// ResultDuplicate are acknowledged (2xx); every other result is a failure
// WeChat Pay retries.
const (
	ResultOK               Result = metrics.NotificationOK               // 204: stored
	ResultDuplicate        Result = metrics.NotificationDuplicate        // 200: JetStream already had it
	ResultMethodNotAllowed Result = metrics.NotificationMethodNotAllowed // 405
	ResultUnknownMerchant  Result = metrics.NotificationUnknownMerchant  // 404: path names no configured merchant
	ResultTooLarge         Result = metrics.NotificationTooLarge         // 413
	ResultBadHeaders       Result = metrics.NotificationBadHeaders       // 401: a Wechatpay-* header is absent or malformed
	ResultStale            Result = metrics.NotificationStale            // 401: timestamp outside the five-minute window
	ResultUnknownSerial    Result = metrics.NotificationUnknownSerial    // 401: no trusted key has that serial
	ResultSignatureProbe   Result = metrics.NotificationSignatureProbe   // 401: WECHATPAY/SIGNTEST/ probe
	ResultBadSignature     Result = metrics.NotificationBadSignature     // 401: signature does not verify
	ResultSlowBody         Result = metrics.NotificationSlowBody         // 408: body not complete within BodyTimeout
	ResultDecryptError     Result = metrics.NotificationDecryptError     // 400: wrong APIv3 key or tampered resource
	ResultMalformed        Result = metrics.NotificationMalformed        // 400: verified but not a combine payment notification
	ResultOverloaded       Result = metrics.NotificationOverloaded       // 503: load shed, no place free within SlotWait
	ResultPublishError     Result = metrics.NotificationPublishError     // 500: JetStream did not confirm
)

// Results lists every result, in the order of metrics.NotificationResults.
var Results = func() []Result {
	out := make([]Result, len(metrics.NotificationResults))
	for i, r := range metrics.NotificationResults {
		out[i] = Result(r)
	}
	return out
}()

// answer is the status and fixed message of each failure result. Messages
// are at most 64 bytes (WeChat Pay's limit) and never echo the request.
var answers = map[Result]struct {
	status  int
	message string
}{
	ResultMethodNotAllowed: {http.StatusMethodNotAllowed, "method not allowed, use POST"},
	ResultUnknownMerchant:  {http.StatusNotFound, "unknown merchant"},
	ResultTooLarge:         {http.StatusRequestEntityTooLarge, "body too large"},
	ResultBadHeaders:       {http.StatusUnauthorized, "signature headers missing or malformed"},
	ResultStale:            {http.StatusUnauthorized, "timestamp outside the accepted window"},
	ResultUnknownSerial:    {http.StatusUnauthorized, "unknown Wechatpay-Serial"},
	ResultSignatureProbe:   {http.StatusUnauthorized, "signature verification failed"},
	ResultBadSignature:     {http.StatusUnauthorized, "signature verification failed"},
	ResultSlowBody:         {http.StatusRequestTimeout, "body not received in time"},
	ResultDecryptError:     {http.StatusBadRequest, "cannot decrypt resource"},
	ResultMalformed:        {http.StatusBadRequest, "malformed notification"},
	ResultOverloaded:       {http.StatusServiceUnavailable, "overloaded, retry later"},
	ResultPublishError:     {http.StatusInternalServerError, "not stored, retry later"},
}

// wireBody is the {"code","message"} answer WeChat Pay reads.
type wireBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// ServeHTTP handles one notification. See the package documentation for
// the order of checks and the answers.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	r, span := tracing.StartServer(r, "POST "+PathPrefix+"{mchid}")
	defer span.End()
	mchID, ok := strings.CutPrefix(r.URL.Path, PathPrefix)
	log := h.log.With(slog.String("mchid", safeID(mchID)))
	res, err := h.serve(w, r, mchID, ok, &log)
	if a, failed := answers[res]; failed {
		if res == ResultMethodNotAllowed {
			w.Header().Set("Allow", http.MethodPost)
		}
		writeJSON(w, a.status, wireBody{Code: "FAIL", Message: a.message})
	}
	h.metrics.Notification(string(res))
	endSpan(span, res, err)
	attrs := []any{slog.String("result", string(res)), slog.Duration("duration", time.Since(start))}
	switch {
	case err == nil:
		log.InfoContext(r.Context(), "notification stored", attrs...)
	case res == ResultPublishError:
		log.ErrorContext(r.Context(), "notification not stored", append(attrs, slog.String("error", err.Error()))...)
	default:
		log.WarnContext(r.Context(), "notification rejected", append(attrs,
			slog.String("error", err.Error()), slog.String("remote_addr", r.RemoteAddr))...)
	}
}

// serve does the work of ServeHTTP and answers the result; on success it has
// written the 2xx answer, on failure the caller writes it. *log gains the
// notification's identity as it becomes known.
func (h *Handler) serve(w http.ResponseWriter, r *http.Request, mchID string, prefixed bool, log **slog.Logger) (Result, error) {
	m := h.merchants[mchID]
	switch {
	case r.Method != http.MethodPost:
		return ResultMethodNotAllowed, fmt.Errorf("method %s", safeID(r.Method))
	case !prefixed || m == nil:
		return ResultUnknownMerchant, errors.New("path names no configured merchant")
	case r.ContentLength > h.maxBody:
		return ResultTooLarge, fmt.Errorf("Content-Length %d exceeds %d", r.ContentLength, h.maxBody)
	}
	if res, err := h.precheck(m, r.Header); err != nil {
		return res, err
	}

	// The body first, under its own deadline and holding nothing shared: a
	// sender that trickles it in is cut off after BodyTimeout and can never
	// occupy a place a genuine notification needs.
	body, res, err := h.readBody(w, r)
	if err != nil {
		return res, err
	}
	// Only complete, genuine-looking requests reach the costly part, in two
	// bounded stages: admission (bodies waiting) and verification (CPU).
	if !acquire(r.Context(), h.admitted, h.slotWait) {
		h.metrics.Shed(metrics.ShedAdmission)
		return ResultOverloaded, fmt.Errorf("all %d admission places busy for %s", cap(h.admitted), h.slotWait)
	}
	defer func() { <-h.admitted }()
	if !acquire(r.Context(), h.slots, h.slotWait) {
		h.metrics.Shed(metrics.ShedVerification)
		return ResultOverloaded, fmt.Errorf("all %d verification slots busy for %s", cap(h.slots), h.slotWait)
	}
	n, res, err := h.parse(m, r.Header, body)
	<-h.slots
	if err != nil {
		return res, err
	}
	tx := &n.Transaction
	traceNotification(r.Context(), n)
	*log = (*log).With(slog.String("notification_id", n.Envelope.ID),
		slog.String("combine_out_trade_no", tx.CombineOutTradeNo), slog.Int("sub_orders", len(tx.SubOrders)))

	return h.publishPayment(r.Context(), w, n, log)
}

// precheck does the signature checks that need no body and no RSA: headers
// present, timestamp window, known serial, no probe. ParseNotification
// repeats them; they are cheap.
func (h *Handler) precheck(m *wechat.Merchant, hd http.Header) (Result, error) {
	for _, k := range []string{wechat.HeaderTimestamp, wechat.HeaderNonce, wechat.HeaderSignature, wechat.HeaderSerial} {
		if hd.Get(k) == "" {
			return ResultBadHeaders, fmt.Errorf("%s header missing", k)
		}
	}
	sec, err := strconv.ParseInt(hd.Get(wechat.HeaderTimestamp), 10, 64)
	if err != nil {
		return ResultBadHeaders, errors.New("timestamp is not an integer")
	}
	// The verifier's clock, so that this check and ParseNotification agree.
	now := time.Now()
	if m.Platform.NowFunc != nil {
		now = m.Platform.NowFunc()
	}
	skew := cmp.Or(m.Platform.Skew, wechat.ClockSkewDefault)
	if d := now.Sub(time.Unix(sec, 0)); d > skew || d < -skew {
		return ResultStale, fmt.Errorf("timestamp %d is %s away from now, beyond %s", sec, d.Round(time.Second), skew)
	}
	if serial := hd.Get(wechat.HeaderSerial); !m.Platform.Has(serial) {
		return ResultUnknownSerial, fmt.Errorf("unknown serial %q", safeID(serial))
	}
	if strings.HasPrefix(hd.Get(wechat.HeaderSignature), wechat.SignTestPrefix) {
		return ResultSignatureProbe, errors.New("WECHATPAY/SIGNTEST/ probe")
	}
	return "", nil
}

// acquire takes a place in sem, waiting at most wait or until ctx ends.
func acquire(ctx context.Context, sem chan struct{}, wait time.Duration) bool {
	select {
	case sem <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case sem <- struct{}{}:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

// readBody reads at most maxBody bytes within bodyWait: the deadline is set
// on the connection (http.ResponseController), so a sender dripping its
// body is cut off and answered 408 whatever the server's ReadTimeout. The
// buffer grows with what arrives, so a slow sender holds little memory.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, Result, error) {
	rc := http.NewResponseController(w)
	deadline := time.Now().Add(h.bodyWait)
	if err := rc.SetReadDeadline(deadline); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return nil, ResultMalformed, fmt.Errorf("set body deadline: %w", err)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.maxBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, ResultTooLarge, fmt.Errorf("body exceeds %d bytes", h.maxBody)
		}
		if errors.Is(err, os.ErrDeadlineExceeded) || time.Now().After(deadline) {
			// The connection cannot be reused: the body was not read to its end.
			w.Header().Set("Connection", "close")
			return nil, ResultSlowBody, fmt.Errorf("body not complete within %s", h.bodyWait)
		}
		return nil, ResultMalformed, fmt.Errorf("read body: %w", err)
	}
	return body, "", nil
}

func (h *Handler) parse(m *wechat.Merchant, header http.Header, body []byte) (*wechat.Notification, Result, error) {
	n, err := wechat.ParseNotification(m, header, body)
	switch {
	case err == nil:
		return n, "", nil
	case errors.Is(err, wechat.ErrSignature):
		return nil, ResultBadSignature, err
	case errors.Is(err, wechat.ErrDecrypt):
		return nil, ResultDecryptError, err
	default:
		return nil, ResultMalformed, err
	}
}

// event builds the payment event of a verified notification. Timestamps that
// do not parse stay zero: the notification is genuine and must not be lost
// over a format detail.
func (h *Handler) event(n *wechat.Notification) *events.PaymentSucceeded {
	tx := &n.Transaction
	e := &events.PaymentSucceeded{
		Version:              events.Version,
		NotificationID:       n.Envelope.ID,
		CombineAppID:         tx.CombineAppID,
		CombineMchID:         tx.CombineMchID,
		CombineOutTradeNo:    tx.CombineOutTradeNo,
		CombineTransactionID: tx.CombineTransactionID,
		SubOrders:            make([]events.PaidSubOrder, len(tx.SubOrders)),
		ReceivedAt:           h.now().UTC(),
	}
	if h.openID && tx.CombinePayerInfo != nil {
		e.PayerOpenID = tx.CombinePayerInfo.OpenID
	}
	for i, s := range tx.SubOrders {
		t, _ := time.Parse(time.RFC3339, s.SuccessTime)
		if t.After(e.SuccessTime) {
			e.SuccessTime = t
		}
		e.SubOrders[i] = events.PaidSubOrder{
			MchID:         s.MchID,
			SubMchID:      s.SubMchID,
			SubAppID:      s.SubAppID,
			OutTradeNo:    s.OutTradeNo,
			TransactionID: s.TransactionID,
			TradeType:     s.TradeType,
			TradeState:    s.TradeState,
			BankType:      s.BankType,
			Attach:        s.Attach,
			SuccessTime:   t,
			Amount: events.PaidAmount{
				TotalAmount:   s.Amount.TotalAmount,
				Currency:      s.Amount.Currency,
				PayerAmount:   s.Amount.PayerAmount,
				PayerCurrency: s.Amount.PayerCurrency,
			},
		}
	}
	return e
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v) // a wireBody always encodes
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// safeID shortens an attacker-chosen identifier for logs: at most 64
// printable ASCII characters.
func safeID(s string) string {
	if len(s) > 64 {
		s = s[:64]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x21 || r > 0x7e {
			return '?'
		}
		return r
	}, s)
}
