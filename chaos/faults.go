package chaos

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/internal/proc"
	"github.com/wxcombine/orderworker/loadgen"
	"github.com/wxcombine/orderworker/pipeline"
)

// The faults of one true outcome per order: each row of what the product
// must survive — Redis losing its data or staying down past the redelivery
// schedule, an ack lost after the outcome on the last delivery, unknown
// outcomes until the delivery limit, a skewed clock, duplicates after the
// record expired, jobs at and past the size limit, 503 with a code — has a
// fault here or in the recording proxy, configured in Config and counted in
// Report.Faults.

// Fault counts, as in Report.Faults (besides the proxy's Fault* kinds).
const (
	FaultAcksDropped   = "acks_dropped"
	FaultAckDropOrders = "ack_drop_orders"
	FaultLateAfterTTL  = "late_duplicates_after_ttl"
	// FaultLateAfterTTLSkipped counts orders meant for a late duplicate that
	// were never created (another fault failed them first).
	FaultLateAfterTTLSkipped = "late_duplicates_skipped_never_created"
	FaultOversizedAtLimit    = "jobs_at_max_job_bytes"
	FaultOversizedPast       = "jobs_past_max_job_bytes"
	FaultOversizedRefused    = "jobs_past_max_job_bytes_refused_at_publish"
	FaultReplayed            = "dead_letters_replayed"
)

// selector answers a deterministic choice of about share of the load
// generator's orders, salted so that each fault picks its own.
func selector(seed uint64, salt string, share float64) func(loadgen.OrderKey) bool {
	if share <= 0 {
		return nil
	}
	return func(k loadgen.OrderKey) bool {
		if strings.HasPrefix(k.OutTradeNo, ownPrefix) {
			return false
		}
		h := fnv.New64a()
		_, _ = h.Write([]byte(salt + "/" + k.MchID + "/" + k.OutTradeNo))
		return float64((h.Sum64()^seed)%1_000_000)/1_000_000 < share
	}
}

// chance answers a seeded coin of probability p, safe for concurrent use.
func chance(seed uint64, p float64) func() bool {
	if p <= 0 {
		return nil
	}
	var mu sync.Mutex
	x := seed | 1
	return func() bool {
		mu.Lock()
		defer mu.Unlock()
		x ^= x << 13 // xorshift64
		x ^= x >> 7
		x ^= x << 17
		return float64(x%1_000_000)/1_000_000 < p
	}
}

// wipeRedis removes Redis's data while it is stopped: it comes back empty.
func (c *cluster) wipeRedis() error {
	dir := filepath.Join(c.dir, "redis")
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("chaos: wipe redis: %w", err)
	}
	return nil
}

// markWiped marks the last outage as one that lost Redis's data.
func (c *cluster) markWiped() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := len(c.outages); n > 0 {
		c.outages[n-1].Wiped = true
	}
}

// SkewWindow is a period during which the workers' signing clock was off.
type SkewWindow struct {
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
}

// Replay is one dead letter the harness replayed with cmd/deadletter.
type Replay struct {
	Order loadgen.OrderKey `json:"order"`
	Seq   uint64           `json:"seq"`
	At    time.Time        `json:"at"`
	Error string           `json:"error,omitempty"`
}

// clockSkew skews the workers' clock for a window, then — the clock fixed —
// replays the SIGN_ERROR dead letters of the window with the documented
// tool, as an operator would. It answers the window's length and how many
// dead letters it replayed.
func (c *cluster) clockSkew(ctx context.Context) (float64, int, string) {
	w := SkewWindow{From: time.Now()}
	c.recorder.SetClockSkew(c.cfg.ClockSkewBy)
	sleepCtx(ctx, c.cfg.ClockSkewWindow)
	c.recorder.SetClockSkew(0)
	w.To = time.Now()
	c.mu.Lock()
	c.skews = append(c.skews, w)
	c.mu.Unlock()
	// Jobs of the window still being retried end within a delivery. The
	// replay is part of the fault: it goes on when the load ends meanwhile.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	sleepCtx(rctx, 5*time.Second)
	replays, err := c.replaySignErrors(rctx, w)
	c.mu.Lock()
	c.replays = append(c.replays, replays...)
	c.mu.Unlock()
	if err != nil {
		return w.To.Sub(w.From).Seconds(), len(replays), err.Error()
	}
	return w.To.Sub(w.From).Seconds(), len(replays), ""
}

// maxReplays bounds the dead letters replayed after one window.
const maxReplays = 40

// electionRetryFor bounds how long the harness tries a read or a replay
// again: longer than a cluster's leader election after a killed,
// partitioned or restarted node (20 s measured).
const electionRetryFor = time.Minute

// retryFor calls f until it succeeds, ctx ends or within passed, pausing
// 2 s between tries, and answers its last error.
func retryFor(ctx context.Context, within time.Duration, f func() error) error {
	deadline := time.Now().Add(within)
	for {
		err := f()
		if err == nil || ctx.Err() != nil || time.Now().Add(2*time.Second).After(deadline) {
			return err
		}
		sleepCtx(ctx, 2*time.Second)
	}
}

