package loadgen

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/wechat"
	"github.com/wxcombine/orderworker/wechat/wechatsim"
)

// Violation kinds; see the package documentation.
const (
	ViolationMissingOutcome    = "missing_outcome"
	ViolationMultipleOutcomes  = "multiple_outcomes"
	ViolationConflictingPrepay = "conflicting_prepay"
	ViolationUnexpectedOutcome = "unexpected_outcome"
	ViolationMissingDeadLetter = "missing_dead_letter"
	ViolationUnknownOrder      = "unknown_order"
	ViolationMissingPayment    = "missing_payment"
	ViolationDuplicatePayment  = "duplicate_payment"
	ViolationSimCreateMissing  = "sim_create_missing"
	ViolationSimTooManyCreates = "sim_too_many_creates"
	ViolationSimCreatedInvalid = "sim_created_invalid"
	// Judged by WeChat Pay's record (ReportRecord).
	ViolationPrepayNotIssued  = "prepay_not_issued"
	ViolationFailedButCreated = "failed_but_created"
	ViolationPaymentMismatch  = "payment_mismatch"
	ViolationUnpaidPayment    = "payment_for_unpaid_order"
	// Judged by the streams alone.
	ViolationDeadLetters = "multiple_dead_letters"
	ViolationUndecodable = "undecodable_event"
)

// maxListedViolations caps Report.Violations; Report.ViolationCounts counts
// them all.
const maxListedViolations = 100

// Violation is one broken promise.
type Violation struct {
	Kind   string   `json:"kind"`
	Order  OrderKey `json:"order"`
	Detail string   `json:"detail"`
}

// outcome is one distinct outcome of an order: a created order with its
// payment reference, or a failure code.
type outcome struct {
	created bool
	ref     string // prepay_id, h5_url or code_url
	code    string
	// final marks a failure that is the order's outcome; a failure with
	// final false speaks of one job and is kept in order.jobFailures.
	final bool
}

func (o outcome) String() string {
	if o.created {
		return "created " + o.ref
	}
	return "failed " + o.code
}

// order is what the tally knows of one distinct order.
type order struct {
	kind        Kind
	tradeType   wechat.TradeType
	createdAt   time.Time
	outcomes    []outcome // the order's: prepays and final failures
	jobFailures []string  // codes of failures about one job (final false)
	firstAt     time.Time // stream time of the first outcome
	deadLetters int
	deadSeqs    []uint64 // the dead-lettered jobs' stream sequences
	// rejected counts dead letters of a final refusal: the one job that
	// settled the order's outcome, at most one per order.
	rejected    int
	payAsked    bool
	payFailed   bool
	paymentTxns []string                  // distinct combine_transaction_ids
	payments    []events.PaymentSucceeded // the first event of each
	// acked and failedPublishes count the order's publications; stored
	// those JetStream stored (acknowledged and not a dropped duplicate).
	acked, failedPublishes, stored int
}

// expected reports whether the order must have an outcome: at least one of
// its publications was acknowledged, or none failed yet (still in flight).
func (o *order) expected() bool { return o.acked > 0 || o.failedPublishes == 0 }

// Tally collects what a run published and what came back, and checks it.
// It is safe for concurrent use.
type Tally struct {
	runID string

	mu             sync.Mutex
	orders         map[OrderKey]*order
	messages       int
	byKind         map[Kind]int
	byTradeType    map[wechat.TradeType]int
	duplicates     int
	lateDuplicates int
	dupsDropped    int
	publishErrors  int
	firstPublish   time.Time
	lastPublish    time.Time
	lastOutcome    time.Time
	outcomeEvents  int
	republished    int
	created        int
	failed         int
	failedByCode   map[string]int
	deadLetters    int
	deadByReason   map[events.Reason]int
	paymentEvents  int
	retries        int
	latencies      []time.Duration
	foreign        int // events of other runs
	unknown        []Violation
}

// NewTally answers an empty tally for the run whose order numbers start with
// runID.
func NewTally(runID string) *Tally {
	return &Tally{
		runID:        runID,
		orders:       map[OrderKey]*order{},
		byKind:       map[Kind]int{},
		byTradeType:  map[wechat.TradeType]int{},
		failedByCode: map[string]int{},
		deadByReason: map[events.Reason]int{},
	}
}

