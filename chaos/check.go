package chaos

import (
	"cmp"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/idempotency"
	"github.com/wxcombine/orderworker/loadgen"
	"github.com/wxcombine/orderworker/wechat"
	"github.com/wxcombine/orderworker/wechat/wechatsim"
)

// Invariant names, in the order they are printed.
const (
	InvOneOutcome       = "one_outcome_per_order"
	InvOnePrepayID      = "one_prepay_id_per_order"
	InvNoJobLost        = "no_job_lost"
	InvWarrantedCreates = "creates_only_when_warranted"
	InvCreateAccounting = "create_accounting_matches"
	InvOnePayment       = "one_payment_per_paid_order"
	InvPrepayIssued     = "prepay_id_issued_by_wechat"
	InvNoFalseFailure   = "no_failure_for_a_created_order"
	InvTrueOutcome      = "one_true_outcome_per_order"
	InvPaymentMatches   = "payment_matches_wechat"
	InvDeadLetters      = "dead_letters_per_order"
	InvEventsDecode     = "events_decode"
	InvJobsEnd          = "every_accepted_job_ends"
	InvNoRetryableFail  = "no_failure_for_a_retryable_answer"
	InvReplayReaches    = "replay_after_the_fix_reaches_wechat"
	InvOneClose         = "one_close_per_closed_order"
	InvLoadgen          = "loadgen_checks"
	InvNoUnexpectedExit = "no_unexpected_exits"
	InvNoSecrets        = "no_secrets_in_logs"
	InvDisruptions      = "disruptions_performed"
)

// Warrants: why the simulator was allowed to see a create of an order again.
// Each repeated create is justified by what happened to the call before it.
const (
	// WarrantFault: the previous call was answered with a retryable error
	// (5xx, 429 FREQUENCY_LIMITED, the per-merchant limit, a 502).
	WarrantFault = "fault"
	// WarrantNoAnswer: the previous call got no answer the worker could read
	// (timeout after create, a slow answer, a worker that died mid-call).
	WarrantNoAnswer = "no_answer"
	// WarrantWorkerExit: the previous call was answered (2xx, or that the
	// number is taken, closed or paid, or refused), but the worker that
	// received the answer died before the next call, so what it learnt may
	// never have been stored.
	WarrantWorkerExit = "worker_exit"
	// WarrantStoreOutage: the previous call was answered 2xx while the
	// idempotency store was down, so the outcome could not be stored.
	WarrantStoreOutage = "store_outage"
	// WarrantRecordLost: the idempotency store lost its data (restarted
	// empty) before this call and after the claim of the previous one may
	// have been taken (a lease before it).
	WarrantRecordLost = "record_lost"
	// WarrantRecordExpired: the previous call ended longer ago than the
	// outcome's time to live (IDEMPOTENCY_OUTCOME_TTL), so its record was
	// gone.
	WarrantRecordExpired = "record_expired"
	// WarrantOperatorFix: the previous call was refused for a cause an
	// operator fixes (401 SIGN_ERROR of a skewed clock, NOAUTH, an unknown
	// merchant): WeChat Pay did nothing, and the job may come back once the
	// cause is fixed.
	WarrantOperatorFix = "operator_fix"
	// WarrantReleased: the previous call was answered that the number is
	// taken, closed or paid, and the job that got it ended with a failure
	// that is not the order's outcome, or was handed back for its next
	// delivery (its claim released either way: WeChat Pay's state could
	// not be had), so a later attempt starts again, create first.
	WarrantReleased = "released"
	// Unwarranted: none of the above; a violation.
	Unwarranted = "unwarranted"
)

// storeSettleWindow is how long after a 2xx answer a worker may still be
// storing its outcome: the settle context of pipeline (5s) and slack.
const storeSettleWindow = 10 * time.Second

// OutcomeEvent is one prepay.created or prepay.failed event as stored.
type OutcomeEvent struct {
	Created bool   `json:"created"`
	Ref     string `json:"ref,omitempty"`  // prepay_id, h5_url or code_url
	Code    string `json:"code,omitempty"` // failure code
	// Final marks a failure that is the order's outcome. A failure with
	// Final false speaks of one job (refused, a configuration error, an
	// order WeChat Pay did not have at the time): it is no outcome of the
	// order, and a later job of the same order may still create it.
	Final bool `json:"final,omitempty"`
}

// orderLevel reports whether the event is an outcome of the order (a
// prepay, or a final failure) rather than of one job.
func (o OutcomeEvent) orderLevel() bool { return o.Created || o.Final }

