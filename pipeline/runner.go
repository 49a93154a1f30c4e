package pipeline

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/concurrency"
	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/internal/tracing"
	"github.com/wxcombine/orderworker/metrics"
)

// Defaults of RunnerConfig.
const (
	ConsumerDefault          = "orderworker"
	AckWaitDefault           = 60 * time.Second
	JobTimeoutDefault        = 45 * time.Second
	InFlightDefault          = 256 // a ceiling: the Limiter finds the level
	MaxAckPendingDefault     = 16 * InFlightDefault
	DuplicateWindowDefault   = 10 * time.Minute
	JobsMaxAgeDefault        = 24 * time.Hour
	EventsMaxAgeDefault      = 7 * 24 * time.Hour
	DeadLettersMaxAgeDefault = 30 * 24 * time.Hour
	// PullExpiryDefault is how long one pull request waits on the server;
	// an idle worker sends one small request per expiry.
	PullExpiryDefault = 5 * time.Second
	// PullHeartbeatDefault is how often the server confirms a waiting pull
	// request. A pull request the server dropped (nats.go ignores a
	// non-terminal status reply and keeps counting the request as pending)
	// is noticed only when two heartbeats are missed: with nats.go's
	// defaults (half of a 30s expiry) that stalled a worker for 30s under
	// load; at 1s it costs about 2s.
	PullHeartbeatDefault = time.Second
	ShutdownGraceDefault = 25 * time.Second
)

// RunnerConfig configures a Runner. Streams and the consumer are created or
// updated from it at start.
type RunnerConfig struct {
	// JetStream is the JetStream context. Required.
	JetStream jetstream.JetStream
	// Processor handles each job. Required. Its MaxDeliver is the
	// consumer's.
	Processor *Processor
	// Subjects names the subjects; it must equal the Processor's.
	// Defaults to the "combine" prefix.
	Subjects events.Subjects
	// JobsStream, EventsStream and DeadLettersStream name the streams.
	// Default to events.StreamJobs, events.StreamEvents and
	// events.StreamDeadLetters.
	JobsStream, EventsStream, DeadLettersStream string
	// Consumer is the durable pull consumer's name. Defaults to
	// "orderworker".
	Consumer string
	// Replicas is each stream's and the consumer's replica count.
	// Defaults to 1.
	Replicas int
	// Storage is where the streams keep messages. Defaults to file storage.
	Storage jetstream.StorageType
	// JobsMaxAge, EventsMaxAge and DeadLettersMaxAge bound how long each
	// stream keeps a message. Default to 24h, 7 days and 30 days.
	JobsMaxAge, EventsMaxAge, DeadLettersMaxAge time.Duration
	// DuplicateWindow is how long each stream remembers Nats-Msg-Id values;
	// it should cover the redelivery horizon. Defaults to 10m.
	DuplicateWindow time.Duration
	// AckWait is how long JetStream waits for an acknowledgement before it
	// redelivers. Defaults to 60s.
	AckWait time.Duration
	// BackOff overrides AckWait per delivery for unacknowledged jobs (not
	// for naks); at most MaxDeliver values. Defaults to none.
	BackOff []time.Duration
	// MaxAckPending caps unacknowledged jobs over all workers; it should
	// be at least workers × InFlight. Defaults to 4096.
	MaxAckPending int
	// InFlight is the most jobs this worker handles at once: the ceiling
	// of Limiter. Defaults to 256.
	InFlight int
	// Limiter adapts how many jobs are in flight, up to InFlight; its Max
	// must not exceed InFlight. Defaults to a concurrency.Limiter with Max
	// InFlight and the package's defaults.
	Limiter *concurrency.Limiter
	// JobTimeout bounds one delivery's work; it must be shorter than
	// AckWait. Defaults to 45s.
	JobTimeout time.Duration
	// HeartbeatInterval is how often InProgress is sent while a job runs.
	// Defaults to AckWait/3.
	HeartbeatInterval time.Duration
	// ShutdownGrace is how long in-flight jobs may finish after the context
	// ends; then their contexts are canceled and they are handed back.
	// Defaults to 25s.
	ShutdownGrace time.Duration
	// PullExpiry bounds each pull request. Defaults to PullExpiryDefault;
	// at least 1s.
	PullExpiry time.Duration
	// PullHeartbeat is the idle heartbeat of each pull request, and so
	// half the stall after a dropped one. Defaults to PullHeartbeatDefault;
	// at most half of PullExpiry.
	PullHeartbeat time.Duration
	// SweepInterval is how often the worker looks for jobs at the delivery
	// limit that no advisory reported (see orphans.go); it also sweeps at
	// start. Defaults to SweepIntervalDefault.
	SweepInterval time.Duration
	// SweepMinAge is the age past which a stored job just above the
	// consumer's ack floor is taken for one at the delivery limit, and one
	// at or below the floor for one the stream kept (orphans.go). Defaults
	// to the whole redelivery schedule plus an AckWait per delivery and a
	// minute, and to AckWait plus a minute.
	SweepMinAge time.Duration
	// Metrics records ack failures. Defaults to none.
	Metrics *metrics.Worker
	// Logger receives the loop's records. Defaults to a discarding logger.
	Logger *slog.Logger
	// StreamsManage is what Setup does with the streams and the consumer:
	// StreamsCreate (create or update) or StreamsVerify (check only).
	// Defaults to StreamsCreate.
	StreamsManage StreamsMode
	// MaxJobBytes caps the jobs stream's MaxMsgSize at MaxJobBytes +
	// JobHeaderRoom. Defaults to the Processor's MaxJobSize.
	MaxJobBytes int
}

