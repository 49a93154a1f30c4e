package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/internal/testenv"
)

// bundle is one test's NATS server with the jobs and dead-letter streams.
type bundle struct {
	url  string
	js   jetstream.JetStream
	tool *Tool
	jobs jetstream.Stream
	dls  jetstream.Stream
}

func setup(t *testing.T) *bundle {
	t.Helper()
	srv := testenv.StartNATS(t)
	js := srv.JetStream(t)
	ctx := t.Context()
	subjects := events.Subjects{}
	jobs, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: events.StreamJobs, Subjects: []string{subjects.Jobs()},
		Retention: jetstream.WorkQueuePolicy, Duplicates: 2 * time.Minute,
	})
	if err != nil {
		t.Fatalf("create jobs stream: %v", err)
	}
	dls, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: events.StreamDeadLetters, Subjects: []string{subjects.DeadLetters()},
	})
	if err != nil {
		t.Fatalf("create dead-letter stream: %v", err)
	}
	tool := &Tool{JS: js, SleepFunc: func(context.Context, time.Duration) error { return nil }}
	return &bundle{url: srv.URL, js: js, tool: tool, jobs: jobs, dls: dls}
}

// jobBody is a job as a producer publishes it; openid is personal data.
func jobBody(mchID, outTradeNo string) []byte {
	return []byte(`{"version":1,"trade_type":"jsapi","request":{"combine_mchid":"` + mchID +
		`","combine_out_trade_no":"` + outTradeNo + `","combine_payer_info":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}}}`)
}

// deadLetter stores a dead letter as the worker does and answers its
// sequence.
func (b *bundle) deadLetter(t *testing.T, reason events.Reason, mchID, outTradeNo string) uint64 {
	t.Helper()
	subject := events.Subjects{}.Job("jsapi")
	dl := events.DeadLetter{
		Version: events.Version, Reason: reason, Error: "wechat: SYSTEMERROR",
		CombineMchID: mchID, CombineOutTradeNo: outTradeNo, CorrelationID: "corr-" + outTradeNo,
		OriginalSubject: subject,
		OriginalHeaders: map[string][]string{
			events.HeaderMsgID:         {events.JobMsgID(mchID, outTradeNo)},
			events.HeaderCorrelationID: {"corr-" + outTradeNo},
		},
		OriginalData:  jobBody(mchID, outTradeNo),
		DeliveryCount: 5, FirstFailedAt: time.Now().Add(-time.Hour), DeadAt: time.Now(),
	}
	data, err := json.Marshal(dl)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	ack, err := b.js.Publish(t.Context(), events.Subjects{}.DeadLetter(reason), data)
	if err != nil {
		t.Fatalf("publish dead letter: %v", err)
	}
	return ack.Sequence
}

func (b *bundle) scan(t *testing.T, f Filter) []uint64 {
	t.Helper()
	var got []uint64
	if err := b.tool.Scan(t.Context(), f, func(e Entry) error {
		got = append(got, e.Seq)
		return nil
	}); err != nil {
		t.Fatalf("Scan(%+v) = %v", f, err)
	}
	return got
}

