package idempotency

import (
	"context"
	"errors"
	"time"
)

// Key identifies an order: WeChat Pay scopes combine_out_trade_no by
// combine_mchid.
type Key struct {
	MchID      string
	OutTradeNo string
}

// String formats the key for logs.
func (k Key) String() string { return k.MchID + "/" + k.OutTradeNo }

// State is the answer of a claim.
type State int

// The four answers of Claim.
const (
	// StateClaimed: the caller holds the lease and must Complete or Release.
	StateClaimed State = iota + 1
	// StateInFlight: another worker holds a live lease.
	StateInFlight
	// StateDone: an outcome is stored; hand it back unchanged.
	StateDone
	// StateConflict: the key is stored or held with a different fingerprint,
	// so the order number was reused with different parameters.
	StateConflict
)

// String names the state, as metrics label it.
func (s State) String() string {
	switch s {
	case StateClaimed:
		return "claimed"
	case StateInFlight:
		return "in_flight"
	case StateDone:
		return "done"
	case StateConflict:
		return "conflict"
	}
	return "unknown"
}

// Claim is the answer of [Store.Claim].
type Claim struct {
	State State
	// Token is the fencing token of a StateClaimed answer. Tokens of one key
	// only grow.
	Token uint64
	// Outcome is the stored outcome of a StateDone answer, as given to
	// Complete.
	Outcome []byte
	// ExpiresIn is how long the live lease of a StateInFlight answer lasts.
	ExpiresIn time.Duration
}

// Store claims, completes and releases order keys. Implementations are safe
// for concurrent use by many goroutines and processes.
//
// Every method returns an error wrapping ErrUnavailable if the store cannot
// be reached or does not answer in time; the caller must fail closed.
type Store interface {
	// Claim tries to take key for a request with the given fingerprint (a
	// hash of its canonical body) for the lease duration; a lease of zero
	// or less means LeaseDefault. It answers exactly one State.
	// Returns ErrUnavailable if the store cannot be reached.
	Claim(ctx context.Context, key Key, fingerprint string, lease time.Duration) (Claim, error)
	// Extend renews the caller's lease during a long call: it then lasts
	// lease (LeaseDefault if zero or less) from now.
	// Returns ErrStaleToken if token no longer holds a live lease on key.
	Extend(ctx context.Context, key Key, token uint64, lease time.Duration) error
	// Complete stores the outcome for ttl (OutcomeTTLDefault if zero or
	// less) and ends the lease; duplicates with the same fingerprint then
	// get StateDone with this outcome.
	// Returns ErrStaleToken if token no longer holds a live lease on key.
	Complete(ctx context.Context, key Key, token uint64, outcome []byte, ttl time.Duration) error
	// Release gives the key up after a retryable failure, so the next claim
	// succeeds at once.
	// Returns ErrStaleToken if token no longer holds a live lease on key.
	Release(ctx context.Context, key Key, token uint64) error
	// Ping reports whether the store is reachable.
	Ping(ctx context.Context) error
}

var (
	// ErrUnavailable wraps every failure to reach the store. The caller must
	// fail closed: no WeChat Pay call, no ack.
	ErrUnavailable = errors.New("idempotency: store unavailable")
	// ErrStaleToken reports a token that no longer holds its key: the lease
	// expired and was taken over, or the key was completed or released.
	ErrStaleToken = errors.New("idempotency: stale fencing token")
)

// Defaults shared by the backends and the pipeline.
const (
	// LeaseDefault is a claim's lease: longer than one WeChat call with its
	// in-process retries, short enough that a dead worker's order is taken
	// over quickly.
	LeaseDefault = 30 * time.Second
	// OutcomeTTLDefault keeps outcomes at least as long as a prepay_id is
	// valid (2 hours), with margin.
	OutcomeTTLDefault = 24 * time.Hour
)
