package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/events"
)

// Defaults.
const (
	// RateDefault is how many dead letters replay publishes per second.
	RateDefault = 10.0
	// RequestTimeoutDefault bounds one JetStream API request.
	RequestTimeoutDefault = 10 * time.Second
)

// HeaderReplayedFrom names, on a replayed job, the dead letter it came from:
// "<dead-letter stream>:<sequence>".
const HeaderReplayedFrom = "Replayed-From"

// HeaderReplayedMsgID keeps, on a replayed job, the Nats-Msg-Id the producer
// had given it.
const HeaderReplayedMsgID = "Replayed-Msg-Id"

// ErrNotFound reports a dead-letter sequence that holds no message.
var ErrNotFound = errors.New("dead letter not found")

// replayableByDefault are the reasons whose jobs can succeed unchanged once
// the cause is fixed: an outage (max_deliveries), an error an operator fixed
// (configuration: keys, serial, clock, product, binding), or a refusal
// whose order the record answers (rejected). Others need --force.
var replayableByDefault = []events.Reason{events.ReasonMaxDeliveries, events.ReasonConfiguration, events.ReasonRejected}

// Tool reads the dead-letter stream and replays its entries to the job
// subjects.
type Tool struct {
	// JS is the JetStream context. Required.
	JS jetstream.JetStream
	// Stream is the dead-letter stream. Defaults to events.StreamDeadLetters.
	Stream string
	// JobsStream is the stream a replayed job must land in. Defaults to
	// events.StreamJobs.
	JobsStream string
	// Subjects derives the dead-letter and job subjects. Defaults to the
	// "combine" prefix.
	Subjects events.Subjects
	// NowFunc answers the current time. Defaults to time.Now.
	NowFunc func() time.Time
	// SleepFunc waits for d or until ctx ends; it paces replays. Defaults to
	// a timer.
	SleepFunc func(ctx context.Context, d time.Duration) error
}

func (t *Tool) stream() string     { return cmp.Or(t.Stream, events.StreamDeadLetters) }
func (t *Tool) jobsStream() string { return cmp.Or(t.JobsStream, events.StreamJobs) }

func (t *Tool) now() time.Time {
	if t.NowFunc != nil {
		return t.NowFunc()
	}
	return time.Now()
}

