package pipeline

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/idempotency"
	"github.com/wxcombine/orderworker/metrics"
	"github.com/wxcombine/orderworker/wechat"
)

// Payer creates WeChat Pay combine orders. *wechat.Client satisfies it.
type Payer interface {
	// CreateCombineOrder creates the order; errors follow wechat.Retryable.
	CreateCombineOrder(ctx context.Context, t wechat.TradeType, req *wechat.CombineOrderRequest) (*wechat.PrepayResult, error)
}

// PaySigner signs client pay parameters with the merchant's key.
// *wechat.Client satisfies it.
type PaySigner interface {
	JSAPIPayParams(mchID, appID, prepayID string) (*wechat.JSAPIPayParams, error)
	MiniProgramPayParams(mchID, combineAppID, prepayID string) (*wechat.MiniProgramPayParams, error)
	AppPayParams(mchID, appID, prepayID string) (*wechat.AppPayParams, error)
}

// Publisher publishes a message to JetStream and waits for the server's
// acknowledgement. The message's Nats-Msg-Id header is set; a duplicate
// acknowledged as such is a success.
type Publisher interface {
	Publish(ctx context.Context, msg *nats.Msg) error
}

// Delivery is one delivery of a job, as the consumer loop received it.
type Delivery struct {
	Subject string
	Header  nats.Header
	Data    []byte
	// Stream and Sequence locate the job in the jobs stream.
	Stream   string
	Sequence uint64
	// NumDelivered counts deliveries, this one included (1 on the first).
	NumDelivered uint64
	// Timestamp is when the job was stored in the stream.
	Timestamp time.Time
}

// Defaults of Config.
const (
	CallTimeoutDefault     = 8 * time.Second
	MaxDeliverDefault      = 10
	StoreRetryDelayDefault = 5 * time.Second
)

// InFlightDelayMin is the shortest NakWithDelay: for a job held by another
// worker, or whose stored outcome still has to be published.
const InFlightDelayMin = time.Second

// RedeliveryDefault is the default delay before each redelivery of a job
// whose in-process retries ran out; the last value repeats.
var RedeliveryDefault = []time.Duration{2 * time.Second, 5 * time.Second, 15 * time.Second, 30 * time.Second, time.Minute, 2 * time.Minute, 5 * time.Minute}

// RetryPolicy is the in-process retry of one delivery: exponential backoff
// with jitter (cenkalti/backoff/v4) over retryable WeChat Pay failures.
type RetryPolicy struct {
	// InitialInterval is the delay before the first retry. Defaults to 500ms.
	InitialInterval time.Duration
	// Multiplier grows the delay after each retry. Defaults to 2.
	Multiplier float64
	// RandomizationFactor spreads each delay by ±factor. Defaults to 0.5;
	// a negative value disables jitter.
	RandomizationFactor float64
	// MaxInterval caps one delay. Defaults to 4s.
	MaxInterval time.Duration
	// MaxAttempts caps the calls per delivery, the first included.
	// Defaults to 4.
	MaxAttempts int
	// MaxElapsed is the budget of one delivery's calls and delays; no retry
	// starts after it. Defaults to 15s.
	MaxElapsed time.Duration
}

func (r RetryPolicy) withDefaults() RetryPolicy {
	r.InitialInterval = cmp.Or(r.InitialInterval, 500*time.Millisecond)
	r.Multiplier = cmp.Or(r.Multiplier, 2)
	r.RandomizationFactor = cmp.Or(r.RandomizationFactor, 0.5)
	if r.RandomizationFactor < 0 {
		r.RandomizationFactor = 0
	}
	r.MaxInterval = cmp.Or(r.MaxInterval, 4*time.Second)
	r.MaxAttempts = cmp.Or(r.MaxAttempts, 4)
	r.MaxElapsed = cmp.Or(r.MaxElapsed, 15*time.Second)
	return r
}

func (r RetryPolicy) backOff() *backoff.ExponentialBackOff {
	return backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(r.InitialInterval),
		backoff.WithMultiplier(r.Multiplier),
		backoff.WithRandomizationFactor(r.RandomizationFactor),
		backoff.WithMaxInterval(r.MaxInterval),
		backoff.WithMaxElapsedTime(r.MaxElapsed),
	)
}