// Runner feeds a Processor from a durable JetStream pull consumer with
// bounded concurrency and turns its answers into acknowledgements.
type Runner struct {
	cfg RunnerConfig
	log *slog.Logger
	m   *metrics.Worker
	// stopping is closed when Run's context ends: held jobs are then
	// handed back instead of waiting on.
	stopping <-chan struct{}
}

// NewRunner checks cfg, applies its defaults and answers a Runner.
func NewRunner(cfg RunnerConfig) (*Runner, error) {
	cfg.JobsStream = cmp.Or(cfg.JobsStream, events.StreamJobs)
	cfg.EventsStream = cmp.Or(cfg.EventsStream, events.StreamEvents)
	cfg.DeadLettersStream = cmp.Or(cfg.DeadLettersStream, events.StreamDeadLetters)
	cfg.Consumer = cmp.Or(cfg.Consumer, ConsumerDefault)
	cfg.Replicas = cmp.Or(cfg.Replicas, 1)
	cfg.JobsMaxAge = cmp.Or(cfg.JobsMaxAge, JobsMaxAgeDefault)
	cfg.EventsMaxAge = cmp.Or(cfg.EventsMaxAge, EventsMaxAgeDefault)
	cfg.DeadLettersMaxAge = cmp.Or(cfg.DeadLettersMaxAge, DeadLettersMaxAgeDefault)
	cfg.DuplicateWindow = cmp.Or(cfg.DuplicateWindow, DuplicateWindowDefault)
	cfg.AckWait = cmp.Or(cfg.AckWait, AckWaitDefault)
	cfg.MaxAckPending = cmp.Or(cfg.MaxAckPending, MaxAckPendingDefault)
	cfg.InFlight = cmp.Or(cfg.InFlight, InFlightDefault)
	cfg.JobTimeout = cmp.Or(cfg.JobTimeout, min(JobTimeoutDefault, cfg.AckWait*3/4))
	cfg.HeartbeatInterval = cmp.Or(cfg.HeartbeatInterval, cfg.AckWait/3)
	cfg.ShutdownGrace = cmp.Or(cfg.ShutdownGrace, ShutdownGraceDefault)
	cfg.PullExpiry = cmp.Or(cfg.PullExpiry, PullExpiryDefault)
	cfg.SweepInterval = cmp.Or(cfg.SweepInterval, SweepIntervalDefault)
	cfg.PullHeartbeat = cmp.Or(cfg.PullHeartbeat, min(PullHeartbeatDefault, cfg.PullExpiry/2))
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Processor != nil {
		// The jobs stream refuses what the Processor would refuse anyway.
		cfg.MaxJobBytes = cmp.Or(cfg.MaxJobBytes, cfg.Processor.MaxJobSize())
	}
	var errs []error
	if cfg.JetStream == nil {
		errs = append(errs, errors.New("missing JetStream"))
	}
	if cfg.Processor == nil {
		errs = append(errs, errors.New("missing Processor"))
	} else if len(cfg.BackOff) > cfg.Processor.MaxDeliver() {
		errs = append(errs, fmt.Errorf("too many BackOff values: %d, more than MaxDeliver %d", len(cfg.BackOff), cfg.Processor.MaxDeliver()))
	}
	if cfg.Replicas < 1 || cfg.Replicas > 5 {
		errs = append(errs, fmt.Errorf("replicas %d must be 1 to 5", cfg.Replicas))
	}
	if cfg.PullExpiry < time.Second {
		errs = append(errs, fmt.Errorf("pull expiry %s must be at least 1s", cfg.PullExpiry))
	}
	if cfg.PullHeartbeat <= 0 || cfg.PullHeartbeat > cfg.PullExpiry/2 {
		errs = append(errs, fmt.Errorf("pull heartbeat %s must be positive and at most half of the pull expiry %s", cfg.PullHeartbeat, cfg.PullExpiry))
	}
	if cfg.InFlight < 1 {
		errs = append(errs, fmt.Errorf("in-flight count %d must be at least 1", cfg.InFlight))
	}
	if cfg.MaxAckPending < cfg.InFlight {
		errs = append(errs, fmt.Errorf("max ack pending %d must be at least InFlight %d", cfg.MaxAckPending, cfg.InFlight))
	}
	if cfg.JobTimeout >= cfg.AckWait {
		errs = append(errs, fmt.Errorf("job timeout %s must be shorter than AckWait %s", cfg.JobTimeout, cfg.AckWait))
	}
	if cfg.HeartbeatInterval >= cfg.AckWait {
		errs = append(errs, fmt.Errorf("heartbeat interval %s must be shorter than AckWait %s", cfg.HeartbeatInterval, cfg.AckWait))
	}
	errs = append(errs, cfg.defaultLimiter())
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("pipeline: runner: %w", err)
	}
	return &Runner{cfg: cfg, log: cfg.Logger, m: cfg.Metrics}, nil
}

