package chaos

import (
	"testing"
	"time"

	"github.com/wxcombine/orderworker/loadgen"
)

func TestLongestGap(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	times := []time.Time{at(0), at(1), at(2), at(9), at(10), at(30)}
	cases := []struct {
		name      string
		from, end float64
		wantFrom  float64
		wantGap   float64
	}{
		{"the longest gap that began during the disruption", 1.5, 5, 2, 7},
		{"a gap that began before the disruption counts from its start", 5, 6, 5, 4},
		{"a gap that began during it runs to the next outcome", 9.5, 11, 10, 20},
		{"no outcome after the disruption", 31, 40, 31, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			from, gap := longestGap(times, at(c.from), at(c.end))
			if got := from.Sub(t0).Seconds(); got != c.wantFrom || gap.Seconds() != c.wantGap {
				t.Errorf("longestGap = from %.1fs, %.1fs; want from %.1fs, %.1fs", got, gap.Seconds(), c.wantFrom, c.wantGap)
			}
		})
	}
}

func TestMeasureStallsCountsTheOrdersThatWaited(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	k := func(n string) loadgen.OrderKey { return loadgen.OrderKey{MchID: "1", OutTradeNo: n} }
	outcome := map[loadgen.OrderKey]time.Time{k("a"): at(1), k("b"): at(2), k("c"): at(8), k("d"): at(8.5), k("late"): at(60)}
	job := map[loadgen.OrderKey]time.Time{k("a"): at(0.5), k("b"): at(1.5), k("c"): at(3), k("d"): at(7), k("late"): at(9),
		k("none"): at(4)}
	ds := []Disruption{{Kind: KindKillStreamLeader, At: 2.5, DownSeconds: 1}}
	measureStalls(ds, t0, outcome, job)
	s := ds[0].Stall
	if s == nil || s.Seconds != 5.5 || s.From != 2.5 {
		t.Fatalf("stall = %+v, want 5.5s from 2.5s", s)
	}
	// Waited: c and d (published before 8s, outcome after 2.5s) and the
	// order that never had one; not a, b (done before) nor late (after).
	if s.OrdersWaited != 3 {
		t.Errorf("orders waited = %d, want 3", s.OrdersWaited)
	}
}

func TestLagFirstPutsTheLaggingFailoverFirst(t *testing.T) {
	plan := []planned{{kind: KindFailoverSynced, at: 1}, {kind: KindKillWorker, at: 2}, {kind: KindFailoverLagging, at: 3}}
	got := lagFirst(plan)
	if got[0].kind != KindFailoverLagging || got[1].kind != KindKillWorker || got[2].kind != KindFailoverSynced {
		t.Errorf("lagFirst = %v", got)
	}
}
