package pipeline_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/internal/testenv"
	"github.com/wxcombine/orderworker/pipeline"
)

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPause: one switch pauses and resumes every worker of a consumer,
// including one started while paused, and no other consumer's.
func TestPause(t *testing.T) {
	ns := testenv.StartNATS(t)
	nc, err := nats.Connect(ns.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := t.Context()
	var changes atomic.Int32
	a, err := pipeline.NewPause(ctx, pipeline.PauseConfig{JetStream: js, Consumer: "orderworker", OnChange: func(pipeline.PauseState) { changes.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Stop()
	other, err := pipeline.NewPause(ctx, pipeline.PauseConfig{JetStream: js, Stream: "PARTNER_ORDER_JOBS", Consumer: "orderworker"})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Stop()
	if a.Paused() {
		t.Fatal("a new switch is paused")
	}
	if err := a.Wait(ctx); err != nil {
		t.Fatalf("Wait while running = %v, want nil at once", err)
	}
	pausing := a.Pausing()

	if err := pipeline.SetPause(ctx, js, "", "", "orderworker", pipeline.PauseState{Paused: true, Reason: "WeChat Pay incident", By: "ops"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the pause to reach the worker", a.Paused)
	select {
	case <-pausing:
	case <-time.After(5 * time.Second):
		t.Fatal("Pausing() channel not closed after the pause")
	}
	if st := a.State(); st.Reason != "WeChat Pay incident" || st.By != "ops" {
		t.Errorf("State() = %+v, want the reason and author", st)
	}
	late, err := pipeline.NewPause(ctx, pipeline.PauseConfig{JetStream: js, Consumer: "orderworker"})
	if err != nil {
		t.Fatal(err)
	}
	defer late.Stop()
	if !late.Paused() {
		t.Error("a worker started while paused does not start paused")
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := a.Wait(short); err == nil {
		t.Fatal("Wait while paused answered nil before the resume")
	}
	if other.Paused() {
		t.Error("pausing one consumer paused another flavour's")
	}

	waited := make(chan error, 1)
	go func() { waited <- late.Wait(ctx) }()
	if err := pipeline.SetPause(ctx, js, "", "", "orderworker", pipeline.PauseState{Paused: false}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-waited:
		if err != nil {
			t.Fatalf("Wait after the resume = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait still blocked 5s after the resume")
	}
	eventually(t, "the resume to reach the first worker", func() bool { return !a.Paused() })
	if st, err := pipeline.GetPause(ctx, js, "", "", "orderworker"); err != nil || st.Paused {
		t.Errorf("GetPause after resume = %+v, %v", st, err)
	}
	if n := changes.Load(); n != 3 {
		t.Errorf("OnChange called %d times, want 3 (initial, pause, resume)", n)
	}
}