// Sent records a job about to be published; call it before publishing, so
// that an outcome arriving before the acknowledgement finds its order.
func (t *Tally) Sent(j *Job) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.firstPublish.IsZero() {
		t.firstPublish = j.CreatedAt
	}
	if _, ok := t.orders[j.Key]; ok {
		return
	}
	t.orders[j.Key] = &order{kind: j.Kind, tradeType: j.TradeType, createdAt: j.CreatedAt}
	t.byKind[j.Kind]++
	t.byTradeType[j.TradeType]++
}

// Acked records a job JetStream acknowledged at at; dropped reports that it
// answered Duplicate (the message was not stored again).
func (t *Tally) Acked(j *Job, dropped bool, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.messages++
	t.lastPublish = maxTime(t.lastPublish, at)
	if dropped {
		t.dupsDropped++
	}
	if j.Duplicate {
		t.duplicates++
		if j.LateDuplicate {
			t.lateDuplicates++
		}
	}
	if o := t.orders[j.Key]; o != nil {
		o.acked++
		if !dropped {
			o.stored++
		}
	}
}

// PublishFailed records a job that could not be published. An order none of
// whose publications was acknowledged is not expected to have an outcome.
func (t *Tally) PublishFailed(j *Job) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.publishErrors++
	if o := t.orders[j.Key]; o != nil {
		o.failedPublishes++
	}
}

// ours answers the order of key, or nil for another run's order. An order
// number of this run that was never published is recorded as unknown.
func (t *Tally) ours(key OrderKey, what string) *order {
	if o := t.orders[key]; o != nil {
		return o
	}
	if strings.HasPrefix(key.OutTradeNo, t.runID) {
		t.unknown = append(t.unknown, Violation{Kind: ViolationUnknownOrder, Order: key, Detail: what + " for an order this run never published"})
	} else {
		t.foreign++
	}
	return nil
}

// Created records a PrepayCreated event stored at at. It reports whether
// the event is the first outcome of a valid order of this run, which may
// then be paid.
func (t *Tally) Created(ev *events.PrepayCreated, at time.Time) bool {
	ref := cmp.Or(ev.PrepayID, ev.H5URL, ev.CodeURL)
	return t.outcome(OrderKey{ev.CombineMchID, ev.CombineOutTradeNo}, outcome{created: true, ref: ref}, ev.Attempts, at)
}

// Failed records a PrepayFailed event stored at at.
func (t *Tally) Failed(ev *events.PrepayFailed, at time.Time) {
	_ = t.outcome(OrderKey{ev.CombineMchID, ev.CombineOutTradeNo}, outcome{code: ev.Code, final: ev.Final}, ev.Attempts, at)
}

// outcome records an outcome event and reports whether it was the first
// outcome of a valid order and a created one.
func (t *Tally) outcome(key OrderKey, oc outcome, attempts int, at time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	o := t.ours(key, oc.String())
	if o == nil {
		return false
	}
	t.outcomeEvents++
	first := len(o.outcomes) == 0 && len(o.jobFailures) == 0
	if !oc.created && !oc.final {
		o.jobFailures = append(o.jobFailures, oc.code)
		if first {
			t.recordFirst(o, oc, attempts, at)
		}
		return false
	}
	if slices.Contains(o.outcomes, oc) {
		t.republished++
		return false
	}
	o.outcomes = append(o.outcomes, oc)
	if len(o.outcomes) > 1 {
		return false // a violation, listed by Report
	}
	if !first {
		// After failures of other jobs of the order: the order's outcome
		// now, counted once.
		if oc.created {
			t.created++
			t.failed--
		}
		return oc.created && o.kind == KindValid
	}
	t.recordFirst(o, oc, attempts, at)
	return oc.created && o.kind == KindValid
}

// recordFirst counts the first outcome event of an order.
func (t *Tally) recordFirst(o *order, oc outcome, attempts int, at time.Time) {
	o.firstAt = at
	t.lastOutcome = maxTime(t.lastOutcome, at)
	t.latencies = append(t.latencies, at.Sub(o.createdAt))
	t.retries += max(attempts-1, 0)
	if oc.created {
		t.created++
	} else {
		t.failed++
		t.failedByCode[oc.code]++
	}
}

// DeadLettered records a dead letter.
func (t *Tally) DeadLettered(dl *events.DeadLetter) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.deadLetters++
	t.deadByReason[dl.Reason]++
	o := t.ours(OrderKey{dl.CombineMchID, dl.CombineOutTradeNo}, "dead letter "+string(dl.Reason))
	if o == nil {
		return
	}
	o.deadLetters++
	o.deadSeqs = append(o.deadSeqs, dl.StreamSequence)
	if dl.Reason == events.ReasonRejected {
		o.rejected++
	}
}

