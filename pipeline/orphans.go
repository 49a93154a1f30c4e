package pipeline

// Jobs at the delivery limit.
//
// JetStream stops delivering a job after MaxDeliver deliveries, and in a
// work-queue stream the job then stays stored, unacknowledged, forever. A
// job gets there without an outcome when its worker died on the last
// delivery, or when the last delivery was handed back (a job timeout, a
// shutdown). JetStream reports it with a MAX_DELIVERIES advisory, but an
// advisory is a core NATS message: lost if no worker listens at that
// moment. Two mechanisms make sure every such job is settled:
//
//   - the advisories are captured in their own stream (the jobs stream's
//     name + "_ADVISORIES", work-queue retention) and consumed by a durable
//     consumer, so an advisory sent while every worker was down waits for
//     the next one;
//   - a sweep, at start and every SweepInterval, finds what was lost
//     anyway (an advisory the server never stored, a stream created after
//     the fact): a job at the limit pins the consumer's ack floor, so the
//     first stored job above the floor that is older than the whole
//     redelivery schedule is such a job.
//
// The sweep also queues again jobs that a cluster kept below the ack floor
// (see requeueKept).
//
// Either way Processor.Settle publishes the order's stored outcome or, if
// it has none, asks WeChat Pay; then the job is deleted from the jobs
// stream. Settling a job twice is harmless: the order's record and the
// outcome's Nats-Msg-Id make the second one a duplicate.

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/metrics"
)

// SweepIntervalDefault is how often a worker looks for jobs at the delivery
// limit that no advisory reported.
const SweepIntervalDefault = 5 * time.Minute

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

// AdvisoryStream answers the name of the stream that captures the
// MAX_DELIVERIES advisories of jobsStream.
func AdvisoryStream(jobsStream string) string { return jobsStream + "_ADVISORIES" }

func (r *Runner) advisoryStreamName() string { return AdvisoryStream(r.cfg.JobsStream) }

// AdvisoryStream answers the stream that makes the MAX_DELIVERIES
// advisories of the jobs consumer durable. They are kept as long as jobs
// are.
func (t Topology) AdvisoryStream() jetstream.StreamConfig {
	jobs := cmp.Or(t.JobsStream, events.StreamJobs)
	return jetstream.StreamConfig{
		Name:        AdvisoryStream(jobs),
		Description: "MAX_DELIVERIES advisories of " + jobs + ", until a worker settles their job",
		Subjects:    []string{AdvisoryMaxDeliveries(jobs, cmp.Or(t.Consumer, ConsumerDefault))},
		Retention:   jetstream.WorkQueuePolicy,
		MaxAge:      t.JobsMaxAge,
		Storage:     t.Storage,
		Replicas:    max(t.Replicas, 1),
	}
}

// AdvisoryConsumer answers the durable consumer of AdvisoryStream.
func (t Topology) AdvisoryConsumer() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:     cmp.Or(t.Consumer, ConsumerDefault) + "-advisories",
		Description: "order workers: settle jobs at the delivery limit",
		AckPolicy:   jetstream.AckExplicitPolicy,
		AckWait:     time.Minute,
		Replicas:    max(t.Replicas, 1),
	}
}

func (r *Runner) advisoryConsumer() jetstream.ConsumerConfig { return r.topology().AdvisoryConsumer() }