func TestTool_Scan(t *testing.T) {
	b := setup(t)
	s1 := b.deadLetter(t, events.ReasonMaxDeliveries, "1900000109", "A1")
	s2 := b.deadLetter(t, events.ReasonRejected, "1900000109", "A2")
	s3 := b.deadLetter(t, events.ReasonMaxDeliveries, "1900000110", "B1")
	s4 := b.deadLetter(t, events.ReasonMalformed, "", "")
	// A foreign message on a dead-letter subject is listed with its error.
	if _, err := b.js.Publish(t.Context(), events.Subjects{}.DeadLetter(events.ReasonInvalid), []byte("not json")); err != nil {
		t.Fatal(err)
	}
	s5 := s4 + 1
	future := time.Now().Add(time.Hour)

	tests := []struct {
		name string
		f    Filter
		want []uint64
	}{
		{"everything", Filter{}, []uint64{s1, s2, s3, s4, s5}},
		{"by reason", Filter{Reason: events.ReasonMaxDeliveries}, []uint64{s1, s3}},
		{"by mchid", Filter{MchID: "1900000109"}, []uint64{s1, s2}},
		{"by reason and mchid", Filter{Reason: events.ReasonMaxDeliveries, MchID: "1900000110"}, []uint64{s3}},
		{"since the future", Filter{Since: future}, nil},
		{"since an hour ago", Filter{Since: time.Now().Add(-time.Hour), Reason: events.ReasonRejected}, []uint64{s2}},
		{"limit", Filter{Limit: 2}, []uint64{s1, s2}},
		{"one sequence", Filter{Seq: s3}, []uint64{s3}},
		{"one sequence, other reason", Filter{Seq: s3, Reason: events.ReasonRejected}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, b.scan(t, tt.f)); diff != "" {
				t.Errorf("Scan(%+v) sequences (-want +got):\n%s", tt.f, diff)
			}
		})
	}

	t.Run("missing sequence", func(t *testing.T) {
		err := b.tool.Scan(t.Context(), Filter{Seq: 999}, func(Entry) error { return nil })
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("Scan(seq 999) = %v, want ErrNotFound", err)
		}
	})
	t.Run("deleted entries are skipped", func(t *testing.T) {
		if err := b.dls.DeleteMsg(t.Context(), s2); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]uint64{s1, s3, s4, s5}, b.scan(t, Filter{})); diff != "" {
			t.Errorf("Scan after delete (-want +got):\n%s", diff)
		}
	})
}

func TestTool_Scan_empty(t *testing.T) {
	b := setup(t)
	if got := b.scan(t, Filter{}); len(got) != 0 {
		t.Errorf("Scan(empty stream) = %v, want nothing", got)
	}
}

func TestTool_Replay(t *testing.T) {
	b := setup(t)
	ctx := t.Context()
	// The producer published A1 a moment ago with its own Nats-Msg-Id, and
	// the worker dead-lettered it at once: the jobs stream's duplicate window
	// still holds that id. The replay must not be dropped as a duplicate.
	orig := nats.NewMsg(events.Subjects{}.Job("jsapi"))
	orig.Data = jobBody("1900000109", "A1")
	orig.Header.Set(events.HeaderMsgID, events.JobMsgID("1900000109", "A1"))
	pa, err := b.js.PublishMsg(ctx, orig)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.jobs.DeleteMsg(ctx, pa.Sequence); err != nil { // consumed and terminated
		t.Fatal(err)
	}
	seq := b.deadLetter(t, events.ReasonMaxDeliveries, "1900000109", "A1")

	var got []Outcome
	err = b.tool.Replay(ctx, ReplayOptions{Filter: Filter{Seq: seq}}, func(o Outcome) { got = append(got, o) })
	if err != nil {
		t.Fatalf("Replay() = %v", err)
	}
	if len(got) != 1 || got[0].Action != ActionReplayed || !got[0].Deleted {
		t.Fatalf("Replay() outcomes = %+v, want one replayed and deleted", got)
	}

	m, err := b.jobs.GetMsg(ctx, got[0].JobSeq)
	if err != nil {
		t.Fatalf("replayed job not in the jobs stream: %v", err)
	}
	if !bytes.Equal(m.Data, jobBody("1900000109", "A1")) {
		t.Errorf("replayed body = %s, want the original bytes", m.Data)
	}
	if want := (events.Subjects{}).Job("jsapi"); m.Subject != want {
		t.Errorf("replayed subject = %s, want %s", m.Subject, want)
	}
	wantHeaders := map[string]string{
		events.HeaderMsgID:         ReplayMsgID(events.StreamDeadLetters, seq),
		events.HeaderCorrelationID: "corr-A1",
		HeaderReplayedFrom:         events.StreamDeadLetters + ":" + itoa(seq),
		HeaderReplayedMsgID:        events.JobMsgID("1900000109", "A1"),
	}
	for k, want := range wantHeaders {
		if got := m.Header.Get(k); got != want {
			t.Errorf("replayed header %s = %q, want %q", k, got, want)
		}
	}
	if _, err := b.dls.GetMsg(ctx, seq); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Errorf("dead letter %d after replay: GetMsg = %v, want ErrMsgNotFound", seq, err)
	}
}

