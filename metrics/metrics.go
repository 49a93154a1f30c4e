// Package metrics owns every Prometheus collector of the order worker and
// the notifier, and their names. Nothing is global: NewWorker and
// NewNotifier build and register collectors on the registerer they are
// given, so each test can use a fresh prometheus.NewRegistry.
//
// Names follow namespace_subsystem_name_unit with the namespace
// "orderworker"; labels come from the small fixed sets below, never order
// numbers, openids or amounts. Every method is safe on a nil receiver, so a
// component without metrics passes nil.
package metrics

import (
	"runtime"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Namespace is the first part of every metric name.
const Namespace = "orderworker"

// Job outcomes (label "outcome").
const (
	OutcomeAck       = "ack"       // done: created or failed for good, event published, acked
	OutcomeRetry     = "retry"     // handed back to JetStream for a later delivery
	OutcomeTerminal  = "terminal"  // dead-lettered and terminated
	OutcomeDuplicate = "duplicate" // already done: stored outcome republished, acked
)

// Outcomes lists every job outcome.
var Outcomes = []string{OutcomeAck, OutcomeRetry, OutcomeTerminal, OutcomeDuplicate}

// Claim results (label "result"), as the idempotency store answered.
const (
	ClaimClaimed     = "claimed"
	ClaimInFlight    = "in_flight"
	ClaimCompleted   = "completed"
	ClaimConflict    = "conflict"
	ClaimUnavailable = "unavailable"
)

// ClaimResults lists every claim result.
var ClaimResults = []string{ClaimClaimed, ClaimInFlight, ClaimCompleted, ClaimConflict, ClaimUnavailable}

// Retry kinds (label "kind").
const (
	RetryInProcess  = "in_process" // another call within the job's backoff budget
	RetryRedelivery = "redelivery" // NakWithDelay: JetStream delivers the job again later
)

// RetryKinds lists every retry kind.
var RetryKinds = []string{RetryInProcess, RetryRedelivery}

// Published kinds (label "event").
const (
	EventPrepayCreated = "prepay_created"
	EventPrepayFailed  = "prepay_failed"
	EventDeadLetter    = "dead_letter"
	// EventPaymentSucceeded: a worker found an order paid when it asked
	// WeChat Pay, and publishes its payment.
	EventPaymentSucceeded = "payment_succeeded"
)

// Events lists every published kind the worker publishes.
var Events = []string{EventPrepayCreated, EventPrepayFailed, EventDeadLetter, EventPaymentSucceeded}

// Acknowledgement kinds (label "action").
const (
	AckAck        = "ack"
	AckNak        = "nak"
	AckTerm       = "term"
	AckInProgress = "in_progress"
)

// AckActions lists every acknowledgement kind.
var AckActions = []string{AckAck, AckNak, AckTerm, AckInProgress}

// Sweep actions (label "action" of orderworker_pipeline_swept_jobs_total).
const (
	// SweptSettled: a job at the delivery limit settled by the worker (on
	// JetStream's advisory or by the sweep) and deleted.
	SweptSettled = "settled_at_limit"
	// SweptRequeued: a job JetStream kept below the consumer's ack floor,
	// never to be delivered again, published again as a new job.
	SweptRequeued = "requeued_kept"
)

// SweptActions lists every sweep action.
var SweptActions = []string{SweptSettled, SweptRequeued}

// Notification results (label "result" of
// orderworker_notifier_notifications_total): the notifier's Result values
// are these constants, so the metric, its HELP, the alerts and the
// dashboard read one list.
const (
	NotificationOK               = "ok"                 // 204: stored
	NotificationDuplicate        = "duplicate"          // 200: JetStream already had it
	NotificationMethodNotAllowed = "method_not_allowed" // 405
	NotificationUnknownMerchant  = "unknown_merchant"   // 404: path names no configured merchant
	NotificationTooLarge         = "too_large"          // 413
	NotificationBadHeaders       = "bad_headers"        // 401: a Wechatpay-* header is absent or malformed
	NotificationStale            = "stale"              // 401: timestamp outside the five-minute window
	NotificationUnknownSerial    = "unknown_serial"     // 401: no trusted key has that serial
	NotificationSignatureProbe   = "signature_probe"    // 401: WECHATPAY/SIGNTEST/ probe
	NotificationBadSignature     = "bad_signature"      // 401: signature does not verify
	NotificationSlowBody         = "slow_body"          // 408: body not received within the body deadline
	NotificationDecryptError     = "decrypt_error"      // 400: wrong APIv3 key or tampered resource
	NotificationMalformed        = "malformed"          // 400: verified but not a combine payment notification
	NotificationOverloaded       = "overloaded"         // 503: load shed, no place free in time
	NotificationPublishError     = "publish_error"      // 500: JetStream did not confirm
	NotificationNotPaid          = "not_paid"           // 200: genuine, but not every sub-order SUCCESS with consistent amounts; published as no payment
)

// NotificationResults lists every notification result, each pre-initialised
// at 0.
var NotificationResults = []string{
	NotificationOK, NotificationDuplicate, NotificationMethodNotAllowed, NotificationUnknownMerchant,
	NotificationTooLarge, NotificationBadHeaders, NotificationStale, NotificationUnknownSerial,
	NotificationSignatureProbe, NotificationBadSignature, NotificationSlowBody, NotificationDecryptError,
	NotificationMalformed, NotificationOverloaded, NotificationPublishError, NotificationNotPaid,
}

// Load-shedding stages (label "stage" of orderworker_notifier_shed_total):
// where a request found every place busy for the whole wait and was
// answered 503.
const (
	ShedAdmission    = "admission"    // places for complete bodies awaiting verification
	ShedVerification = "verification" // RSA verification and decryption slots
)

// ShedStages lists every load-shedding stage.
var ShedStages = []string{ShedAdmission, ShedVerification}

// MerchantOther is the mchid label of a WeChat Pay call for a merchant that
// is not configured, so the label stays bounded by configuration.
const MerchantOther = "other"

// Delivery kinds (label "delivery").
const (
	DeliveryFirst = "first" // the job's first delivery: its wait is queueing
	DeliveryRetry = "retry" // a redelivery: its wait includes the chosen delay
)

// Deliveries lists every delivery kind.
var Deliveries = []string{DeliveryFirst, DeliveryRetry}

// waitBuckets cover a job picked up at once (ms) to a backlog of half an
// hour.
var waitBuckets = []float64{.01, .05, .1, .5, 1, 5, 10, 30, 60, 120, 300, 600, 1800}

// durationBuckets cover a WeChat Pay call (tens of ms) to a job with its
// in-process retries (tens of seconds).
var durationBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// preset creates the series of each label value at zero, so that a rate
// or an alert over any of them exists before its first event.
func preset[T any](with func(...string) T, values ...string) {
	for _, v := range values {
		with(v)
	}
}

// Worker holds the order worker's collectors.
type Worker struct {
	jobs           *prometheus.CounterVec
	jobDuration    *prometheus.HistogramVec
	jobWait        *prometheus.HistogramVec
	wechatRequests *prometheus.CounterVec
	wechatDuration *prometheus.HistogramVec
	retries        *prometheus.CounterVec
	claims         *prometheus.CounterVec
	inFlight       prometheus.Gauge
	deadLetters    *prometheus.CounterVec
	publishFails   *prometheus.CounterVec
	ackFails       *prometheus.CounterVec
	swept          *prometheus.CounterVec
	storeUp        prometheus.Gauge
	paused         prometheus.Gauge
	merchantCalls  *prometheus.CounterVec
	merchants      map[string]bool
	buildInfo      *prometheus.GaugeVec
	truth          *prometheus.CounterVec
}

// WorkerConfig names the label values only configuration knows, so that
// their series exist at 0 from the start and the mchid label stays bounded.
type WorkerConfig struct {
	// DeadLetterReasons pre-initialises dead_letters_total (events.Reasons).
	// Defaults to none.
	DeadLetterReasons []string
	// Merchants are the configured mchids, the only values of the mchid
	// label; a call for any other counts as MerchantOther. Defaults to none.
	Merchants []string
}

// NewWorker builds the worker's collectors with an empty WorkerConfig and
// registers them on reg. It panics if one is already registered there, as
// prometheus.MustRegister does.
func NewWorker(reg prometheus.Registerer) *Worker { return NewWorkerWith(reg, WorkerConfig{}) }

// NewWorkerWith builds the worker's collectors, pre-initialises every
// series of a fixed label set (outcomes, claim results, retry kinds, failure
// counters, dead-letter reasons, merchants) at 0, so a panel or an
// increase() never sees "No data", and registers them on reg.
func NewWorkerWith(reg prometheus.Registerer, cfg WorkerConfig) *Worker {
	w := &Worker{
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "pipeline", Name: "jobs_total",
			Help: "Jobs handled, by outcome: ack, retry, terminal or duplicate.",
		}, []string{"outcome"}),
		jobDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Subsystem: "pipeline", Name: "job_duration_seconds",
			Help:    "Time to handle one delivery of a job, by outcome.",
			Buckets: durationBuckets,
		}, []string{"outcome"}),
		jobWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Subsystem: "pipeline", Name: "job_wait_seconds",
			Help:    "Time from a job's storage in the stream to its pickup by a worker, by delivery: first or retry.",
			Buckets: waitBuckets,
		}, []string{"delivery"}),
		wechatRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "wechat", Name: "requests_total",
			Help: "WeChat Pay calls, by operation and code (WeChat code, OK, TIMEOUT or TRANSPORT_ERROR).",
		}, []string{"operation", "code"}),
		wechatDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Subsystem: "wechat", Name: "request_duration_seconds",
			Help:    "Latency of WeChat Pay calls, by operation.",
			Buckets: durationBuckets,
		}, []string{"operation"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "pipeline", Name: "retries_total",
			Help: "Retries of retryable WeChat Pay failures, by kind: in_process or redelivery.",
		}, []string{"kind"}),
		claims: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "idempotency", Name: "claims_total",
			Help: "Idempotency claims, by result: claimed, in_flight, completed, conflict or unavailable.",
		}, []string{"result"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Subsystem: "pipeline", Name: "jobs_in_flight",
			Help: "Jobs this worker is handling now.",
		}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "pipeline", Name: "dead_letters_total",
			Help: "Jobs dead-lettered, by reason.",
		}, []string{"reason"}),
		publishFails: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "pipeline", Name: "publish_failures_total",
			Help: "Events that could not be published, by event.",
		}, []string{"event"}),
		ackFails: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "pipeline", Name: "ack_failures_total",
			Help: "Acknowledgements JetStream did not confirm, by action: ack, nak, term or in_progress.",
		}, []string{"action"}),
		swept: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "pipeline", Name: "swept_jobs_total",
			Help: "Jobs the worker took out of the jobs stream itself, by action: settled_at_limit (deliveries used up) or requeued_kept (kept below the consumer's ack floor, published again).",
		}, []string{"action"}),
		storeUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Subsystem: "idempotency", Name: "store_up",
			Help: "Whether the idempotency store answered its last check (1) or not (0).",
		}),
		paused: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Subsystem: "pipeline", Name: "paused",
			Help: "Whether consumption is paused by an operator (1) or running (0).",
		}),
		merchantCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "wechat", Name: "merchant_requests_total",
			Help: "WeChat Pay create calls, by configured combine_mchid (or other) and code (WeChat code, OK, TIMEOUT, TRANSPORT_ERROR or ERROR).",
		}, []string{"mchid", "code"}),
		merchants: map[string]bool{},
		buildInfo: newBuildInfo(),
		truth:     newTruth(),
	}
	for _, m := range cfg.Merchants {
		w.merchants[m] = true
		w.merchantCalls.WithLabelValues(m, "OK")
	}
	preset(w.jobs.WithLabelValues, Outcomes...)
	preset(w.jobWait.WithLabelValues, Deliveries...)
	preset(w.retries.WithLabelValues, RetryKinds...)
	preset(w.claims.WithLabelValues, ClaimResults...)
	preset(w.deadLetters.WithLabelValues, cfg.DeadLetterReasons...)
	preset(w.publishFails.WithLabelValues, Events...)
	preset(w.ackFails.WithLabelValues, AckActions...)
	preset(w.swept.WithLabelValues, SweptActions...)
	reg.MustRegister(w.jobs, w.jobDuration, w.jobWait, w.wechatRequests, w.wechatDuration, w.retries, w.claims,
		w.inFlight, w.deadLetters, w.publishFails, w.ackFails, w.swept, w.storeUp, w.paused, w.merchantCalls, w.buildInfo, w.truth)
	return w
}

