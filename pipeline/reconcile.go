package pipeline

// Reconciliation: no payment lost, no order left open.
//
// WeChat Pay's notifications can be lost (it retries 15 times over 24 hours,
// then gives up; a notifier that was down, a wrong notify_url), and it tells
// merchants to query the orders they have not heard about and to close the
// ones that will not be paid. Every order with a prepay is therefore watched
// until WeChat Pay reports it paid or closed:
//
//   - When a worker settles an order with a prepay (and again whenever it
//     republishes that outcome), it first publishes an events.ReconcileCheck
//     on <prefix>.orders.reconcile.<combine_mchid>, stream
//     COMBINE_ORDER_RECONCILE (work-queue retention), with Nats-Msg-Id
//     events.ReconcileMsgID.
//   - The Reconciler consumes that stream through the durable consumer
//     "<consumer>-reconcile". A check is held by JetStream itself until the
//     order's next query (NakWithDelay), never by an in-memory timer, so
//     checks survive restarts, and any number of workers share them.
//   - At each point of the schedule (ReconcileConfig.Schedule, counted from
//     the prepay's creation; RECONCILE_SCHEDULE, default 1m,5m,15m,1h) the
//     order is queried by combine_out_trade_no, unless the shared Seen
//     record already says its payment was published (then it is dropped
//     without a query):
//
//	query answer                               then
//	every sub-order SUCCESS, amounts consistent  payments.succeeded under the notifier's Nats-Msg-Id; done
//	every sub-order CLOSED                       orders.closed (closed_at_wechat); done
//	NOTPAY, before the order's time is up        held until the next point
//	NOTPAY, its time is up                       closed at WeChat Pay, orders.closed (unpaid_expired); done
//	ORDER_NOT_EXIST, REFUND, PAYERROR, mixed,    an anomaly: logged and counted, never a payment; held
//	inconsistent amounts                         until its time is up, then dropped (REFUND, PAYERROR at once)
//	the query, close or publish fails            checked again after RetryDelay
//
// An order's time is up at its own time_expire, or, without one,
// UnpaidCloseAfter (UNPAID_CLOSE_AFTER, default 2h, the prepay_id's
// validity) after the prepay was created. After the last point of the
// schedule the order is checked once more when its time is up.
//
// A payment published here and one published by the notifier are the same
// event with the same Nats-Msg-Id (events.PaymentSucceededMsgID); beyond the
// stream's duplicate window, the Seen record (idempotency.Seen, shared with
// the notifier, SeenTTL 72h) keeps the second report from publishing again.
//
// # Close jobs
//
// A checkout closes an order (the customer cancelled) with an
// events.CloseOrderJob on <prefix>.orders.close, in the same stream,
// consumed by "<consumer>-close". The order is queried (the close body
// names its sub-orders, taken from the answer), then closed:
// orders.closed; already closed: orders.closed; paid: orders.close.failed
// ORDER_PAID, then the payment; not at WeChat Pay, REFUND, PAYERROR:
// orders.close.failed saying so. Calls that keep failing are retried up to
// CloseMaxDeliver deliveries, then orders.close.failed RETRIES_EXHAUSTED.
//
// # Turning it off
//
// ReconcileConfig.Disabled (RECONCILE_ENABLED=false in cmd/worker) stops the
// checks: workers publish no ReconcileCheck and consume none. Close jobs
// are still served. Every worker of a deployment should agree: a worker
// with reconciliation on consumes the checks the others publish.

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/idempotency"
	"github.com/wxcombine/orderworker/metrics"
	"github.com/wxcombine/orderworker/wechat"
)

// Defaults of ReconcileConfig.
const (
	// UnpaidCloseAfterDefault closes an unpaid order without time_expire
	// once its prepay_id has expired.
	UnpaidCloseAfterDefault = 2 * time.Hour
	// ReconcileRetryDelayDefault is the wait after a failed query, close or
	// publish.
	ReconcileRetryDelayDefault = 30 * time.Second
	// ReconcileMaxAgeDefault is how long the reconcile stream keeps a
	// check or close job: far beyond any schedule.
	ReconcileMaxAgeDefault = 7 * 24 * time.Hour
	// ReconcileMaxAckPendingDefault bounds the checks held at once over all
	// workers: a check waiting for its next point counts as pending.
	ReconcileMaxAckPendingDefault = 1_000_000
	// CloseMaxDeliverDefault is the delivery limit of a close job.
	CloseMaxDeliverDefault = 10
)

