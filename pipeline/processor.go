package pipeline

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
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
	"github.com/wxcombine/orderworker/internal/tracing"
	"github.com/wxcombine/orderworker/metrics"
	"github.com/wxcombine/orderworker/wechat"
)

// Payer creates, queries and closes WeChat Pay combine orders.
// *wechat.Client satisfies it.
type Payer interface {
	// CreateCombineOrder creates the order; errors follow wechat.Retryable.
	CreateCombineOrder(ctx context.Context, t wechat.TradeType, req *wechat.CombineOrderRequest) (*wechat.PrepayResult, error)
	// QueryByOutTradeNo answers the order as WeChat Pay has it; a missing
	// order is an error matching wechat.ErrOrderNotExist.
	QueryByOutTradeNo(ctx context.Context, mchID, combineOutTradeNo string) (*wechat.CombineOrder, error)
	// Close closes the unpaid order; closing twice succeeds.
	Close(ctx context.Context, mchID, combineOutTradeNo string, req *wechat.CloseRequest) error
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
	// StoreRetryDelay is how long a job waits, held (InProgress, no
	// redelivery spent), before it tries an unreachable store again.
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
	// Reconcile publishes an events.ReconcileCheck for every order with a
	// prepay (see reconcile.go). Defaults to false.
	Reconcile bool
	// Seen is the record of payments published, shared with the notifier
	// and the reconciler; SeenTTL how long it lasts. Seen defaults to none
	// (the stream's duplicate window alone), SeenTTL to
	// idempotency.SeenTTLDefault.
	Seen    idempotency.Seen
	SeenTTL time.Duration
	// NotifyURLBase is the notifier's public base URL: jobs without a
	// notify_url get <base>/v3/notify/<combine_mchid>, jobs with another
	// one are refused (see notifyurl.go). Defaults to none: notify_url is
	// sent as the job has it.
	NotifyURLBase string
}

// Processor handles one delivery of a job end to end: decode, validate,
// claim, create with retries, sign pay parameters, store the outcome,
// publish the event — and, when it cannot tell what happened to the order,
// asks WeChat Pay (see truth.go). Its answer tells the consumer loop what to
// do: nil → Ack, *RetryError → NakWithDelay (or, with Hold, keep the
// message and run it again), *TerminalError → Term. It is safe for
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
	cfg.SeenTTL = cmp.Or(cfg.SeenTTL, idempotency.SeenTTLDefault)
	var errs []error
	if err := CheckNotifyURLBase(cfg.NotifyURLBase); err != nil {
		errs = append(errs, err)
	}
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
	cfg.Store, cfg.Publisher = tracing.WrapStore(cfg.Store), tracing.WrapPublisher(cfg.Publisher) // spans; off, nearly free
	return &Processor{cfg: cfg, log: cfg.Logger, m: cfg.Metrics}, nil
}

// MaxJobSize answers the largest job body accepted, for the jobs stream.
func (p *Processor) MaxJobSize() int { return p.cfg.MaxJobSize }

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

// PingStore checks the idempotency store and records the answer, so that a
// worker holding back while the store was down resumes on its own.
func (p *Processor) PingStore(ctx context.Context) error {
	err := p.cfg.Store.Ping(ctx)
	p.storeResult(err)
	return err
}

// StoreErr answers the last error of the idempotency store, or nil if its
// last call succeeded. Readiness reports it, and the Runner pulls no new
// job while it is set.
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

// job is the state of one delivery.
type job struct {
	d        Delivery
	job      events.CreateOrderJob
	key      idempotency.Key
	fp       string // fingerprint of trade type + body
	attempts int
	dup      bool
	// adopted marks a job whose settle found another worker's outcome in
	// the record and published that one instead of its own.
	adopted bool
	// reclaimed marks a job that already claimed again after a lost lease.
	reclaimed bool
	// last marks a job with no delivery after this one: it is settled now
	// (by WeChat Pay's record if need be), never handed back.
	last bool

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
	j := p.newJob(d)
	j.last = d.NumDelivered >= uint64(p.cfg.MaxDeliver) //nolint:gosec // MaxDeliver >= 1, checked in New
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
		p.m.JobContext(ctx, outcome, p.cfg.NowFunc().Sub(start))
	}()
	return p.process(ctx, j)
}