// MerchantRequest records one WeChat Pay create call for mchID answered
// with code. An mchid outside WorkerConfig.Merchants counts as
// MerchantOther, so a job cannot add series.
func (w *Worker) MerchantRequest(mchID, code string) {
	if w == nil {
		return
	}
	if !w.merchants[mchID] {
		mchID = MerchantOther
	}
	w.merchantCalls.WithLabelValues(mchID, code).Inc()
}

// Paused records whether consumption is paused.
func (w *Worker) Paused(paused bool) {
	if w == nil {
		return
	}
	if paused {
		w.paused.Set(1)
	} else {
		w.paused.Set(0)
	}
}

func newBuildInfo() *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "build_info",
		Help: "Always 1; its labels name the running build.",
	}, []string{"version", "commit", "go_version"})
}

// SetBuildInfo sets orderworker_build_info{version, commit, go_version} to 1.
func (w *Worker) SetBuildInfo(version, commit string) {
	if w == nil {
		return
	}
	w.buildInfo.WithLabelValues(version, commit, runtime.Version()).Set(1)
}

// Job records one delivery of a job handled with outcome (Outcome*) in d.
func (w *Worker) Job(outcome string, d time.Duration) {
	if w == nil {
		return
	}
	w.jobs.WithLabelValues(outcome).Inc()
	w.jobDuration.WithLabelValues(outcome).Observe(d.Seconds())
}