// ReconcileScheduleDefault is when an order with a prepay is queried, after
// the prepay's creation.
var ReconcileScheduleDefault = []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute, time.Hour}

// ReconcileConfig configures a Reconciler.
type ReconcileConfig struct {
	// JetStream is the JetStream context. Required.
	JetStream jetstream.JetStream
	// Payer queries and closes orders. Required.
	Payer Payer
	// Publisher publishes events. Required.
	Publisher Publisher
	// Seen is the record of payments and closes published, shared with
	// the notifier. Required unless DuplicateWindow covers
	// idempotency.NotifyHorizon (see idempotency.CheckReplayProtection).
	Seen idempotency.Seen
	// SeenTTL is how long a Seen record lasts. Defaults to
	// idempotency.SeenTTLDefault.
	SeenTTL time.Duration
	// Subjects names the subjects. Defaults to the "combine" prefix.
	Subjects events.Subjects
	// Stream names the reconcile stream. Defaults to events.StreamReconcile.
	Stream string
	// Consumer is the prefix of the two durable consumers' names
	// ("<Consumer>-reconcile", "<Consumer>-close"). Defaults to
	// ConsumerDefault.
	Consumer string
	// Schedule lists when an order is queried, after its prepay was
	// created; increasing. Defaults to ReconcileScheduleDefault.
	Schedule []time.Duration
	// UnpaidCloseAfter is when an unpaid order without time_expire is
	// closed, after its prepay was created. Defaults to
	// UnpaidCloseAfterDefault.
	UnpaidCloseAfter time.Duration
	// Disabled turns the checks off (close jobs are still served).
	Disabled bool
	// InFlight is how many checks and close jobs this worker handles at
	// once. Defaults to InFlightDefault.
	InFlight int
	// MaxAckPending bounds the checks held at once over all workers.
	// Defaults to ReconcileMaxAckPendingDefault.
	MaxAckPending int
	// CallTimeout bounds one WeChat Pay call. Defaults to
	// CallTimeoutDefault.
	CallTimeout time.Duration
	// RetryDelay is the wait after a failed call or publish. Defaults to
	// ReconcileRetryDelayDefault.
	RetryDelay time.Duration
	// CloseMaxDeliver is the delivery limit of a close job. Defaults to
	// CloseMaxDeliverDefault.
	CloseMaxDeliver int
	// Replicas and Storage configure the stream and consumers. Default to
	// 1 and file storage.
	Replicas int
	Storage  jetstream.StorageType
	// MaxAge bounds how long the stream keeps a message. Defaults to
	// ReconcileMaxAgeDefault.
	MaxAge time.Duration
	// DuplicateWindow is the stream's duplicate window. Defaults to
	// DuplicateWindowDefault.
	DuplicateWindow time.Duration
	// Metrics and Anomalies record what happens. Default to none.
	Metrics   *metrics.Reconcile
	Anomalies *metrics.PaymentAnomalies
	// Logger receives one record per settled order and per anomaly.
	// Defaults to a discarding logger.
	Logger *slog.Logger
	// NowFunc answers the current time. Defaults to time.Now.
	NowFunc func() time.Time
}

// Reconciler queries orders with a prepay on a schedule and serves close
// jobs (see above). It is safe for concurrent use.
type Reconciler struct {
	cfg ReconcileConfig
	log *slog.Logger
	m   *metrics.Reconcile
}

