package loadgen

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// RepublishFor bounds how long PublishStored keeps publishing one message:
// longer than a three-node cluster takes to elect a stream leader after a
// partition or a killed node (20 s measured in the cluster chaos run), and
// well inside the jobs stream's duplicate window (10 minutes by default), so
// every try after a stored one is dropped as a duplicate.
const RepublishFor = 90 * time.Second

// republishTimeout and republishPause pace PublishStored's tries.
const (
	republishTimeout = 5 * time.Second
	republishPause   = time.Second
)

// PublishStored publishes msg, which must carry a Nats-Msg-Id, until
// JetStream acknowledges it, ctx ends or within passed, as a checkout system
// does when its publish gets no answer: the same Nats-Msg-Id makes a try that
// was stored without an answer a duplicate. A message the server or the
// stream refused (over the payload limit, over the stream's message size) is
// not tried again.
func PublishStored(ctx context.Context, js jetstream.JetStream, msg *nats.Msg, within time.Duration) (*jetstream.PubAck, error) {
	deadline := time.Now().Add(within)
	for {
		pctx, cancel := context.WithTimeout(ctx, republishTimeout)
		ack, err := js.PublishMsg(pctx, msg)
		cancel()
		if err == nil || refused(err) || ctx.Err() != nil || time.Now().Add(republishPause).After(deadline) {
			return ack, err
		}
		select {
		case <-time.After(republishPause):
		case <-ctx.Done():
			return nil, err
		}
	}
}

// refused reports whether err is an answer that a repeat would get again:
// the connection's payload limit, or the stream's limit on a message's or
// its headers' size. Every other answer is repeated, and each passes: a
// stream leader short of resources answers 503 (and steps down), one whose
// ingest queue is full 429 "too many requests", and a publish that meets an
// election gets no answer at all.
func refused(err error) bool {
	var api *jetstream.APIError
	if errors.As(err, &api) {
		return api.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum || api.ErrorCode == errCodeHeaderExceedsMaximum
	}
	return errors.Is(err, nats.ErrMaxPayload)
}

// errCodeHeaderExceedsMaximum is nats-server's JSStreamHeaderExceedsMaximumErr,
// which nats.go does not name.
const errCodeHeaderExceedsMaximum jetstream.ErrorCode = 10097