// Config configures a Processor.
type Config struct {
	// Payer creates the orders. Required.
	Payer Payer
	// Signer signs client pay parameters. Defaults to Payer when it is a
	// PaySigner (as *wechat.Client is).
	Signer PaySigner
	// Store deduplicates orders. Required.
	Store idempotency.Store
	// Publisher publishes events and dead letters. Required.
	Publisher Publisher
	// Flavour is the WeChat Pay product the worker serves; jobs naming
	// another flavour are invalid. Required.
	Flavour wechat.Flavour
	// Subjects names the subjects. Defaults to the "combine" prefix.
	Subjects events.Subjects
	// MaxJobSize is the largest job body accepted. Defaults to
	// events.MaxJobSize (512 KiB).
	MaxJobSize int
	// Lease is the idempotency lease of one delivery's calls; it must cover
	// Retry.MaxElapsed + CallTimeout + Retry.MaxInterval. Defaults to
	// idempotency.LeaseDefault (30s).
	Lease time.Duration
	// OutcomeTTL is how long an outcome answers duplicates. Defaults to
	// idempotency.OutcomeTTLDefault (24h).
	OutcomeTTL time.Duration
	// CallTimeout bounds one WeChat Pay call. Defaults to 8s.
	CallTimeout time.Duration
	// Retry is the in-process retry policy. Defaults to RetryPolicy's
	// defaults.
	Retry RetryPolicy
	// Redelivery is the delay before delivery n+1 after delivery n ran out
	// of retries; the last value repeats. Defaults to RedeliveryDefault.
	Redelivery []time.Duration
	// MaxDeliver is the consumer's delivery limit: the delivery that reaches
	// it dead-letters instead of handing the job back. Defaults to 10.
	MaxDeliver int
	// StoreRetryDelay is the redelivery delay when the store is down.
	// Defaults to 5s.
	StoreRetryDelay time.Duration
	// Limiter paces the creates of each merchant. Defaults to none.
	Limiter CallLimiter
	// Metrics records the pipeline's metrics. Defaults to none.
	Metrics *metrics.Worker
	// Logger receives one record per settled job, Warn per retry, Error for
	// what needs an operator. Defaults to a discarding logger.
	Logger *slog.Logger
	// NowFunc answers the current time. Defaults to time.Now.
	NowFunc func() time.Time
}

// Processor handles one delivery of a job end to end: decode, validate,
// claim, create with retries, sign pay parameters, store the outcome,
// publish the event. Its answer tells the consumer loop what to do: nil →
// Ack, *RetryError → NakWithDelay, *TerminalError → Term. It is safe for
// concurrent use.
type Processor struct {
	cfg Config
	log *slog.Logger
	m   *metrics.Worker

	mu       sync.Mutex
	storeErr error // last store failure; nil after a success
}

// New checks cfg, applies its defaults and answers a Processor.
func New(cfg Config) (*Processor, error) {
	if cfg.Signer == nil {
		if s, ok := cfg.Payer.(PaySigner); ok {
			cfg.Signer = s
		}
	}
	cfg.MaxJobSize = cmp.Or(cfg.MaxJobSize, events.MaxJobSize)
	cfg.Lease = cmp.Or(cfg.Lease, idempotency.LeaseDefault)
	cfg.OutcomeTTL = cmp.Or(cfg.OutcomeTTL, idempotency.OutcomeTTLDefault)
	cfg.CallTimeout = cmp.Or(cfg.CallTimeout, CallTimeoutDefault)
	cfg.Retry = cfg.Retry.withDefaults()
	if len(cfg.Redelivery) == 0 {
		cfg.Redelivery = RedeliveryDefault
	}
	cfg.MaxDeliver = cmp.Or(cfg.MaxDeliver, MaxDeliverDefault)
	cfg.StoreRetryDelay = cmp.Or(cfg.StoreRetryDelay, StoreRetryDelayDefault)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.NowFunc == nil {
		cfg.NowFunc = time.Now
	}
	var errs []error
	if cfg.Payer == nil {
		errs = append(errs, errors.New("missing Payer"))
	}
	if cfg.Signer == nil {
		errs = append(errs, errors.New("missing Signer (Payer does not sign pay parameters)"))
	}
	if cfg.Store == nil {
		errs = append(errs, errors.New("missing Store"))
	}
	if cfg.Publisher == nil {
		errs = append(errs, errors.New("missing Publisher"))
	}
	if _, err := wechat.ParseFlavour(string(cfg.Flavour)); err != nil {
		errs = append(errs, fmt.Errorf("bad Flavour: %w", err))
	}
	if cfg.MaxDeliver < 1 {
		errs = append(errs, errors.New("need MaxDeliver of at least 1"))
	}
	if cfg.Retry.MaxAttempts < 1 {
		errs = append(errs, errors.New("need Retry.MaxAttempts of at least 1"))
	}
	if need := cfg.Retry.MaxElapsed + cfg.CallTimeout + cfg.Retry.MaxInterval; cfg.Lease < need {
		errs = append(errs, fmt.Errorf("lease %s must cover Retry.MaxElapsed + CallTimeout + Retry.MaxInterval = %s", cfg.Lease, need))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("pipeline: %w", err)
	}
	return &Processor{cfg: cfg, log: cfg.Logger, m: cfg.Metrics}, nil
}