// NewReconciler checks cfg, applies its defaults and answers a Reconciler.
func NewReconciler(cfg ReconcileConfig) (*Reconciler, error) {
	cfg.Stream = cmp.Or(cfg.Stream, events.StreamReconcile)
	cfg.Consumer = cmp.Or(cfg.Consumer, ConsumerDefault)
	if len(cfg.Schedule) == 0 {
		cfg.Schedule = ReconcileScheduleDefault
	}
	cfg.UnpaidCloseAfter = cmp.Or(cfg.UnpaidCloseAfter, UnpaidCloseAfterDefault)
	cfg.InFlight = cmp.Or(cfg.InFlight, InFlightDefault)
	cfg.MaxAckPending = cmp.Or(cfg.MaxAckPending, ReconcileMaxAckPendingDefault)
	cfg.CallTimeout = cmp.Or(cfg.CallTimeout, CallTimeoutDefault)
	cfg.RetryDelay = cmp.Or(cfg.RetryDelay, ReconcileRetryDelayDefault)
	cfg.CloseMaxDeliver = cmp.Or(cfg.CloseMaxDeliver, CloseMaxDeliverDefault)
	cfg.Replicas = cmp.Or(cfg.Replicas, 1)
	cfg.MaxAge = cmp.Or(cfg.MaxAge, ReconcileMaxAgeDefault)
	cfg.DuplicateWindow = cmp.Or(cfg.DuplicateWindow, DuplicateWindowDefault)
	cfg.SeenTTL = cmp.Or(cfg.SeenTTL, idempotency.SeenTTLDefault)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.NowFunc == nil {
		cfg.NowFunc = time.Now
	}
	var errs []error
	for name, missing := range map[string]bool{"JetStream": cfg.JetStream == nil, "Payer": cfg.Payer == nil, "Publisher": cfg.Publisher == nil} {
		if missing {
			errs = append(errs, fmt.Errorf("missing %s", name))
		}
	}
	if err := CheckSchedule(cfg.Schedule); err != nil {
		errs = append(errs, err)
	}
	if err := idempotency.CheckReplayProtection(cfg.Seen != nil, cfg.SeenTTL, cfg.DuplicateWindow); err != nil {
		errs = append(errs, err)
	}
	if cfg.InFlight < 1 {
		errs = append(errs, fmt.Errorf("in-flight count %d must be at least 1", cfg.InFlight))
	}
	if last := cfg.Schedule[len(cfg.Schedule)-1]; cfg.MaxAge <= max(last, cfg.UnpaidCloseAfter) {
		errs = append(errs, fmt.Errorf("MaxAge %s must exceed the schedule and UnpaidCloseAfter", cfg.MaxAge))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("pipeline: reconciler: %w", err)
	}
	return &Reconciler{cfg: cfg, log: cfg.Logger, m: cfg.Metrics}, nil
}

// CheckSchedule reports whether s is a usable schedule: at least one
// positive duration, strictly increasing.
func CheckSchedule(s []time.Duration) error {
	if len(s) == 0 {
		return errors.New("empty reconcile schedule")
	}
	for i, d := range s {
		if d <= 0 || (i > 0 && d <= s[i-1]) {
			return fmt.Errorf("reconcile schedule %v must be positive and strictly increasing", s)
		}
	}
	return nil
}

func (r *Reconciler) checkConsumer() string { return r.cfg.Consumer + "-reconcile" }
func (r *Reconciler) closeConsumer() string { return r.cfg.Consumer + "-close" }

// Setup creates or updates the reconcile stream and its consumers.
func (r *Reconciler) Setup(ctx context.Context) error {
	c := r.cfg
	_, err := c.JetStream.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: c.Stream, Description: "orders watched until paid or closed, and close jobs",
		Subjects: c.Subjects.ReconcileSubjects(), Retention: jetstream.WorkQueuePolicy, MaxAge: c.MaxAge,
		Storage: c.Storage, Replicas: c.Replicas, Duplicates: c.DuplicateWindow,
	})
	if err != nil {
		return fmt.Errorf("pipeline: stream %s: %w", c.Stream, err)
	}
	consumers := []jetstream.ConsumerConfig{{
		Durable: r.closeConsumer(), Description: "order workers: close jobs", AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: AckWaitDefault, MaxDeliver: c.CloseMaxDeliver, FilterSubject: c.Subjects.CloseJob(), Replicas: c.Replicas,
		MaxAckPending: MaxAckPendingDefault,
	}}
	if !c.Disabled {
		consumers = append(consumers, jetstream.ConsumerConfig{
			Durable: r.checkConsumer(), Description: "order workers: reconcile orders with WeChat Pay",
			AckPolicy: jetstream.AckExplicitPolicy, AckWait: AckWaitDefault,
			// Every hold is a nak: no delivery limit.
			MaxDeliver: -1, MaxAckPending: c.MaxAckPending, FilterSubject: c.Subjects.Reconciles(), Replicas: c.Replicas,
		})
	}
	for _, cc := range consumers {
		if _, err := c.JetStream.CreateOrUpdateConsumer(ctx, c.Stream, cc); err != nil {
			return fmt.Errorf("pipeline: consumer %s: %w", cc.Durable, err)
		}
	}
	return nil
}