// ensureAdvisories creates (or, in StreamsVerify mode, checks) the stream
// that captures the MAX_DELIVERIES advisories and its durable consumer.
func (r *Runner) ensureAdvisories(ctx context.Context, mode StreamsMode) error {
	want, cc := r.topology().AdvisoryStream(), r.topology().AdvisoryConsumer()
	if mode == StreamsVerify {
		s, err := r.cfg.JetStream.Stream(ctx, want.Name)
		if err != nil {
			return fmt.Errorf("pipeline: stream %s (STREAMS_MANAGE=false: create it from deploy/nats/): %w", want.Name, err)
		}
		if _, err := s.Consumer(ctx, cc.Durable); err != nil {
			return fmt.Errorf("pipeline: consumer %s on %s (STREAMS_MANAGE=false: create it from deploy/nats/): %w", cc.Durable, want.Name, err)
		}
		return nil
	}
	if _, err := r.cfg.JetStream.CreateOrUpdateStream(ctx, want); err != nil {
		return fmt.Errorf("pipeline: stream %s: %w", want.Name, err)
	}
	if _, err := r.cfg.JetStream.CreateOrUpdateConsumer(ctx, want.Name, cc); err != nil {
		return fmt.Errorf("pipeline: consumer %s: %w", cc.Durable, err)
	}
	return nil
}

// checkPayload refuses a server whose maximum payload cannot carry the dead
// letter of the largest job: a dead letter embeds the job in base64 (4/3 of
// its size) with its headers and error, so it must always fit, or a job
// that cannot be processed could not be dead-lettered either.
func (r *Runner) checkPayload() error {
	maxPayload := r.cfg.JetStream.Conn().MaxPayload()
	need := int64(r.cfg.Processor.MaxJobSize())*4/3 + deadLetterOverhead
	if maxPayload > 0 && need > maxPayload {
		return fmt.Errorf("pipeline: the server's max_payload %d cannot carry the dead letter of a %d-byte job (%d bytes): lower MAX_JOB_BYTES to %d or raise max_payload",
			maxPayload, r.cfg.Processor.MaxJobSize(), need, (maxPayload-deadLetterOverhead)*3/4)
	}
	return nil
}

// deadLetterOverhead bounds a dead letter's bytes besides its embedded job:
// the job's headers, the error text and the other fields.
const deadLetterOverhead = 16 << 10

// watchOrphans consumes the captured advisories and runs the sweep until
// stop is called.
func (r *Runner) watchOrphans(ctx context.Context) (stop func(), err error) {
	cons, err := r.cfg.JetStream.Consumer(ctx, r.advisoryStreamName(), r.advisoryConsumer().Durable)
	if err != nil {
		return nil, fmt.Errorf("pipeline: advisories consumer: %w", err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) { r.onAdvisory(ctx, m) }, jetstream.PullMaxMessages(4))
	if err != nil {
		return nil, fmt.Errorf("pipeline: consume advisories: %w", err)
	}
	sweepCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { // Owned by watchOrphans: ends when stop cancels sweepCtx.
		defer close(done)
		r.sweepLoop(sweepCtx)
	}()
	return func() {
		cc.Stop()
		cancel()
		<-done
	}, nil
}

func (r *Runner) onAdvisory(ctx context.Context, m jetstream.Msg) {
	var a maxDeliveriesAdvisory
	if err := json.Unmarshal(m.Data(), &a); err != nil || a.StreamSeq == 0 {
		r.log.WarnContext(ctx, "unreadable max deliveries advisory; dropped")
		_ = m.Term()
		return
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.JobTimeout)
	defer cancel()
	if err := r.settleSeq(sctx, a.StreamSeq, a.Deliveries); err != nil {
		r.log.WarnContext(ctx, "settle job at the delivery limit; advisory kept for later", slog.Uint64("stream_seq", a.StreamSeq), slog.Any("error", err))
		_ = m.NakWithDelay(r.cfg.Processor.cfg.StoreRetryDelay)
		return
	}
	_ = m.Ack()
}

// settleSeq settles the job stored at seq, if it is still there, and
// deletes it from the jobs stream.
func (r *Runner) settleSeq(ctx context.Context, seq, deliveries uint64) error {
	stream, err := r.cfg.JetStream.Stream(ctx, r.cfg.JobsStream)
	if err != nil {
		return err
	}
	raw, err := stream.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil // already settled by another worker
	}
	if err != nil {
		return err
	}
	return r.settleRaw(ctx, stream, raw, deliveries)
}

