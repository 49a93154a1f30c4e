// Package loadgen drives the order pipeline from the outside, as a checkout
// system would, and checks what comes back.
//
// [Run] publishes combine-order jobs to the jobs stream — a chosen number or
// for a duration, at a rate or as fast as JetStream acknowledges them, with a
// mix of trade types, sub-order counts, duplicates, invalid and malformed
// jobs — and collects the outcome events (prepay.created, prepay.failed),
// the dead letters and the payment events with ordered consumers. It can pay
// a share of the created orders through the simulator, so that notifications
// flow to the notifier, and read the simulator's create count per order.
//
// # Correctness
//
// A [Tally] holds what was published and what came back, and its
// [Tally.Report] lists every violation:
//
//	missing_outcome       a distinct order got no prepay.created or prepay.failed
//	multiple_outcomes     an order got two different outcomes (a republished
//	                      identical outcome is counted, not a violation)
//	conflicting_prepay    an order got two different prepay_ids (h5_url, code_url)
//	unexpected_outcome    a valid job was refused as invalid, or an invalid or
//	                      malformed job was created
//	missing_dead_letter   an invalid or malformed job was not dead-lettered
//	unknown_order         an outcome for an order number of this run that was
//	                      never published
//	missing_payment       a paid order produced no payment event
//	duplicate_payment     a paid order produced payment events with two
//	                      different transaction ids
//	sim_create_missing    an order has a prepay_id the simulator never created
//	sim_too_many_creates  the simulator saw more creates of one order than
//	                      Config.MaxCreatesPerOrder
//
// # Duplicates
//
// A duplicate repeats an already published job byte for byte. An early
// duplicate carries the same Nats-Msg-Id, so JetStream drops it inside the
// jobs stream's duplicate window; a late duplicate carries a different
// Nats-Msg-Id, as a job re-sent after the window would reach the workers, and
// the idempotency store must answer it with the stored outcome.
//
// # Latency
//
// End-to-end latency runs from the job's created_at, set just before it is
// published, to the moment JetStream stored the order's first outcome event
// (the event's stream timestamp), so a slow reader does not inflate it.
package loadgen
