package chaos

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/wxcombine/orderworker/events"
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
	// WarrantWorkerExit: the previous call was answered 2xx, but the worker
	// that received the answer died before the next call, so the outcome may
	// never have been stored.
	WarrantWorkerExit = "worker_exit"
	// WarrantStoreOutage: the previous call was answered 2xx while the
	// idempotency store was down, so the outcome could not be stored.
	WarrantStoreOutage = "store_outage"
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
}

// Outage is a window during which a server was down: from the moment the
// harness stopped it to the moment it accepted connections again.
type Outage struct {
	Server string    `json:"server"`
	Down   time.Time `json:"down"`
	Up     time.Time `json:"up"`
}

// Evidence is everything the checks read.
type Evidence struct {
	// Keys are the distinct orders the load generator published.
	Keys []loadgen.OrderKey
	// PublishErrors counts jobs the load generator could not publish.
	PublishErrors int
	// Outcomes, DeadLetters and Payments are the stored events per order;
	// Payments holds the combine_transaction_id of each raw event.
	Outcomes    map[loadgen.OrderKey][]OutcomeEvent
	DeadLetters map[loadgen.OrderKey][]events.Reason
	Payments    map[loadgen.OrderKey][]string
	// Closed counts the orders.closed events stored per order.
	Closed map[loadgen.OrderKey]int
	// UnkeyedDeadLetters counts dead letters naming no order.
	UnkeyedDeadLetters int
	// Sim is the simulator's view of each order it saw.
	Sim map[loadgen.OrderKey]wechatsim.OrderInfo
	// Calls are the create calls the recording proxy forwarded.
	Calls []Call
	// Outages are the idempotency store's (Redis) and NATS's down windows.
	Outages []Outage
	// Exits maps every worker instance that exited during the run to when.
	Exits map[string]time.Time
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
	// Closed counts orders the simulator holds as closed; CloseEvents the
	// orders.closed events stored for the run's orders.
	Closed      int `json:"closed"`
	CloseEvents int `json:"close_events"`
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
		c.checkPayments(ev, key)
		c.checkClosed(ev, key)
		c.checkCreates(ev, key, calls[key])
	}
	// Events and calls for orders this run never published.
	for _, m := range []map[loadgen.OrderKey]int{countKeys(ev.Outcomes), countKeys(ev.Payments)} {
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
	inv(InvOnePayment, fmt.Sprintf("%d orders paid, %d payment events", res.Paid, res.PaymentEvents))
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

// checkOutcomes: exactly one outcome event, one prepay_id, nothing lost.
func (c *checker) checkOutcomes(ev *Evidence, key loadgen.OrderKey) {
	outs := ev.Outcomes[key]
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
	switch {
	case len(outs) == 0 && len(dls) == 0:
		c.res.Lost++
		c.add(InvNoJobLost, key, "no outcome event and no dead letter")
	case len(outs) == 0:
		c.res.DeadLetterOnly++
	case len(outs) > 1:
		c.add(InvOneOutcome, key, "%d outcome events: %s", len(outs), describeOutcomes(outs))
	}
	if len(outs) > 0 {
		if outs[0].Created {
			c.res.Created++
		} else {
			c.res.Failed++
		}
	}
	if len(refs) > 1 {
		c.add(InvOnePrepayID, key, "prepay events with %d different references: %s", len(refs), strings.Join(refs, ", "))
	}
	if info, ok := ev.Sim[key]; ok && info.DistinctSuccesses() > 1 {
		c.add(InvOnePrepayID, key, "the simulator answered %d different references: %v", info.DistinctSuccesses(), info.Outcomes)
	}
	if created && len(dls) > 0 {
		c.add(InvOneOutcome, key, "created order was also dead-lettered (%v)", dls)
	}
	if len(outs) > 0 && !outs[0].Created && isTerminalFailure(outs[0].Code) && len(dls) == 0 {
		c.add(InvNoJobLost, key, "failed with %s but was not dead-lettered", outs[0].Code)
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

// checkPayments: a paid order has exactly one payment event; an unpaid one
// none.
func (c *checker) checkPayments(ev *Evidence, key loadgen.OrderKey) {
	txns := ev.Payments[key]
	c.res.PaymentEvents += len(txns)
	paid := false
	if info, ok := ev.Sim[key]; ok && simPaid(info) {
		paid = true
		c.res.Paid++
	}
	switch {
	case paid && len(txns) == 0:
		c.add(InvOnePayment, key, "paid order produced no payment event")
	case paid && len(txns) > 1:
		c.add(InvOnePayment, key, "paid order produced %d payment events (transactions %s)", len(txns), strings.Join(txns, ", "))
	case !paid && len(txns) > 0:
		c.add(InvOnePayment, key, "payment event for an order the simulator does not hold as paid")
	}
}

// checkClosed: an order the simulator closed has exactly one orders.closed
// event; any other order none; no order has both a payment and a close.
func (c *checker) checkClosed(ev *Evidence, key loadgen.OrderKey) {
	n := ev.Closed[key]
	c.res.CloseEvents += n
	info, ok := ev.Sim[key]
	closed := ok && info.Order != nil && len(info.Order.SubOrders) > 0 && info.Order.SubOrders[0].TradeState == wechat.TradeStateClosed
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

// simPaid reports whether the simulator holds the order as paid.
func simPaid(info wechatsim.OrderInfo) bool {
	o := info.Order
	return o != nil && len(o.SubOrders) > 0 && o.SubOrders[0].TradeState == wechat.TradeStateSuccess
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
	unanswered := 0
	for _, call := range calls {
		if call.Status == 0 {
			unanswered++
		} else if call.Status/100 != 2 {
			cf.FaultAnswers[cmp.Or(call.Code, fmt.Sprintf("HTTP_%d", call.Status))]++
		}
	}
	// A call the proxy forwarded may have been cut off before the simulator
	// read it, but the simulator never sees a call the proxy did not.
	if simCalls > len(calls) || simCalls < len(calls)-unanswered {
		c.add(InvCreateAccounting, key, "proxy forwarded %d create calls (%d unanswered), the simulator counted %d", len(calls), unanswered, simCalls)
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
	if cur.Start.Before(prev.End) {
		return Unwarranted, fmt.Sprintf("overlaps the previous call by %s (%s)", prev.Instance, prev.End.Sub(cur.Start))
	}
	switch {
	case prev.Status == 0 || !prev.Delivered:
		return WarrantNoAnswer, ""
	case prev.Status == 429 || prev.Status >= 500:
		return WarrantFault, ""
	case prev.Status/100 != 2:
		return Unwarranted, fmt.Sprintf("the previous call was answered %d %s, which is not retryable", prev.Status, prev.Code)
	}
	if at, ok := ev.Exits[prev.Instance]; ok && !at.Before(prev.End.Add(-time.Second)) && at.Before(cur.Start) {
		return WarrantWorkerExit, ""
	}
	for _, o := range ev.Outages {
		if o.Server != "redis" {
			continue
		}
		from, to := prev.End.Add(-time.Second), minTime(prev.End.Add(storeSettleWindow), cur.Start)
		if o.Down.Before(to) && o.Up.After(from) {
			return WarrantStoreOutage, ""
		}
	}
	return Unwarranted, fmt.Sprintf("the previous call (by %s, ended %s) was answered %d %s and delivered, with no worker exit or store outage in between",
		prev.Instance, prev.End.Format("15:04:05.000"), prev.Status, prev.Ref)
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