// Settle settles a job that JetStream will not deliver again (it reached
// the delivery limit without an outcome: its worker died, or its last
// delivery was handed back): the stored outcome is published if the order
// has one; otherwise WeChat Pay's record decides, as on a last delivery
// whose calls failed. A nil answer means the job has its outcome or dead
// letter and may be deleted from the jobs stream; an error means it must
// be tried again later.
func (p *Processor) Settle(ctx context.Context, d Delivery) (err error) {
	ctx, span := tracing.StartJob(ctx, "settle", d.Subject, d.Header, nil)
	defer func() { tracing.End(span, err) }()
	j := p.newJob(d)
	j.last = true
	err = p.process(ctx, j)
	if errors.Is(err, &TerminalError{}) {
		return nil
	}
	return err
}

func (p *Processor) newJob(d Delivery) *job {
	j := &job{d: d, base: p.log, attrs: make([]slog.Attr, 0, 7)}
	j.attrs = append(j.attrs, slog.String("subject", d.Subject), slog.Uint64("stream_seq", d.Sequence), slog.Uint64("delivery", d.NumDelivered))
	return j
}

func (p *Processor) process(ctx context.Context, j *job) error {
	decoded, err := events.DecodeJob(j.d.Data, p.cfg.MaxJobSize)
	j.job = decoded
	j.key = idempotency.Key{MchID: decoded.Request.CombineMchID, OutTradeNo: decoded.Request.CombineOutTradeNo}
	j.attrs = append(j.attrs, slog.String("combine_mchid", j.key.MchID), slog.String("combine_out_trade_no", j.key.OutTradeNo),
		slog.String("correlation_id", decoded.CorrelationID), slog.String("trade_type", string(decoded.TradeType)))
	traceJob(ctx, j)
	if err != nil {
		return p.refuse(ctx, j, events.ReasonOf(err), &events.PrepayFailed{Code: events.CodeOf(err), Message: err.Error()}, err)
	}
	if t, ok := p.cfg.Subjects.TradeTypeOf(j.d.Subject); !ok || t != decoded.TradeType {
		err := fmt.Errorf("subject %s does not match trade_type %q", j.d.Subject, decoded.TradeType)
		return p.refuse(ctx, j, events.ReasonMalformed, &events.PrepayFailed{Code: events.CodeMalformedJob, Message: err.Error(), Field: "trade_type"}, err)
	}
	if f := decoded.Flavour; f != "" && f != p.cfg.Flavour {
		err := fmt.Errorf("flavour %s is not served by this worker (%s)", f, p.cfg.Flavour)
		return p.refuse(ctx, j, events.ReasonInvalid, &events.PrepayFailed{Code: events.CodeInvalidJob, Message: err.Error(), Field: "flavour"}, err)
	}
	if err := p.notifyURL(&decoded.Request); err != nil {
		return p.refuse(ctx, j, events.ReasonInvalid, invalidFailure(err), err)
	}
	j.job.Request.NotifyURL = decoded.Request.NotifyURL
	if err := wechat.Validate(p.cfg.Flavour, decoded.TradeType, &decoded.Request); err != nil {
		return p.refuse(ctx, j, events.ReasonInvalid, invalidFailure(err), err)
	}
	j.fp, err = fingerprint(j.job.TradeType, &j.job.Request)
	if err != nil {
		return p.refuse(ctx, j, events.ReasonInvalid, invalidFailure(err), err)
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

// conflictFailure describes a job whose order number belongs to an order
// with other parameters.
func conflictFailure() *events.PrepayFailed {
	return &events.PrepayFailed{
		Code:                    events.CodeOrderNumberConflict,
		Message:                 "combine_out_trade_no was already used with different parameters",
		Field:                   "/combine_out_trade_no",
		RetryWithNewOrderNumber: true,
	}
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
	claim, err := p.cfg.Store.Claim(ctx, j.key, j.fp, p.cfg.Lease)
	if err != nil {
		p.storeResult(err)
		p.m.Claim(metrics.ClaimUnavailable)
		j.logger().WarnContext(ctx, "idempotency store unavailable; job held without calling WeChat Pay", slog.Any("error", err))
		return Hold(p.cfg.StoreRetryDelay, fmt.Errorf("claim %s: %w", j.key, err))
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
		if j.last {
			// No delivery is left: wait here for the holder's outcome.
			return Hold(delay, fmt.Errorf("order %s is in flight", j.key))
		}
		return RetryAfter(delay, fmt.Errorf("order %s is in flight", j.key))
	case idempotency.StateConflict:
		p.m.Claim(metrics.ClaimConflict)
		j.logger().WarnContext(ctx, "order number reused with different parameters")
		return p.deadLetterOnly(ctx, j, events.ReasonConflict, errors.New("combine_out_trade_no is taken by an order with different parameters"))
	case idempotency.StateClaimed:
		p.m.Claim(metrics.ClaimClaimed)
	default:
		return Hold(p.cfg.StoreRetryDelay, fmt.Errorf("claim %s: unknown state %v", j.key, claim.State))
	}
	if j.last && j.d.NumDelivered > uint64(p.cfg.MaxDeliver) { //nolint:gosec // MaxDeliver >= 1
		// Settled from outside a delivery (advisory or sweep): earlier
		// deliveries made their calls; WeChat Pay's record decides.
		return p.askOrHold(ctx, j, claim.Token, errors.New("delivery limit reached without an outcome"), true)
	}
	return p.pay(ctx, j, claim.Token)
}

// pay runs the in-process retries, then settles the order.
func (p *Processor) pay(ctx context.Context, j *job, token uint64) error {
	res, err := p.create(ctx, j)
	switch {
	case err == nil:
		return p.succeed(ctx, j, token, res)
	case wechat.OperatorError(err):
		f := failureOf(err)
		f.Message = "WeChat Pay refused the request for a reason an operator must fix (" + f.Code + "); the order was not created: replay the dead letter after the fix. " + f.Message
		return p.release(ctx, j, token, events.ReasonConfiguration, f, err)
	case wechat.Retryable(err) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return p.retryLater(ctx, j, token, err)
	case wechat.OrderMayExist(err):
		// The number is taken, closed or paid, and the record (had it
		// known) would have answered: it was lost or expired.
		return p.askOrHold(ctx, j, token, err, false)
	default:
		return p.settleFailure(ctx, j, token, failureOf(err), reasonOf(err), err)
	}
}

// create makes the create call with the in-process retries. The calls end
// one second before the claim's lease does, or another worker could take
// the order over while a call is still under way.
func (p *Processor) create(ctx context.Context, j *job) (*wechat.PrepayResult, error) {
	payCtx, cancel := context.WithTimeout(ctx, p.cfg.Lease-time.Second)
	defer cancel()
	// The merchant's rate budget is waited for outside the call's own
	// timeout, and without holding a concurrency slot.
	wait := func() error { return p.waitCall(payCtx, j.key.MchID) }
	return retryCall(payCtx, p, j, "create_"+string(j.job.TradeType), wait, func(callCtx context.Context) (*wechat.PrepayResult, error) {
		j.attempts++
		res, err := p.cfg.Payer.CreateCombineOrder(callCtx, j.job.TradeType, &j.job.Request)
		p.observeCall(ctx, j.key.MchID, err)
		return res, err
	})
}

// askOrHold renews the lease, then asks WeChat Pay (see ask); a lease that
// cannot be renewed means another worker holds the order now, so the job
// is held and run again.
func (p *Processor) askOrHold(ctx context.Context, j *job, token uint64, cause error, recoverable bool) error {
	sctx, cancel := settleCtx(ctx)
	err := p.cfg.Store.Extend(sctx, j.key, token, p.cfg.Lease)
	cancel()
	if err != nil {
		if !errors.Is(err, idempotency.ErrStaleToken) {
			p.storeResult(err)
		}
		return Hold(p.cfg.StoreRetryDelay, fmt.Errorf("renew the lease of %s before asking WeChat Pay: %w", j.key, err))
	}
	// Asking gets the renewed lease as its budget, whatever is left of the
	// delivery's: the creates before it may have used the delivery up. It
	// still stops when the worker does.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.Lease-time.Second)
	defer cancel()
	stop := context.AfterFunc(ctx, func() {
		if errors.Is(ctx.Err(), context.Canceled) {
			cancel()
		}
	})
	defer stop()
	return p.ask(actx, j, token, cause, recoverable)
}

// reasonOf names the dead-letter reason of a final rejection.
func reasonOf(err error) events.Reason {
	if errors.Is(err, wechat.ErrInvalid) {
		return events.ReasonInvalid
	}
	return events.ReasonRejected
}

// CallCode labels a WeChat Pay call's result for metrics and logs: OK, the
// WeChat Pay code (normalized), HTTP_<status> without one, TIMEOUT,
// CANCELED, INVALID (refused locally), TRANSPORT_ERROR (outcome unknown),
// SIGNATURE_ERROR, UNKNOWN_MERCHANT, NO_KEY or ERROR.
func CallCode(err error) string {
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
	case errors.Is(err, wechat.ErrNoKey):
		return "NO_KEY"
	default:
		return "ERROR"
	}
}

// settleCtx answers a context for the writes that settle a job: they must
// run even when the job's own context has just ended.
func settleCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
}

