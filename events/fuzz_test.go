package events_test

import (
	"encoding/json"
	"errors"
	"os"
	"testing"

	"github.com/wxcombine/orderworker/events"
)

// FuzzDecodeJob checks that DecodeJob never panics, that every error is one
// of the three documented kinds, and that an accepted job survives a JSON
// round trip unchanged.
func FuzzDecodeJob(f *testing.F) {
	sample, err := os.ReadFile("testdata/job_jsapi.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sample)
	f.Add([]byte(`{"version":2}`))
	f.Add([]byte(`{"version":1,"trade_type":"app","request":{"sub_orders":null}}`))
	f.Add([]byte(`{"version":"1"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		job, err := events.DecodeJob(data, 4096)
		if err != nil {
			if !errors.Is(err, events.ErrMalformed) && !errors.Is(err, events.ErrTooLarge) && !errors.Is(err, events.ErrUnsupportedVersion) {
				t.Fatalf("DecodeJob() error = %v, want one of ErrMalformed, ErrTooLarge, ErrUnsupportedVersion", err)
			}
			return
		}
		if job.Version != events.Version || !job.TradeType.Valid() {
			t.Fatalf("DecodeJob() accepted version %d trade type %q", job.Version, job.TradeType)
		}
		again, err := json.Marshal(job)
		if err != nil {
			t.Fatalf("json.Marshal(accepted job): %v", err)
		}
		job2, err := events.DecodeJob(again, 1<<20)
		if err != nil {
			t.Fatalf("DecodeJob(re-encoded job) error = %v", err)
		}
		again2, _ := json.Marshal(job2)
		if string(again) != string(again2) {
			t.Fatalf("round trip changed the job:\n%s\n%s", again, again2)
		}
	})
}
