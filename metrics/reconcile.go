package metrics

import "github.com/prometheus/client_golang/prometheus"

// Results of one reconciliation check (label "result"; see package
// pipeline, "Reconciliation").
const (
	ReconcileWaiting   = "waiting"    // held until its next check; no query
	ReconcileSettled   = "settled"    // the payment (or close) was already published: dropped without a query
	ReconcilePaid      = "paid"       // found paid: payment published
	ReconcileClosed    = "closed"     // unpaid past its time: closed at WeChat Pay, orders.closed published
	ReconcileWasClosed = "was_closed" // found closed at WeChat Pay: orders.closed published
	ReconcileUnpaid    = "unpaid"     // found unpaid: held until its next check
	ReconcileAnomaly   = "anomaly"    // a state that is no payment and no open order (REFUND, PAYERROR, mixed, bad amounts)
	ReconcileError     = "error"      // the query, close or publish failed: checked again later
	ReconcileDropped   = "dropped"    // malformed, or given up after its last check
)

// ReconcileResults lists every value of the "result" label of
// orderworker_reconcile_checks_total.
var ReconcileResults = []string{ReconcileWaiting, ReconcileSettled, ReconcilePaid, ReconcileClosed, ReconcileWasClosed,
	ReconcileUnpaid, ReconcileAnomaly, ReconcileError, ReconcileDropped}

// Results of a close job (label "result").
const (
	CloseClosed    = "closed"    // closed (or found closed): orders.closed published
	ClosePaid      = "paid"      // already paid: close.failed ORDER_PAID and the payment published
	CloseFailed    = "failed"    // close.failed for another reason
	CloseRetry     = "retry"     // a call failed: the job is delivered again later
	CloseMalformed = "malformed" // not a close job: close.failed if it names an order, then dropped
)

// CloseResults lists every value of the "result" label of
// orderworker_reconcile_close_jobs_total.
var CloseResults = []string{CloseClosed, ClosePaid, CloseFailed, CloseRetry, CloseMalformed}

// Sources of a payment anomaly (label "source").
const (
	AnomalyNotifier   = "notifier"   // a verified notification that is not a consistent payment
	AnomalyReconciler = "reconciler" // a query answer that is not a consistent payment
)

// Reconcile holds the reconciler's collectors. Its methods are safe on a
// nil receiver.
type Reconcile struct {
	checks    *prometheus.CounterVec
	closeJobs *prometheus.CounterVec
	queries   prometheus.Counter
	closes    prometheus.Counter
}

// NewReconcile builds and registers the reconciler's collectors on reg.
func NewReconcile(reg prometheus.Registerer) *Reconcile {
	r := &Reconcile{
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "reconcile", Name: "checks_total",
			Help: "Reconciliation checks of orders with a prepay, by result.",
		}, []string{"result"}),
		closeJobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "reconcile", Name: "close_jobs_total",
			Help: "Close jobs handled, by result.",
		}, []string{"result"}),
		queries: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "reconcile", Name: "queries_total",
			Help: "Combine order queries made by the reconciler and close jobs.",
		}),
		closes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "reconcile", Name: "closes_total",
			Help: "Orders closed at WeChat Pay by the reconciler and close jobs.",
		}),
	}
	preset(r.checks.WithLabelValues, ReconcileResults...)
	preset(r.closeJobs.WithLabelValues, CloseResults...)
	reg.MustRegister(r.checks, r.closeJobs, r.queries, r.closes)
	return r
}

// Check records one reconciliation check's result (Reconcile*).
func (r *Reconcile) Check(result string) {
	if r != nil {
		r.checks.WithLabelValues(result).Inc()
	}
}

// CloseJob records one close job's result (Close*).
func (r *Reconcile) CloseJob(result string) {
	if r != nil {
		r.closeJobs.WithLabelValues(result).Inc()
	}
}

// Query records one query call.
func (r *Reconcile) Query() {
	if r != nil {
		r.queries.Inc()
	}
}

// Close records one order closed at WeChat Pay.
func (r *Reconcile) Close() {
	if r != nil {
		r.closes.Inc()
	}
}

// PaymentAnomalies counts verified reports of WeChat Pay (notifications,
// query answers) that are neither a consistent payment nor an open or
// closed order, by source. Its methods are safe on a nil receiver.
type PaymentAnomalies struct {
	c *prometheus.CounterVec
}

// NewPaymentAnomalies builds and registers the counter on reg.
func NewPaymentAnomalies(reg prometheus.Registerer) *PaymentAnomalies {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "payment_anomalies_total",
		Help: "Notifications and query answers that are not a consistent payment (a sub-order not SUCCESS, inconsistent amounts), by source; never published as payments.",
	}, []string{"source"})
	preset(c.WithLabelValues, AnomalyNotifier, AnomalyReconciler)
	reg.MustRegister(c)
	return &PaymentAnomalies{c: c}
}

// Inc counts one anomaly from source (Anomaly*).
func (a *PaymentAnomalies) Inc(source string) {
	if a != nil {
		a.c.WithLabelValues(source).Inc()
	}
}
