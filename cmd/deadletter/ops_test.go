package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/pipeline"
)

func (b *bundle) getenv(k string) string {
	if k == "NATS_URL" {
		return b.url
	}
	return ""
}

func (b *bundle) run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), args, b.getenv, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// rawDeadLetter stores a dead letter whose job bytes are data.
func (b *bundle) rawDeadLetter(t *testing.T, data []byte) uint64 {
	t.Helper()
	dl := events.DeadLetter{Version: events.Version, Reason: events.ReasonMalformed, Error: "events: job is not JSON",
		OriginalSubject: events.Subjects{}.Job("jsapi"), OriginalData: data, DeadAt: time.Now()}
	raw, _ := json.Marshal(dl)
	ack, err := b.js.Publish(t.Context(), events.Subjects{}.DeadLetter(events.ReasonMalformed), raw)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// TestList_collapsesRepeats: one order dead-lettered three times is one line
// with its count and sequences; --every-entry shows each.
func TestList_collapsesRepeats(t *testing.T) {
	b := setup(t)
	s1 := b.deadLetter(t, events.ReasonMaxDeliveries, "1900000109", "DUP1")
	b.deadLetter(t, events.ReasonRejected, "1900000109", "OTHER")
	s3 := b.deadLetter(t, events.ReasonMaxDeliveries, "1900000109", "DUP1")
	s4 := b.deadLetter(t, events.ReasonMaxDeliveries, "1900000109", "DUP1")
	code, out, errOut := b.run(t, "list")
	if code != 0 {
		t.Fatalf("list = %d: %s", code, errOut)
	}
	if n := strings.Count(out, "DUP1"); n != 1 {
		t.Errorf("list shows order DUP1 on %d lines, want 1:\n%s", n, out)
	}
	if !strings.Contains(out, "3 (seq "+itoa(s1)+","+itoa(s3)+","+itoa(s4)+")") || !strings.Contains(out, "4 dead letters, 2 orders") {
		t.Errorf("list does not count the repeats:\n%s", out)
	}
	_, out, _ = b.run(t, "list", "--json")
	var line listLine
	for l := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		if err := json.Unmarshal([]byte(l), &line); err != nil {
			t.Fatal(err)
		}
		if line.CombineOutTradeNo == "DUP1" && (line.Count != 3 || line.Seq != s4) {
			t.Errorf("list --json DUP1 = %+v, want count 3 and the newest seq %d", line, s4)
		}
	}
	if _, out, _ = b.run(t, "list", "--every-entry"); strings.Count(out, "DUP1") != 3 {
		t.Errorf("list --every-entry shows DUP1 %d times, want 3:\n%s", strings.Count(out, "DUP1"), out)
	}
}

// TestDelete: by sequence, by filter, with a dry run that deletes nothing.
func TestDelete(t *testing.T) {
	b := setup(t)
	a := b.deadLetter(t, events.ReasonRejected, "1900000109", "D1")
	b.deadLetter(t, events.ReasonMaxDeliveries, "1900000110", "D2")
	b.deadLetter(t, events.ReasonMaxDeliveries, "1900000110", "D3")
	b.deadLetter(t, events.ReasonMaxDeliveries, "1900000109", "D4")
	if code, _, errOut := b.run(t, "delete"); code != 2 || !strings.Contains(errOut, "select entries") {
		t.Errorf("delete without a selection = %d %q, want a usage error", code, errOut)
	}
	code, out, _ := b.run(t, "delete", "--mchid", "1900000110", "--dry-run")
	if code != 0 || !strings.Contains(out, "would delete 2") || len(b.scan(t, Filter{})) != 4 {
		t.Errorf("dry run = %d %q; entries left %d, want 4", code, out, len(b.scan(t, Filter{})))
	}
	if code, out, _ = b.run(t, "delete", "--seq", itoa(a)); code != 0 || !strings.Contains(out, "deleted seq="+itoa(a)) {
		t.Errorf("delete --seq = %d %q", code, out)
	}
	if code, out, _ = b.run(t, "delete", "--mchid", "1900000110", "--reason", "max_deliveries"); code != 0 || !strings.Contains(out, "deleted 2 dead letters") {
		t.Errorf("delete by filter = %d %q", code, out)
	}
	left := b.scan(t, Filter{})
	if len(left) != 1 {
		t.Fatalf("%d entries left, want D4 only", len(left))
	}
	if e, _ := b.tool.Get(t.Context(), left[0]); e.Letter.CombineOutTradeNo != "D4" {
		t.Errorf("left %s, want D4", e.Letter.CombineOutTradeNo)
	}
}

// TestInspect_neverPrintsOpenIDs: not in a job that is not JSON (its
// base64), not under keys spelled OpenID or openId, not in the error.
func TestInspect_neverPrintsOpenIDs(t *testing.T) {
	b := setup(t)
	const openid = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
	truncated := b.rawDeadLetter(t, []byte(`{"version":1,"request":{"combine_payer_info":{"openid":"`+openid+`"},"sub_orders":[`))
	spelled := b.rawDeadLetter(t, []byte(`{"version":1,"request":{"combine_payer_info":{"OpenID":"`+openid+`","openId":"`+openid+`"}}}`))
	bare := b.rawDeadLetter(t, []byte("garbage "+openid+" more"))
	for _, seq := range []uint64{truncated, spelled, bare} {
		code, out, errOut := b.run(t, "inspect", itoa(seq))
		if code != 0 {
			t.Fatalf("inspect %d = %d: %s", seq, code, errOut)
		}
		var got inspection
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatal(err)
		}
		decoded, _ := base64.StdEncoding.DecodeString(got.JobBase64)
		if strings.Contains(out, openid) || strings.Contains(string(decoded), openid) || strings.Contains(out, base64.StdEncoding.EncodeToString([]byte(openid))[:20]) {
			t.Errorf("inspect %d prints the openid (job_base64 decodes to %q):\n%s", seq, decoded, out)
		}
	}
	if _, out, _ := b.run(t, "inspect", "--reveal-personal-data", itoa(bare)); !strings.Contains(out, base64.StdEncoding.EncodeToString([]byte("garbage "+openid+" more"))) {
		t.Errorf("--reveal-personal-data hides the job:\n%s", out)
	}
}

// TestPauseResume: pause reaches a watching worker's switch, status shows
// the reason, resume clears it.
func TestPauseResume(t *testing.T) {
	b := setup(t)
	p, err := pipeline.NewPause(t.Context(), pipeline.PauseConfig{JetStream: b.js})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	if code, _, errOut := b.run(t, "pause"); code != 2 || !strings.Contains(errOut, "--reason is required") {
		t.Errorf("pause without a reason = %d %q", code, errOut)
	}
	if code, out, errOut := b.run(t, "pause", "--reason", "WeChat Pay incident", "--by", "ops"); code != 0 || !strings.Contains(out, "paused COMBINE_ORDER_JOBS/orderworker") {
		t.Fatalf("pause = %d %q %q", code, out, errOut)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !p.Paused() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !p.Paused() {
		t.Fatal("the worker's switch did not follow the pause")
	}
	if _, out, _ := b.run(t, "status"); !strings.Contains(out, "by ops: WeChat Pay incident") {
		t.Errorf("status = %q", out)
	}
	if code, out, _ := b.run(t, "resume"); code != 0 || !strings.Contains(out, "running") {
		t.Errorf("resume = %d %q", code, out)
	}
	for p.Paused() && time.Now().Before(deadline.Add(5*time.Second)) {
		time.Sleep(10 * time.Millisecond)
	}
	if p.Paused() {
		t.Error("the worker's switch did not follow the resume")
	}
}
