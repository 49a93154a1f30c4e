package pipeline

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/events"
)

// JobHeaderRoom is what the jobs stream's MaxMsgSize allows for a job's
// headers (Nats-Msg-Id, Correlation-Id, tracing) beyond the worker's
// largest body: JetStream counts headers and body together.
const JobHeaderRoom = 4 << 10

// StreamsMode says what a worker does with the streams and its consumer at
// start.
type StreamsMode string

const (
	// StreamsCreate creates missing streams and the consumer and updates
	// them to the configuration (the default; a single team owning NATS).
	StreamsCreate StreamsMode = "create"
	// StreamsVerify only checks that they exist and match, and refuses to
	// start otherwise: for a NATS whose streams a GitOps tool (the nats CLI
	// from deploy/nats/, NACK) owns, which a worker must never fight.
	StreamsVerify StreamsMode = "verify"
)

// ParseStreamsMode reads STREAMS_MANAGE: true or create, false or verify.
func ParseStreamsMode(s string) (StreamsMode, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "true", "create":
		return StreamsCreate, nil
	case "false", "verify":
		return StreamsVerify, nil
	}
	return "", fmt.Errorf("%q is not true (create) or false (verify)", s)
}

// Topology is everything one flavour of the worker keeps in JetStream:
// three streams and one durable pull consumer, with their names, subjects
// and limits. Two flavours share one NATS when their Subjects prefixes,
// stream names and consumer names all differ.
type Topology struct {
	Subjects                                    events.Subjects
	JobsStream, EventsStream, DeadLettersStream string
	Consumer                                    string
	Replicas                                    int
	Storage                                     jetstream.StorageType
	JobsMaxAge, EventsMaxAge, DeadLettersMaxAge time.Duration
	DuplicateWindow                             time.Duration
	// MaxJobBytes, when positive, gives the jobs stream a MaxMsgSize of
	// MaxJobBytes + JobHeaderRoom, so JetStream refuses a job far too large
	// at publish time (API error 10054, "message size exceeds maximum allowed") and the producer
	// learns at once instead of finding a dead letter later.
	MaxJobBytes   int
	AckWait       time.Duration
	MaxDeliver    int
	MaxAckPending int
	BackOff       []time.Duration
}

// topology answers the Runner's Topology.
func (r *Runner) topology() Topology {
	c := r.cfg
	return Topology{
		Subjects: c.Subjects, JobsStream: c.JobsStream, EventsStream: c.EventsStream, DeadLettersStream: c.DeadLettersStream,
		Consumer: c.Consumer, Replicas: c.Replicas, Storage: c.Storage,
		JobsMaxAge: c.JobsMaxAge, EventsMaxAge: c.EventsMaxAge, DeadLettersMaxAge: c.DeadLettersMaxAge,
		DuplicateWindow: c.DuplicateWindow, MaxJobBytes: c.MaxJobBytes,
		AckWait: c.AckWait, MaxDeliver: c.Processor.MaxDeliver(), MaxAckPending: c.MaxAckPending, BackOff: c.BackOff,
	}
}

// Streams answers the three stream configurations: jobs (work queue),
// events and dead letters.
func (t Topology) Streams() []jetstream.StreamConfig {
	jobs := jetstream.StreamConfig{
		Name: cmp.Or(t.JobsStream, events.StreamJobs), Description: "orderworker: combine order creation jobs",
		Subjects: []string{t.Subjects.Jobs()}, Retention: jetstream.WorkQueuePolicy, MaxAge: t.JobsMaxAge,
	}
	if t.MaxJobBytes > 0 {
		jobs.MaxMsgSize = int32(min(t.MaxJobBytes+JobHeaderRoom, 1<<31-1))
	}
	out := []jetstream.StreamConfig{
		jobs,
		{
			Name: cmp.Or(t.EventsStream, events.StreamEvents), Description: "orderworker: prepay, failure and payment events",
			Subjects: t.Subjects.Events(), MaxAge: t.EventsMaxAge,
		},
		{
			Name: cmp.Or(t.DeadLettersStream, events.StreamDeadLetters), Description: "orderworker: dead-lettered jobs",
			Subjects: []string{t.Subjects.DeadLetters()}, MaxAge: t.DeadLettersMaxAge,
		},
	}
	for i := range out {
		out[i].Storage, out[i].Replicas, out[i].Duplicates = t.Storage, max(t.Replicas, 1), t.DuplicateWindow
	}
	return out
}

// ConsumerConfig answers the durable pull consumer of the jobs stream.
func (t Topology) ConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       cmp.Or(t.Consumer, ConsumerDefault),
		Description:   "order workers: combine order creation jobs",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       t.AckWait,
		MaxDeliver:    t.MaxDeliver,
		MaxAckPending: t.MaxAckPending,
		BackOff:       t.BackOff,
		FilterSubject: t.Subjects.Jobs(),
		Replicas:      max(t.Replicas, 1),
	}
}