// releaseClaim gives the order up after a failure that is not its outcome.
func (p *Processor) releaseClaim(ctx context.Context, j *job, token uint64) error {
	sctx, cancel := settleCtx(ctx)
	defer cancel()
	err := p.cfg.Store.Release(sctx, j.key, token)
	switch {
	case err == nil, errors.Is(err, idempotency.ErrStaleToken):
		return nil
	default:
		// The lease expires on its own; the next claim waits for it.
		j.logger().WarnContext(ctx, "release claim", slog.Any("error", err))
		return nil
	}
}

// retryLater hands the job back for a later delivery; on the last delivery
// it asks WeChat Pay instead.
func (p *Processor) retryLater(ctx context.Context, j *job, token uint64, cause error) error {
	if j.last && !errors.Is(ctx.Err(), context.Canceled) {
		// The delivery's deadline may have passed: asking has a budget of
		// its own (askOrHold).
		return p.askOrHold(ctx, j, token, cause, true)
	}
	if err := p.releaseClaim(ctx, j, token); err != nil {
		return err
	}
	delay := p.RedeliveryDelay(j.d.NumDelivered)
	p.m.Retry(metrics.RetryRedelivery)
	j.logger().WarnContext(ctx, "retries exhausted for this delivery; job handed back", slog.Int("attempts", j.attempts),
		slog.Duration("retry_in", delay), slog.String("wechat_code", CallCode(cause)))
	return RetryAfter(delay, cause)
}