// MaxDeliver answers the configured delivery limit, for the consumer.
func (p *Processor) MaxDeliver() int { return p.cfg.MaxDeliver }

// RedeliveryDelay answers the delay before the delivery after delivery n.
func (p *Processor) RedeliveryDelay(n uint64) time.Duration {
	d := p.cfg.Redelivery
	if n < 1 {
		n = 1
	}
	if int(n) > len(d) {
		return d[len(d)-1]
	}
	return d[n-1]
}

// StoreErr answers the last error of the idempotency store, or nil if its
// last call succeeded. Readiness reports it.
func (p *Processor) StoreErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.storeErr
}

func (p *Processor) storeResult(err error) {
	p.mu.Lock()
	p.storeErr = err
	p.mu.Unlock()
	p.m.StoreUp(err == nil)
}

// outcome is what the store keeps for an order: the event its duplicates
// get.
type outcome struct {
	Created *events.PrepayCreated `json:"created,omitempty"`
	Failed  *events.PrepayFailed  `json:"failed,omitempty"`
}

// job is the state of one delivery.
type job struct {
	d        Delivery
	job      events.CreateOrderJob
	key      idempotency.Key
	attempts int
	dup      bool

	// base and attrs make the job's logger on first use (logger): most
	// jobs log nothing, or one record, and a handler formats With
	// attributes eagerly.
	base  *slog.Logger
	attrs []slog.Attr
	log   *slog.Logger
}

// logger answers the job's logger, carrying its attrs.
func (j *job) logger() *slog.Logger {
	if j.log == nil {
		j.log = slog.New(j.base.Handler().WithAttrs(j.attrs))
	}
	return j.log
}

// Process handles one delivery. See Processor.
func (p *Processor) Process(ctx context.Context, d Delivery) (err error) {
	start := p.cfg.NowFunc()
	p.m.InFlight(1)
	j := &job{d: d, base: p.log, attrs: make([]slog.Attr, 0, 7)}
	j.attrs = append(j.attrs, slog.String("subject", d.Subject), slog.Uint64("stream_seq", d.Sequence), slog.Uint64("delivery", d.NumDelivered))
	defer func() {
		p.m.InFlight(-1)
		outcome := metrics.OutcomeAck
		switch {
		case errors.Is(err, &TerminalError{}):
			outcome = metrics.OutcomeTerminal
		case err != nil:
			outcome = metrics.OutcomeRetry
		case j.dup:
			outcome = metrics.OutcomeDuplicate
		}
		p.m.Job(outcome, p.cfg.NowFunc().Sub(start))
	}()
	return p.process(ctx, j)
}

