package pipeline_test

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/internal/testenv"
	"github.com/wxcombine/orderworker/pipeline"
	"github.com/wxcombine/orderworker/wechat"
)

func topology(prefix, jobs, evs, dls string) pipeline.Topology {
	return pipeline.Topology{
		Subjects: events.Subjects{Prefix: prefix}, JobsStream: jobs, EventsStream: evs, DeadLettersStream: dls,
		Consumer: "orderworker", Replicas: 1, Storage: jetstream.FileStorage,
		JobsMaxAge: 24 * time.Hour, EventsMaxAge: 168 * time.Hour, DeadLettersMaxAge: 720 * time.Hour,
		DuplicateWindow: 10 * time.Minute, MaxJobBytes: 4096, AckWait: time.Minute, MaxDeliver: 10, MaxAckPending: 256,
	}
}

func connect(t *testing.T) jetstream.JetStream {
	t.Helper()
	ns := testenv.StartNATS(t)
	js := ns.JetStream(t)
	return js
}

// TestTopology_verify: verify mode creates nothing and names what is
// missing or different; create mode makes verify pass.
func TestTopology_verify(t *testing.T) {
	js, ctx := connect(t), t.Context()
	top := topology("combine", "", "", "")
	if _, err := top.Ensure(ctx, js, pipeline.StreamsVerify); err == nil || !strings.Contains(err.Error(), events.StreamJobs+" does not exist") {
		t.Fatalf("verify on an empty server = %v, want the missing jobs stream named", err)
	}
	if _, err := js.Stream(ctx, events.StreamJobs); err == nil {
		t.Fatal("verify mode created a stream")
	}
	if _, err := top.Ensure(ctx, js, pipeline.StreamsCreate); err != nil {
		t.Fatal(err)
	}
	if _, err := top.Ensure(ctx, js, pipeline.StreamsVerify); err != nil {
		t.Fatalf("verify after create = %v", err)
	}
	drift := top
	drift.JobsMaxAge, drift.MaxAckPending = time.Hour, 64
	_, err := drift.Ensure(ctx, js, pipeline.StreamsVerify)
	if err == nil || !strings.Contains(err.Error(), "max_age") {
		t.Fatalf("verify with another max age = %v, want the difference named", err)
	}
	s, _ := js.Stream(ctx, events.StreamJobs)
	if got := s.CachedInfo().Config.MaxAge; got != 24*time.Hour {
		t.Errorf("verify changed the stream: max age %s", got)
	}
	if _, err := drift.Ensure(ctx, js, pipeline.StreamsCreate); err != nil {
		t.Fatal(err)
	}
	c, _ := js.Consumer(ctx, events.StreamJobs, "orderworker")
	if got := c.CachedInfo().Config.MaxAckPending; got != 64 {
		t.Errorf("create mode did not update the consumer: max_ack_pending %d", got)
	}
}

// TestTopology_twoFlavours: two flavours, each with its own prefix and
// stream names, share one server; setting either up again leaves the other
// alone, and each job lands in its own flavour's stream. A second flavour
// that forgets its stream names is refused instead of taking over the
// first one's streams.
func TestTopology_twoFlavours(t *testing.T) {
	js, ctx := connect(t), t.Context()
	a := topology("combine", "", "", "")
	b := topology("partner", "PARTNER_ORDER_JOBS", "PARTNER_ORDER_EVENTS", "PARTNER_ORDER_DEADLETTERS")
	for _, top := range []pipeline.Topology{a, b, a, b} {
		if _, err := top.Ensure(ctx, js, pipeline.StreamsCreate); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		top    pipeline.Topology
		stream string
	}{{a, events.StreamJobs}, {b, "PARTNER_ORDER_JOBS"}} {
		ack, err := js.Publish(ctx, tt.top.Subjects.Job(wechat.TradeTypeNative), []byte(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		if ack.Stream != tt.stream {
			t.Errorf("a %s job landed in %s, want %s", tt.top.Subjects.Prefix, ack.Stream, tt.stream)
		}
		if _, err := tt.top.Ensure(ctx, js, pipeline.StreamsVerify); err != nil {
			t.Errorf("%s flavour after both set up: %v", tt.top.Subjects.Prefix, err)
		}
	}
	careless := topology("partner", "", "", "")
	if _, err := careless.Ensure(ctx, js, pipeline.StreamsCreate); err == nil || !strings.Contains(err.Error(), "another flavour") {
		t.Fatalf("second flavour with the first one's stream names = %v, want a refusal", err)
	}
	s, _ := js.Stream(ctx, events.StreamJobs)
	if got := s.CachedInfo().Config.Subjects; len(got) != 1 || got[0] != "combine.orders.create.*" {
		t.Errorf("the first flavour's jobs stream now holds %v", got)
	}
}

// TestTopology_maxMsgSize: JetStream itself refuses a job far beyond
// MaxJobBytes at publish time, so the producer learns at once.
func TestTopology_maxMsgSize(t *testing.T) {
	js, ctx := connect(t), t.Context()
	top := topology("combine", "", "", "")
	if _, err := top.Ensure(ctx, js, pipeline.StreamsCreate); err != nil {
		t.Fatal(err)
	}
	subj := top.Subjects.Job(wechat.TradeTypeNative)
	if _, err := js.Publish(ctx, subj, make([]byte, top.MaxJobBytes)); err != nil {
		t.Fatalf("a job of MaxJobBytes: %v", err)
	}
	_, err := js.Publish(ctx, subj, make([]byte, top.MaxJobBytes+pipeline.JobHeaderRoom+1))
	if err == nil || !strings.Contains(err.Error(), "message size exceeds maximum") {
		t.Fatalf("a job beyond MaxJobBytes + header room: %v, want JetStream's \"message size exceeds maximum allowed\"", err)
	}
}