// Undecodable records a stored message of subject that did not decode: a
// violation, never a silent drop.
func (t *Tally) Undecodable(subject string, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.unknown = append(t.unknown, Violation{Kind: ViolationUndecodable, Detail: subject + ": " + err.Error()})
}

// workerPaid reports whether a worker published the order's payment (it
// found the order paid when it asked WeChat Pay): that is its outcome.
func (o *order) workerPaid() bool {
	return slices.ContainsFunc(o.payments, func(p events.PaymentSucceeded) bool { return p.NotificationID == "" })
}

// PayRequested records that an order was paid (err nil) or that paying it
// failed.
func (t *Tally) PayRequested(key OrderKey, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	o := t.orders[key]
	if o == nil || o.payAsked {
		return
	}
	o.payAsked = true
	o.payFailed = err != nil
}

// PaymentSucceeded records a payment event.
func (t *Tally) PaymentSucceeded(ev *events.PaymentSucceeded) {
	t.mu.Lock()
	defer t.mu.Unlock()
	o := t.ours(OrderKey{ev.CombineMchID, ev.CombineOutTradeNo}, "payment event")
	if o == nil {
		return
	}
	t.paymentEvents++
	if slices.Contains(o.paymentTxns, ev.CombineTransactionID) {
		return
	}
	o.paymentTxns = append(o.paymentTxns, ev.CombineTransactionID)
	o.payments = append(o.payments, *ev)
}

// Pending answers how many expected orders still lack an outcome, how many
// invalid or malformed ones a dead letter, and how many paid ones a payment
// event.
func (t *Tally) Pending() (outcomes, deadLetters, payments int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, o := range t.orders {
		if !o.expected() {
			continue
		}
		if len(o.outcomes) == 0 && len(o.jobFailures) == 0 && !o.workerPaid() {
			outcomes++
		}
		if o.kind != KindValid && o.deadLetters == 0 {
			deadLetters++
		}
		if o.payAsked && !o.payFailed && len(o.paymentTxns) == 0 {
			payments++
		}
	}
	return outcomes, deadLetters, payments
}

// Counts answers the distinct orders sent, those with an outcome, and the
// dead letters and payment events received so far.
func (t *Tally) Counts() (orders, outcomes, deadLetters, payments int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.orders), t.created + t.failed, t.deadLetters, t.paymentEvents
}

// Keys answers the distinct orders sent, sorted.
func (t *Tally) Keys() []OrderKey {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.sortedKeys()
}

func (t *Tally) sortedKeys() []OrderKey {
	return slices.SortedFunc(maps.Keys(t.orders), func(a, b OrderKey) int {
		return cmp.Or(strings.Compare(a.MchID, b.MchID), strings.Compare(a.OutTradeNo, b.OutTradeNo))
	})
}

// Report checks everything collected. creates, when not nil, are the
// simulator's create counts per order; maxCreates > 0 flags orders created
// more often.
func (t *Tally) Report(creates map[OrderKey]int, maxCreates int) *Report {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.report(creates, nil, maxCreates)
}

// ReportRecord is Report judged by WeChat Pay's record as well: record
// holds the simulator's view of each order it saw (RecordFunc). Every
// published prepay_id must be one the simulator issued for that order; an
// order the simulator created (and did not close) or that was paid must have
// no failure; an order is paid when every sub-order is, and then its payment
// event must carry the simulator's transaction ids and amounts for every
// sub-order; an unpaid order has no payment event.
func (t *Tally) ReportRecord(record map[OrderKey]wechatsim.OrderInfo, maxCreates int) *Report {
	t.mu.Lock()
	defer t.mu.Unlock()
	creates := make(map[OrderKey]int, len(record))
	for k, info := range record {
		creates[k] = info.CreateCalls
	}
	if record == nil {
		record = map[OrderKey]wechatsim.OrderInfo{}
	}
	return t.report(creates, record, maxCreates)
}

