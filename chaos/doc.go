// Package chaos proves the product under crashes, outages and faults: it
// runs the real processes — nats-server with JetStream file storage,
// redis-server with persistence, wechatsim with faults on, three workers and
// the notifier, all built with `go build` — feeds them orders through the
// load generator (package loadgen), disrupts them, and checks what came out.
//
// # A run
//
// [Run] builds the commands into Dir/bin, generates merchant and platform
// keys, starts the servers on free loopback ports and waits for their
// readiness endpoints, then publishes Config.Orders orders with 20%
// duplicates (half of them late, with a new Nats-Msg-Id, so they reach the
// idempotency store), 1% invalid and 0.5% malformed jobs, and pays 20% of
// the created orders so that notifications flow. The simulator answers 30%
// of calls with retryable errors (SYSTEMERROR, BANKERROR,
// FREQUENCY_LIMITED, 502), lets 5% of creates commit and never answer, and
// limits each merchant's request rate. During the publishing time, at
// moments drawn from Config.Seed, it SIGKILLs a worker five times (starting
// a new one each time), and stops and restarts Redis once and NATS once.
// Everything it starts is killed when Run returns, and dies with the harness
// (Pdeathsig); the whole run is bounded by Config.Timeout.
//
// Between the workers and the simulator sits a recording proxy ([Recorder]),
// one listener per worker process, which records every create call: which
// worker made it, when, and what it got back.
//
// # Invariants
//
// After the run, the event and dead-letter streams are read in full, and
// the simulator is asked about every order. [Check] then verifies:
//
//	one_outcome_per_order        every distinct order has exactly one stored
//	                             prepay.created or prepay.failed event
//	one_prepay_id_per_order      no order has two different prepay_ids, in the
//	                             events or in the simulator's answers
//	no_job_lost                  published distinct orders = orders with an
//	                             outcome + orders known only from a dead
//	                             letter; every failed order is dead-lettered
//	creates_only_when_warranted  every create call after an order's first is
//	                             justified by the call before it: it was
//	                             answered with a retryable error (fault), it
//	                             got no answer (no_answer), or it was answered
//	                             2xx but the worker that got the answer died
//	                             before the next call (worker_exit) or Redis
//	                             was down while the outcome was being stored
//	                             (store_outage); calls never overlap
//	create_accounting_matches    the proxy's and the simulator's create counts
//	                             agree per order
//	one_payment_per_paid_order   every order the simulator holds as paid has
//	                             exactly one payment event, and no other order
//	                             has one
//	one_close_per_closed_order   every order the simulator holds as closed has
//	                             exactly one orders.closed event, no other
//	                             order has one, and no order has both a
//	                             payment and a close
//
// and, for the run as a whole, the load generator's own checks, no process
// exiting on its own, no key material in any log (package
// internal/securitytest), and every planned disruption carried out.
//
// The report (Dir/report.json, printed by [Report.WriteText]) holds the
// seed, the figures, each disruption with its time, every invariant and up
// to 200 violations; Dir/create-calls.json holds the proxy's records and
// Dir/logs every process's output. The seed replays the schedule, the
// simulator's fault dice and the generated orders; process timing still
// differs between runs.
package chaos