// Run sets up the stream and consumers, then handles checks and close jobs
// until ctx ends; a message in hand when it ends is handed back. Errors
// are setup failures.
func (r *Reconciler) Run(ctx context.Context) error {
	if err := r.Setup(ctx); err != nil {
		if ctx.Err() != nil {
			return nil //nolint:nilerr // stopped while starting
		}
		return err
	}
	type loop struct {
		consumer string
		handle   func(context.Context, jetstream.Msg)
	}
	loops := []loop{{r.closeConsumer(), r.handleClose}}
	if !r.cfg.Disabled {
		loops = append(loops, loop{r.checkConsumer(), r.handleCheck})
	}
	var wg sync.WaitGroup
	errc := make(chan error, len(loops))
	for _, l := range loops {
		cons, err := r.cfg.JetStream.Consumer(ctx, r.cfg.Stream, l.consumer)
		if err != nil {
			if ctx.Err() != nil {
				break // stopped while starting (SIGTERM right after the setup); the loops started end with ctx
			}
			return fmt.Errorf("pipeline: consumer %s: %w", l.consumer, err)
		}
		wg.Add(1)
		go func() { // Owned by Run: ends when ctx ends.
			defer wg.Done()
			errc <- r.consume(ctx, cons, l.handle)
		}()
	}
	r.log.InfoContext(ctx, "reconciler consuming", slog.String("stream", r.cfg.Stream), slog.Bool("checks", !r.cfg.Disabled),
		slog.Any("schedule", r.cfg.Schedule), slog.Duration("unpaid_close_after", r.cfg.UnpaidCloseAfter))
	wg.Wait()
	close(errc)
	var errs []error
	for err := range errc {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// consume feeds handle from cons with at most InFlight messages at once.
func (r *Reconciler) consume(ctx context.Context, cons jetstream.Consumer, handle func(context.Context, jetstream.Msg)) error {
	it, err := cons.Messages(jetstream.PullMaxMessages(r.cfg.InFlight), jetstream.PullExpiry(PullExpiryDefault),
		jetstream.PullHeartbeat(PullHeartbeatDefault))
	if err != nil {
		return fmt.Errorf("pipeline: messages: %w", err)
	}
	go func() { // Owned by consume: ends when ctx ends.
		<-ctx.Done()
		it.Stop()
	}()
	sem := make(chan struct{}, r.cfg.InFlight)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		msg, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || ctx.Err() != nil {
				return nil
			}
			if !errors.Is(err, jetstream.ErrNoHeartbeat) {
				r.log.WarnContext(ctx, "reconciler pull failed", slog.Any("error", err))
				select {
				case <-time.After(time.Second):
				case <-ctx.Done():
				}
			}
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() { // Owned by consume: ends with the message.
			defer wg.Done()
			defer func() { <-sem }()
			handle(context.WithoutCancel(ctx), msg)
		}()
	}
}

// closeAt answers when an unpaid order of c is closed.
func (r *Reconciler) closeAt(c *events.ReconcileCheck) time.Time {
	if t, err := time.Parse(time.RFC3339, c.TimeExpire); err == nil && c.TimeExpire != "" {
		return t
	}
	return c.CreatedAt.Add(r.cfg.UnpaidCloseAfter)
}

// next answers when c is checked after now: the next point of the
// schedule, or its close time, whichever comes first; ok is false when
// neither is after now.
func (r *Reconciler) next(c *events.ReconcileCheck, now time.Time) (time.Time, bool) {
	var at time.Time
	for _, d := range r.cfg.Schedule {
		if t := c.CreatedAt.Add(d); t.After(now) {
			at = t
			break
		}
	}
	if ca := r.closeAt(c); ca.After(now) && (at.IsZero() || ca.Before(at)) {
		at = ca
	}
	return at, !at.IsZero()
}

// handleCheck handles one delivery of a ReconcileCheck.
func (r *Reconciler) handleCheck(ctx context.Context, msg jetstream.Msg) {
	var c events.ReconcileCheck
	if err := json.Unmarshal(msg.Data(), &c); err != nil || c.Validate() != nil {
		r.log.ErrorContext(ctx, "reconcile check is malformed; dropped", slog.String("subject", msg.Subject()))
		r.m.Check(metrics.ReconcileDropped)
		r.ack(ctx, msg.TermWithReason("malformed"))
		return
	}
	log := r.log.With(slog.String("combine_mchid", c.CombineMchID), slog.String("combine_out_trade_no", c.CombineOutTradeNo),
		slog.String("correlation_id", c.CorrelationID))
	now := r.cfg.NowFunc()
	if first := c.CreatedAt.Add(r.cfg.Schedule[0]); now.Before(first) {
		r.m.Check(metrics.ReconcileWaiting)
		r.ack(ctx, msg.NakWithDelay(first.Sub(now)))
		return
	}
	result, delay := r.check(ctx, &c, now, log)
	r.m.Check(result)
	switch {
	case delay > 0:
		r.ack(ctx, msg.NakWithDelay(delay))
	default:
		actx, cancel := settleCtx(ctx)
		defer cancel()
		r.ack(ctx, msg.DoubleAck(actx))
	}
}

// check queries the order of c and acts on the answer. It answers the
// metrics result and the delay before the next check (0: done).
func (r *Reconciler) check(ctx context.Context, c *events.ReconcileCheck, now time.Time, log *slog.Logger) (string, time.Duration) {
	key := idempotency.Key{MchID: c.CombineMchID, OutTradeNo: c.CombineOutTradeNo}
	if done, err := r.settled(ctx, key); err != nil {
		log.WarnContext(ctx, "seen record unavailable; check held", slog.Any("error", err))
		return metrics.ReconcileError, r.cfg.RetryDelay
	} else if done {
		return metrics.ReconcileSettled, 0
	}
	later := func(result string) (string, time.Duration) {
		at, ok := r.next(c, now)
		if !ok {
			log.ErrorContext(ctx, "order neither paid nor open nor closed after its last check; no longer watched")
			return metrics.ReconcileDropped, 0
		}
		return result, at.Sub(now)
	}
	order, err := r.query(ctx, key)
	switch {
	case errors.Is(err, wechat.ErrOrderNotExist):
		r.cfg.Anomalies.Inc(metrics.AnomalyReconciler)
		log.WarnContext(ctx, "order with a prepay does not exist at WeChat Pay")
		return later(metrics.ReconcileAnomaly)
	case err != nil:
		log.WarnContext(ctx, "reconcile query failed; checked again later", slog.String("wechat_code", CallCode(err)))
		return metrics.ReconcileError, r.cfg.RetryDelay
	}
	switch stateOf(order) {
	case statePaid:
		if err := r.publishPayment(ctx, order); err != nil {
			log.WarnContext(ctx, "payment not published; checked again later", slog.Any("error", err))
			return metrics.ReconcileError, r.cfg.RetryDelay
		}
		log.InfoContext(ctx, "reconciliation found the order paid; payment published")
		return metrics.ReconcilePaid, 0
	case stateClosed:
		if err := r.publishClosed(ctx, key, c.CorrelationID, events.ClosedAtWeChat, true); err != nil {
			return metrics.ReconcileError, r.cfg.RetryDelay
		}
		return metrics.ReconcileWasClosed, 0
	case stateNotPaid:
		if now.Before(r.closeAt(c)) {
			return later(metrics.ReconcileUnpaid)
		}
		return r.closeUnpaid(ctx, key, order, c, log)
	}
	r.cfg.Anomalies.Inc(metrics.AnomalyReconciler)
	log.ErrorContext(ctx, "WeChat Pay reports the order in a state that is no payment; not published", slog.Any("trade_states", events.TradeStates(order)),
		slog.Any("reason", events.CheckPaid(order)))
	for _, s := range order.SubOrders {
		if s.TradeState == wechat.TradeStateRefund || s.TradeState == wechat.TradeStatePayError {
			return metrics.ReconcileAnomaly, 0 // settled at WeChat Pay, for an operator to look at
		}
	}
	return later(metrics.ReconcileAnomaly)
}

// closeUnpaid closes an unpaid order whose time is up.
func (r *Reconciler) closeUnpaid(ctx context.Context, key idempotency.Key, order *wechat.CombineOrder, c *events.ReconcileCheck, log *slog.Logger) (string, time.Duration) {
	if err := r.close(ctx, key, order); err != nil {
		// Paid in the meantime (INVALID_REQUEST 订单已支付) or a failed
		// call: the next query tells.
		log.WarnContext(ctx, "close failed; checked again", slog.String("wechat_code", CallCode(err)))
		delay := r.cfg.RetryDelay
		if wechat.OrderMayExist(err) {
			delay = InFlightDelayMin
		}
		return metrics.ReconcileError, delay
	}
	if err := r.publishClosed(ctx, key, c.CorrelationID, events.ClosedUnpaid, true); err != nil {
		return metrics.ReconcileError, r.cfg.RetryDelay
	}
	log.InfoContext(ctx, "unpaid order closed at WeChat Pay after its time", slog.Time("close_at", r.closeAt(c)))
	return metrics.ReconcileClosed, 0
}

// settled reports whether the order's payment or close was published.
func (r *Reconciler) settled(ctx context.Context, key idempotency.Key) (bool, error) {
	if r.cfg.Seen == nil {
		return false, nil
	}
	for _, k := range []idempotency.SeenKind{idempotency.SeenPayment, idempotency.SeenClosed} {
		ok, err := r.cfg.Seen.Seen(ctx, k, key)
		if err != nil || ok {
			return ok, err
		}
	}
	return false, nil
}

func (r *Reconciler) query(ctx context.Context, key idempotency.Key) (*wechat.CombineOrder, error) {
	r.m.Query()
	cctx, cancel := context.WithTimeout(ctx, r.cfg.CallTimeout)
	defer cancel()
	return r.cfg.Payer.QueryByOutTradeNo(cctx, key.MchID, key.OutTradeNo)
}

// close closes the order, naming the sub-orders of its query answer.
func (r *Reconciler) close(ctx context.Context, key idempotency.Key, order *wechat.CombineOrder) error {
	req := closeRequestOf(order)
	cctx, cancel := context.WithTimeout(ctx, r.cfg.CallTimeout)
	defer cancel()
	if err := r.cfg.Payer.Close(cctx, key.MchID, key.OutTradeNo, &req); err != nil {
		return err
	}
	r.m.Close()
	return nil
}

// closeRequestOf builds the close body of a queried order.
func closeRequestOf(o *wechat.CombineOrder) wechat.CloseRequest {
	c := wechat.CloseRequest{CombineAppID: o.CombineAppID, SubOrders: make([]wechat.CloseSubOrder, len(o.SubOrders))}
	for i, s := range o.SubOrders {
		c.SubOrders[i] = wechat.CloseSubOrder{MchID: s.MchID, OutTradeNo: s.OutTradeNo, SubMchID: s.SubMchID,
			SubAppID: s.SubAppID, IndividualAuthID: s.IndividualAuthID}
	}
	return c
}

// publishPayment publishes the payment of a paid order once: not at all if
// the Seen record has it, else under the notifier's Nats-Msg-Id, then
// records it.
func (r *Reconciler) publishPayment(ctx context.Context, order *wechat.CombineOrder) error {
	return publishPaymentOnce(ctx, r.cfg.Publisher, r.cfg.Seen, r.cfg.SeenTTL, r.cfg.Subjects,
		events.PaymentOf(order, "", r.cfg.NowFunc()))
}

// publishPaymentOnce publishes ev unless seen says it was, and records it.
// seen may be nil (no record: the stream's duplicate window alone).
func publishPaymentOnce(ctx context.Context, pub Publisher, seen idempotency.Seen, ttl time.Duration, subjects events.Subjects, ev *events.PaymentSucceeded) error {
	key := idempotency.Key{MchID: ev.CombineMchID, OutTradeNo: ev.CombineOutTradeNo}
	return publishOnce(ctx, pub, seen, ttl, idempotency.SeenPayment, key, true, subjects.PaymentSucceeded(),
		events.PaymentSucceededMsgID(key.MchID, key.OutTradeNo), ev)
}

// publishClosed publishes the order's OrderClosed and records it; with
// once, not at all if the record has it.
func (r *Reconciler) publishClosed(ctx context.Context, key idempotency.Key, correlationID, reason string, once bool) error {
	return publishClosedOnce(ctx, r.cfg.Publisher, r.cfg.Seen, r.cfg.SeenTTL, r.cfg.Subjects, &events.OrderClosed{
		Version: events.Version, CorrelationID: correlationID, CombineMchID: key.MchID, CombineOutTradeNo: key.OutTradeNo,
		Reason: reason, ClosedAt: r.cfg.NowFunc().UTC(),
	}, once)
}

func publishClosedOnce(ctx context.Context, pub Publisher, seen idempotency.Seen, ttl time.Duration, subjects events.Subjects, ev *events.OrderClosed, once bool) error {
	key := idempotency.Key{MchID: ev.CombineMchID, OutTradeNo: ev.CombineOutTradeNo}
	return publishOnce(ctx, pub, seen, ttl, idempotency.SeenClosed, key, once, subjects.OrderClosed(),
		events.OrderClosedMsgID(key.MchID, key.OutTradeNo), ev)
}

// publishOnce publishes v on subject under id — unless check and seen
// records kind for key — then records it. seen may be nil.
func publishOnce(ctx context.Context, pub Publisher, seen idempotency.Seen, ttl time.Duration, kind idempotency.SeenKind, key idempotency.Key,
	check bool, subject, id string, v any) error {
	if check && seen != nil {
		if ok, err := seen.Seen(ctx, kind, key); err != nil || ok {
			return err
		}
	}
	if err := publishJSON(ctx, pub, subject, id, v); err != nil {
		return err
	}
	if seen == nil {
		return nil
	}
	return seen.MarkSeen(ctx, kind, key, ttl)
}

// publishJSON publishes v on subject with Nats-Msg-Id id.
func publishJSON(ctx context.Context, pub Publisher, subject, id string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", subject, err)
	}
	msg := nats.NewMsg(subject)
	msg.Data = data
	msg.Header.Set(events.HeaderMsgID, id)
	pctx, cancel := settleCtx(ctx)
	defer cancel()
	if err := pub.Publish(pctx, msg); err != nil {
		return fmt.Errorf("publish %s: %w", subject, err)
	}
	return nil
}