// orderOutcomes answers the order-level events among outs.
func orderOutcomes(outs []OutcomeEvent) []OutcomeEvent {
	var out []OutcomeEvent
	for _, o := range outs {
		if o.orderLevel() {
			out = append(out, o)
		}
	}
	return out
}

// Outage is a window during which a server was down: from the moment the
// harness stopped it to the moment it accepted connections again.
type Outage struct {
	Server string    `json:"server"`
	Down   time.Time `json:"down"`
	Up     time.Time `json:"up"`
	// Wiped reports that the server came back without its data.
	Wiped bool `json:"wiped,omitempty"`
	// Store reports that the idempotency store may have been unreachable
	// meanwhile, though the server is not Redis: a NATS node's disruption
	// with the JetStream KV backend (the bucket's leader may be on it).
	Store bool `json:"store,omitempty"`
	// StoreUp, with Store, is when the store answered writes again through
	// every node, as the harness probed it: later than Up while the
	// bucket's stream elects a leader or catches a node up.
	StoreUp time.Time `json:"store_up,omitzero"`
}

// DeadLetterRecord is one stored dead letter of an order.
type DeadLetterRecord struct {
	Reason events.Reason `json:"reason"`
	// StreamSequence is the dead-lettered job's sequence in the jobs stream.
	StreamSequence uint64 `json:"stream_sequence"`
}

// Undecodable is a stored message that did not decode strictly into the
// type of its subject.
type Undecodable struct {
	Stream   string `json:"stream"`
	Subject  string `json:"subject"`
	Sequence uint64 `json:"sequence"`
	Error    string `json:"error"`
}

// StrandedJob is a job still in the jobs stream when the run ended: JetStream
// accepted it and it ended in neither an acknowledgement nor a termination.
type StrandedJob struct {
	Order    loadgen.OrderKey `json:"order"`
	Sequence uint64           `json:"sequence"`
	Bytes    int              `json:"bytes"`
	// Acked: the consumer's acknowledgement floor is at or past Sequence,
	// so JetStream recorded the job's acknowledgement (or termination) and
	// will never deliver it again, yet its work-queue stream kept the
	// message (replicated work queues can: nats-server#3953, #5148). Such
	// a job ended if its order has an outcome or a dead letter.
	Acked bool `json:"acked,omitempty"`
}

// Evidence is everything the checks read.
type Evidence struct {
	// Keys are the distinct orders the run published (the load
	// generator's and the harness's own).
	Keys []loadgen.OrderKey
	// PublishErrors counts jobs the load generator could not publish.
	PublishErrors int
	// Outcomes, DeadLetters and Payments are the stored events per order.
	Outcomes    map[loadgen.OrderKey][]OutcomeEvent
	DeadLetters map[loadgen.OrderKey][]DeadLetterRecord
	Payments    map[loadgen.OrderKey][]events.PaymentSucceeded
	// Closed counts the orders.closed events stored per order.
	Closed map[loadgen.OrderKey]int
	// UnkeyedDeadLetters counts dead letters naming no order.
	UnkeyedDeadLetters int
	// Undecodable lists stored events and dead letters that did not decode.
	Undecodable []Undecodable
	// Stranded lists the jobs left in the jobs stream after the run.
	Stranded []StrandedJob
	// Sim is WeChat Pay's record (the simulator's) of each order it saw:
	// the answers it gave to creates (every prepay_id it issued), the order
	// with each sub-order's trade state, transaction id and amounts.
	Sim map[loadgen.OrderKey]wechatsim.OrderInfo
	// Calls are the create calls the recording proxy forwarded.
	Calls []Call
	// OutcomeAt is when each order's first outcome was stored (JetStream's
	// timestamp), for the stalls.
	OutcomeAt map[loadgen.OrderKey]time.Time
	// Outages are the idempotency store's (Redis) and NATS's down windows.
	Outages []Outage
	// Exits maps every worker instance that exited during the run to when.
	Exits map[string]time.Time
	// StoreFailures are the failed writes of an outcome the workers logged,
	// per order.
	StoreFailures map[loadgen.OrderKey][]LogNote
	// HandedBack are the jobs the workers logged they handed back without
	// an outcome, per order.
	HandedBack map[loadgen.OrderKey][]LogNote
	// OutcomeTTL is the workers' IDEMPOTENCY_OUTCOME_TTL; 0 when unknown.
	OutcomeTTL time.Duration
	// SkewWindows are the periods the workers' clock was skewed; Replays the
	// dead letters replayed with cmd/deadletter after each.
	SkewWindows []SkewWindow
	Replays     []Replay
	// HarnessErrors lists faults the harness could not inject as planned.
	HarnessErrors []string
}