func (t *Tally) report(creates map[OrderKey]int, record map[OrderKey]wechatsim.OrderInfo, maxCreates int) *Report {
	r := &Report{
		RunID: t.runID,
		Published: PublishedCounts{
			Messages: t.messages, Orders: len(t.orders),
			ByKind: maps.Clone(t.byKind), ByTradeType: maps.Clone(t.byTradeType),
			Duplicates: t.duplicates, LateDuplicates: t.lateDuplicates,
			DroppedByJetStream: t.dupsDropped, Errors: t.publishErrors,
		},
		Outcomes: OutcomeCounts{
			Created: t.created, Failed: t.failed, FailedByCode: maps.Clone(t.failedByCode),
			Events: t.outcomeEvents, Republished: t.republished, Retries: t.retries,
			DeadLetters: t.deadLetters, DeadLettersByReason: maps.Clone(t.deadByReason),
			PaymentEvents: t.paymentEvents, ForeignEvents: t.foreign,
		},
		ViolationCounts: map[string]int{},
	}
	if !t.firstPublish.IsZero() {
		r.PublishSeconds = t.lastPublish.Sub(t.firstPublish).Seconds()
		if r.PublishSeconds > 0 {
			r.PublishRate = float64(t.messages) / r.PublishSeconds
		}
		if !t.lastOutcome.IsZero() {
			r.Seconds = t.lastOutcome.Sub(t.firstPublish).Seconds()
			if r.Seconds > 0 {
				r.Throughput = float64(t.created+t.failed) / r.Seconds
			}
		}
	}
	r.Latency = latencyOf(t.latencies)
	add := func(v Violation) {
		r.ViolationCounts[v.Kind]++
		r.ViolationTotal++
		if len(r.Violations) < maxListedViolations {
			r.Violations = append(r.Violations, v)
		}
	}
	for _, v := range t.unknown {
		add(v)
	}
	if creates != nil {
		r.Sim = &SimCounts{}
	}
	for _, key := range t.sortedKeys() {
		o := t.orders[key]
		t.check(key, o, add)
		if o.payAsked {
			if o.payFailed {
				r.Outcomes.PayErrors++
			} else {
				r.Outcomes.Paid++
			}
		}
		if creates != nil {
			n := creates[key]
			r.Sim.Creates += n
			if n > 0 {
				r.Sim.Orders++
			}
			if n > 1 {
				r.Sim.OrdersCreatedAgain++
			}
			r.Sim.MaxPerOrder = max(r.Sim.MaxPerOrder, n)
			checkCreates(key, o, n, maxCreates, add)
		}
		if record != nil {
			info, ok := record[key]
			checkRecord(key, o, info, ok, add)
		}
	}
	r.OK = r.ViolationTotal == 0
	return r
}

// check adds the violations of one order, except the simulator's.
func (t *Tally) check(key OrderKey, o *order, add func(Violation)) {
	var refs, all []string
	for _, oc := range o.outcomes {
		all = append(all, oc.String())
		if oc.created {
			refs = append(refs, oc.ref)
		}
	}
	ended := len(o.outcomes) > 0 || len(o.jobFailures) > 0 || o.workerPaid()
	switch {
	case !ended && !o.expected():
		return // never published: counted as a publish error
	case !ended:
		add(Violation{ViolationMissingOutcome, key, fmt.Sprintf("%s %s job got no outcome event", o.kind, o.tradeType)})
	case len(refs) > 1:
		add(Violation{ViolationConflictingPrepay, key, "different payment references: " + strings.Join(refs, ", ")})
	case len(o.outcomes) > 1:
		add(Violation{ViolationMultipleOutcomes, key, "different outcomes: " + strings.Join(all, "; ")})
	}
	if len(o.outcomes) > 0 {
		first := o.outcomes[0]
		switch {
		case o.kind != KindValid && first.created:
			add(Violation{ViolationUnexpectedOutcome, key, fmt.Sprintf("%s job was created", o.kind)})
		case o.kind == KindValid && !first.created && refusedAsInvalid(first.code):
			add(Violation{ViolationUnexpectedOutcome, key, "valid job failed with " + first.code})
		}
	}
	for _, code := range o.jobFailures {
		if o.kind == KindValid && refusedAsInvalid(code) {
			add(Violation{ViolationUnexpectedOutcome, key, "valid job refused with " + code})
		}
	}
	if o.kind != KindValid && o.deadLetters == 0 {
		add(Violation{ViolationMissingDeadLetter, key, fmt.Sprintf("%s job was not dead-lettered", o.kind)})
	}
	seqs := map[uint64]int{}
	for _, seq := range o.deadSeqs {
		if seq != 0 {
			seqs[seq]++
		}
	}
	for seq, n := range seqs {
		if n > 1 {
			add(Violation{ViolationDeadLetters, key, fmt.Sprintf("job %d dead-lettered %d times", seq, n)})
		}
	}
	// Each refused job has its own dead letter (a job the tally did not
	// publish, such as a dead letter replayed, included; the sequences
	// above catch one job dead-lettered twice); only the job that settled
	// a final refusal speaks of the order, and only one can.
	if o.rejected > 1 {
		add(Violation{ViolationDeadLetters, key, fmt.Sprintf("order dead-lettered %d times for its final refusal", o.rejected)})
	}
	if o.payAsked && !o.payFailed {
		switch len(o.paymentTxns) {
		case 0:
			add(Violation{ViolationMissingPayment, key, "paid order produced no payment event"})
		case 1:
		default:
			add(Violation{ViolationDuplicatePayment, key, "payment events with transaction ids " + strings.Join(o.paymentTxns, ", ")})
		}
	}
}

