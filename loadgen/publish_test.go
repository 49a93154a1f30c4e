package loadgen

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/internal/testenv"
	"github.com/wxcombine/orderworker/wechat"
)

// TestPublishStored: a publish that no stream answers (as while a cluster
// elects a stream leader) is tried again until the stream takes it, once.
func TestPublishStored(t *testing.T) {
	js := testenv.StartNATS(t).JetStream(t)
	msg := func() *nats.Msg {
		m := nats.NewMsg(events.Subjects{}.Job(wechat.TradeTypeNative))
		m.Data = []byte(`{}`)
		m.Header.Set(events.HeaderMsgID, "job-1")
		return m
	}

	start := time.Now()
	if _, err := PublishStored(t.Context(), js, msg(), 1500*time.Millisecond); err == nil {
		t.Fatal("no stream: want an error once the budget is spent")
	} else if took := time.Since(start); took > 4*time.Second {
		t.Errorf("gave up after %v, budget 1.5s", took)
	}

	created := make(chan error, 1)
	go func() {
		time.Sleep(2500 * time.Millisecond)
		_, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: events.StreamJobs, Subjects: []string{events.Subjects{}.Jobs()}, Duplicates: time.Minute})
		created <- err
	}()
	ack, err := PublishStored(t.Context(), js, msg(), RepublishFor)
	if err != nil {
		t.Fatalf("stream created after 2.5s: %v", err)
	}
	if err := <-created; err != nil {
		t.Fatal(err)
	}
	if ack.Duplicate {
		t.Error("first stored try reported as a duplicate")
	}
	again, err := PublishStored(t.Context(), js, msg(), RepublishFor)
	if err != nil || !again.Duplicate {
		t.Fatalf("same Nats-Msg-Id again: ack %+v, err %v; want a duplicate", again, err)
	}
	st, err := js.Stream(t.Context(), events.StreamJobs)
	if err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().State.Msgs; n != 1 {
		t.Errorf("stream holds %d messages, want 1", n)
	}

	// A stream's refusal is an answer: it is not repeated for the budget.
	if _, err := js.UpdateStream(t.Context(), jetstream.StreamConfig{Name: events.StreamJobs, Subjects: []string{events.Subjects{}.Jobs()}, Duplicates: time.Minute, MaxMsgSize: 64}); err != nil {
		t.Fatal(err)
	}
	big := msg()
	big.Data = make([]byte, 128)
	big.Header.Set(events.HeaderMsgID, "job-2")
	start = time.Now()
	if _, err := PublishStored(t.Context(), js, big, RepublishFor); err == nil {
		t.Error("a job over the stream's message size was stored")
	} else if took := time.Since(start); took > 3*time.Second {
		t.Errorf("refused job given up after %v; a refusal is not repeated", took)
	}
}

// TestRefused: only a message's size is a refusal; the errors a cluster
// answers while it elects a leader are tried again.
func TestRefused(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{nats.ErrMaxPayload, true},
		{jetstream.ErrStreamMessageExceedsMaximum, true},
		{&jetstream.APIError{Code: 400, ErrorCode: 10097, Description: "header size exceeds maximum allowed of 64k"}, true},
		{&jetstream.APIError{Code: 500, ErrorCode: 10009, Description: "JetStream cluster can not handle request"}, false},
		{&jetstream.APIError{Code: 503, ErrorCode: 10023, Description: "insufficient resources"}, false},
		{&jetstream.APIError{Code: 429, ErrorCode: 10167, Description: "too many requests"}, false},
		{&jetstream.APIError{Code: 503, ErrorCode: 10077, Description: "store failed"}, false},
		{nats.ErrNoResponders, false},
		{nats.ErrTimeout, false},
	} {
		if got := refused(c.err); got != c.want {
			t.Errorf("refused(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