func (t *Tool) sleep(ctx context.Context, d time.Duration) error {
	if t.SleepFunc != nil {
		return t.SleepFunc(ctx, d)
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// Filter selects dead letters. The zero value selects every one.
type Filter struct {
	// Seq selects the one entry at this stream sequence; 0 selects by the
	// other fields.
	Seq uint64
	// Reason keeps entries of this reason only; empty keeps every reason.
	Reason events.Reason
	// MchID keeps entries whose combine_mchid is MchID.
	MchID string
	// Since keeps entries stored at or after Since.
	Since time.Time
	// Limit stops after this many matching entries; 0 means no limit.
	Limit int
}

// Entry is one stored dead letter.
type Entry struct {
	// Seq is the entry's sequence in the dead-letter stream.
	Seq uint64
	// Subject is the dead-letter subject (<prefix>.orders.deadletter.<reason>).
	Subject string
	// Stored is when the dead-letter stream stored the entry.
	Stored time.Time
	// Letter is the decoded body; zero when DecodeErr is set.
	Letter events.DeadLetter
	// DecodeErr reports a body that is not a DeadLetter.
	DecodeErr error
}

func (f Filter) match(e Entry) bool {
	switch {
	case f.Reason != "" && e.Letter.Reason != f.Reason:
		return false
	case f.MchID != "" && e.Letter.CombineMchID != f.MchID:
		return false
	case !f.Since.IsZero() && e.Stored.Before(f.Since):
		return false
	}
	return true
}

func decodeEntry(m *jetstream.RawStreamMsg) Entry {
	e := Entry{Seq: m.Sequence, Subject: m.Subject, Stored: m.Time}
	dec := json.NewDecoder(bytes.NewReader(m.Data))
	if err := dec.Decode(&e.Letter); err != nil {
		e.DecodeErr = fmt.Errorf("decode dead letter %d: %w", m.Sequence, err)
		e.Letter = events.DeadLetter{}
	}
	return e
}

// Get answers the entry at seq. It returns an error wrapping ErrNotFound if
// there is none.
func (t *Tool) Get(ctx context.Context, seq uint64) (Entry, error) {
	s, err := t.JS.Stream(ctx, t.stream())
	if err != nil {
		return Entry{}, fmt.Errorf("dead-letter stream %s: %w", t.stream(), err)
	}
	m, err := s.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Entry{}, fmt.Errorf("sequence %d in %s: %w", seq, t.stream(), ErrNotFound)
	}
	if err != nil {
		return Entry{}, fmt.Errorf("get sequence %d from %s: %w", seq, t.stream(), err)
	}
	return decodeEntry(m), nil
}

// Scan calls fn for every entry f selects, in stream order, stopping at the
// first error fn returns. It reads with direct message gets, so it creates
// no consumer and never removes anything, whatever the stream's retention;
// entries stored after Scan started are not visited.
func (t *Tool) Scan(ctx context.Context, f Filter, fn func(Entry) error) error {
	if f.Seq != 0 {
		e, err := t.Get(ctx, f.Seq)
		if err != nil {
			return err
		}
		if !f.match(e) {
			return nil
		}
		return fn(e)
	}
	s, err := t.JS.Stream(ctx, t.stream())
	if err != nil {
		return fmt.Errorf("dead-letter stream %s: %w", t.stream(), err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return fmt.Errorf("dead-letter stream %s: %w", t.stream(), err)
	}
	last := info.State.LastSeq
	subject := t.Subjects.DeadLetters()
	if f.Reason != "" {
		subject = t.Subjects.DeadLetter(f.Reason)
	}
	seen := 0
	for seq := max(info.State.FirstSeq, 1); seq <= last; {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s from sequence %d: %w", t.stream(), seq, err)
		}
		if m.Sequence > last {
			return nil
		}
		seq = m.Sequence + 1
		e := decodeEntry(m)
		if !f.match(e) {
			continue
		}
		if err := fn(e); err != nil {
			return err
		}
		seen++
		if f.Limit > 0 && seen >= f.Limit {
			return nil
		}
	}
	return nil
}

// ReplayOptions selects and paces a replay.
type ReplayOptions struct {
	// Filter selects the entries. Replay refuses a zero Filter unless All
	// is set.
	Filter Filter
	// All confirms that a zero Filter means every entry.
	All bool
	// Rate is how many entries are published per second. Defaults to
	// RateDefault.
	Rate float64
	// DryRun reports what would be replayed and changes nothing.
	DryRun bool
	// Keep leaves replayed entries in the dead-letter stream. Defaults to
	// false: an entry is deleted once JetStream stored its job.
	Keep bool
	// Force also replays reasons that cannot succeed unchanged (malformed,
	// unsupported_version, too_large, invalid) and subjects that are not job
	// subjects.
	Force bool
}

// Action is what Replay did with one entry.
type Action string

// The replay actions.
const (
	// ActionReplayed: the job was stored in the jobs stream.
	ActionReplayed Action = "replayed"
	// ActionDuplicate: the jobs stream already had this replay (an earlier
	// run within its duplicate window); nothing new was stored.
	ActionDuplicate Action = "duplicate"
	// ActionWouldReplay: dry run.
	ActionWouldReplay Action = "would_replay"
	// ActionSkipped: not replayed; Detail says why.
	ActionSkipped Action = "skipped"
	// ActionFailed: publishing or deleting failed; Err says why.
	ActionFailed Action = "failed"
)

// Outcome reports one entry of a replay.
type Outcome struct {
	Entry  Entry
	Action Action
	// MsgID is the Nats-Msg-Id the job was (or would be) published with.
	MsgID string
	// JobSeq is the job's sequence in the jobs stream.
	JobSeq uint64
	// Deleted reports whether the entry was deleted from the dead-letter
	// stream.
	Deleted bool
	// Detail explains a skip.
	Detail string
	// Err is the failure of ActionFailed.
	Err error
}

// ReplayMsgID is the Nats-Msg-Id of a replayed job:
// "replay:<dead-letter stream>:<seq>". It differs from the producer's id, so
// the jobs stream's duplicate window (which still remembers the original
// publication of a job that failed fast) does not drop the replay; and it is
// the same on every run, so a replay repeated after a crash within the window
// is stored once.
func ReplayMsgID(stream string, seq uint64) string {
	return "replay:" + stream + ":" + strconv.FormatUint(seq, 10)
}

// ErrNoSelection reports a replay with neither a filter nor All.
var ErrNoSelection = errors.New("replay: select entries with a sequence, a filter, or all")

// Replay republishes the selected dead letters' original job bytes, with
// their original headers, to their original subjects, paced at opts.Rate,
// and then deletes each from the dead-letter stream (unless Keep). It calls
// report for every selected entry and returns the first error that stopped
// it; failures of single entries are reported, not returned.
func (t *Tool) Replay(ctx context.Context, opts ReplayOptions, report func(Outcome)) error {
	f := opts.Filter
	if f == (Filter{}) && !opts.All {
		return ErrNoSelection
	}
	rate := cmp.Or(opts.Rate, RateDefault)
	if rate <= 0 {
		return fmt.Errorf("replay: rate %v must be positive", opts.Rate)
	}
	interval := time.Duration(float64(time.Second) / rate)
	var dls jetstream.Stream
	if !opts.DryRun && !opts.Keep {
		s, err := t.JS.Stream(ctx, t.stream())
		if err != nil {
			return fmt.Errorf("dead-letter stream %s: %w", t.stream(), err)
		}
		dls = s
	}
	var next time.Time
	return t.Scan(ctx, f, func(e Entry) error {
		o := Outcome{Entry: e, MsgID: ReplayMsgID(t.stream(), e.Seq)}
		if why := t.skip(e, opts.Force); why != "" {
			o.Action, o.Detail = ActionSkipped, why
			report(o)
			return nil
		}
		if opts.DryRun {
			o.Action = ActionWouldReplay
			report(o)
			return nil
		}
		if now := t.now(); next.After(now) {
			if err := t.sleep(ctx, next.Sub(now)); err != nil {
				return err
			}
		}
		next = t.now().Add(interval)
		ack, err := t.JS.PublishMsg(ctx, replayMsg(e, o.MsgID, t.stream()), jetstream.WithExpectStream(t.jobsStream()))
		if err != nil {
			o.Action, o.Err = ActionFailed, fmt.Errorf("publish to %s: %w", e.Letter.OriginalSubject, err)
			report(o)
			return ctx.Err()
		}
		o.Action, o.JobSeq = ActionReplayed, ack.Sequence
		if ack.Duplicate {
			o.Action = ActionDuplicate
		}
		if dls != nil {
			if err := dls.DeleteMsg(ctx, e.Seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
				o.Action, o.Err = ActionFailed, fmt.Errorf("job stored as %s #%d, but delete dead letter %d: %w", t.jobsStream(), ack.Sequence, e.Seq, err)
				report(o)
				return ctx.Err()
			}
			o.Deleted = true
		}
		report(o)
		return nil
	})
}

// skip answers why e must not be replayed, or "".
func (t *Tool) skip(e Entry, force bool) string {
	switch {
	case e.DecodeErr != nil:
		return "not a dead letter: " + e.DecodeErr.Error()
	case e.Letter.OriginalSubject == "":
		return "no original subject"
	case len(e.Letter.OriginalData) == 0:
		return "no original job data"
	case force:
		return ""
	case !slices.Contains(replayableByDefault, e.Letter.Reason):
		return fmt.Sprintf("reason %s fails again unchanged (use --force to replay anyway)", e.Letter.Reason)
	}
	if _, ok := t.Subjects.TradeTypeOf(e.Letter.OriginalSubject); !ok {
		return fmt.Sprintf("subject %s is not a job subject (use --force to replay anyway)", e.Letter.OriginalSubject)
	}
	return ""
}

// replayMsg builds the job message of e: the original bytes and headers, a
// new Nats-Msg-Id, and where it came from.
func replayMsg(e Entry, msgID, stream string) *nats.Msg {
	m := nats.NewMsg(e.Letter.OriginalSubject)
	m.Data = e.Letter.OriginalData
	var original string
	for k, vs := range e.Letter.OriginalHeaders {
		if k == events.HeaderMsgID || k == nats.MsgIdHdr {
			original = firstOf(vs)
			continue
		}
		for _, v := range vs {
			m.Header.Add(k, v)
		}
	}
	m.Header.Set(events.HeaderMsgID, msgID)
	m.Header.Set(HeaderReplayedFrom, stream+":"+strconv.FormatUint(e.Seq, 10))
	if original != "" {
		m.Header.Set(HeaderReplayedMsgID, original)
	}
	return m
}

func firstOf(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	return vs[0]
}

// DeleteOptions selects the dead letters Delete removes.
type DeleteOptions struct {
	// Filter selects the entries. Delete refuses a zero Filter unless All
	// is set.
	Filter Filter
	// All confirms that a zero Filter means every entry.
	All bool
	// DryRun reports what would be deleted and deletes nothing.
	DryRun bool
}

// Delete removes the selected dead letters from the stream — the
// acknowledgement of an entry an operator has dealt with (replayed by
// other means, or not worth replaying). It calls report for every selected
// entry with whether it was deleted (false on a dry run) and answers the
// first error that stopped it.
func (t *Tool) Delete(ctx context.Context, opts DeleteOptions, report func(e Entry, deleted bool)) error {
	if opts.Filter == (Filter{}) && !opts.All {
		return errors.New("delete: select entries with a sequence, a filter, or all")
	}
	s, err := t.JS.Stream(ctx, t.stream())
	if err != nil {
		return fmt.Errorf("dead-letter stream %s: %w", t.stream(), err)
	}
	return t.Scan(ctx, opts.Filter, func(e Entry) error {
		if opts.DryRun {
			report(e, false)
			return nil
		}
		if err := s.DeleteMsg(ctx, e.Seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return fmt.Errorf("delete dead letter %d: %w", e.Seq, err)
		}
		report(e, true)
		return nil
	})
}

// Group is the dead letters of one order: a job dead-lettered again after a
// replay, or published twice beyond the duplicate window, appears once.
type Group struct {
	// Latest is the newest entry; Seqs every entry's sequence, oldest first.
	Latest Entry
	Seqs   []uint64
}

// orderKey answers the identity entries are grouped by: the order when the
// dead letter names one, else the entry itself.
func orderKey(e Entry) string {
	if e.Letter.CombineMchID != "" && e.Letter.CombineOutTradeNo != "" {
		return e.Letter.CombineMchID + "\x00" + e.Letter.CombineOutTradeNo
	}
	return "seq\x00" + strconv.FormatUint(e.Seq, 10)
}

// Groups answers the entries f selects, one Group per order, in the order
// of each order's first entry.
func (t *Tool) Groups(ctx context.Context, f Filter) ([]Group, error) {
	var out []Group
	index := map[string]int{}
	err := t.Scan(ctx, f, func(e Entry) error {
		k := orderKey(e)
		if i, ok := index[k]; ok {
			out[i].Latest = e
			out[i].Seqs = append(out[i].Seqs, e.Seq)
			return nil
		}
		index[k] = len(out)
		out = append(out, Group{Latest: e, Seqs: []uint64{e.Seq}})
		return nil
	})
	return out, err
}