func (p *Processor) process(ctx context.Context, j *job) error {
	decoded, err := events.DecodeJob(j.d.Data, p.cfg.MaxJobSize)
	j.job = decoded
	j.key = idempotency.Key{MchID: decoded.Request.CombineMchID, OutTradeNo: decoded.Request.CombineOutTradeNo}
	j.attrs = append(j.attrs, slog.String("combine_mchid", j.key.MchID), slog.String("combine_out_trade_no", j.key.OutTradeNo),
		slog.String("correlation_id", decoded.CorrelationID), slog.String("trade_type", string(decoded.TradeType)))
	if err != nil {
		return p.reject(ctx, j, events.ReasonOf(err), &events.PrepayFailed{Code: events.CodeOf(err), Message: err.Error()}, err)
	}
	if t, ok := p.cfg.Subjects.TradeTypeOf(j.d.Subject); !ok || t != decoded.TradeType {
		err := fmt.Errorf("subject %s does not match trade_type %q", j.d.Subject, decoded.TradeType)
		return p.reject(ctx, j, events.ReasonMalformed, &events.PrepayFailed{Code: events.CodeMalformedJob, Message: err.Error(), Field: "trade_type"}, err)
	}
	if f := decoded.Flavour; f != "" && f != p.cfg.Flavour {
		err := fmt.Errorf("flavour %s is not served by this worker (%s)", f, p.cfg.Flavour)
		return p.reject(ctx, j, events.ReasonInvalid, &events.PrepayFailed{Code: events.CodeInvalidJob, Message: err.Error(), Field: "flavour"}, err)
	}
	if err := wechat.Validate(p.cfg.Flavour, decoded.TradeType, &decoded.Request); err != nil {
		return p.reject(ctx, j, events.ReasonInvalid, invalidFailure(err), err)
	}
	return p.claimAndPay(ctx, j)
}

func invalidFailure(err error) *events.PrepayFailed {
	f := &events.PrepayFailed{Code: events.CodeInvalidJob, Message: err.Error()}
	var ve *wechat.ValidationError
	if errors.As(err, &ve) {
		f.Field, f.Message = ve.Field, ve.Issue
	}
	return f
}

// fingerprint hashes what makes two jobs the same order: the trade type and
// the request body WeChat Pay would receive.
func fingerprint(t wechat.TradeType, req *wechat.CombineOrderRequest) (string, error) {
	body, err := wechat.MarshalBody(req)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	h.Write([]byte(t))
	h.Write([]byte{'\n'})
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil)), nil
}

func (p *Processor) claimAndPay(ctx context.Context, j *job) error {
	fp, err := fingerprint(j.job.TradeType, &j.job.Request)
	if err != nil {
		return p.reject(ctx, j, events.ReasonInvalid, invalidFailure(err), err)
	}
	claim, err := p.cfg.Store.Claim(ctx, j.key, fp, p.cfg.Lease)
	if err != nil {
		p.storeResult(err)
		p.m.Claim(metrics.ClaimUnavailable)
		j.logger().WarnContext(ctx, "idempotency store unavailable; job handed back without calling WeChat Pay", slog.Any("error", err))
		return RetryAfter(p.cfg.StoreRetryDelay, fmt.Errorf("claim %s: %w", j.key, err))
	}
	p.storeResult(nil)
	switch claim.State {
	case idempotency.StateDone:
		p.m.Claim(metrics.ClaimCompleted)
		j.dup = true
		return p.republish(ctx, j, claim.Outcome)
	case idempotency.StateInFlight:
		p.m.Claim(metrics.ClaimInFlight)
		delay := max(claim.ExpiresIn, InFlightDelayMin)
		j.logger().DebugContext(ctx, "order in flight on another worker", slog.Duration("retry_in", delay))
		return RetryAfter(delay, fmt.Errorf("order %s is in flight", j.key))
	case idempotency.StateConflict:
		p.m.Claim(metrics.ClaimConflict)
		f := &events.PrepayFailed{
			Code:                    events.CodeOrderNumberConflict,
			Message:                 "combine_out_trade_no was already used with different parameters",
			Field:                   "/combine_out_trade_no",
			RetryWithNewOrderNumber: true,
		}
		p.fill(j, f)
		if err := p.publish(ctx, j, p.cfg.Subjects.PrepayFailed(), events.PrepayFailedConflictMsgID(j.key.MchID, j.key.OutTradeNo, fp), f, metrics.EventPrepayFailed); err != nil {
			return RetryAfter(p.RedeliveryDelay(j.d.NumDelivered), err)
		}
		j.logger().WarnContext(ctx, "order number reused with different parameters")
		return nil
	case idempotency.StateClaimed:
		p.m.Claim(metrics.ClaimClaimed)
	default:
		return RetryAfter(p.cfg.StoreRetryDelay, fmt.Errorf("claim %s: unknown state %v", j.key, claim.State))
	}
	return p.pay(ctx, j, claim.Token)
}