// Setup creates or updates the three streams and the durable consumer, or
// only verifies them (StreamsManage); see Topology in streams.go.
func (r *Runner) Setup(ctx context.Context) (jetstream.Consumer, error) {
	mode := cmp.Or(r.cfg.StreamsManage, StreamsCreate)
	cons, err := r.topology().Ensure(ctx, r.cfg.JetStream, mode)
	if err != nil {
		return nil, err
	}
	if err := r.ensureAdvisories(ctx, mode); err != nil {
		return nil, err
	}
	return cons, nil
}

// Run sets up the streams and the consumer, then handles jobs until ctx
// ends. Then it stops pulling, lets in-flight jobs finish within
// ShutdownGrace (after which their contexts are canceled and they are
// handed back), and answers nil. Errors are setup failures.
func (r *Runner) Run(ctx context.Context) error {
	cons, err := r.Setup(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting
		}
		return err
	}
	if err := r.checkPayload(); err != nil {
		return err
	}
	r.stopping = ctx.Done()
	stopOrphans, err := r.watchOrphans(ctx)
	if err != nil {
		return err
	}
	defer stopOrphans()
	// One message is buffered at a time, so none waits in the client while
	// its AckWait runs (nats.go#1929); the semaphore bounds the work.
	it, err := cons.Messages(jetstream.PullMaxMessages(1), jetstream.PullExpiry(r.cfg.PullExpiry), jetstream.PullHeartbeat(r.cfg.PullHeartbeat))
	if err != nil {
		return fmt.Errorf("pipeline: messages: %w", err)
	}
	// workCtx outlives ctx by ShutdownGrace, so in-flight jobs can finish.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	go func() { // Owned by Run: ends when ctx ends, after draining the iterator.
		<-ctx.Done()
		it.Drain()
	}()
	// InFlight long-lived goroutines handle the jobs: their stacks, grown
	// by the signing and HTTP code, are kept from job to job. A slot of the
	// limiter is taken before each pull, so a pulled job never waits for a
	// goroutine.
	lim := r.cfg.Limiter
	jobs := make(chan jetstream.Msg)
	var wg sync.WaitGroup
	for range r.cfg.InFlight {
		wg.Add(1)
		go func() { // Owned by Run: ends when jobs is closed after the loop.
			defer wg.Done()
			for msg := range jobs {
				jobCtx, slot := lim.Start(workCtx)
				r.handle(jobCtx, msg)
				slot.Done()
			}
		}()
	}
	r.log.InfoContext(ctx, "worker consuming", slog.String("stream", r.cfg.JobsStream), slog.String("consumer", r.cfg.Consumer),
		slog.Int("in_flight", r.cfg.InFlight))
	for {
		if err := lim.Acquire(workCtx); err != nil { // workCtx ends after the loop
			break
		}
		if !r.waitStore(ctx) { // no new job while the store is down
			lim.Cancel()
			break
		}
		msg, err := it.Next()
		if err != nil {
			lim.Cancel()
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				break
			}
			if ctx.Err() != nil {
				break // draining, and the buffer is gone
			}
			r.log.WarnContext(ctx, "pull failed", slog.Any("error", err))
			if errors.Is(err, jetstream.ErrNoHeartbeat) {
				// The pull request was lost; the next Next issues a new one.
				// Two missed heartbeats already took 2 × PullHeartbeat, so
				// this cannot spin.
				continue
			}
			select {
			case <-time.After(time.Second):
			case <-ctx.Done():
			}
			continue
		}
		jobs <- msg // a goroutine is free: the slot was taken
	}
	close(jobs)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }() // Owned by Run: ends when every job has.
	select {
	case <-done:
	case <-time.After(r.cfg.ShutdownGrace):
		r.log.Warn("shutdown grace over; handing in-flight jobs back")
		cancelWork()
		<-done
	}
	r.log.Info("worker stopped")
	return nil
}