// Violation is one broken invariant for one order.
type Violation struct {
	Invariant string           `json:"invariant"`
	Order     loadgen.OrderKey `json:"order"`
	Detail    string           `json:"detail"`
}

// Invariant is the result of one check.
type Invariant struct {
	Name       string `json:"name"`
	OK         bool   `json:"ok"`
	Violations int    `json:"violations"`
	// Detail states the figures the check compared.
	Detail string `json:"detail"`
}

// CreateFigures summarizes the create calls.
type CreateFigures struct {
	// Calls counts create calls seen by the proxy; SimCalls those counted by
	// the simulator.
	Calls    int `json:"calls"`
	SimCalls int `json:"sim_calls"`
	// Orders counts orders with at least one call; Repeated those with more
	// than one.
	Orders   int `json:"orders"`
	Repeated int `json:"repeated"`
	// Repeats counts calls beyond each order's first, by warrant.
	Repeats map[string]int `json:"repeats"`
	// FaultAnswers counts the non-2xx answers the workers received, by code.
	FaultAnswers map[string]int `json:"fault_answers"`
}

// CheckResult is what Check found.
type CheckResult struct {
	Invariants      []Invariant    `json:"invariants"`
	Violations      []Violation    `json:"violations"`
	ViolationCounts map[string]int `json:"violation_counts"`
	ViolationTotal  int            `json:"violation_total"`
	Creates         CreateFigures  `json:"creates"`
	// Orders counts distinct published orders; Created and Failed those by
	// their outcome; DeadLetterOnly those known only from a dead letter;
	// Lost those with neither.
	Orders         int `json:"orders"`
	Created        int `json:"created"`
	Failed         int `json:"failed"`
	DeadLetterOnly int `json:"dead_letter_only"`
	Lost           int `json:"lost"`
	DeadLetters    int `json:"dead_letters"`
	// Paid counts orders the simulator holds as paid; PaymentEvents the
	// payment events stored for the run's orders.
	Paid          int `json:"paid"`
	PaymentEvents int `json:"payment_events"`
	// PaymentsNotified and PaymentsQueried split PaymentEvents by source:
	// the notifier (a notification arrived first) or a worker (its
	// reconciliation, a close job or asking WeChat Pay found it first).
	PaymentsNotified int `json:"payments_notified"`
	PaymentsQueried  int `json:"payments_queried"`
	// Closed counts orders the simulator holds as closed; CloseEvents the
	// orders.closed events stored for the run's orders.
	Closed      int `json:"closed"`
	CloseEvents int `json:"close_events"`
	// KeptAfterAck counts jobs JetStream kept in the jobs stream after
	// recording their acknowledgement (StrandedJob.Acked) whose order has
	// an outcome or a dead letter: they ended, and are reported, not
	// counted as violations.
	KeptAfterAck int `json:"kept_after_ack,omitempty"`
}

// maxListed caps CheckResult.Violations; ViolationCounts counts them all.
const maxListed = 200

type checker struct {
	res    *CheckResult
	counts map[string]int
}

func (c *checker) add(inv string, key loadgen.OrderKey, format string, args ...any) {
	c.counts[inv]++
	c.res.ViolationTotal++
	if len(c.res.Violations) < maxListed {
		c.res.Violations = append(c.res.Violations, Violation{inv, key, fmt.Sprintf(format, args...)})
	}
}

