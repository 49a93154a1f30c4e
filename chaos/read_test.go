package chaos

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/internal/testenv"
)

// TestReadAll: a read that finds no stream yet (as while a cluster elects
// its leader) is tried again, and hands every message to f once; a read
// resumed from a sequence skips what was handed before.
func TestReadAll(t *testing.T) {
	js := testenv.StartNATS(t).JetStream(t)
	ctx := t.Context()
	go func() {
		time.Sleep(2500 * time.Millisecond)
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "READS", Subjects: []string{"reads.>"}}); err != nil {
			t.Error(err)
			return
		}
		for i := range 1200 {
			if _, err := js.Publish(ctx, "reads.x", fmt.Appendf(nil, "%d", i)); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	var got []string
	// The stream may be read while it is being filled: read until all 1,200
	// are there, as the harness reads a stream nobody writes to any more.
	next := uint64(1)
	deadline := time.Now().Add(30 * time.Second)
	for len(got) < 1200 && time.Now().Before(deadline) {
		if err := retryFor(ctx, electionRetryFor, func() error {
			return readFrom(ctx, js, "READS", &next, func(m jetstream.Msg) { got = append(got, string(m.Data())) })
		}); err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != 1200 {
		t.Fatalf("read %d messages, want 1200", len(got))
	}
	for i, g := range got {
		if g != fmt.Sprint(i) {
			t.Fatalf("message %d is %q: a message handed twice or skipped", i, g)
		}
	}
	// From the start again, in full.
	var all int
	if err := readAll(ctx, js, "READS", func(jetstream.Msg) { all++ }); err != nil || all != 1200 {
		t.Fatalf("readAll: %d messages, err %v; want 1200", all, err)
	}
	// Resumed from 1,001: the last 200 only.
	from := uint64(1001)
	var rest int
	if err := readFrom(ctx, js, "READS", &from, func(jetstream.Msg) { rest++ }); err != nil || rest != 200 || from != 1201 {
		t.Fatalf("readFrom 1001: %d messages, next %d, err %v; want 200 and 1201", rest, from, err)
	}
}