// replaySignErrors runs `deadletter replay --seq N --keep` for each dead
// letter stored since the window began whose error is SIGN_ERROR.
func (c *cluster) replaySignErrors(ctx context.Context, w SkewWindow) ([]Replay, error) {
	nc, err := nats.Connect(c.natsURL(), nats.Name("chaos-replay"))
	if err != nil {
		return nil, fmt.Errorf("chaos: replay: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("chaos: replay: %w", err)
	}
	// The replay runs while the cluster's own disruptions go on: the read
	// resumes through a leader election (readAll), and a replay that meets
	// one ("no responders") is tried again, as an operator would, within
	// electionRetryFor for them all. A replay repeated is harmless: its Nats-Msg-Id is the
	// dead letter's.
	var picked []Replay
	err = readAll(ctx, js, events.StreamDeadLetters, func(m jetstream.Msg) {
		md, err := m.Metadata()
		if err != nil || md.Timestamp.Before(w.From) || len(picked) >= maxReplays {
			return
		}
		var dl events.DeadLetter
		if decodeStrict(m.Data(), &dl) != nil || !strings.Contains(dl.Error, "SIGN_ERROR") {
			return
		}
		picked = append(picked, Replay{Order: loadgen.OrderKey{MchID: dl.CombineMchID, OutTradeNo: dl.CombineOutTradeNo}, Seq: md.Sequence.Stream})
	})
	if err != nil {
		return nil, err
	}
	// One budget for all the replays: a replay that fails for good must not
	// hold the run for a minute per dead letter.
	deadline := time.Now().Add(electionRetryFor)
	for i := range picked {
		picked[i].At = time.Now()
		err := retryFor(ctx, time.Until(deadline), func() error {
			cmd := exec.CommandContext(ctx, c.bins["deadletter"], "replay", "--seq", strconv.FormatUint(picked[i].Seq, 10), "--keep") //nolint:gosec // G204: the harness's own binary and arguments
			cmd.Env = append(proc.InheritEnv("PATH", "HOME"), "NATS_URL="+c.natsURL())
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(out)))
			}
			return nil
		})
		if err != nil {
			picked[i].Error = err.Error()
		}
	}
	return picked, nil
}

// ownFaults publishes the harness's own jobs: the oversized ones at once,
// and the late-after-TTL ones (created, paid, then published again once
// their record expired). It answers when all are done or ctx ends; keys
// receives every own order.
type ownFaults struct {
	c      *cluster
	js     jetstream.JetStream
	nc     *nats.Conn
	sim    *loadgen.SimClient
	runID  string
	merch  loadgen.Merchant
	mu     sync.Mutex
	keys   []loadgen.OrderKey
	counts map[string]int
	errs   []string
}

func (o *ownFaults) count(kind string, n int) {
	o.mu.Lock()
	o.counts[kind] += n
	o.mu.Unlock()
}

func (o *ownFaults) fail(err error) {
	o.mu.Lock()
	o.errs = append(o.errs, err.Error())
	o.mu.Unlock()
}

func (o *ownFaults) add(k loadgen.OrderKey) {
	o.mu.Lock()
	o.keys = append(o.keys, k)
	o.mu.Unlock()
}

// oversized publishes OversizedJobs jobs of exactly MaxJobBytes and as many
// one byte past it.
func (o *ownFaults) oversized(ctx context.Context) {
	cfg := o.c.cfg
	for i := range cfg.OversizedJobs {
		for _, past := range []int{0, 1} {
			kind := map[int]string{0: "L", 1: "P"}[past]
			j, err := newOwnJob(o.merch, ownNumber(o.runID, kind, i), cfg.MaxJobBytes+past)
			if err != nil {
				o.fail(err)
				continue
			}
			if err := j.publish(ctx, o.js, events.JobMsgID(j.key.MchID, j.key.OutTradeNo)); err != nil {
				if past == 1 {
					// Refused at publish: the producer learns at once, and
					// JetStream never accepted the job.
					o.count(FaultOversizedRefused, 1)
					continue
				}
				o.fail(err)
				continue
			}
			o.add(j.key)
			o.count(map[int]string{0: FaultOversizedAtLimit, 1: FaultOversizedPast}[past], 1)
		}
	}
}