// Check checks every invariant of the evidence that is about orders.
func Check(ev *Evidence) *CheckResult {
	res := &CheckResult{ViolationCounts: map[string]int{}, Orders: len(ev.Keys)}
	c := &checker{res: res, counts: res.ViolationCounts}
	res.Creates = CreateFigures{Repeats: map[string]int{}, FaultAnswers: map[string]int{}}

	calls := map[loadgen.OrderKey][]Call{}
	for _, call := range ev.Calls {
		calls[call.Order] = append(calls[call.Order], call)
	}
	published := map[loadgen.OrderKey]bool{}
	for _, key := range ev.Keys {
		published[key] = true
	}
	for _, key := range ev.Keys {
		c.checkOutcomes(ev, key)
		c.checkTruth(ev, key)
		c.checkDeadLetters(ev, key)
		c.checkPayments(ev, key)
		c.checkCreates(ev, key, calls[key])
		c.checkClosed(ev, key)
	}
	for _, u := range ev.Undecodable {
		c.add(InvEventsDecode, loadgen.OrderKey{}, "%s message %d on %s does not decode: %s", u.Stream, u.Sequence, u.Subject, u.Error)
	}
	for _, r := range ev.Replays {
		settled := slices.ContainsFunc(ev.Outcomes[r.Order], func(o OutcomeEvent) bool { return o.orderLevel() })
		c.checkReplay(r, calls[r.Order], settled)
	}
	for _, j := range ev.Stranded {
		if j.Acked && (len(ev.Outcomes[j.Order]) > 0 || len(ev.DeadLetters[j.Order]) > 0) {
			res.KeptAfterAck++
			continue
		}
		if j.Acked {
			c.add(InvJobsEnd, j.Order, "job %d (%d bytes) was acknowledged, but its order has no outcome and no dead letter", j.Sequence, j.Bytes)
			continue
		}
		c.add(InvJobsEnd, j.Order, "job %d (%d bytes) is still in the jobs stream: no acknowledgement, no termination", j.Sequence, j.Bytes)
	}
	// Events and calls for orders this run never published.
	for _, m := range []map[loadgen.OrderKey]int{countKeys(ev.Outcomes), countKeys(ev.Payments), countKeys(ev.DeadLetters)} {
		for key := range m {
			if !published[key] {
				c.add(InvOneOutcome, key, "event for an order the load generator never published")
			}
		}
	}
	for key := range calls {
		if !published[key] {
			c.add(InvWarrantedCreates, key, "create call for an order the load generator never published")
		}
	}
	for _, r := range ev.DeadLetters {
		res.DeadLetters += len(r)
	}
	res.DeadLetters += ev.UnkeyedDeadLetters

	inv := func(name, detail string) {
		res.Invariants = append(res.Invariants, Invariant{Name: name, OK: c.counts[name] == 0, Violations: c.counts[name], Detail: detail})
	}
	inv(InvOneOutcome, fmt.Sprintf("%d orders: %d created, %d failed, %d known only from a dead letter (unreadable job)",
		res.Orders, res.Created, res.Failed, res.DeadLetterOnly))
	inv(InvOnePrepayID, "prepay events and simulator answers compared per order")
	if ev.PublishErrors > 0 {
		c.add(InvNoJobLost, loadgen.OrderKey{}, "%d jobs could not be published, so the orders cannot all be accounted for", ev.PublishErrors)
	}
	inv(InvNoJobLost, fmt.Sprintf("published %d distinct = %d outcomes + %d dead-letter only + %d lost; %d dead letters in all",
		res.Orders, res.Created+res.Failed, res.DeadLetterOnly, res.Lost, res.DeadLetters))
	cf := res.Creates
	inv(InvWarrantedCreates, fmt.Sprintf("%d create calls for %d orders, %d orders created again; repeats by warrant: %s",
		cf.Calls, cf.Orders, cf.Repeated, joinCounts(cf.Repeats)))
	inv(InvCreateAccounting, fmt.Sprintf("proxy saw %d create calls, the simulator counted %d", cf.Calls, cf.SimCalls))
	inv(InvOnePayment, fmt.Sprintf("%d orders paid (every sub-order SUCCESS at the simulator), %d payment events (%d from notifications, %d from WeChat Pay's query answers)",
		res.Paid, res.PaymentEvents, res.PaymentsNotified, res.PaymentsQueried))
	inv(InvPrepayIssued, "every prepay_id, h5_url and code_url published is one the simulator answered for that order")
	inv(InvNoFalseFailure, "no order the simulator created (and did not close) or was paid for has a failure outcome")
	inv(InvTrueOutcome, "per order, the outcomes agree with each other and with the simulator's final state")
	inv(InvPaymentMatches, "payment events match the simulator's transaction ids, states and amounts of every sub-order")
	inv(InvDeadLetters, fmt.Sprintf("%d dead letters: one per job at most; one per order unless each is of an unreadable or invalid job", res.DeadLetters))
	inv(InvEventsDecode, fmt.Sprintf("%d stored messages did not decode", len(ev.Undecodable)))
	inv(InvJobsEnd, fmt.Sprintf("%d jobs left in the jobs stream (%d of them acknowledged, their orders settled, but kept by JetStream)", len(ev.Stranded), res.KeptAfterAck))
	inv(InvNoRetryableFail, "no failure outcome carries a code WeChat Pay says to retry (5xx, 429, SYSTEMERROR, SERVICE_UNAVAILABLE…)")
	inv(InvReplayReaches, fmt.Sprintf("%d dead letters replayed after the clock was fixed; each must reach WeChat Pay again", len(ev.Replays)))
	inv(InvOneClose, fmt.Sprintf("%d orders closed, %d orders.closed events; none both paid and closed", res.Closed, res.CloseEvents))
	return res
}

