package notifier

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// EventsStreamMaxAgeDefault and EventsStreamDuplicatesDefault are the
// events stream's settings when the notifier creates it; they are the
// workers' defaults (pipeline.EventsMaxAgeDefault,
// pipeline.DuplicateWindowDefault), and a worker's setup updates them to its
// own configuration.
const (
	EventsStreamMaxAgeDefault     = 7 * 24 * time.Hour
	EventsStreamDuplicatesDefault = 10 * time.Minute
)

// EnsureStream answers a readiness check that does not depend on a worker
// having started first: nc is connected and the events stream answers an
// info request; a stream that does not exist is created from cfg (its
// name, subjects, storage and replicas; MaxAge and Duplicates default to
// the workers' defaults). A stream that exists is never changed.
func EnsureStream(nc *nats.Conn, js jetstream.JetStream, cfg jetstream.StreamConfig) func(context.Context) error {
	if cfg.MaxAge == 0 {
		cfg.MaxAge = EventsStreamMaxAgeDefault
	}
	if cfg.Duplicates == 0 {
		cfg.Duplicates = EventsStreamDuplicatesDefault
	}
	return func(ctx context.Context) error {
		if s := nc.Status(); s != nats.CONNECTED {
			return fmt.Errorf("nats: %s", s)
		}
		if js == nil {
			return errors.New("no JetStream context")
		}
		_, err := js.Stream(ctx, cfg.Name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			_, err = js.CreateStream(ctx, cfg)
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
				err = nil // a worker created it meanwhile
			}
		}
		if err != nil {
			return fmt.Errorf("stream %s: %w", cfg.Name, err)
		}
		return nil
	}
}