// handle runs one delivery with a deadline and InProgress heartbeats, and
// acknowledges it as the Processor answers. A Hold answer keeps the message
// (the heartbeats go on, so no redelivery is spent) and runs the same
// delivery again after the hold, until it settles or the worker stops.
func (r *Runner) handle(ctx context.Context, msg jetstream.Msg) {
	md, err := msg.Metadata()
	ctx, span := tracing.StartJob(ctx, "process", msg.Subject(), msg.Headers(), md)
	defer span.End()
	if err != nil {
		r.log.ErrorContext(ctx, "message without metadata; terminated", slog.Any("error", err))
		r.ack(ctx, msg, metrics.AckTerm, msg.Term())
		return
	}
	r.cfg.Metrics.JobWaitContext(ctx, md.NumDelivered > 1, time.Since(md.Timestamp))
	stop := r.heartbeat(ctx, msg)
	defer stop()
	d := Delivery{
		Subject: msg.Subject(), Header: msg.Headers(), Data: msg.Data(),
		Stream: md.Stream, Sequence: md.Sequence.Stream, NumDelivered: md.NumDelivered, Timestamp: md.Timestamp,
	}
	var perr error
	for {
		jobCtx, cancel := context.WithTimeout(ctx, r.cfg.JobTimeout)
		perr = r.cfg.Processor.Process(jobCtx, d)
		cancel()
		var retry *RetryError
		if !errors.As(perr, &retry) || !retry.Hold {
			break
		}
		select {
		case <-time.After(retry.After):
			continue
		case <-r.stopping:
			// Stopping: hand it back; the next worker runs it again.
			perr = RetryAfter(retry.After, retry.Err)
		}
		break
	}
	stop()
	ctx, ackSpan := tracing.Start(ctx, "ack")
	defer ackSpan.End()
	var retry *RetryError
	var term *TerminalError
	switch {
	case perr == nil:
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		r.ack(ctx, msg, metrics.AckAck, msg.DoubleAck(actx))
	case errors.As(perr, &retry):
		r.ack(ctx, msg, metrics.AckNak, msg.NakWithDelay(retry.After))
	case errors.As(perr, &term):
		r.ack(ctx, msg, metrics.AckTerm, msg.TermWithReason(string(term.Reason)))
	default:
		// A bare Nak would burn through MaxDeliver at once.
		r.log.WarnContext(ctx, "job failed; handed back", slog.Uint64("stream_seq", md.Sequence.Stream), slog.Any("error", perr))
		r.ack(ctx, msg, metrics.AckNak, msg.NakWithDelay(r.cfg.Processor.RedeliveryDelay(md.NumDelivered)))
	}
}