// lateAfterTTL publishes LateAfterTTL small jobs, pays each order once it is
// created, and publishes each again with a new Nats-Msg-Id once
// OutcomeTTL has passed since its creation.
func (o *ownFaults) lateAfterTTL(ctx context.Context) {
	cfg := o.c.cfg
	if cfg.LateAfterTTL == 0 {
		return
	}
	created := make(chan loadgen.OrderKey, cfg.LateAfterTTL*4)
	sub, err := o.nc.Subscribe(events.Subjects{}.PrepayCreated(), func(m *nats.Msg) {
		k := jobKeyOfEvent(m.Data)
		if strings.HasPrefix(k.OutTradeNo, ownPrefix+o.runID[2:]+"T") {
			select {
			case created <- k:
			default:
			}
		}
	})
	if err != nil {
		o.fail(fmt.Errorf("chaos: late duplicates: %w", err))
		return
	}
	defer func() { _ = sub.Unsubscribe() }()
	jobs := map[loadgen.OrderKey]ownJob{}
	for i := range cfg.LateAfterTTL {
		j, err := newOwnJob(o.merch, ownNumber(o.runID, "T", i), 0)
		if err != nil {
			o.fail(err)
			return
		}
		jobs[j.key] = j
		o.add(j.key)
		if err := j.publish(ctx, o.js, events.JobMsgID(j.key.MchID, j.key.OutTradeNo)); err != nil {
			o.fail(err)
		}
	}
	due := map[loadgen.OrderKey]time.Time{}
	deadline := time.NewTimer(4 * time.Minute)
	defer deadline.Stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for len(jobs) > 0 {
		select {
		case <-ctx.Done():
			return
		case <-deadline.C:
			// The product failed these before they were created (another
			// fault hit them): nothing to duplicate. The report's check that
			// the fault hit something still applies.
			o.count(FaultLateAfterTTLSkipped, len(jobs)-len(due))
			if len(due) == 0 {
				return
			}
			deadline.Reset(cfg.OutcomeTTL + 10*time.Second)
			for k := range jobs {
				if _, ok := due[k]; !ok {
					delete(jobs, k)
				}
			}
		case k := <-created:
			if _, ok := due[k]; ok || jobs[k].body == nil {
				continue
			}
			due[k] = time.Now().Add(cfg.OutcomeTTL + 5*time.Second)
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if err := o.sim.Pay(pctx, k); err != nil {
				o.fail(fmt.Errorf("chaos: pay %s: %w", k, err))
			}
			cancel()
		case now := <-tick.C:
			for k, at := range due {
				if now.Before(at) {
					continue
				}
				if err := jobs[k].publish(ctx, o.js, "late:"+events.JobMsgID(k.MchID, k.OutTradeNo)); err != nil {
					o.fail(err)
				} else {
					o.count(FaultLateAfterTTL, 1)
				}
				delete(due, k)
				delete(jobs, k)
			}
		}
	}
}

// jobKeyOfEvent reads the order of an outcome event, leniently.
func jobKeyOfEvent(data []byte) loadgen.OrderKey {
	var e events.PrepayCreated
	if decodeStrict(data, &e) != nil {
		return loadgen.OrderKey{}
	}
	return loadgen.OrderKey{MchID: e.CombineMchID, OutTradeNo: e.CombineOutTradeNo}
}

// drainJobs waits until the jobs stream is empty or DrainWait passes, and
// answers the jobs left in it: JetStream accepted them and they ended in
// neither an acknowledgement nor a termination.
func drainJobs(ctx context.Context, js jetstream.JetStream, wait time.Duration, logf func(string, ...any)) ([]StrandedJob, error) {
	deadline := time.Now().Add(wait)
	var left []StrandedJob
	// A read that meets a leader election is tried again.
	err := retryFor(ctx, wait+electionRetryFor, func() (err error) {
		left, err = strandedJobs(ctx, js, deadline, logf)
		return err
	})
	return left, err
}

// strandedJobs waits until the jobs stream is empty or deadline passes,
// then lists the jobs left in it.
func strandedJobs(ctx context.Context, js jetstream.JetStream, deadline time.Time, logf func(string, ...any)) ([]StrandedJob, error) {
	st, err := js.Stream(ctx, events.StreamJobs)
	if err != nil {
		return nil, fmt.Errorf("chaos: stream %s: %w", events.StreamJobs, err)
	}
	var info *jetstream.StreamInfo
	for {
		if info, err = st.Info(ctx); err != nil {
			return nil, fmt.Errorf("chaos: stream %s: %w", events.StreamJobs, err)
		}
		if info.State.Msgs == 0 || !time.Now().Before(deadline) || ctx.Err() != nil {
			break
		}
		logf("waiting for %d jobs left in %s to end", info.State.Msgs, events.StreamJobs)
		sleepCtx(ctx, 5*time.Second)
	}
	var ackFloor uint64
	if info.State.Msgs > 0 {
		ci, err := js.Consumer(ctx, events.StreamJobs, pipeline.ConsumerDefault)
		if err != nil {
			return nil, fmt.Errorf("chaos: consumer %s: %w", pipeline.ConsumerDefault, err)
		}
		ack, err := ci.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("chaos: consumer %s: %w", pipeline.ConsumerDefault, err)
		}
		ackFloor = ack.AckFloor.Stream
	}
	var left []StrandedJob
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq && len(left) < maxListed; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return left, fmt.Errorf("chaos: stream %s: message %d: %w", events.StreamJobs, seq, err)
		}
		left = append(left, StrandedJob{Order: jobKey(m.Data), Sequence: seq, Bytes: len(m.Data), Acked: seq <= ackFloor})
	}
	return left, nil
}