func (r *Runner) settleRaw(ctx context.Context, stream jetstream.Stream, raw *jetstream.RawStreamMsg, deliveries uint64) error {
	// The job's deliveries are over: Settle sees a delivery past the limit.
	d := Delivery{Subject: raw.Subject, Header: raw.Header, Data: raw.Data, Stream: r.cfg.JobsStream,
		Sequence: raw.Sequence, NumDelivered: max(deliveries, uint64(r.cfg.Processor.MaxDeliver())) + 1, Timestamp: raw.Time} //nolint:gosec // MaxDeliver >= 1
	if err := r.cfg.Processor.Settle(ctx, d); err != nil {
		return err
	}
	if err := stream.DeleteMsg(ctx, raw.Sequence); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return err
	}
	r.m.Swept(metrics.SweptSettled)
	r.log.InfoContext(ctx, "job at the delivery limit settled", slog.Uint64("stream_seq", raw.Sequence))
	return nil
}

// horizon is the age past which a job still stored below the consumer's
// ack floor cannot be waiting for a delivery: the whole redelivery schedule
// plus an AckWait for each delivery.
func (r *Runner) horizon() time.Duration {
	if r.cfg.SweepMinAge > 0 {
		return r.cfg.SweepMinAge
	}
	p := r.cfg.Processor
	var h time.Duration
	for n := 1; n < p.MaxDeliver(); n++ {
		h += p.RedeliveryDelay(uint64(n)) //nolint:gosec // n >= 1
	}
	return h + time.Duration(p.MaxDeliver())*r.cfg.AckWait + time.Minute
}

func (r *Runner) sweepLoop(ctx context.Context) {
	for {
		if n, err := r.Sweep(ctx); err != nil && ctx.Err() == nil {
			r.log.WarnContext(ctx, "sweep for jobs at the delivery limit", slog.Any("error", err))
		} else if n > 0 {
			r.log.InfoContext(ctx, "sweep settled jobs at the delivery limit", slog.Int("jobs", n))
		}
		select {
		case <-time.After(r.cfg.SweepInterval):
		case <-ctx.Done():
			return
		}
	}
}

// Sweep settles jobs stuck at the delivery limit that no advisory
// reported, queues again jobs kept below the consumer's ack floor, and
// answers how many jobs it settled or queued again.
func (r *Runner) Sweep(ctx context.Context) (int, error) {
	stream, err := r.cfg.JetStream.Stream(ctx, r.cfg.JobsStream)
	if err != nil {
		return 0, err
	}
	cons, err := stream.Consumer(ctx, r.cfg.Consumer)
	if err != nil {
		return 0, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return 0, err
	}
	settled, err := r.requeueKept(ctx, stream, info.AckFloor.Stream)
	if err != nil {
		return settled, err
	}
	for i := range sweepBatch {
		if i > 0 { // the floor moved by the job just settled
			if info, err = cons.Info(ctx); err != nil {
				return settled, err
			}
		}
		raw, err := stream.GetMsg(ctx, info.AckFloor.Stream+1, jetstream.WithGetMsgSubject(r.cfg.Subjects.Jobs()))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return settled, nil
		}
		if err != nil {
			return settled, err
		}
		if raw.Sequence > info.Delivered.Stream || time.Since(raw.Time) < r.horizon() {
			return settled, nil // not delivered yet, or may still be redelivered
		}
		if err := r.settleRaw(ctx, stream, raw, uint64(r.cfg.Processor.MaxDeliver())); err != nil { //nolint:gosec // >= 1
			return settled, err
		}
		settled++
	}
	return settled, nil
}

