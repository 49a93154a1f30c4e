// Package idempotency deduplicates combine orders on (combine_mchid,
// combine_out_trade_no) across any number of workers.
//
// A worker claims an order's key before it calls WeChat Pay. The claim is a
// lease with a fencing token; the holder either completes it with the
// outcome, which every later duplicate receives unchanged, or releases it
// after a retryable failure. A holder that dies loses its lease when it
// expires, and the next claimant gets a larger token, so the dead holder's
// late Complete or Release is refused.
//
// Two backends implement [Store] and pass one conformance suite
// (package storetest): Redis ([NewRedis]) and NATS JetStream KV ([NewKV]).
//
// # Claims
//
// [Store.Claim] answers exactly one [State]:
//
//   - [StateClaimed]: the caller holds a lease of the given duration and a
//     fencing token; it must call Complete or Release (or let the lease
//     expire, if it dies).
//   - [StateInFlight]: another worker holds a live lease with the same
//     fingerprint; [Claim.ExpiresIn] says for how long.
//   - [StateDone]: an outcome is stored for the same fingerprint;
//     [Claim.Outcome] holds its bytes unchanged.
//   - [StateConflict]: the key is held or done with a different fingerprint.
//
// An expired lease, a released key, and an outcome whose TTL has passed are
// all as good as absent: the next Claim takes them over.
//
// # Fencing tokens
//
// Tokens of one key only grow. Complete, Release and Extend succeed only
// while the caller's token still holds a live lease; otherwise they return
// [ErrStaleToken] and change nothing. An expired lease is stale even before
// anyone takes it over, so a holder must Extend in time.
//
// Redis: the token is max(fence+1, server TIME in microseconds), where fence
// is a per-key counter stored beside the lease. The counter lives at least as
// long as every lease and outcome of its key; once it has gone (expiry, or a
// restart without persistence) the server clock keeps new tokens above every
// token issued before. A server clock stepped backwards while the counter is
// gone is the one way tokens could repeat.
//
// JetStream KV: the token is the revision of the record written by the
// claim, that is its stream sequence, which grows across the whole bucket
// and is never reused. Deleting and recreating the bucket restarts it.
//
// # Key layout
//
// MchID and OutTradeNo are escaped (bytes other than A–Z, a–z, 0–9, '_' and
// '-' become "=XX" in hex), so distinct keys never collide.
//
// Redis uses three keys per order, all sharing the hash tag
// {<prefix>:<mchid>:<out_trade_no>} so that they live in one Cluster slot
// and one script can touch them atomically:
//
//	{p:m:o}:lease  hash fp, tok       PX = lease (renewed by Extend)
//	{p:m:o}:done   hash fp, out       PX = outcome TTL
//	{p:m:o}:fence  last token issued  PX ≥ lease + FenceGrace, ≥ outcome TTL
//
// Every operation is one Lua script (EVALSHA, falling back to EVAL after a
// restart or failover empties the script cache). Scripts call TIME and so
// need Redis 5 or later.
//
// JetStream KV stores one record per order under the key
// "<mchid>.<out_trade_no>" in a bucket with history 1. The record, JSON, says
// whether the key is held or done, its fingerprint, the lease or outcome
// duration and the outcome. Its deadline is the record's server timestamp
// plus that duration and is checked on every read, so expiry is exact to the
// millisecond whatever the server's expiry sweep does; each record also
// carries a per-message TTL (rounded up to whole seconds) so that the server
// removes it afterwards, and the bucket's MaxAge is a backstop. Writes are
// compare-and-set on the revision; Release purges the key with a marker that
// expires. Per-message TTLs need nats-server 2.11 or later. Workers compare
// server timestamps with their own clock, so their clocks must be in sync to
// well within a lease.
//
// # Failing closed
//
// Every failure to reach the store or to get an answer from it in time —
// refused or dropped connections, timeouts, a canceled ctx, server errors
// such as LOADING or READONLY, a JetStream without a leader — returns an
// error for which errors.Is(err, [ErrUnavailable]) is true; the cause is
// wrapped too. The caller must then neither call WeChat Pay nor ack the
// message. [ErrStaleToken] is never wrapped in ErrUnavailable. Invalid
// arguments (an empty MchID, OutTradeNo or fingerprint) return other errors.
//
// Redis replicates asynchronously, so a failover or a restart without
// persistence can lose claims and outcomes: the next duplicate is then
// claimed again and the payment provider's own idempotency on
// out_trade_no must catch it.
package idempotency
