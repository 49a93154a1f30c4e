package metrics

import "github.com/prometheus/client_golang/prometheus"

// Results of asking WeChat Pay for an order's state (label "result"), when
// the worker cannot tell from its record or the create answer what
// happened to the order (see package pipeline, "Asking WeChat Pay").
const (
	TruthQuery           = "query"            // the order was queried
	TruthRecovered       = "recovered"        // found unpaid; prepay_id recovered with the identical body
	TruthClosed          = "closed"           // found unpaid and closed: its prepay_id could not be had
	TruthKeptOpen        = "kept_open"        // found unpaid, prepay_id not had again, but a prepay was published: left open
	TruthUnexpectedState = "unexpected_state" // a state the worker does not settle; dead-lettered
)

// TruthResults lists every value of the "result" label of
// orderworker_pipeline_wechat_truth_total.
var TruthResults = []string{TruthQuery, TruthRecovered, TruthClosed, TruthKeptOpen, TruthUnexpectedState}

func newTruth() *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: "pipeline", Name: "wechat_truth_total",
		Help: "Orders settled by asking WeChat Pay for their state, by result: query, recovered, closed, kept_open or unexpected_state.",
	}, []string{"result"})
	preset(c.WithLabelValues, TruthResults...)
	return c
}

// AskedWeChat records one step (Truth*) of settling an order by WeChat
// Pay's record.
func (w *Worker) AskedWeChat(result string) {
	if w == nil {
		return
	}
	w.truth.WithLabelValues(result).Inc()
}
