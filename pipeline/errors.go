package pipeline

import (
	"fmt"
	"time"

	"github.com/wxcombine/orderworker/events"
)

// RetryAfter tells the consumer loop to hand the job back for a delivery in
// d (NakWithDelay). Process answers it for failures that a later delivery,
// possibly on another worker, can fix.
func RetryAfter(d time.Duration, err error) error { return &RetryError{After: d, Err: err} }

// Hold tells the consumer loop to keep the message — sending InProgress, so
// no redelivery is spent — and to run the same delivery again in d. Process
// answers it while the idempotency store is unreachable and while another
// worker holds an order that has no delivery left: such waits cost time,
// never the delivery limit.
func Hold(d time.Duration, err error) error { return &RetryError{After: d, Hold: true, Err: err} }

// Terminal tells the consumer loop that the job must never be delivered
// again (Term). Process answers it after it has published the job's dead
// letter.
func Terminal(err error) error { return &TerminalError{Err: err} }

// RetryError is RetryAfter's error. errors.Is(err, &RetryError{}) matches
// any RetryError.
type RetryError struct {
	After time.Duration
	// Hold keeps the message instead of handing it back (see Hold).
	Hold bool
	Err  error
}

// Error describes the delay and the cause.
func (e *RetryError) Error() string {
	if e.Hold {
		return fmt.Sprintf("hold for %s: %v", e.After, e.Err)
	}
	return fmt.Sprintf("retry in %s: %v", e.After, e.Err)
}

// Unwrap answers the cause.
func (e *RetryError) Unwrap() error { return e.Err }

// Is matches every *RetryError.
func (e *RetryError) Is(target error) bool {
	_, ok := target.(*RetryError)
	return ok
}

// TerminalError is Terminal's error. errors.Is(err, &TerminalError{})
// matches any TerminalError.
type TerminalError struct {
	// Reason is the dead-letter reason, given to TermWithReason.
	Reason events.Reason
	Err    error
}

// Error describes the cause.
func (e *TerminalError) Error() string {
	if e.Reason == "" {
		return "terminal: " + e.Err.Error()
	}
	return "terminal (" + string(e.Reason) + "): " + e.Err.Error()
}

// Unwrap answers the cause.
func (e *TerminalError) Unwrap() error { return e.Err }

// Is matches every *TerminalError.
func (e *TerminalError) Is(target error) bool {
	_, ok := target.(*TerminalError)
	return ok
}

func terminal(reason events.Reason, err error) error {
	return &TerminalError{Reason: reason, Err: err}
}