func itoa(u uint64) string { return strconv.FormatUint(u, 10) }

func TestTool_Replay_selection(t *testing.T) {
	tests := []struct {
		name         string
		opts         ReplayOptions
		wantActions  map[events.Reason]Action // by reason of the stored letters
		wantJobs     uint64                   // messages in the jobs stream afterwards
		wantLeftover []events.Reason          // reasons still in the dead-letter stream
	}{
		{
			name: "all replays the replayable reasons and skips the rest",
			opts: ReplayOptions{All: true},
			wantActions: map[events.Reason]Action{
				events.ReasonMaxDeliveries: ActionReplayed, events.ReasonRejected: ActionReplayed,
				events.ReasonMalformed: ActionSkipped, events.ReasonInvalid: ActionSkipped,
			},
			wantJobs:     2,
			wantLeftover: []events.Reason{events.ReasonMalformed, events.ReasonInvalid},
		},
		{
			name: "force replays every reason",
			opts: ReplayOptions{All: true, Force: true},
			wantActions: map[events.Reason]Action{
				events.ReasonMaxDeliveries: ActionReplayed, events.ReasonRejected: ActionReplayed,
				events.ReasonMalformed: ActionReplayed, events.ReasonInvalid: ActionReplayed,
			},
			wantJobs: 4,
		},
		{
			name:        "by reason",
			opts:        ReplayOptions{Filter: Filter{Reason: events.ReasonRejected}},
			wantActions: map[events.Reason]Action{events.ReasonRejected: ActionReplayed},
			wantJobs:    1,
			wantLeftover: []events.Reason{
				events.ReasonMaxDeliveries, events.ReasonMalformed, events.ReasonInvalid,
			},
		},
		{
			name: "dry run changes nothing",
			opts: ReplayOptions{All: true, DryRun: true},
			wantActions: map[events.Reason]Action{
				events.ReasonMaxDeliveries: ActionWouldReplay, events.ReasonRejected: ActionWouldReplay,
				events.ReasonMalformed: ActionSkipped, events.ReasonInvalid: ActionSkipped,
			},
			wantJobs: 0,
			wantLeftover: []events.Reason{
				events.ReasonMaxDeliveries, events.ReasonRejected, events.ReasonMalformed, events.ReasonInvalid,
			},
		},
		{
			name: "keep leaves the entries",
			opts: ReplayOptions{Filter: Filter{MchID: "1900000109"}, Keep: true, Rate: 1000},
			wantActions: map[events.Reason]Action{
				events.ReasonMaxDeliveries: ActionReplayed, events.ReasonRejected: ActionReplayed,
				events.ReasonMalformed: ActionSkipped, events.ReasonInvalid: ActionSkipped,
			},
			wantJobs: 2,
			wantLeftover: []events.Reason{
				events.ReasonMaxDeliveries, events.ReasonRejected, events.ReasonMalformed, events.ReasonInvalid,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := setup(t)
			for i, r := range []events.Reason{events.ReasonMaxDeliveries, events.ReasonRejected, events.ReasonMalformed, events.ReasonInvalid} {
				b.deadLetter(t, r, "1900000109", "N"+itoa(uint64(i)))
			}
			got := map[events.Reason]Action{}
			if err := b.tool.Replay(t.Context(), tt.opts, func(o Outcome) { got[o.Entry.Letter.Reason] = o.Action }); err != nil {
				t.Fatalf("Replay(%+v) = %v", tt.opts, err)
			}
			if diff := cmp.Diff(tt.wantActions, got); diff != "" {
				t.Errorf("Replay(%+v) actions (-want +got):\n%s", tt.opts, diff)
			}
			info, err := b.jobs.Info(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if info.State.Msgs != tt.wantJobs {
				t.Errorf("jobs stream holds %d messages, want %d", info.State.Msgs, tt.wantJobs)
			}
			var left []events.Reason
			if err := b.tool.Scan(t.Context(), Filter{}, func(e Entry) error {
				left = append(left, e.Letter.Reason)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.wantLeftover, left); diff != "" {
				t.Errorf("dead letters left (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTool_Replay_twice(t *testing.T) {
	// A replay run again (as after a crash between publish and delete) within
	// the jobs stream's duplicate window stores the job once.
	b := setup(t)
	seq := b.deadLetter(t, events.ReasonMaxDeliveries, "1900000109", "T1")
	opts := ReplayOptions{Filter: Filter{Seq: seq}, Keep: true}
	var actions []Action
	for range 2 {
		if err := b.tool.Replay(t.Context(), opts, func(o Outcome) { actions = append(actions, o.Action) }); err != nil {
			t.Fatalf("Replay() = %v", err)
		}
	}
	if diff := cmp.Diff([]Action{ActionReplayed, ActionDuplicate}, actions); diff != "" {
		t.Errorf("actions of two replays (-want +got):\n%s", diff)
	}
	info, err := b.jobs.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Errorf("jobs stream holds %d messages after two replays, want 1", info.State.Msgs)
	}
}

func TestTool_Replay_pacing(t *testing.T) {
	b := setup(t)
	for i := range 4 {
		b.deadLetter(t, events.ReasonMaxDeliveries, "1900000109", "P"+itoa(uint64(i)))
	}
	// A fake clock that only moves when the tool sleeps.
	var mu sync.Mutex
	now := time.Unix(1_700_000_000, 0)
	var sleeps []time.Duration
	b.tool.NowFunc = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	b.tool.SleepFunc = func(_ context.Context, d time.Duration) error {
		mu.Lock()
		defer mu.Unlock()
		sleeps = append(sleeps, d)
		now = now.Add(d)
		return nil
	}
	if err := b.tool.Replay(t.Context(), ReplayOptions{All: true, Rate: 4}, func(Outcome) {}); err != nil {
		t.Fatalf("Replay() = %v", err)
	}
	want := []time.Duration{250 * time.Millisecond, 250 * time.Millisecond, 250 * time.Millisecond}
	if diff := cmp.Diff(want, sleeps); diff != "" {
		t.Errorf("waits between 4 publishes at rate 4/s (-want +got):\n%s", diff)
	}
}

func TestTool_Replay_refusesNoSelection(t *testing.T) {
	b := setup(t)
	if err := b.tool.Replay(t.Context(), ReplayOptions{}, func(Outcome) {}); !errors.Is(err, ErrNoSelection) {
		t.Errorf("Replay(no selection) = %v, want ErrNoSelection", err)
	}
}

func TestTool_Replay_noJobsStream(t *testing.T) {
	b := setup(t)
	seq := b.deadLetter(t, events.ReasonMaxDeliveries, "1900000109", "X1")
	b.tool.JobsStream = "ELSEWHERE"
	var got []Outcome
	if err := b.tool.Replay(t.Context(), ReplayOptions{Filter: Filter{Seq: seq}}, func(o Outcome) { got = append(got, o) }); err != nil {
		t.Fatalf("Replay() = %v", err)
	}
	if len(got) != 1 || got[0].Action != ActionFailed || got[0].Deleted {
		t.Fatalf("Replay into the wrong stream = %+v, want one failure, not deleted", got)
	}
	if _, err := b.dls.GetMsg(t.Context(), seq); err != nil {
		t.Errorf("dead letter %d after a failed replay: %v, want it kept", seq, err)
	}
}

func TestRun(t *testing.T) {
	b := setup(t)
	seq := b.deadLetter(t, events.ReasonRejected, "1900000109", "R1")
	b.deadLetter(t, events.ReasonMaxDeliveries, "1900000110", "R2")
	getenv := func(k string) string {
		if k == "NATS_URL" {
			return b.url
		}
		return ""
	}
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantOut    []string // substrings of stdout
		wantNotOut []string
		wantErr    string // substring of stderr
	}{
		{"no command", nil, 2, nil, nil, "usage: deadletter"},
		{"unknown command", []string{"purge"}, 2, nil, nil, `unknown command "purge"`},
		{"list", []string{"list"}, 0, []string{"R1", "R2", "rejected", "2 dead letters"}, nil, ""},
		{"list by mchid", []string{"list", "--mchid", "1900000110"}, 0, []string{"R2", "1 dead letters"}, []string{"R1"}, ""},
		{"list json", []string{"list", "--json", "--reason", "rejected"}, 0, []string{`"combine_out_trade_no":"R1"`}, []string{"R2"}, ""},
		{"list bad reason", []string{"list", "--reason", "nope"}, 2, nil, nil, `--reason "nope" is not one of`},
		{"list bad since", []string{"list", "--since", "yesterday"}, 2, nil, nil, "neither a duration"},
		{"inspect", []string{"inspect", itoa(seq)}, 0, []string{`"combine_out_trade_no": "R1"`, `"openid": "REDACTED"`, `"replay_msg_id"`}, []string{"oUpF8u"}, ""},
		{"inspect reveal", []string{"inspect", "--reveal-personal-data", itoa(seq)}, 0, []string{"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}, nil, ""},
		{"inspect missing", []string{"inspect", "999"}, 1, nil, nil, "dead letter not found"},
		{"inspect no seq", []string{"inspect"}, 2, nil, nil, "want exactly one sequence"},
		{"replay without selection", []string{"replay"}, 2, nil, nil, "select entries with"},
		{"replay all with filter", []string{"replay", "--all", "--reason", "rejected"}, 2, nil, nil, "--all selects every entry"},
		{"replay bad rate", []string{"replay", "--all", "--rate", "0"}, 2, nil, nil, "--rate must be positive"},
		{"replay dry run", []string{"replay", "--all", "--dry-run"}, 0, []string{"would_replay seq=", "would replay 2"}, nil, ""},
		{"replay one", []string{"replay", "--seq", itoa(seq), "--rate", "100"}, 0, []string{"replayed seq=" + itoa(seq), "deleted=true", "replayed 1,"}, nil, ""},
		{"list after replay", []string{"list"}, 0, []string{"R2", "1 dead letters"}, []string{"R1"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(t.Context(), tt.args, getenv, &stdout, &stderr)
			if code != tt.wantCode {
				t.Errorf("run(%q) = %d, want %d; stderr:\n%s", tt.args, code, tt.wantCode, stderr.String())
			}
			for _, s := range tt.wantOut {
				if !strings.Contains(stdout.String(), s) {
					t.Errorf("run(%q) stdout lacks %q:\n%s", tt.args, s, stdout.String())
				}
			}
			for _, s := range tt.wantNotOut {
				if strings.Contains(stdout.String(), s) {
					t.Errorf("run(%q) stdout has %q:\n%s", tt.args, s, stdout.String())
				}
			}
			if tt.wantErr != "" && !strings.Contains(stderr.String(), tt.wantErr) {
				t.Errorf("run(%q) stderr lacks %q:\n%s", tt.args, tt.wantErr, stderr.String())
			}
		})
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in      string
		want    time.Time
		wantErr bool
	}{
		{"24h", now.Add(-24 * time.Hour), false},
		{"90m", now.Add(-90 * time.Minute), false},
		{"2026-02-28T08:00:00+08:00", time.Date(2026, 2, 28, 0, 0, 0, 0, time.UTC), false},
		{"-1h", time.Time{}, true},
		{"last week", time.Time{}, true},
	}
	for _, tt := range tests {
		got, err := parseSince(tt.in, now)
		if (err != nil) != tt.wantErr || !got.Equal(tt.want) {
			t.Errorf("parseSince(%q) = %v, %v; want %v, error %t", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}