func (r *Reconciler) ack(ctx context.Context, err error) {
	if err != nil {
		// Redelivered after AckWait and handled the same way.
		r.log.WarnContext(ctx, "reconciler acknowledgement failed", slog.Any("error", err))
	}
}

// handleClose handles one delivery of a CloseOrderJob.
func (r *Reconciler) handleClose(ctx context.Context, msg jetstream.Msg) {
	md, err := msg.Metadata()
	if err != nil {
		r.m.CloseJob(metrics.CloseMalformed)
		r.ack(ctx, msg.Term())
		return
	}
	var j events.CloseOrderJob
	derr := json.Unmarshal(msg.Data(), &j)
	if derr == nil {
		derr = j.Validate()
	}
	fail := func(code, message string, states []string) error {
		return publishJSON(ctx, r.cfg.Publisher, r.cfg.Subjects.CloseFailed(),
			events.CloseFailedMsgID(j.CombineMchID, j.CombineOutTradeNo, md.Stream, md.Sequence.Stream), &events.CloseFailed{
				Version: events.Version, CorrelationID: j.CorrelationID, CombineMchID: j.CombineMchID, CombineOutTradeNo: j.CombineOutTradeNo,
				Code: code, Message: message, TradeStates: states, CreatedAt: r.cfg.NowFunc().UTC(),
			})
	}
	if derr != nil {
		r.m.CloseJob(metrics.CloseMalformed)
		r.log.WarnContext(ctx, "close job is malformed", slog.String("error", derr.Error()))
		if j.CombineMchID != "" && j.CombineOutTradeNo != "" {
			if err := fail(events.CodeMalformedJob, derr.Error(), nil); err != nil {
				r.ack(ctx, msg.NakWithDelay(r.cfg.RetryDelay))
				return
			}
		}
		r.ack(ctx, msg.TermWithReason("malformed"))
		return
	}
	last := md.NumDelivered >= uint64(r.cfg.CloseMaxDeliver) //nolint:gosec // CloseMaxDeliver >= 1
	result, err := r.closeJob(ctx, &j, fail, last)
	r.m.CloseJob(result)
	if err != nil {
		r.log.WarnContext(ctx, "close job handed back", slog.String("combine_out_trade_no", j.CombineOutTradeNo), slog.Any("error", err))
		r.ack(ctx, msg.NakWithDelay(r.cfg.RetryDelay))
		return
	}
	actx, cancel := settleCtx(ctx)
	defer cancel()
	r.ack(ctx, msg.DoubleAck(actx))
}