// pay runs the in-process retries, then settles the order.
func (p *Processor) pay(ctx context.Context, j *job, token uint64) error {
	// The calls must end before the lease does, or another worker could
	// take the order over while a call is still under way.
	payCtx, cancel := context.WithTimeout(ctx, p.cfg.Lease-time.Second)
	defer cancel()
	op := "create_" + string(j.job.TradeType)
	retries := uint64(max(p.cfg.Retry.MaxAttempts-1, 0)) //nolint:gosec // not negative
	b := backoff.WithContext(backoff.WithMaxRetries(p.cfg.Retry.backOff(), retries), payCtx)
	res, err := backoff.RetryNotifyWithData(func() (*wechat.PrepayResult, error) {
		if err := p.waitCall(payCtx, j.key.MchID); err != nil {
			return nil, backoff.Permanent(err)
		}
		j.attempts++
		callCtx, cancel := context.WithTimeout(payCtx, p.cfg.CallTimeout)
		defer cancel()
		start := p.cfg.NowFunc()
		res, err := p.cfg.Payer.CreateCombineOrder(callCtx, j.job.TradeType, &j.job.Request)
		p.observeCall(ctx, j.key.MchID, err)
		p.m.WeChatRequest(op, callCode(err), p.cfg.NowFunc().Sub(start))
		if err != nil && !wechat.Retryable(err) {
			return nil, backoff.Permanent(err)
		}
		return res, err
	}, b, func(err error, next time.Duration) {
		p.m.Retry(metrics.RetryInProcess)
		j.logger().WarnContext(ctx, "wechat call will be retried", slog.String("wechat_code", callCode(err)),
			slog.Int("attempt", j.attempts), slog.Duration("retry_in", next), slog.Any("error", err))
	})
	switch {
	case err == nil:
		return p.succeed(ctx, j, token, res)
	case wechat.Retryable(err) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return p.retryLater(ctx, j, token, err)
	default:
		return p.fail(ctx, j, token, err)
	}
}

// callCode labels a call's result for metrics and logs.
func callCode(err error) string {
	var apiErr *wechat.APIError
	switch {
	case err == nil:
		return "OK"
	case errors.As(err, &apiErr):
		if apiErr.Code == "" {
			return "HTTP_" + strconv.Itoa(apiErr.StatusCode)
		}
		return wechat.NormalizeCode(apiErr.Code)
	case errors.Is(err, context.DeadlineExceeded):
		return "TIMEOUT"
	case errors.Is(err, context.Canceled):
		return "CANCELED"
	case errors.Is(err, wechat.ErrInvalid):
		return "INVALID"
	case wechat.UnknownOutcome(err):
		return "TRANSPORT_ERROR"
	case errors.Is(err, wechat.ErrSignature):
		return "SIGNATURE_ERROR"
	case errors.Is(err, wechat.ErrUnknownMerchant):
		return "UNKNOWN_MERCHANT"
	default:
		return "ERROR"
	}
}

// settleCtx answers a context for the writes that settle a job: they must
// run even when the job's own context has just ended.
func settleCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
}

// retryLater releases the claim and hands the job back, or at the delivery
// limit fails it for good.
func (p *Processor) retryLater(ctx context.Context, j *job, token uint64, cause error) error {
	sctx, cancel := settleCtx(ctx)
	defer cancel()
	if err := p.cfg.Store.Release(sctx, j.key, token); err != nil {
		// The lease expires on its own; the next claim waits for it.
		j.logger().WarnContext(ctx, "release claim", slog.Any("error", err))
	}
	if ctx.Err() == nil && j.d.NumDelivered >= uint64(p.cfg.MaxDeliver) { //nolint:gosec // MaxDeliver >= 1, checked in New
		f := &events.PrepayFailed{
			Code: events.CodeRetriesExhausted,
			Message: fmt.Sprintf("WeChat Pay kept failing (%s) until the delivery limit of %d; whether the order exists is unknown: retry with the same order number and parameters",
				callCode(cause), p.cfg.MaxDeliver),
		}
		return p.reject(ctx, j, events.ReasonMaxDeliveries, f, fmt.Errorf("delivery limit reached: %w", cause))
	}
	delay := p.RedeliveryDelay(j.d.NumDelivered)
	p.m.Retry(metrics.RetryRedelivery)
	j.logger().WarnContext(ctx, "retries exhausted for this delivery; job handed back", slog.Int("attempts", j.attempts),
		slog.Duration("retry_in", delay), slog.String("wechat_code", callCode(cause)))
	return RetryAfter(delay, cause)
}