// waitStore blocks while the idempotency store is known to be down, pinging
// it every StoreRetryDelay: a worker pulls no new job it could not claim.
// It answers false if ctx ends first.
func (r *Runner) waitStore(ctx context.Context) bool {
	for r.cfg.Processor.StoreErr() != nil {
		select {
		case <-time.After(r.cfg.Processor.cfg.StoreRetryDelay):
		case <-ctx.Done():
			return false
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if err := r.cfg.Processor.PingStore(pctx); err == nil {
			r.log.InfoContext(ctx, "idempotency store reachable again; pulling jobs")
		}
		cancel()
	}
	return ctx.Err() == nil
}

func (r *Runner) ack(ctx context.Context, msg jetstream.Msg, action string, err error) {
	tracing.Ack(ctx, action, err)
	if err == nil {
		return
	}
	r.m.AckFailure(action)
	// The job is redelivered after AckWait and settles the same way.
	r.log.WarnContext(ctx, "acknowledgement failed", slog.String("action", action), slog.String("subject", msg.Subject()), slog.Any("error", err))
}

// heartbeat sends InProgress every HeartbeatInterval until stop is called
// or ctx ends; no InProgress is sent after stop returns. It runs on a timer,
// not a goroutine of its own.
func (r *Runner) heartbeat(ctx context.Context, msg jetstream.Msg) (stop func()) {
	var mu sync.Mutex
	stopped := false
	var t *time.Timer
	mu.Lock()
	t = time.AfterFunc(r.cfg.HeartbeatInterval, func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped || ctx.Err() != nil {
			return
		}
		if err := msg.InProgress(); err != nil {
			r.ack(ctx, msg, metrics.AckInProgress, err)
		}
		t.Reset(r.cfg.HeartbeatInterval)
	})
	mu.Unlock()
	return func() {
		t.Stop()
		mu.Lock()
		stopped = true
		mu.Unlock()
	}
}

// JetStreamPublisher publishes with a JetStream context and waits for the
// PubAck. It satisfies Publisher.
type JetStreamPublisher struct {
	JetStream jetstream.JetStream
}

// Publish publishes msg; its Nats-Msg-Id header deduplicates it.
func (p JetStreamPublisher) Publish(ctx context.Context, msg *nats.Msg) error {
	_, err := p.JetStream.PublishMsg(ctx, msg)
	return err
}