func countKeys[V any](m map[loadgen.OrderKey][]V) map[loadgen.OrderKey]int {
	out := make(map[loadgen.OrderKey]int, len(m))
	for k, v := range m {
		out[k] = len(v)
	}
	return out
}

// checkOutcomes: at most one outcome of the order (a prepay or a final
// failure; failures about one job do not count), one prepay_id, nothing
// lost.
func (c *checker) checkOutcomes(ev *Evidence, key loadgen.OrderKey) {
	all := ev.Outcomes[key]
	outs := orderOutcomes(all)
	dls := ev.DeadLetters[key]
	var refs []string
	created := false
	for _, o := range outs {
		if o.Created {
			created = true
			if !slices.Contains(refs, o.Ref) {
				refs = append(refs, o.Ref)
			}
		}
	}
	workerPaid := slices.ContainsFunc(ev.Payments[key], func(p events.PaymentSucceeded) bool { return p.NotificationID == "" })
	switch {
	case len(all) == 0 && len(dls) == 0 && !workerPaid:
		c.res.Lost++
		c.add(InvNoJobLost, key, "no outcome event and no dead letter")
	case len(all) == 0 && !workerPaid:
		c.res.DeadLetterOnly++
	case len(outs) > 1:
		c.add(InvOneOutcome, key, "%d outcome events: %s", len(outs), describeOutcomes(outs))
	}
	switch {
	case len(outs) > 0 && outs[0].Created:
		c.res.Created++
	case len(outs) > 0, len(all) > 0:
		c.res.Failed++
	}
	if len(refs) > 1 {
		c.add(InvOnePrepayID, key, "prepay events with %d different references: %s", len(refs), strings.Join(refs, ", "))
	}
	// An h5_url lives 5 minutes: a create after that is answered a new one
	// (wechatsim's H5URLValidity); what matters is that one is published.
	if info, ok := ev.Sim[key]; ok && info.DistinctSuccesses() > 1 && info.TradeType != wechat.TradeTypeH5 {
		c.add(InvOnePrepayID, key, "the simulator answered %d different references: %v", info.DistinctSuccesses(), info.Outcomes)
	}
	if created {
		for _, d := range dls {
			if d.Reason == events.ReasonRejected || d.Reason == events.ReasonUnexpectedState {
				c.add(InvOneOutcome, key, "created order was also dead-lettered as %s", d.Reason)
			}
		}
	}
	failures := 0
	for _, o := range all {
		if !o.Created && isTerminalFailure(o.Code) {
			failures++
		}
	}
	if failures > 0 && len(dls) == 0 {
		c.add(InvNoJobLost, key, "failed (%s) but was not dead-lettered", describeOutcomes(all))
	}
}

func reasons(dls []DeadLetterRecord) []events.Reason {
	out := make([]events.Reason, len(dls))
	for i, d := range dls {
		out[i] = d.Reason
	}
	return out
}

// checkTruth judges an order's outcomes by WeChat Pay's record: a
// published reference must be one the simulator issued for that order; an
// order the simulator created and did not close, or that was paid, must have
// no failure; the outcomes must agree with each other and with the
// simulator's final state.
func (c *checker) checkTruth(ev *Evidence, key loadgen.OrderKey) {
	outs := ev.Outcomes[key]
	if len(outs) == 0 {
		return
	}
	info, ok := ev.Sim[key]
	refs := loadgen.IssuedRefs(info)
	state := loadgen.SimState(info, ok)
	var created, failed []string
	for _, o := range outs {
		if o.Created {
			created = append(created, o.Ref)
			if !slices.Contains(refs, o.Ref) {
				c.add(InvPrepayIssued, key, "published reference %q is not one the simulator issued for this order (issued: %v)", o.Ref, refs)
			}
			continue
		}
		if retryableCode(o.Code) {
			c.add(InvNoRetryableFail, key, "failure %s is an answer WeChat Pay says to retry", o.Code)
		}
		if !o.Final {
			// About one job. It must not deny an order WeChat Pay has,
			// unless a later job of the order created it.
			if o.Code == events.CodeOrderNotCreated && state != "" && !slices.ContainsFunc(outs, func(x OutcomeEvent) bool { return x.Created }) {
				c.add(InvNoFalseFailure, key, "failure %s, but the simulator holds the order as %s", o.Code, state)
			}
			continue
		}
		failed = append(failed, o.Code)
		if state != "" && state != wechat.TradeStateClosed {
			c.add(InvNoFalseFailure, key, "final failure %s, but the simulator holds the order as %s", o.Code, state)
		}
	}
	switch {
	case len(created) > 0 && len(failed) > 0:
		c.add(InvTrueOutcome, key, "outcomes disagree: created %v and failed %v", slices.Compact(created), slices.Compact(failed))
	case len(slices.Compact(slices.Clone(failed))) > 1:
		c.add(InvTrueOutcome, key, "failures disagree: %v", failed)
	}
	if len(created) > 0 {
		switch state {
		case "":
			c.add(InvTrueOutcome, key, "prepay event, but the simulator never created the order")
		case wechat.TradeStateClosed, loadgen.StatePartial:
			c.add(InvTrueOutcome, key, "prepay event, but the simulator holds the order as %s", state)
		}
	}
}