// fail settles a non-retryable WeChat Pay error: the failure is stored, so
// duplicates get it too, published and dead-lettered.
func (p *Processor) fail(ctx context.Context, j *job, token uint64, cause error) error {
	f := failureOf(cause)
	p.fill(j, f)
	data, err := json.Marshal(outcome{Failed: f})
	if err != nil {
		return fmt.Errorf("encode outcome: %w", err)
	}
	sctx, cancel := settleCtx(ctx)
	defer cancel()
	if err := p.complete(sctx, j, token, data); err != nil {
		return err
	}
	reason := events.ReasonRejected
	if errors.Is(cause, wechat.ErrInvalid) {
		reason = events.ReasonInvalid
	}
	return p.reject(ctx, j, reason, f, cause)
}

// failureOf describes a non-retryable error as a failure event.
func failureOf(err error) *events.PrepayFailed {
	var apiErr *wechat.APIError
	if errors.As(err, &apiErr) {
		code := wechat.NormalizeCode(apiErr.Code)
		if code == "" {
			code = "HTTP_" + strconv.Itoa(apiErr.StatusCode)
		}
		return &events.PrepayFailed{
			Code: code, Message: apiErr.Message, Field: apiErr.Field(), HTTPStatus: apiErr.StatusCode, RequestID: apiErr.RequestID,
			RetryWithNewOrderNumber: errors.Is(err, wechat.ErrOrderClosed) || errors.Is(err, wechat.ErrOutTradeNoUsed),
		}
	}
	if errors.Is(err, wechat.ErrInvalid) {
		return invalidFailure(err)
	}
	return &events.PrepayFailed{Code: callCode(err), Message: err.Error()}
}

func (p *Processor) complete(ctx context.Context, j *job, token uint64, data []byte) error {
	err := p.cfg.Store.Complete(ctx, j.key, token, data, p.cfg.OutcomeTTL)
	switch {
	case err == nil:
		p.storeResult(nil)
		return nil
	case errors.Is(err, idempotency.ErrStaleToken):
		// The lease ran out and another worker took the order over; its
		// outcome is the one duplicates get. Let a later delivery see it.
		j.logger().WarnContext(ctx, "lease lost before the outcome was stored; job handed back")
		return RetryAfter(InFlightDelayMin, fmt.Errorf("complete %s: %w", j.key, err))
	default:
		p.storeResult(err)
		j.logger().WarnContext(ctx, "outcome not stored; job handed back", slog.Any("error", err))
		return RetryAfter(p.cfg.StoreRetryDelay, fmt.Errorf("complete %s: %w", j.key, err))
	}
}

// succeed signs the pay parameters, stores the outcome and publishes it.
func (p *Processor) succeed(ctx context.Context, j *job, token uint64, res *wechat.PrepayResult) error {
	ev := &events.PrepayCreated{
		Version:           events.Version,
		CorrelationID:     j.job.CorrelationID,
		TradeType:         j.job.TradeType,
		CombineAppID:      j.job.Request.CombineAppID,
		CombineMchID:      j.key.MchID,
		CombineOutTradeNo: j.key.OutTradeNo,
		PrepayID:          res.PrepayID,
		H5URL:             res.H5URL,
		CodeURL:           res.CodeURL,
		Attempts:          j.attempts,
		CreatedAt:         p.cfg.NowFunc().UTC(),
	}
	sctx, cancel := settleCtx(ctx)
	defer cancel()
	params, err := p.payParams(j, res.PrepayID)
	if err != nil {
		// Only a missing merchant key gets here; the order exists, so a
		// later delivery gets the same prepay_id again.
		_ = p.cfg.Store.Release(sctx, j.key, token)
		j.logger().ErrorContext(ctx, "sign pay parameters", slog.Any("error", err))
		return RetryAfter(p.RedeliveryDelay(j.d.NumDelivered), fmt.Errorf("sign pay parameters: %w", err))
	}
	ev.PayParams = params
	data, err := json.Marshal(outcome{Created: ev})
	if err != nil {
		return fmt.Errorf("encode outcome: %w", err)
	}
	if err := p.complete(sctx, j, token, data); err != nil {
		return err
	}
	if err := p.publish(sctx, j, p.cfg.Subjects.PrepayCreated(), events.PrepayCreatedMsgID(j.key.MchID, j.key.OutTradeNo), ev, metrics.EventPrepayCreated); err != nil {
		// Stored: the next delivery republishes it without a WeChat call.
		return RetryAfter(InFlightDelayMin, err)
	}
	j.logger().InfoContext(ctx, "prepay created", slog.Int("attempts", j.attempts))
	return nil
}