// JobWait records how long a job waited in the stream before this pickup:
// d since it was stored, on its first delivery or a redelivery.
func (w *Worker) JobWait(redelivery bool, d time.Duration) {
	if w == nil {
		return
	}
	kind := DeliveryFirst
	if redelivery {
		kind = DeliveryRetry
	}
	w.jobWait.WithLabelValues(kind).Observe(max(d, 0).Seconds())
}

// WeChatRequest records one WeChat Pay call of operation answered with code
// in d.
func (w *Worker) WeChatRequest(operation, code string, d time.Duration) {
	if w == nil {
		return
	}
	w.wechatRequests.WithLabelValues(operation, code).Inc()
	w.wechatDuration.WithLabelValues(operation).Observe(d.Seconds())
}

// Retry records a retry of kind (Retry*).
func (w *Worker) Retry(kind string) {
	if w == nil {
		return
	}
	w.retries.WithLabelValues(kind).Inc()
}

// Claim records a claim answered with result (Claim*).
func (w *Worker) Claim(result string) {
	if w == nil {
		return
	}
	w.claims.WithLabelValues(result).Inc()
}

// InFlight adds delta (+1 when a job starts, -1 when it ends) to the
// in-flight gauge.
func (w *Worker) InFlight(delta int) {
	if w == nil {
		return
	}
	w.inFlight.Add(float64(delta))
}