// retryableCodes are failure codes of answers WeChat Pay documents as
// "retry with the same parameters": every 5xx (SYSTEMERROR in both
// spellings, BANKERROR, SERVICE_UNAVAILABLE) and 429 FREQUENCY_LIMITED. A
// job that keeps getting them ends RETRIES_EXHAUSTED, never with their code.
var retryableCodes = []string{"SYSTEMERROR", "SYSTEM_ERROR", "BANKERROR", "FREQUENCY_LIMITED", "SERVICE_UNAVAILABLE", "BAD_GATEWAY", "HTTP_502", "HTTP_503"}

func retryableCode(code string) bool { return slices.Contains(retryableCodes, code) }

// operatorCodes are refusals an operator fixes; WeChat Pay did nothing.
var operatorCodes = []string{"SIGN_ERROR", "NOAUTH", "MCH_NOT_EXISTS", "APPID_MCHID_NOT_MATCH"}

// checkReplay: a dead letter replayed after its cause was fixed reaches
// WeChat Pay again (a create after the replay, not skewed), rather than
// getting the stale failure back — unless the order was settled meanwhile
// (another job of it created it, or it failed for good), when the replay
// gets the order's outcome from its record.
func (c *checker) checkReplay(r Replay, calls []Call, settled bool) {
	if r.Error != "" {
		c.add(InvReplayReaches, r.Order, "replay of dead letter %d failed: %s", r.Seq, r.Error)
		return
	}
	if settled {
		return
	}
	for _, call := range calls {
		if call.Start.After(r.At) && call.Fault != FaultClockSkew {
			return
		}
	}
	c.add(InvReplayReaches, r.Order, "dead letter %d replayed at %s after the clock was fixed, and WeChat Pay was never called again", r.Seq, r.At.Format("15:04:05.000"))
}

// perJobReasons are the dead-letter reasons about one job rather than its
// order: each stored copy of such a job is dead-lettered on its own.
// Only "rejected" (a final refusal, stored as the order's outcome and
// dead-lettered by the one job that settled it) speaks of the order.
var perJobReasons = []events.Reason{events.ReasonMalformed, events.ReasonUnsupportedVersion, events.ReasonTooLarge, events.ReasonInvalid,
	events.ReasonConfiguration, events.ReasonConflict, events.ReasonMaxDeliveries, events.ReasonUnexpectedState}

// checkDeadLetters: a job is dead-lettered at most once, and an order at
// most once unless every dead letter is of an unreadable or invalid job.
func (c *checker) checkDeadLetters(ev *Evidence, key loadgen.OrderKey) {
	dls := ev.DeadLetters[key]
	seen := map[uint64]int{}
	orderLevel := 0
	for _, d := range dls {
		if d.StreamSequence != 0 {
			seen[d.StreamSequence]++
		}
		if !slices.Contains(perJobReasons, d.Reason) {
			orderLevel++
		}
	}
	for seq, n := range seen {
		if n > 1 {
			c.add(InvDeadLetters, key, "job %d dead-lettered %d times", seq, n)
		}
	}
	if orderLevel > 1 {
		c.add(InvDeadLetters, key, "order dead-lettered %d times for its fate (%v)", orderLevel, reasons(dls))
	}
}

// isTerminalFailure reports whether a failure code ends a job with a dead
// letter (every failure but a conflicting reuse of an order number).
func isTerminalFailure(code string) bool { return code != events.CodeOrderNumberConflict }

func describeOutcomes(outs []OutcomeEvent) string {
	parts := make([]string, len(outs))
	for i, o := range outs {
		if o.Created {
			parts[i] = "created " + o.Ref
		} else {
			parts[i] = "failed " + o.Code
		}
	}
	return strings.Join(parts, "; ")
}