func (p *Processor) payParams(j *job, prepayID string) (*events.PayParams, error) {
	mch, app := j.key.MchID, j.job.Request.CombineAppID
	switch j.job.TradeType {
	case wechat.TradeTypeJSAPI:
		w, err := p.cfg.Signer.JSAPIPayParams(mch, app, prepayID)
		if err != nil {
			return nil, err
		}
		return &events.PayParams{JSAPI: &events.JSAPIPayParams{
			AppID: w.AppID, TimeStamp: w.TimeStamp, NonceStr: w.NonceStr, Package: w.Package, SignType: w.SignType, PaySign: w.PaySign,
		}}, nil
	case wechat.TradeTypeMiniProgram:
		w, err := p.cfg.Signer.MiniProgramPayParams(mch, app, prepayID)
		if err != nil {
			return nil, err
		}
		return &events.PayParams{MiniProgram: &events.MiniProgramPayParams{
			TimeStamp: w.TimeStamp, NonceStr: w.NonceStr, Package: w.Package, SignType: w.SignType, PaySign: w.PaySign,
		}}, nil
	case wechat.TradeTypeApp:
		w, err := p.cfg.Signer.AppPayParams(mch, app, prepayID)
		if err != nil {
			return nil, err
		}
		return &events.PayParams{App: &events.AppPayParams{
			AppID: w.AppID, PartnerID: w.PartnerID, PrepayID: w.PrepayID, Package: w.Package, NonceStr: w.NonceStr, TimeStamp: w.TimeStamp, Sign: w.Sign,
		}}, nil
	}
	return nil, nil // h5 and native need none
}

// republish publishes a stored outcome again, unchanged.
func (p *Processor) republish(ctx context.Context, j *job, data []byte) error {
	var o outcome
	if err := json.Unmarshal(data, &o); err != nil || (o.Created == nil) == (o.Failed == nil) {
		j.logger().ErrorContext(ctx, "stored outcome is unreadable", slog.Any("error", err))
		return RetryAfter(p.RedeliveryDelay(j.d.NumDelivered), fmt.Errorf("stored outcome of %s is unreadable", j.key))
	}
	var err error
	if o.Created != nil {
		err = p.publish(ctx, j, p.cfg.Subjects.PrepayCreated(), events.PrepayCreatedMsgID(j.key.MchID, j.key.OutTradeNo), o.Created, metrics.EventPrepayCreated)
	} else {
		err = p.publish(ctx, j, p.cfg.Subjects.PrepayFailed(), events.PrepayFailedMsgID(j.key.MchID, j.key.OutTradeNo), o.Failed, metrics.EventPrepayFailed)
	}
	if err != nil {
		return RetryAfter(InFlightDelayMin, err)
	}
	j.logger().InfoContext(ctx, "duplicate job; stored outcome republished")
	return nil
}

// fill completes a failure event with the job's identity.
func (p *Processor) fill(j *job, f *events.PrepayFailed) {
	f.Version = events.Version
	f.CorrelationID = j.job.CorrelationID
	if j.job.TradeType.Valid() {
		f.TradeType = j.job.TradeType
	}
	f.CombineMchID, f.CombineOutTradeNo = j.key.MchID, j.key.OutTradeNo
	f.Attempts = j.attempts
	f.CreatedAt = p.cfg.NowFunc().UTC()
}