// Jobs kept below the ack floor.
//
// The consumer's ack floor says that every job at or below it was
// acknowledged, and a work-queue stream removes a job when it is. A job
// still stored there is one whose removal, or whose delivery, a cluster
// lost: a replicated consumer whose leader moved on with an ack floor past
// a job the stream still holds (seen in the cluster chaos suite after a
// consumer leader was killed; nats-server issues #3953 and #5148 are of this
// kind). The consumer never delivers it again, and it pins no floor, so the
// delivery-limit sweep above cannot see it. requeueKept publishes each such
// job again, as a new message of the jobs stream with the same subject,
// body and headers, and then deletes the kept one. If the job had been
// processed after all, the copy is a duplicate: the order's record, or
// WeChat Pay's answer to the identical create, gives it the same outcome.

// requeueKept queues again the jobs stored at or below floor, oldest first,
// that are older than keptMinAge, and answers how many it queued.
func (r *Runner) requeueKept(ctx context.Context, stream jetstream.Stream, floor uint64) (int, error) {
	n := 0
	for seq := uint64(1); n < sweepBatch; n++ {
		raw, err := stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(r.cfg.Subjects.Jobs()))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		if raw.Sequence > floor || time.Since(raw.Time) < r.keptMinAge() {
			return n, nil // none kept, or the removal of a job acknowledged just now may still follow
		}
		if err := r.requeue(ctx, stream, raw); err != nil {
			return n, err
		}
		seq = raw.Sequence + 1
	}
	return n, nil
}

// keptMinAge is the age past which a job stored below the ack floor is
// kept, not waiting for a removal that follows its acknowledgement.
func (r *Runner) keptMinAge() time.Duration {
	if r.cfg.SweepMinAge > 0 {
		return r.cfg.SweepMinAge
	}
	return r.cfg.AckWait + time.Minute
}

// requeue publishes raw again as a new job and deletes it. The copy's
// Nats-Msg-Id names the kept job, so two workers sweeping at once queue one
// copy; the producer's own Nats-* headers (its id, expectations) are not
// the copy's, and its Nats-Msg-Id is kept in HeaderRequeuedMsgID.
func (r *Runner) requeue(ctx context.Context, stream jetstream.Stream, raw *jetstream.RawStreamMsg) error {
	msg := nats.NewMsg(raw.Subject)
	msg.Data = raw.Data
	for k, v := range raw.Header {
		if !isNatsHeader(k) {
			msg.Header[k] = v
		}
	}
	if id := raw.Header.Get(events.HeaderMsgID); id != "" {
		msg.Header.Set(HeaderRequeuedMsgID, id)
	}
	msg.Header.Set(events.HeaderMsgID, requeuedMsgID(r.cfg.JobsStream, raw.Sequence))
	ack, err := r.cfg.JetStream.PublishMsg(ctx, msg, jetstream.WithExpectStream(r.cfg.JobsStream))
	if err != nil {
		return fmt.Errorf("pipeline: queue again job %d kept below the ack floor: %w", raw.Sequence, err)
	}
	if !ack.Duplicate { // a duplicate is a copy an earlier sweep stored and counted
		r.m.Swept(metrics.SweptRequeued)
	}
	if err := stream.DeleteMsg(ctx, raw.Sequence); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return err
	}
	r.log.WarnContext(ctx, "job kept below the consumer's ack floor, never to be delivered again; queued again",
		slog.Uint64("stream_seq", raw.Sequence), slog.Uint64("new_stream_seq", ack.Sequence), slog.Bool("duplicate", ack.Duplicate))
	return nil
}

// HeaderRequeuedMsgID carries, on a job queued again by the sweep, the
// Nats-Msg-Id its producer gave it.
const HeaderRequeuedMsgID = "Requeued-Msg-Id"

// requeuedMsgID is the Nats-Msg-Id of the copy of the job kept at seq.
func requeuedMsgID(stream string, seq uint64) string {
	return "orderworker-requeued:" + stream + ":" + strconv.FormatUint(seq, 10)
}

// sweepBatch bounds the jobs one sweep settles; the next sweep goes on.
const sweepBatch = 100