// settleFailure stores a final failure as the order's outcome, publishes
// it and dead-letters the job. If another worker's outcome got there first,
// that one is published instead and the job simply ends.
func (p *Processor) settleFailure(ctx context.Context, j *job, token uint64, f *events.PrepayFailed, reason events.Reason, cause error) error {
	p.fill(j, f)
	f.Final = true
	r := &record{Failed: f, DeadLetter: &owedDeadLetter{Reason: reason, Error: cause.Error(), Stream: cmp.Or(j.d.Stream, events.StreamJobs), Seq: j.d.Sequence}}
	if err := p.settle(ctx, j, token, r); err != nil {
		return err
	}
	if !j.adopted {
		sctx, cancel := settleCtx(ctx)
		defer cancel()
		if err := p.deadLetter(sctx, j, reason, cause); err != nil {
			return RetryAfter(p.RedeliveryDelay(j.d.NumDelivered), err)
		}
		j.logger().WarnContext(ctx, "order failed for good; job dead-lettered", slog.String("reason", string(reason)), slog.String("code", f.Code), slog.Any("error", cause))
		return terminal(reason, cause)
	}
	return nil
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
	code := CallCode(err)
	if wechat.OperatorError(err) {
		code = events.CodeConfiguration
	}
	return &events.PrepayFailed{Code: code, Message: err.Error()}
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
	ev.ExpiresAt = events.PrepayExpiry(ev.TradeType, ev.CreatedAt)
	span := startSign(ctx, j.job.TradeType)
	params, err := p.payParams(j, res.PrepayID)
	tracing.End(span, err)
	if err != nil {
		// The order exists; a later job with the same body gets the same
		// prepay_id again. A missing key is an operator's to fix.
		j.logger().ErrorContext(ctx, "sign pay parameters", slog.Any("error", err))
		if wechat.OperatorError(err) {
			f := &events.PrepayFailed{Code: events.CodeConfiguration, Message: "the order was created but its pay parameters cannot be signed (" + CallCode(err) +
				"): replay the dead letter after the merchant's key is installed"}
			return p.release(ctx, j, token, events.ReasonConfiguration, f, err)
		}
		if err := p.releaseClaim(ctx, j, token); err != nil {
			return err
		}
		return RetryAfter(p.RedeliveryDelay(j.d.NumDelivered), fmt.Errorf("sign pay parameters: %w", err))
	}
	ev.PayParams = params
	if err := p.settle(ctx, j, token, &record{Created: ev}); err != nil {
		return err
	}
	if !j.adopted {
		j.logger().InfoContext(ctx, "prepay created", slog.Int("attempts", j.attempts))
	}
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
		return &events.PayParams{JSAPI: w}, nil
	case wechat.TradeTypeMiniProgram:
		w, err := p.cfg.Signer.MiniProgramPayParams(mch, app, prepayID)
		if err != nil {
			return nil, err
		}
		return &events.PayParams{MiniProgram: w}, nil
	case wechat.TradeTypeApp:
		w, err := p.cfg.Signer.AppPayParams(mch, app, prepayID)
		if err != nil {
			return nil, err
		}
		return &events.PayParams{App: w}, nil
	}
	return nil, nil // h5 and native need none
}