// reject publishes the failure event (when the order can be named) and the
// dead letter, and answers Terminal. If either cannot be published, the job
// is handed back so that a later delivery tries again.
func (p *Processor) reject(ctx context.Context, j *job, reason events.Reason, f *events.PrepayFailed, cause error) error {
	sctx, cancel := settleCtx(ctx)
	defer cancel()
	if j.key.MchID != "" && j.key.OutTradeNo != "" {
		if f.Version == 0 { // not filled yet: fail stores a filled one
			p.fill(j, f)
		}
		if err := p.publish(sctx, j, p.cfg.Subjects.PrepayFailed(), events.PrepayFailedMsgID(j.key.MchID, j.key.OutTradeNo), f, metrics.EventPrepayFailed); err != nil {
			return RetryAfter(p.RedeliveryDelay(j.d.NumDelivered), err)
		}
	}
	if err := p.deadLetter(sctx, j, reason, cause); err != nil {
		return RetryAfter(p.RedeliveryDelay(j.d.NumDelivered), err)
	}
	j.logger().WarnContext(ctx, "job dead-lettered", slog.String("reason", string(reason)), slog.String("code", f.Code), slog.Any("error", cause))
	return terminal(reason, cause)
}

// DeadLetter publishes the dead letter of a delivery that will never be
// processed, and the order's failure event when it can be named. The
// Runner calls it for jobs JetStream reports at the delivery limit.
func (p *Processor) DeadLetter(ctx context.Context, d Delivery, reason events.Reason, cause error) error {
	j := &job{d: d, base: p.log, attrs: []slog.Attr{slog.String("subject", d.Subject), slog.Uint64("stream_seq", d.Sequence)}}
	decoded, _ := events.DecodeJob(d.Data, p.cfg.MaxJobSize)
	j.job = decoded
	j.key = idempotency.Key{MchID: decoded.Request.CombineMchID, OutTradeNo: decoded.Request.CombineOutTradeNo}
	j.attrs = append(j.attrs, slog.String("combine_mchid", j.key.MchID), slog.String("combine_out_trade_no", j.key.OutTradeNo),
		slog.String("correlation_id", decoded.CorrelationID))
	f := &events.PrepayFailed{Code: events.CodeRetriesExhausted, Message: cause.Error()}
	if err := p.reject(ctx, j, reason, f, cause); !errors.Is(err, &TerminalError{}) {
		return err
	}
	return nil
}

// keptHeaders are the job headers a dead letter keeps; JetStream's own
// Nats-* bookkeeping headers are dropped.
func keptHeaders(h nats.Header) map[string][]string {
	out := map[string][]string{}
	for k, v := range h {
		if k == events.HeaderMsgID || k == events.HeaderCorrelationID || !isNatsHeader(k) {
			out[k] = v
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func isNatsHeader(k string) bool { return len(k) > 5 && k[:5] == "Nats-" }

func (p *Processor) deadLetter(ctx context.Context, j *job, reason events.Reason, cause error) error {
	stream := cmp.Or(j.d.Stream, events.StreamJobs)
	dl := events.DeadLetter{
		Version:           events.Version,
		Reason:            reason,
		Error:             cause.Error(),
		CombineMchID:      j.key.MchID,
		CombineOutTradeNo: j.key.OutTradeNo,
		CorrelationID:     j.job.CorrelationID,
		OriginalSubject:   j.d.Subject,
		OriginalHeaders:   keptHeaders(j.d.Header),
		OriginalData:      j.d.Data,
		StreamSequence:    j.d.Sequence,
		DeliveryCount:     j.d.NumDelivered,
		FirstFailedAt:     j.d.Timestamp.UTC(),
		DeadAt:            p.cfg.NowFunc().UTC(),
	}
	if err := p.publish(ctx, j, p.cfg.Subjects.DeadLetter(reason), events.DeadLetterMsgID(stream, j.d.Sequence), dl, metrics.EventDeadLetter); err != nil {
		return err
	}
	p.m.DeadLetter(string(reason))
	return nil
}

func (p *Processor) publish(ctx context.Context, j *job, subject, msgID string, v any, kind string) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", kind, err)
	}
	msg := nats.NewMsg(subject)
	msg.Data = data
	msg.Header.Set(events.HeaderMsgID, msgID)
	if j.job.CorrelationID != "" {
		msg.Header.Set(events.HeaderCorrelationID, j.job.CorrelationID)
	}
	if err := p.cfg.Publisher.Publish(ctx, msg); err != nil {
		p.m.PublishFailure(kind)
		j.logger().WarnContext(ctx, "publish failed; job handed back", slog.String("event", kind), slog.Any("error", err))
		return fmt.Errorf("publish %s: %w", kind, err)
	}
	return nil
}
