package loadgen

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/events"
)

// Progress is a snapshot of a running run.
type Progress struct {
	Elapsed time.Duration
	// Publishing is true until the last job was published.
	Publishing bool
	// Orders counts distinct orders published; Outcomes those with an
	// outcome.
	Orders, Outcomes int
	// DeadLetters and Payments count events received.
	DeadLetters, Payments int
}

// payers is how many orders are paid at once.
const payers = 4

// Run publishes the configured jobs to nc's JetStream, collects their
// outcomes and answers the report. It waits for the streams (a worker
// creates them) for up to Config.StreamWait. An error means the run could not
// be carried out; violations are in the report. When ctx ends, Run stops
// publishing and waiting and answers the report so far with ctx's error.
func Run(ctx context.Context, nc *nats.Conn, cfg Config) (*Report, error) {
	if err := cfg.applyDefaults(); err != nil {
		return nil, err
	}
	if cfg.Seed == 0 {
		var b [8]byte
		_, _ = rand.Read(b[:])
		cfg.Seed = binary.LittleEndian.Uint64(b[:]) | 1
	}
	// A bounded wait for each PubAck: an ack lost with a stream leader that
	// died is otherwise waited for forever; on timeout the job is published
	// again under its Nats-Msg-Id (deduplicated).
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(cfg.MaxInFlight+1), jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		return nil, fmt.Errorf("loadgen: jetstream: %w", err)
	}
	r := &runner{cfg: &cfg, js: js, tally: NewTally(cfg.RunID), log: cfg.Logger.With(slog.String("run_id", cfg.RunID))}
	return r.run(ctx)
}

type runner struct {
	cfg   *Config
	js    jetstream.JetStream
	tally *Tally
	log   *slog.Logger

	started      time.Time
	nextProgress time.Time
	publishing   bool

	pay    chan OrderKey  // orders to pay; closed after collection ends
	payWG  sync.WaitGroup // the payer goroutines
	ackWG  sync.WaitGroup // the acknowledgement goroutine
	slots  chan struct{}  // one per unacknowledged publish
	futs   chan pending   // publishes awaiting their acknowledgement
	stopMu sync.Mutex     // guards stop and sends on pay
	stop   bool
	// paying counts orders queued or being paid.
	paying atomic.Int64
}

type pending struct {
	job *Job
	msg *nats.Msg
	fut jetstream.PubAckFuture
}

func (r *runner) run(ctx context.Context) (*Report, error) {
	cfg := r.cfg
	streams, err := r.waitStreams(ctx)
	if err != nil {
		return nil, err
	}
	r.started = cfg.NowFunc()
	startAt := r.started.Add(-time.Second) // tolerate a server clock slightly behind
	// No subject filters: the streams hold only events and dead letters
	// (onEvent picks by subject), and servers before 2.10 take at most one.
	evCons, err := r.js.OrderedConsumer(ctx, streams.events, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartTimePolicy,
		OptStartTime:  &startAt,
	})
	if err != nil {
		return nil, fmt.Errorf("loadgen: events consumer on %s: %w", streams.events, err)
	}
	dlCons, err := r.js.OrderedConsumer(ctx, streams.deadLetters, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartTimePolicy,
		OptStartTime:  &startAt,
	})
	if err != nil {
		return nil, fmt.Errorf("loadgen: dead-letter consumer on %s: %w", streams.deadLetters, err)
	}
	r.pay = make(chan OrderKey, 1024)
	for range payers {
		r.payWG.Add(1)
		go r.payLoop(ctx) // Owned by r; ends when r.pay is closed.
	}
	evCC, err := evCons.Consume(r.onEvent)
	if err != nil {
		return nil, fmt.Errorf("loadgen: consume events: %w", err)
	}
	dlCC, err := dlCons.Consume(r.onDeadLetter)
	if err != nil {
		evCC.Stop()
		return nil, fmt.Errorf("loadgen: consume dead letters: %w", err)
	}

	runErr := r.publish(ctx)
	if runErr == nil {
		runErr = r.collect(ctx)
	}
	evCC.Stop()
	dlCC.Stop()
	r.stopMu.Lock()
	r.stop = true
	close(r.pay)
	r.stopMu.Unlock()
	r.payWG.Wait()

	var rep *Report
	switch {
	case cfg.RecordFunc != nil && runErr == nil:
		record, err := cfg.RecordFunc(ctx, r.tally.Keys())
		if err != nil {
			runErr = fmt.Errorf("loadgen: simulator record: %w", err)
		}
		rep = r.tally.ReportRecord(record, cfg.MaxCreatesPerOrder)
	default:
		var creates map[OrderKey]int
		if cfg.CreateCountsFunc != nil && runErr == nil {
			if creates, err = cfg.CreateCountsFunc(ctx, r.tally.Keys()); err != nil {
				runErr = fmt.Errorf("loadgen: simulator create counts: %w", err)
			}
		}
		rep = r.tally.Report(creates, cfg.MaxCreatesPerOrder)
	}
	rep.Seed, rep.Flavour = cfg.Seed, cfg.Flavour
	rep.StartedAt, rep.FinishedAt = r.started, cfg.NowFunc()
	return rep, runErr
}