// closeJob closes the order of j and publishes the answer; an error hands
// the job back for a later delivery.
func (r *Reconciler) closeJob(ctx context.Context, j *events.CloseOrderJob, fail func(code, message string, states []string) error, last bool) (string, error) {
	key := idempotency.Key{MchID: j.CombineMchID, OutTradeNo: j.CombineOutTradeNo}
	callFailed := func(err error) (string, error) {
		if !last && (wechat.Retryable(err) || wechat.OrderMayExist(err)) {
			return metrics.CloseRetry, err
		}
		code := CallCode(err)
		if wechat.Retryable(err) {
			code = events.CodeRetriesExhausted
		}
		return metrics.CloseFailed, fail(code, "the order could not be closed: "+err.Error(), nil)
	}
	for range 2 { // a second round when the order was paid between the query and the close
		order, err := r.query(ctx, key)
		switch {
		case errors.Is(err, wechat.ErrOrderNotExist):
			return metrics.CloseFailed, fail(events.CodeOrderNotExist, "WeChat Pay has no such order", nil)
		case err != nil:
			return callFailed(err)
		}
		switch stateOf(order) {
		case statePaid:
			if err := fail(events.CodeOrderPaid, "the order is paid and cannot be closed; its payment event follows", events.TradeStates(order)); err != nil {
				return metrics.CloseRetry, err
			}
			if err := r.publishPayment(ctx, order); err != nil {
				return metrics.CloseRetry, err
			}
			return metrics.ClosePaid, nil
		case stateClosed:
			return metrics.CloseClosed, r.publishClosed(ctx, key, j.CorrelationID, events.ClosedAtWeChat, false)
		case stateNotPaid:
			err := r.close(ctx, key, order)
			if err == nil {
				return metrics.CloseClosed, r.publishClosed(ctx, key, j.CorrelationID, events.ClosedOnRequest, false)
			}
			if wechat.OrderMayExist(err) {
				continue // paid (or closed) meanwhile: query again
			}
			return callFailed(err)
		default:
			r.cfg.Anomalies.Inc(metrics.AnomalyReconciler)
			return metrics.CloseFailed, fail(events.CodeUnexpectedState, "WeChat Pay reports the order neither open nor paid nor closed", events.TradeStates(order))
		}
	}
	return metrics.CloseRetry, errors.New("order changed state twice while closing")
}

// scheduleReconcile publishes the ReconcileCheck of a created order. It is
// a no-op when reconciliation is off. publishRecord skips it for a prepay
// the payments-seen record says was published (its check exists).
func (p *Processor) scheduleReconcile(ctx context.Context, j *job, ev *events.PrepayCreated) error {
	if !p.cfg.Reconcile {
		return nil
	}
	c := &events.ReconcileCheck{
		Version: events.Version, CorrelationID: ev.CorrelationID, TradeType: ev.TradeType,
		CombineMchID: ev.CombineMchID, CombineOutTradeNo: ev.CombineOutTradeNo, CreatedAt: ev.CreatedAt,
		TimeExpire: j.job.Request.TimeExpire,
	}
	return publishJSON(ctx, p.cfg.Publisher, p.cfg.Subjects.Reconcile(ev.CombineMchID), events.ReconcileMsgID(ev.CombineMchID, ev.CombineOutTradeNo), c)
}
