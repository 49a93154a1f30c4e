package main

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/events"
)

// Seed corpora live in testdata/fuzz/<FuzzName>/.

// FuzzDecodeEntry feeds arbitrary dead-letter bodies to the tool's
// decoding, its replay decision and the replay message it builds: nothing
// panics; a body that decodes re-encodes to the same letter; a replay
// message always carries the job's bytes, the new Nats-Msg-Id and where it
// came from, and never the producer's Nats-Msg-Id.
func FuzzDecodeEntry(f *testing.F) {
	good, _ := json.Marshal(events.DeadLetter{
		Version: 1, Reason: events.ReasonMaxDeliveries, Error: "RETRIES_EXHAUSTED", CombineMchID: "1900000109", CombineOutTradeNo: "P1",
		OriginalSubject: "combine.orders.create.jsapi", OriginalHeaders: map[string][]string{events.HeaderMsgID: {"1900000109:P1"}, "Correlation-Id": {"c1"}},
		OriginalData: []byte(`{"version":1}`), StreamSequence: 7, DeliveryCount: 10,
	})
	f.Add(good, false)
	f.Add([]byte(`{"reason":"malformed","original_data":"bm90IGpzb24="}`), true)
	f.Add([]byte(`{"original_headers":{"Nats-Msg-Id":[]},"original_subject":"x","original_data":"AA=="}`), true)
	f.Add([]byte(`{"original_data":"!!"}`), false)
	f.Add([]byte(`null`), false)
	f.Fuzz(func(t *testing.T, data []byte, force bool) {
		tool := &Tool{}
		e := decodeEntry(&jetstream.RawStreamMsg{Subject: "combine.orders.deadletter.x", Sequence: 42, Data: data, Time: time.Unix(1_700_000_000, 0)})
		if e.Seq != 42 {
			t.Fatalf("Seq = %d, want 42", e.Seq)
		}
		why := tool.skip(e, force)
		if e.DecodeErr != nil {
			if why == "" {
				t.Fatalf("an undecodable entry would be replayed: %v", e.DecodeErr)
			}
			return
		}
		again, err := json.Marshal(e.Letter)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		var back events.DeadLetter
		if err := json.Unmarshal(again, &back); err != nil {
			t.Fatalf("decode re-encoded letter: %v", err)
		}
		if !reflect.DeepEqual(normalize(back), normalize(e.Letter)) {
			t.Fatalf("round trip changed the letter:\n%+v\n%+v", e.Letter, back)
		}
		if why != "" {
			return
		}
		m := replayMsg(e, "replay:S:42", "S")
		if !bytes.Equal(m.Data, e.Letter.OriginalData) || m.Subject != e.Letter.OriginalSubject {
			t.Fatalf("replay message %s %q, want %s %q", m.Subject, m.Data, e.Letter.OriginalSubject, e.Letter.OriginalData)
		}
		if got := m.Header.Values(events.HeaderMsgID); len(got) != 1 || got[0] != "replay:S:42" {
			t.Fatalf("replay Nats-Msg-Id = %q, want exactly the replay's", got)
		}
		if got := m.Header.Get(HeaderReplayedFrom); got != "S:42" {
			t.Fatalf("%s = %q, want S:42", HeaderReplayedFrom, got)
		}
	})
}

// normalize makes nil and empty equal, as JSON does.
func normalize(d events.DeadLetter) events.DeadLetter {
	if len(d.OriginalData) == 0 {
		d.OriginalData = nil
	}
	if len(d.OriginalHeaders) == 0 {
		d.OriginalHeaders = nil
	}
	for k, v := range d.OriginalHeaders {
		if len(v) == 0 {
			d.OriginalHeaders[k] = nil
		}
	}
	return d
}

// FuzzRedactJSON: inspect's redaction never lets a personal value through:
// in what it answers, every openid, sub_openid and payer_openid string at
// any depth is "REDACTED"; and it answers JSON exactly for JSON input.
func FuzzRedactJSON(f *testing.F) {
	f.Add([]byte(`{"request":{"combine_payer_info":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},"sub_orders":[{"sub_openid":"o2"}]}}`))
	f.Add([]byte(`[{"payer_openid":"x"},{"openid":1}]`))
	f.Add([]byte(`{"openid":"a","openid":"b"}`))
	f.Add([]byte(`"openid"`))
	f.Fuzz(func(t *testing.T, data []byte) {
		out, ok := redactJSON(data, false)
		if ok != json.Valid(data) {
			t.Fatalf("redactJSON ok = %v for valid JSON %v", ok, json.Valid(data))
		}
		if !ok {
			return
		}
		var v any
		if err := json.Unmarshal(out, &v); err != nil {
			t.Fatalf("redacted output is not JSON: %v", err)
		}
		if leak := personal(v); leak != "" {
			t.Fatalf("personal value %q left in %s", leak, out)
		}
	})
}

// personal answers a personal string value other than REDACTED in v, or "".
func personal(v any) string {
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			if s, isString := val.(string); isString && isPersonalKey(k) && s != "REDACTED" {
				return s
			}
			if s := personal(val); s != "" {
				return s
			}
		}
	case []any:
		for _, val := range x {
			if s := personal(val); s != "" {
				return s
			}
		}
	}
	return ""
}