type streamNames struct{ jobs, events, deadLetters string }

// waitStreams waits until the job, event and dead-letter subjects are bound
// to streams, and answers their names.
func (r *runner) waitStreams(ctx context.Context) (streamNames, error) {
	s := r.cfg.Subjects
	deadline := time.Now().Add(r.cfg.StreamWait)
	for {
		var names streamNames
		var err error
		for _, q := range []struct {
			subject string
			name    *string
		}{
			{s.Job("app"), &names.jobs},
			{s.PrepayCreated(), &names.events},
			{s.DeadLetter(events.ReasonMalformed), &names.deadLetters},
		} {
			if err != nil {
				break
			}
			*q.name, err = r.js.StreamNameBySubject(ctx, q.subject)
			if err != nil {
				err = fmt.Errorf("no stream for %s: %w", q.subject, err)
			}
		}
		if err == nil {
			return names, nil
		}
		if time.Now().After(deadline) {
			return names, fmt.Errorf("loadgen: streams not found after %s (a worker creates them): %w", r.cfg.StreamWait, err)
		}
		select {
		case <-ctx.Done():
			return names, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// publish publishes every job, paced by Config.Rate, and waits for their
// acknowledgements.
func (r *runner) publish(ctx context.Context) error {
	cfg := r.cfg
	gen := newGenerator(cfg)
	r.slots = make(chan struct{}, cfg.MaxInFlight)
	r.futs = make(chan pending, cfg.MaxInFlight)
	r.ackWG.Add(1)
	go r.ackLoop(ctx) // Owned by publish; ends when r.futs is closed.
	defer func() {
		close(r.futs)
		r.ackWG.Wait()
	}()
	r.publishing = true
	defer func() { r.publishing = false }()
	sent, orders := 0, 0
	var interval time.Duration
	if cfg.Rate > 0 {
		interval = time.Duration(float64(time.Second) / cfg.Rate)
	}
	for {
		now := cfg.NowFunc()
		if cfg.Duration > 0 && now.Sub(r.started) >= cfg.Duration {
			return nil
		}
		job := gen.duplicate()
		if job == nil {
			if cfg.Orders > 0 && orders >= cfg.Orders {
				return nil
			}
			var err error
			if job, err = gen.next(now); err != nil {
				return err
			}
			orders++
		}
		if interval > 0 {
			if wait := r.started.Add(time.Duration(sent) * interval).Sub(cfg.NowFunc()); wait > 0 {
				if err := sleep(ctx, wait); err != nil {
					return err
				}
			}
		}
		select {
		case r.slots <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		r.tally.Sent(job)
		msg := jobMsg(job)
		fut, err := r.js.PublishMsgAsync(msg)
		if err != nil {
			fut = nil // published synchronously by ackLoop
		}
		r.futs <- pending{job: job, msg: msg, fut: fut}
		sent++
		r.progress()
	}
}

func jobMsg(j *Job) *nats.Msg {
	m := nats.NewMsg(j.Subject)
	m.Data = j.Body
	m.Header.Set(events.HeaderMsgID, j.MsgID)
	m.Header.Set(events.HeaderCorrelationID, j.Key.OutTradeNo)
	return m
}

// ackLoop waits for each publish's acknowledgement in order; a failed
// publish is repeated synchronously with the same Nats-Msg-Id (PublishStored)
// for up to RepublishFor.
func (r *runner) ackLoop(ctx context.Context) {
	defer r.ackWG.Done()
	for p := range r.futs {
		var ack *jetstream.PubAck
		var err error
		if p.fut != nil {
			select {
			case ack = <-p.fut.Ok():
			case err = <-p.fut.Err():
			}
		} else {
			err = errors.New("asynchronous publish refused")
		}
		if err != nil {
			r.log.Warn("publish failed, publishing again", slog.String("order", p.job.Key.String()), slog.Any("error", err))
			ack, err = PublishStored(ctx, r.js, p.msg, RepublishFor)
		}
		if err != nil {
			r.log.Error("publish failed", slog.String("order", p.job.Key.String()), slog.Any("error", err))
			r.tally.PublishFailed(p.job)
		} else {
			r.tally.Acked(p.job, ack.Duplicate, r.cfg.NowFunc())
		}
		<-r.slots
	}
}

// collect waits until everything expected arrived (then lingers) or
// Config.Wait passed.
func (r *runner) collect(ctx context.Context) error {
	deadline := r.cfg.NowFunc().Add(r.cfg.Wait)
	for {
		r.progress()
		outcomes, dead, pays := r.tally.Pending()
		if outcomes == 0 && dead == 0 && pays == 0 && r.paying.Load() == 0 {
			if err := sleep(ctx, r.cfg.Linger); err != nil {
				return err
			}
			if o, d, p := r.tally.Pending(); o == 0 && d == 0 && p == 0 {
				return nil
			}
			continue
		}
		if r.cfg.NowFunc().After(deadline) {
			r.log.Warn("stopped waiting for outcomes", slog.Int("missing_outcomes", outcomes),
				slog.Int("missing_dead_letters", dead), slog.Int("missing_payments", pays))
			return nil
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

func (r *runner) progress() {
	if r.cfg.ProgressFunc == nil {
		return
	}
	now := r.cfg.NowFunc()
	if now.Before(r.nextProgress) {
		return
	}
	r.nextProgress = now.Add(r.cfg.ProgressInterval)
	orders, outcomes, dead, pays := r.tally.Counts()
	r.cfg.ProgressFunc(Progress{
		Elapsed: now.Sub(r.started), Publishing: r.publishing,
		Orders: orders, Outcomes: outcomes, DeadLetters: dead, Payments: pays,
	})
}

// onEvent decodes an outcome or payment event; it runs on the consumer's
// goroutine.
func (r *runner) onEvent(msg jetstream.Msg) {
	at := time.Now()
	if md, err := msg.Metadata(); err == nil {
		at = md.Timestamp
	}
	s := r.cfg.Subjects
	switch msg.Subject() {
	case s.PrepayCreated():
		var ev events.PrepayCreated
		if r.decode(msg, &ev) && r.tally.Created(&ev, at) && r.shouldPay(ev.CombineMchID, ev.CombineOutTradeNo) {
			r.enqueuePay(OrderKey{ev.CombineMchID, ev.CombineOutTradeNo})
		}
	case s.PrepayFailed():
		var ev events.PrepayFailed
		if r.decode(msg, &ev) {
			r.tally.Failed(&ev, at)
		}
	case s.PaymentSucceeded():
		var ev events.PaymentSucceeded
		if r.decode(msg, &ev) {
			r.tally.PaymentSucceeded(&ev)
		}
	}
}

func (r *runner) onDeadLetter(msg jetstream.Msg) {
	if !strings.HasPrefix(msg.Subject(), strings.TrimSuffix(r.cfg.Subjects.DeadLetters(), "*")) {
		return
	}
	var dl events.DeadLetter
	if r.decode(msg, &dl) {
		r.tally.DeadLettered(&dl)
	}
}

func (r *runner) decode(msg jetstream.Msg, v any) bool {
	if err := json.Unmarshal(msg.Data(), v); err != nil {
		r.log.Warn("undecodable event", slog.String("subject", msg.Subject()), slog.Any("error", err))
		r.tally.Undecodable(msg.Subject(), err)
		return false
	}
	return true
}

// shouldPay decides from the order and the seed, so a run is reproducible.
func (r *runner) shouldPay(mchID, no string) bool {
	if r.cfg.PayShare == 0 {
		return false
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(mchID + "/" + no))
	x := h.Sum64() ^ r.cfg.Seed
	return float64(x%1_000_000)/1_000_000 < r.cfg.PayShare
}

func (r *runner) enqueuePay(key OrderKey) {
	r.stopMu.Lock()
	defer r.stopMu.Unlock()
	if !r.stop {
		r.paying.Add(1)
		r.pay <- key
	}
}

func (r *runner) payLoop(ctx context.Context) {
	defer r.payWG.Done()
	for key := range r.pay {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := r.cfg.PayFunc(pctx, key)
		cancel()
		if err != nil {
			r.log.Warn("pay failed", slog.String("order", key.String()), slog.Any("error", err))
		}
		r.tally.PayRequested(key, err)
		r.paying.Add(-1)
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