// checkPayments: a paid order (every sub-order SUCCESS at the simulator)
// has exactly one payment event, an unpaid one none, and the event's
// contents are the simulator's for every sub-order.
func (c *checker) checkPayments(ev *Evidence, key loadgen.OrderKey) {
	pays := ev.Payments[key]
	c.res.PaymentEvents += len(pays)
	info, ok := ev.Sim[key]
	paid := loadgen.SimState(info, ok) == wechat.TradeStateSuccess
	if paid {
		c.res.Paid++
	}
	var txns []string
	for _, p := range pays {
		txns = append(txns, p.CombineTransactionID)
		if p.NotificationID == "" {
			c.res.PaymentsQueried++
		} else {
			c.res.PaymentsNotified++
		}
	}
	switch {
	case paid && len(pays) == 0:
		c.add(InvOnePayment, key, "paid order produced no payment event")
	case paid && len(pays) > 1:
		c.add(InvOnePayment, key, "paid order produced %d payment events (transactions %s)", len(pays), strings.Join(txns, ", "))
	case !paid && len(pays) > 0:
		c.add(InvOnePayment, key, "payment event for an order the simulator does not hold as paid (%q)", loadgen.SimState(info, ok))
	}
	if !paid {
		return
	}
	for i := range pays {
		if d := loadgen.PaymentMismatch(&pays[i], info.Order); d != "" {
			c.add(InvPaymentMatches, key, "payment event %s: %s", pays[i].CombineTransactionID, d)
		}
	}
}

// checkCreates: every create call after an order's first is warranted by
// what happened to the call before it, and the proxy's and the simulator's
// counts agree.
func (c *checker) checkCreates(ev *Evidence, key loadgen.OrderKey, calls []Call) {
	cf := &c.res.Creates
	info, simSaw := ev.Sim[key]
	simCalls := 0
	if simSaw {
		simCalls = info.CreateCalls
	}
	cf.Calls += len(calls)
	cf.SimCalls += simCalls
	unanswered, forwarded := 0, 0
	for _, call := range calls {
		// The proxy's own 503 never reached the simulator, and it counts
		// only creates that passed authentication (not a 401).
		if call.Fault != FaultServiceUnavailable && call.Status != http.StatusUnauthorized {
			forwarded++
		}
		if call.Status == 0 {
			unanswered++
		} else if call.Status/100 != 2 {
			cf.FaultAnswers[cmp.Or(call.Code, fmt.Sprintf("HTTP_%d", call.Status))]++
		}
	}
	// A call the proxy forwarded may have been cut off before the simulator
	// read it, but the simulator never sees a call the proxy did not.
	if simCalls > forwarded || simCalls < forwarded-unanswered {
		c.add(InvCreateAccounting, key, "proxy forwarded %d create calls (%d unanswered), the simulator counted %d", forwarded, unanswered, simCalls)
	}
	if len(calls) == 0 {
		return
	}
	cf.Orders++
	if len(calls) > 1 {
		cf.Repeated++
	}
	slices.SortFunc(calls, func(a, b Call) int { return a.Start.Compare(b.Start) })
	for i := 1; i < len(calls); i++ {
		w, why := warrant(ev, calls[i-1], calls[i])
		cf.Repeats[w]++
		if w == Unwarranted {
			c.add(InvWarrantedCreates, key, "create call %d at %s by %s: %s", i+1, calls[i].Start.Format("15:04:05.000"), calls[i].Instance, why)
		}
	}
}