// Ensure applies mode: StreamsCreate creates or updates every stream and
// the consumer, StreamsVerify checks them. Either way it refuses a stream
// of that name that holds other subjects — another flavour's, under
// another SUBJECT_PREFIX — instead of rewriting it.
func (t Topology) Ensure(ctx context.Context, js jetstream.JetStream, mode StreamsMode) (jetstream.Consumer, error) {
	for _, want := range t.Streams() {
		s, err := js.Stream(ctx, want.Name)
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
			if mode == StreamsVerify {
				return nil, fmt.Errorf("pipeline: stream %s does not exist (STREAMS_MANAGE=false: create it from deploy/nats/)", want.Name)
			}
			if _, err := js.CreateStream(ctx, want); err != nil {
				return nil, fmt.Errorf("pipeline: create stream %s: %w", want.Name, err)
			}
			continue
		case err != nil:
			return nil, fmt.Errorf("pipeline: stream %s: %w", want.Name, err)
		}
		got := s.CachedInfo().Config
		if !sameSet(got.Subjects, want.Subjects) {
			return nil, fmt.Errorf("pipeline: stream %s holds subjects %v, not this worker's %v: another flavour's stream? "+
				"Give each SUBJECT_PREFIX its own JOBS_STREAM, EVENTS_STREAM and DEADLETTERS_STREAM", want.Name, got.Subjects, want.Subjects)
		}
		if diff := streamDiff(got, want); diff != "" {
			if mode == StreamsVerify {
				return nil, fmt.Errorf("pipeline: stream %s differs from the configuration: %s", want.Name, diff)
			}
			if _, err := js.UpdateStream(ctx, want); err != nil {
				return nil, fmt.Errorf("pipeline: update stream %s (%s): %w", want.Name, diff, err)
			}
		}
	}
	want := t.ConsumerConfig()
	jobs := cmp.Or(t.JobsStream, events.StreamJobs)
	cons, err := js.Consumer(ctx, jobs, want.Durable)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		if mode == StreamsVerify {
			return nil, fmt.Errorf("pipeline: consumer %s on %s does not exist (STREAMS_MANAGE=false: create it from deploy/nats/)", want.Durable, jobs)
		}
		if cons, err = js.CreateConsumer(ctx, jobs, want); err != nil {
			return nil, fmt.Errorf("pipeline: consumer %s: %w", want.Durable, err)
		}
		return cons, nil
	case err != nil:
		return nil, fmt.Errorf("pipeline: consumer %s: %w", want.Durable, err)
	}
	if diff := consumerDiff(cons.CachedInfo().Config, want); diff != "" {
		if mode == StreamsVerify {
			return nil, fmt.Errorf("pipeline: consumer %s on %s differs from the configuration: %s", want.Durable, jobs, diff)
		}
		// Only a real difference updates the consumer: an update resets its
		// leader's view and disturbs lag metrics on a cluster.
		if cons, err = js.UpdateConsumer(ctx, jobs, want); err != nil {
			return nil, fmt.Errorf("pipeline: update consumer %s (%s): %w", want.Durable, diff, err)
		}
	}
	return cons, nil
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// differ collects "field: got X, want Y" for each differing field.
type differ []string

func (d *differ) check(field string, got, want any) {
	if fmt.Sprint(got) != fmt.Sprint(want) {
		*d = append(*d, fmt.Sprintf("%s: %v, want %v", field, got, want))
	}
}

func (d differ) String() string { return strings.Join(d, "; ") }

// streamDiff answers how got differs from want in what the worker relies
// on; "" when it does not.
func streamDiff(got, want jetstream.StreamConfig) string {
	var d differ
	d.check("retention", got.Retention, want.Retention)
	d.check("storage", got.Storage, want.Storage)
	d.check("replicas", got.Replicas, want.Replicas)
	d.check("max_age", got.MaxAge, want.MaxAge)
	d.check("duplicate_window", got.Duplicates, want.Duplicates)
	want.MaxMsgSize = cmp.Or(want.MaxMsgSize, -1)
	got.MaxMsgSize = cmp.Or(got.MaxMsgSize, -1)
	d.check("max_msg_size", got.MaxMsgSize, want.MaxMsgSize)
	return d.String()
}

// consumerDiff answers how got differs from want; "" when it does not.
func consumerDiff(got, want jetstream.ConsumerConfig) string {
	var d differ
	d.check("ack_policy", got.AckPolicy, want.AckPolicy)
	d.check("ack_wait", got.AckWait, want.AckWait)
	d.check("max_deliver", got.MaxDeliver, want.MaxDeliver)
	d.check("max_ack_pending", got.MaxAckPending, want.MaxAckPending)
	d.check("backoff", got.BackOff, want.BackOff)
	d.check("filter_subject", got.FilterSubject, want.FilterSubject)
	if want.Replicas > 1 || got.Replicas > 1 { // 0 means the stream's
		d.check("replicas", got.Replicas, want.Replicas)
	}
	return d.String()
}
