// Package pipeline turns order-creation jobs from NATS JetStream into WeChat
// Pay combine orders and outcome events.
//
// [Reconciler] watches every order with a prepay until WeChat Pay reports it
// paid or closed, and serves close jobs (reconcile.go); a duplicate job
// after the prepay_id expired asks WeChat Pay for a working one
// (prepay_expiry.go); NotifyURLBase fills and checks notify_url
// (notifyurl.go).
//
// [Processor] handles one delivery of a job end to end, through small
// interfaces it declares ([Payer], [PaySigner], [Publisher]) and the
// idempotency.Store. [Runner] feeds it from a durable pull consumer with
// bounded concurrency and turns its answers into acknowledgements:
//
//	nil                → DoubleAck (AckSync: wait for the server's confirmation)
//	*RetryError        → NakWithDelay(After)      (see [RetryAfter])
//	*TerminalError     → TermWithReason(Reason)   (see [Terminal]); the dead letter is already published
//	any other error    → NakWithDelay(redelivery delay of the delivery count)
//
// # One delivery
//
//  1. Decode strictly (events.DecodeJob) and validate (wechat.Validate). A
//     malformed, wrong-version or invalid job gets a prepay.failed event
//     with Final false (under the job's own id, never the order's outcome
//     id) when its combine_mchid and combine_out_trade_no can be read, a
//     dead letter, and Term. A job over MAX_JOB_BYTES never gets here: the
//     jobs stream refuses it at publish time.
//  2. Claim (combine_mchid, combine_out_trade_no) with the fingerprint of
//     trade type + request body. done: republish the stored outcome
//     unchanged and Ack, with no WeChat Pay call. in flight: NakWithDelay
//     (the lease's remaining time; on the last delivery Hold instead).
//     conflict: a dead letter "conflict", nothing published for the order.
//     Store down: Hold — the message is kept with InProgress, no delivery
//     is spent, no WeChat Pay call is made, the Runner pulls nothing new and
//     StoreErr reports it (readiness goes false) until the store answers.
//  3. Create, retrying in process every 5xx but OPENID_MISMATCH and
//     INVALID_TRANSACTIONID, every 429 and unknown outcomes — timeouts,
//     transport errors, unverifiable answers — always with the same body,
//     so WeChat Pay answers the same prepay_id. The calls end before the
//     lease.
//  4. Success: sign the client pay parameters (jsapi, miniprogram, app),
//     store the prepay.created event as the order's outcome (outcome.go),
//     publish it, Ack.
//  5. A final WeChat Pay refusal is stored as the order's outcome (Final
//     true), published and dead-lettered ("rejected"); Term. An error an
//     operator fixes (wechat.OperatorError) is not stored: the claim is
//     released, a Final false failure and a dead letter "configuration"
//     are published, so a replay after the fix calls WeChat Pay again. A
//     create answer that says the number is used, closed or paid — which
//     the record would have explained, had it not been lost — asks WeChat
//     Pay (truth.go).
//  6. Retryable errors after the in-process budget: release the claim and
//     NakWithDelay, so JetStream redelivers later, maybe to another worker.
//     The delivery that reaches MaxDeliver asks WeChat Pay instead: query,
//     then recover the prepay_id with the identical body, close the order,
//     or publish its payment (truth.go). A job that reached the limit
//     without an outcome (its worker died) is settled the same way from
//     the captured MAX_DELIVERIES advisory or the sweep (orphans.go); a
//     job a cluster kept below the ack floor is queued again by the sweep.
//
// # Retry schedule
//
// With the defaults (RetryPolicy: InitialInterval 500ms, Multiplier 2,
// RandomizationFactor 0.5, MaxInterval 4s, MaxAttempts 4, MaxElapsed 15s;
// CallTimeout 8s; RedeliveryDefault; MaxDeliver 10), a job whose calls keep
// failing with retryable errors sees:
//
//	within one delivery:
//	attempt  delay before it   range with ±50% jitter
//	1        0                 0
//	2        500ms             250ms – 750ms
//	3        1s                500ms – 1.5s
//	4        2s                1s – 3s
//	then the claim is released and the job handed back.
//
//	across deliveries:
//	delivery  NakWithDelay after it   cumulative wait
//	1         2s                      2s
//	2         5s                      7s
//	3         15s                     22s
//	4         30s                     52s
//	5         1m                      1m52s
//	6         2m                      3m52s
//	7         5m                      8m52s
//	8         5m                      13m52s
//	9         5m                      18m52s
//	10        — ask WeChat Pay (truth.go)
//
// Up to 40 create calls in about 19 minutes, every one with the same body.
// A delivery's calls and delays stop at MaxElapsed, and always one second
// before the claim's lease (Config.Lease, 30s) ends.
//
// # Concurrency and shutdown
//
// The Runner pulls one message at a time (PullMaxMessages(1)), only when its
// RunnerConfig.Limiter (package concurrency: an adaptive limit up to
// InFlight) admits one more job and so one of its InFlight long-lived
// goroutines is free, so no pulled job waits in the client while its AckWait
// runs. Before each create call a job waits for its merchant's rate budget
// (Config.Limiter, package ratelimit) without holding its slot. Each job runs under
// JobTimeout (shorter than AckWait) with InProgress every HeartbeatInterval. When Run's context
// ends, it stops pulling, lets in-flight jobs finish for ShutdownGrace,
// then cancels them: each releases its claim and is handed back.
package pipeline
