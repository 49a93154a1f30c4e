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
// The disruptions go one at a time, so long ones push later ones back; the
// run lasts until the load and the whole plan are over.
// Everything it starts is killed when Run returns, and dies with the harness
// (Pdeathsig); the whole run is bounded by Config.Timeout. The nats-server is
// built from the version go.mod requires ([BuildNATSServer]) unless
// Config.NATSServer names one.
//
// Between the workers and the simulator sits a recording proxy ([Recorder]),
// one listener per worker process, which records every create call: which
// worker made it, when, and what it got back.
//
// # The faults of one true outcome per order
//
// Beyond those disruptions, each configurable in [Config] and counted in
// Report.Faults (negative counts or shares turn one off):
//
//	wipe_redis            Redis restarted without its data (RedisWipes)
//	redis_outage          Redis down longer than the whole redelivery
//	                      schedule (RedisOutage; the run's schedule is short:
//	                      MaxDeliver deliveries, RedeliveryDelays apart)
//	acks_dropped          every ack of AckDropShare of the orders lost
//	                      between the workers and NATS ([AckDropper]): the
//	                      outcome is published and JetStream never hears
//	                      the ack, up to the last delivery — what a worker
//	                      killed between publish and ack does, made certain
//	withheld_answer       UnknownOutcomeShare of the orders: every create
//	                      commits at the simulator and its answer is
//	                      withheld, until the delivery limit
//	clock_skew            a window (ClockSkewWindow) in which the signed
//	                      timestamp is off by ClockSkewBy, so the simulator
//	                      answers 401 SIGN_ERROR; then the window's dead
//	                      letters are replayed with cmd/deadletter, as an
//	                      operator would once the clock is fixed
//	late_duplicates_after_ttl  LateAfterTTL orders of the harness's own,
//	                      created and paid, published again after the
//	                      workers' IDEMPOTENCY_OUTCOME_TTL (OutcomeTTL)
//	jobs_at/past_max_job_bytes  jobs of exactly MAX_JOB_BYTES and one byte
//	                      past it (MaxJobBytes, OversizedJobs)
//	service_unavailable_503  ServiceUnavailableRate of the creates answered
//	                      503 SERVICE_UNAVAILABLE (by the proxy, or by the
//	                      simulator with ServiceUnavailableFromSimulator)
//	notifications dropped  NotifyDropRate (30%) of the payments get no
//	                      notification: only the workers' reconciliation
//	                      (ReconcileSchedule, 5s,15s,30s,1m,2m,4m,8m) can report
//	                      them, and one_payment_per_paid_order still wants
//	                      exactly one payment event per paid order
//	notifier_outage        the notifier down for NotifierOutage (20s) and
//	                      back on the same address: WeChat Pay's retries
//	                      and reconciliation report its payments, each once
//
// # The cluster run
//
// With Config.Cluster (cmd/chaos -cluster, make chaos/cluster), the same
// workload and invariants run on the engines production runs: a JetStream
// cluster of ClusterNodes nats-server processes (the workers'
// STREAM_REPLICAS=3: streams, consumer and KV bucket R3; every node in
// NATS_URL), whose routes all pass through a proxy that can cut one node
// off ([KindPartitionNode]); and Redis as a primary, a replica reached
// through a link that can hold the replication stream, and three
// Sentinels, the workers using REDIS_MASTER_NAME — or, with
// Config.KVBackend, the JetStream KV backend. The single-server
// disruptions and the ack dropper are off; instead, once each by default:
//
//	kill_stream_leader      SIGKILL of the jobs stream's leader (from
//	                        stream info), restarted with its store
//	kill_consumer_leader    the same for the workers' consumer
//	restart_node            a node stopped and started with its store
//	wipe_node               a node stopped and started with its store removed
//	partition_node          every route of one node cut (PartitionFor); its
//	                        clients stay connected to it
//	redis_failover_synced   the primary SIGKILLed once the replica has every
//	                        write; Sentinel promotes the replica
//	redis_failover_lagging  the replication stream held for LagFor, then the
//	                        primary SIGKILLed: the writes of that while are
//	                        lost (an outage with Wiped set)
//
// plus the WeChat Pay faults, the worker kills and the faults of one true
// outcome per order that apply. Each disruption's report carries its stall
// ([Stall]): the longest time without a published outcome from its start,
// and how many orders waited for one meanwhile.
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
//	                             (store_outage: the store was down, or, soon
//	                             after a disruption of it, the worker that
//	                             got the answer logged that its write of the
//	                             outcome failed); calls never overlap
//	create_accounting_matches    the proxy's and the simulator's create counts
//	                             agree per order
//	one_payment_per_paid_order   every order the simulator holds as paid
//	                             (every sub-order SUCCESS) has exactly one
//	                             payment event, and no other order has one
//
// and, judged by WeChat Pay's record (the simulator's) rather than by the
// events:
//
//	prepay_id_issued_by_wechat   every prepay_id (h5_url, code_url) published
//	                             is one the simulator issued for that order
//	no_failure_for_a_created_order  no order the simulator created (and did
//	                             not close) or that was paid has a failure
//	one_true_outcome_per_order   an order's outcomes agree with each other and
//	                             with the simulator's final state
//	payment_matches_wechat       payment events carry the simulator's
//	                             transaction id, state and amounts of every
//	                             sub-order
//	dead_letters_per_order       a job is dead-lettered at most once; an
//	                             order at most once unless each is of an
//	                             unreadable or invalid job
//	events_decode                every stored event and dead letter decodes
//	                             strictly (none is dropped)
//	every_accepted_job_ends      no job is left in the jobs stream once the
//	                             run has drained (DrainWait)
//	no_failure_for_a_retryable_answer  no failure carries a code WeChat Pay
//	                             says to retry (5xx, 429)
//	replay_after_the_fix_reaches_wechat  a dead letter replayed after the
//	                             clock was fixed reaches WeChat Pay again
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