// DeadLetter records a job dead-lettered for reason.
func (w *Worker) DeadLetter(reason string) {
	if w == nil {
		return
	}
	w.deadLetters.WithLabelValues(reason).Inc()
}

// PublishFailure records an event (Event*) that could not be published.
func (w *Worker) PublishFailure(event string) {
	if w == nil {
		return
	}
	w.publishFails.WithLabelValues(event).Inc()
}

// AckFailure records an acknowledgement (Ack*) that failed.
func (w *Worker) AckFailure(action string) {
	if w == nil {
		return
	}
	w.ackFails.WithLabelValues(action).Inc()
}

// Swept records a job the worker took out of the jobs stream (Swept*).
func (w *Worker) Swept(action string) {
	if w == nil {
		return
	}
	w.swept.WithLabelValues(action).Inc()
}

// StoreUp records whether the idempotency store answered its last check.
func (w *Worker) StoreUp(up bool) {
	if w == nil {
		return
	}
	if up {
		w.storeUp.Set(1)
	} else {
		w.storeUp.Set(0)
	}
}

// Notifier holds the notifier's collectors.
type Notifier struct {
	notifications   *prometheus.CounterVec
	shed            *prometheus.CounterVec
	publishDuration prometheus.Histogram
	buildInfo       *prometheus.GaugeVec
}

// NewNotifier builds the notifier's collectors, pre-initialises every
// result and shedding stage at 0, and registers them on reg. It panics if
// one is already registered there.
func NewNotifier(reg prometheus.Registerer) *Notifier {
	n := &Notifier{
		notifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "notifier", Name: "notifications_total",
			Help: "Payment notifications received, by result: " + strings.Join(NotificationResults, ", ") + ".",
		}, []string{"result"}),
		shed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "notifier", Name: "shed_total",
			Help: "Requests answered 503 because every place was busy for the whole wait, by stage: " + strings.Join(ShedStages, " or ") + ".",
		}, []string{"stage"}),
		publishDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace, Subsystem: "notifier", Name: "publish_duration_seconds",
			Help:    "Time to publish a payment event and receive JetStream's acknowledgement.",
			Buckets: durationBuckets,
		}),
		buildInfo: newBuildInfo(),
	}
	preset(n.notifications.WithLabelValues, NotificationResults...)
	preset(n.shed.WithLabelValues, ShedStages...)
	reg.MustRegister(n.notifications, n.shed, n.publishDuration, n.buildInfo)
	return n
}

// Shed records a request shed at stage (Shed*).
func (n *Notifier) Shed(stage string) {
	if n == nil {
		return
	}
	n.shed.WithLabelValues(stage).Inc()
}

// SetBuildInfo sets orderworker_build_info{version, commit, go_version} to 1.
func (n *Notifier) SetBuildInfo(version, commit string) {
	if n == nil {
		return
	}
	n.buildInfo.WithLabelValues(version, commit, runtime.Version()).Set(1)
}

// Notification records a notification handled with result (Notification*).
func (n *Notifier) Notification(result string) {
	if n == nil {
		return
	}
	n.notifications.WithLabelValues(result).Inc()
}

// Publish records the time one payment event took to publish.
func (n *Notifier) Publish(d time.Duration) {
	if n == nil {
		return
	}
	n.publishDuration.Observe(d.Seconds())
}