// warrant answers why cur, the create call after prev for the same order,
// was allowed, or Unwarranted with the reason.
func warrant(ev *Evidence, prev, cur Call) (string, string) {
	if lostBetween(ev, prev, cur) {
		// A store that forgot its claims cannot keep two workers apart,
		// not even while one of them is still calling.
		return WarrantRecordLost, ""
	}
	if cur.Start.Before(prev.End) {
		return Unwarranted, fmt.Sprintf("overlaps the previous call by %s (%s)", prev.Instance, prev.End.Sub(cur.Start))
	}
	// The worker that received the previous answer died before this call:
	// whatever it learnt (a prepay, or that the number is taken, closed or
	// paid) may have died with it, unstored.
	at, ok := ev.Exits[prev.Instance]
	exited := ok && !at.Before(prev.End.Add(-time.Second)) && at.Before(cur.Start)
	switch {
	case prev.Status == 0 || !prev.Delivered:
		return WarrantNoAnswer, ""
	case prev.Status == 429 || prev.Status >= 500:
		return WarrantFault, ""
	case slices.Contains(operatorCodes, prev.Code):
		return WarrantOperatorFix, ""
	case prev.Status/100 != 2 && (storeDownBetween(ev, prev.End, cur.Start) || storeFailedAfter(ev, prev, cur)):
		// A number taken, closed or paid makes the worker ask WeChat Pay;
		// a job held while the store was down starts over, create first.
		return WarrantStoreOutage, ""
	case prev.Status/100 != 2 && ev.OutcomeTTL > 0 && cur.Start.Sub(prev.End) > ev.OutcomeTTL:
		// The outcome that answer settled has expired: a duplicate after
		// it asks WeChat Pay again, create first.
		return WarrantRecordExpired, ""
	case prev.Status/100 != 2 && (slices.ContainsFunc(ev.Outcomes[cur.Order], func(o OutcomeEvent) bool { return !o.Created && !o.Final }) || handedBackAfter(ev, prev, cur)):
		// The job was released: with a failure that is not the order's, or
		// handed back because the query that would settle it failed too.
		return WarrantReleased, ""
	case prev.Status/100 != 2 && exited:
		return WarrantWorkerExit, ""
	case prev.Status/100 != 2:
		return Unwarranted, fmt.Sprintf("the previous call was answered %d %s, which is not retryable", prev.Status, prev.Code)
	}
	if exited {
		return WarrantWorkerExit, ""
	}
	for _, o := range ev.Outages {
		// The claim under which prev was made may predate prev by up to a
		// lease; losing it lets another worker claim and create too.
		if o.Server == "redis" && o.Wiped && o.Down.After(prev.Start.Add(-idempotency.LeaseDefault)) && o.Down.Before(cur.Start) {
			return WarrantRecordLost, ""
		}
	}
	if ev.OutcomeTTL > 0 && cur.Start.Sub(prev.End) > ev.OutcomeTTL {
		return WarrantRecordExpired, ""
	}
	if storeDownBetween(ev, prev.End.Add(-time.Second), minTime(prev.End.Add(storeSettleWindow), cur.Start)) || storeFailedAfter(ev, prev, cur) {
		return WarrantStoreOutage, ""
	}
	return Unwarranted, fmt.Sprintf("the previous call (by %s, ended %s) was answered %d %s and delivered, with no worker exit or store outage in between",
		prev.Instance, prev.End.Format("15:04:05.000"), prev.Status, prev.Ref)
}

// lostBetween reports whether Redis came back empty after the claim of
// prev may have been taken (up to a lease before it) and before cur.
func lostBetween(ev *Evidence, prev, cur Call) bool {
	for _, o := range ev.Outages {
		if o.Server == "redis" && o.Wiped && o.Down.After(prev.Start.Add(-idempotency.LeaseDefault)) && o.Down.Before(cur.Start) {
			return true
		}
	}
	return false
}

// storeDownBetween reports whether the idempotency store was down at some
// time between from and to: Redis, or a NATS node with the KV backend until
// the store answered again.
func storeDownBetween(ev *Evidence, from, to time.Time) bool {
	return slices.ContainsFunc(ev.Outages, func(o Outage) bool {
		return o.ofStore() && o.Down.Before(to) && o.storeUp().After(from)
	})
}

// ofStore reports whether the outage was, or may have been, the
// idempotency store's: Redis, or a NATS node with the KV backend.
func (o Outage) ofStore() bool { return o.Server == "redis" || o.Store }

// storeUp answers when the outage ended for the idempotency store.
func (o Outage) storeUp() time.Time {
	if o.StoreUp.After(o.Up) {
		return o.StoreUp
	}
	return o.Up
}

// checkClosed: an order the simulator closed has exactly one orders.closed
// event; any other order none; no order has both a payment and a close.
func (c *checker) checkClosed(ev *Evidence, key loadgen.OrderKey) {
	n := ev.Closed[key]
	c.res.CloseEvents += n
	info, ok := ev.Sim[key]
	closed := loadgen.SimState(info, ok) == wechat.TradeStateClosed
	if closed {
		c.res.Closed++
	}
	switch {
	case closed && n != 1:
		c.add(InvOneClose, key, "closed order produced %d orders.closed events, want 1", n)
	case !closed && n > 0:
		c.add(InvOneClose, key, "orders.closed for an order the simulator does not hold as closed")
	}
	if n > 0 && len(ev.Payments[key]) > 0 {
		c.add(InvOneClose, key, "order has both a payment and an orders.closed event")
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func joinCounts(m map[string]int) string {
	keys := slices.Sorted(maps.Keys(m))
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
