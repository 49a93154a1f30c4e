package chaos

import (
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/loadgen"
)

// The stall a disruption causes: how long no outcome was published, and
// how many orders were waiting for one meanwhile.
//
// Outcome times are JetStream's timestamps of the stored prepay events (the
// stream leader's clock, the harness's on loopback); job times are when the
// harness saw each order's first job on its own subscription to the jobs
// subjects, on the connection the load generator publishes with (so a job
// it published is one it saw).

// jobWatch records when each order's first job was published.
type jobWatch struct {
	mu    sync.Mutex
	first map[loadgen.OrderKey]time.Time
	sub   *nats.Subscription
}

func watchJobs(nc *nats.Conn) (*jobWatch, error) {
	w := &jobWatch{first: map[loadgen.OrderKey]time.Time{}}
	sub, err := nc.Subscribe(events.Subjects{}.Jobs(), func(m *nats.Msg) {
		k := jobKey(m.Data)
		if k.OutTradeNo == "" {
			return
		}
		now := time.Now()
		w.mu.Lock()
		if _, ok := w.first[k]; !ok {
			w.first[k] = now
		}
		w.mu.Unlock()
	})
	if err != nil {
		return nil, err
	}
	_ = sub.SetPendingLimits(-1, -1)
	w.sub = sub
	return w, nil
}

func (w *jobWatch) snapshot() map[loadgen.OrderKey]time.Time {
	_ = w.sub.Unsubscribe()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.first
}

// Stall is what a disruption did to the flow of outcomes.
type Stall struct {
	// Seconds is the longest time without a published outcome that began
	// while the disruption lasted (counted from its start when the gap
	// began before it), up to the next outcome.
	Seconds float64 `json:"stall_s"`
	// From is the gap's start, as an offset from the start of publishing.
	From float64 `json:"stall_from_s"`
	// OrdersWaited counts the orders published before the gap ended whose
	// first outcome came after it began.
	OrdersWaited int `json:"orders_waited"`
}

// measureStalls fills each disruption's stall from the outcome times
// (first outcome per order) and the job times.
func measureStalls(ds []Disruption, start time.Time, firstOutcome, firstJob map[loadgen.OrderKey]time.Time) {
	times := make([]time.Time, 0, len(firstOutcome))
	for _, t := range firstOutcome {
		times = append(times, t)
	}
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	for i := range ds {
		d := &ds[i]
		if d.At < 0 {
			continue
		}
		from := start.Add(time.Duration(d.At * float64(time.Second)))
		end := from.Add(time.Duration(d.DownSeconds * float64(time.Second)))
		gapFrom, gap := longestGap(times, from, end)
		gapTo := gapFrom.Add(gap)
		n := 0
		for k, jt := range firstJob {
			if jt.After(gapTo) {
				continue
			}
			if ot, ok := firstOutcome[k]; !ok || ot.After(gapFrom) {
				n++
			}
		}
		d.Stall = &Stall{Seconds: gap.Seconds(), From: gapFrom.Sub(start).Seconds(), OrdersWaited: n}
	}
}

// longestGap answers the longest interval without a time of sorted times
// that begins in [from, end] — during the disruption — and runs to the
// next time, however late; an interval that began before from is counted
// from from. With no time after from it answers zero (the run was over).
func longestGap(times []time.Time, from, end time.Time) (time.Time, time.Duration) {
	i, _ := slices.BinarySearchFunc(times, from, func(a, b time.Time) int { return a.Compare(b) })
	prev := from
	bestFrom, best := from, time.Duration(0)
	for ; i < len(times) && !prev.After(end); i++ {
		if g := times[i].Sub(prev); g > best {
			bestFrom, best = prev, g
		}
		prev = times[i]
	}
	return bestFrom, best
}