// checkCreates adds the simulator's violations of one order that it
// created n times.
func checkCreates(key OrderKey, o *order, n, maxCreates int, add func(Violation)) {
	created := slices.ContainsFunc(o.outcomes, func(oc outcome) bool { return oc.created })
	switch {
	case created && n == 0:
		add(Violation{ViolationSimCreateMissing, key, "prepay event for an order the simulator never created"})
	case o.kind != KindValid && n > 0:
		add(Violation{ViolationSimCreatedInvalid, key, fmt.Sprintf("%s job reached the simulator %d times", o.kind, n)})
	case maxCreates > 0 && n > maxCreates:
		add(Violation{ViolationSimTooManyCreates, key, fmt.Sprintf("simulator saw %d creates, at most %d expected", n, maxCreates)})
	}
}

// checkRecord adds the violations of one order judged by the simulator's
// record of it (ok false: the simulator never saw it).
func checkRecord(key OrderKey, o *order, info wechatsim.OrderInfo, ok bool, add func(Violation)) {
	refs := IssuedRefs(info)
	state := SimState(info, ok)
	for _, oc := range o.outcomes {
		switch {
		case oc.created && !slices.Contains(refs, oc.ref):
			add(Violation{ViolationPrepayNotIssued, key, fmt.Sprintf("published reference %q is not one the simulator issued for this order (%v)", oc.ref, refs)})
		case !oc.created && state != "" && state != wechat.TradeStateClosed:
			add(Violation{ViolationFailedButCreated, key, fmt.Sprintf("failed %s for good, but the simulator holds the order as %s", oc.code, state)})
		}
	}
	created := slices.ContainsFunc(o.outcomes, func(oc outcome) bool { return oc.created })
	for _, code := range o.jobFailures {
		if code == events.CodeOrderNotCreated && state != "" && !created {
			add(Violation{ViolationFailedButCreated, key, fmt.Sprintf("failed %s, but the simulator holds the order as %s", code, state)})
		}
	}
	paid := state == wechat.TradeStateSuccess
	switch {
	case !paid && len(o.payments) > 0:
		add(Violation{ViolationUnpaidPayment, key, fmt.Sprintf("payment event, but the simulator holds the order as %q", state)})
	case paid && len(o.payments) == 0 && (!o.payAsked || o.payFailed):
		add(Violation{ViolationMissingPayment, key, "the simulator holds the order as paid, and no payment event came"})
	}
	if !paid {
		return
	}
	for i := range o.payments {
		if d := PaymentMismatch(&o.payments[i], info.Order); d != "" {
			add(Violation{ViolationPaymentMismatch, key, fmt.Sprintf("payment event %s: %s", o.payments[i].CombineTransactionID, d)})
		}
	}
}

// refusedAsInvalid reports whether a failure code says the job itself was
// wrong, which a valid generated job must never be.
func refusedAsInvalid(code string) bool {
	switch code {
	case events.CodeInvalidJob, events.CodeMalformedJob, events.CodeUnsupportedVersion, events.CodeJobTooLarge, "PARAM_ERROR":
		return true
	}
	return false
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// latencyOf summarizes durations; percentiles are nearest-rank.
func latencyOf(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	rank := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return ms(s[min(max(i, 0), len(s)-1)])
	}
	return Latency{
		Count: len(s), MeanMS: ms(sum / time.Duration(len(s))),
		P50MS: rank(0.50), P90MS: rank(0.90), P99MS: rank(0.99), MaxMS: ms(s[len(s)-1]),
	}
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/float64(time.Microsecond)) / 1000 }
