package pipeline

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/concurrency"
	"github.com/wxcombine/orderworker/events"
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
	// Metrics records ack failures. Defaults to none.
	Metrics *metrics.Worker
	// Logger receives the loop's records. Defaults to a discarding logger.
	Logger *slog.Logger
}

// Runner feeds a Processor from a durable JetStream pull consumer with
// bounded concurrency and turns its answers into acknowledgements.
type Runner struct {
	cfg RunnerConfig
	log *slog.Logger
	m   *metrics.Worker
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
	cfg.PullHeartbeat = cmp.Or(cfg.PullHeartbeat, min(PullHeartbeatDefault, cfg.PullExpiry/2))
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
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

// Setup creates or updates the three streams and the durable consumer.
func (r *Runner) Setup(ctx context.Context) (jetstream.Consumer, error) {
	c := r.cfg
	streams := []jetstream.StreamConfig{
		{Name: c.JobsStream, Subjects: []string{c.Subjects.Jobs()}, Retention: jetstream.WorkQueuePolicy, MaxAge: c.JobsMaxAge},
		{Name: c.EventsStream, Subjects: c.Subjects.Events(), MaxAge: c.EventsMaxAge},
		{Name: c.DeadLettersStream, Subjects: []string{c.Subjects.DeadLetters()}, MaxAge: c.DeadLettersMaxAge},
	}
	for _, s := range streams {
		s.Storage, s.Replicas, s.Duplicates = c.Storage, c.Replicas, c.DuplicateWindow
		if _, err := c.JetStream.CreateOrUpdateStream(ctx, s); err != nil {
			return nil, fmt.Errorf("pipeline: stream %s: %w", s.Name, err)
		}
	}
	cons, err := c.JetStream.CreateOrUpdateConsumer(ctx, c.JobsStream, jetstream.ConsumerConfig{
		Durable:       c.Consumer,
		Description:   "order workers: combine order creation jobs",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.AckWait,
		MaxDeliver:    c.Processor.MaxDeliver(),
		MaxAckPending: c.MaxAckPending,
		BackOff:       c.BackOff,
		FilterSubject: c.Subjects.Jobs(),
		Replicas:      c.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("pipeline: consumer %s: %w", c.Consumer, err)
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
		return err
	}
	stopAdvisories, err := r.watchMaxDeliveries()
	if err != nil {
		return err
	}
	defer stopAdvisories()
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
// acknowledges it as the Processor answers.
func (r *Runner) handle(ctx context.Context, msg jetstream.Msg) {
	md, err := msg.Metadata()
	if err != nil {
		r.log.ErrorContext(ctx, "message without metadata; terminated", slog.Any("error", err))
		r.ack(ctx, msg, metrics.AckTerm, msg.Term())
		return
	}
	r.cfg.Metrics.JobWait(md.NumDelivered > 1, time.Since(md.Timestamp))
	jobCtx, cancel := context.WithTimeout(ctx, r.cfg.JobTimeout)
	defer cancel()
	stop := r.heartbeat(jobCtx, msg)
	perr := r.cfg.Processor.Process(jobCtx, Delivery{
		Subject: msg.Subject(), Header: msg.Headers(), Data: msg.Data(),
		Stream: md.Stream, Sequence: md.Sequence.Stream, NumDelivered: md.NumDelivered, Timestamp: md.Timestamp,
	})
	stop()
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

func (r *Runner) ack(ctx context.Context, msg jetstream.Msg, action string, err error) {
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

// maxDeliveriesAdvisory is the payload of
// $JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>.
type maxDeliveriesAdvisory struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
}

// AdvisoryMaxDeliveries answers the subject of the advisory JetStream sends
// when a job of stream reaches the delivery limit of consumer.
func AdvisoryMaxDeliveries(stream, consumer string) string {
	return "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + stream + "." + consumer
}

// watchMaxDeliveries dead-letters jobs that JetStream reports at the
// delivery limit (a worker died on the last delivery, or the last delivery
// was handed back), then deletes them from the work queue, where they would
// otherwise stay. One worker of the queue group handles each advisory.
func (r *Runner) watchMaxDeliveries() (stop func(), err error) {
	nc := r.cfg.JetStream.Conn()
	subject := AdvisoryMaxDeliveries(r.cfg.JobsStream, r.cfg.Consumer)
	sub, err := nc.QueueSubscribe(subject, r.cfg.Consumer+"-advisories", func(m *nats.Msg) {
		var a maxDeliveriesAdvisory
		if err := json.Unmarshal(m.Data, &a); err != nil || a.StreamSeq == 0 {
			r.log.Warn("unreadable max deliveries advisory")
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := r.deadLetterSeq(ctx, a); err != nil {
			r.log.Error("dead-letter job at the delivery limit", slog.Uint64("stream_seq", a.StreamSeq), slog.Any("error", err))
		}
	})
	if err != nil {
		return nil, fmt.Errorf("pipeline: subscribe %s: %w", subject, err)
	}
	return func() { _ = sub.Unsubscribe() }, nil
}

func (r *Runner) deadLetterSeq(ctx context.Context, a maxDeliveriesAdvisory) error {
	stream, err := r.cfg.JetStream.Stream(ctx, r.cfg.JobsStream)
	if err != nil {
		return err
	}
	raw, err := stream.GetMsg(ctx, a.StreamSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil // already settled or dead-lettered by another worker
	}
	if err != nil {
		return err
	}
	cause := fmt.Errorf("delivery limit of %d reached without an outcome", a.Deliveries)
	d := Delivery{Subject: raw.Subject, Header: raw.Header, Data: raw.Data, Stream: r.cfg.JobsStream,
		Sequence: raw.Sequence, NumDelivered: a.Deliveries, Timestamp: raw.Time}
	if err := r.cfg.Processor.DeadLetter(ctx, d, events.ReasonMaxDeliveries, cause); err != nil {
		return err
	}
	if err := stream.DeleteMsg(ctx, a.StreamSeq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return err
	}
	return nil
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
