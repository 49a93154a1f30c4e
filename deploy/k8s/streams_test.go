package k8s_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/internal/testenv"
	"github.com/wxcombine/orderworker/pipeline"
)

var update = flag.Bool("update", false, "rewrite deploy/nats/ from the prod overlay")

// natsDir holds the stream and consumer definitions for the nats CLI.
var natsDir = filepath.Join(repoRoot, "deploy", "nats")

// prodTopology answers the streams and consumer the prod overlay's workers
// set up or verify, from their effective configuration.
func prodTopology(t *testing.T) pipeline.Topology {
	t.Helper()
	w, _ := workerOf(t, render(t, "prod"))
	dur := func(k string) time.Duration {
		d, err := time.ParseDuration(w.effective(k))
		if err != nil {
			t.Fatalf("%s=%q: %v", k, w.effective(k), err)
		}
		return d
	}
	num := func(k string) int {
		if v := w.effective(k); v != "" || k != "MAX_JOB_BYTES" {
			return atoi(t, k, v)
		}
		return events.MaxJobSize // the default is strconv.Itoa(events.MaxJobSize)
	}
	var backoff []time.Duration
	if v := w.effective("CONSUMER_BACKOFF"); v != "" {
		for p := range strings.SplitSeq(v, ",") {
			d, err := time.ParseDuration(strings.TrimSpace(p))
			if err != nil {
				t.Fatal(err)
			}
			backoff = append(backoff, d)
		}
	}
	storage := jetstream.FileStorage
	if w.effective("STREAM_STORAGE") == "memory" {
		storage = jetstream.MemoryStorage
	}
	return pipeline.Topology{
		Subjects:   events.Subjects{Prefix: w.effective("SUBJECT_PREFIX")},
		JobsStream: w.effective("JOBS_STREAM"), EventsStream: w.effective("EVENTS_STREAM"), DeadLettersStream: w.effective("DEADLETTERS_STREAM"),
		Consumer: w.effective("CONSUMER_NAME"), Replicas: num("STREAM_REPLICAS"), Storage: storage,
		JobsMaxAge: dur("JOBS_MAX_AGE"), EventsMaxAge: dur("EVENTS_MAX_AGE"), DeadLettersMaxAge: dur("DEADLETTERS_MAX_AGE"),
		DuplicateWindow: dur("DUPLICATE_WINDOW"), MaxJobBytes: num("MAX_JOB_BYTES"),
		AckWait: dur("ACK_WAIT"), MaxDeliver: num("MAX_DELIVER"), MaxAckPending: num("MAX_ACK_PENDING"), BackOff: backoff,
	}
}

// TestStreamFiles: deploy/nats/ holds exactly the streams and consumer the
// prod overlay's workers expect, in the JetStream API's JSON (nats stream
// add --config, nats consumer add --config), so a GitOps-managed NATS with
// STREAMS_MANAGE=false passes the workers' verification.
func TestStreamFiles(t *testing.T) {
	top := prodTopology(t)
	want := map[string]any{}
	for _, s := range top.Streams() {
		want[s.Name+".json"] = s
	}
	want[top.Streams()[0].Name+"."+top.ConsumerConfig().Durable+".json"] = top.ConsumerConfig()
	adv := top.AdvisoryStream()
	want[adv.Name+".json"] = adv
	want[adv.Name+"."+top.AdvisoryConsumer().Durable+".json"] = top.AdvisoryConsumer()
	if *update {
		if err := os.MkdirAll(natsDir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, v := range want {
			b, _ := json.MarshalIndent(v, "", "  ")
			if err := os.WriteFile(filepath.Join(natsDir, name), append(b, '\n'), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	entries, err := os.ReadDir(natsDir)
	if err != nil {
		t.Fatalf("deploy/nats: %v (go test ./deploy/k8s -run TestStreamFiles -update writes it)", err)
	}
	seen := map[string]bool{}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		seen[e.Name()] = true
		w, ok := want[e.Name()]
		if !ok {
			t.Errorf("deploy/nats/%s defines nothing the workers use", e.Name())
			continue
		}
		raw, err := os.ReadFile(filepath.Join(natsDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		// Decode into the type and re-encode both, so only values count.
		var got any
		switch w.(type) {
		case jetstream.StreamConfig:
			var s jetstream.StreamConfig
			err = json.Unmarshal(raw, &s)
			got = s
		default:
			var c jetstream.ConsumerConfig
			err = json.Unmarshal(raw, &c)
			got = c
		}
		if err != nil {
			t.Errorf("deploy/nats/%s: %v", e.Name(), err)
			continue
		}
		gb, _ := json.Marshal(got)
		wb, _ := json.Marshal(w)
		if !bytes.Equal(gb, wb) {
			t.Errorf("deploy/nats/%s differs from the prod overlay's configuration:\n got %s\nwant %s", e.Name(), gb, wb)
		}
	}
	for name := range want {
		if !seen[name] {
			t.Errorf("deploy/nats/%s is missing", name)
		}
	}
	if js := top.Streams()[0]; js.MaxMsgSize != int32(top.MaxJobBytes+pipeline.JobHeaderRoom) {
		t.Errorf("jobs stream max_msg_size %d, want MAX_JOB_BYTES %d + %d", js.MaxMsgSize, top.MaxJobBytes, pipeline.JobHeaderRoom)
	}
	applyAndVerify(t, top)
	t.Logf("deploy/nats: %d files, jobs max_msg_size %s", len(want), strconv.Itoa(int(top.Streams()[0].MaxMsgSize)))
}

// applyAndVerify creates the streams and the consumer from the files
// through the JetStream API, as the nats CLI does (with one replica: the
// test server is one node), and checks that a worker with
// STREAMS_MANAGE=false accepts them.
func applyAndVerify(t *testing.T, top pipeline.Topology) {
	t.Helper()
	ns := testenv.StartNATS(t)
	nc, err := nats.Connect(ns.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	oneReplica := func(raw []byte) []byte {
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		m["num_replicas"] = 1
		b, _ := json.Marshal(m)
		return b
	}
	request := func(subject string, body []byte) {
		resp, err := nc.Request(subject, body, 5*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", subject, err)
		}
		var r struct {
			Error *struct{ Description string } `json:"error"`
		}
		_ = json.Unmarshal(resp.Data, &r)
		if r.Error != nil {
			t.Fatalf("%s: %s", subject, r.Error.Description)
		}
	}
	for _, s := range top.Streams() {
		raw, err := os.ReadFile(filepath.Join(natsDir, s.Name+".json"))
		if err != nil {
			t.Fatal(err)
		}
		request("$JS.API.STREAM.CREATE."+s.Name, oneReplica(raw))
	}
	c := top.ConsumerConfig()
	raw, err := os.ReadFile(filepath.Join(natsDir, top.Streams()[0].Name+"."+c.Durable+".json"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]any{"stream_name": top.Streams()[0].Name, "config": json.RawMessage(oneReplica(raw)), "action": "create"})
	request("$JS.API.CONSUMER.CREATE."+top.Streams()[0].Name+"."+c.Durable, body)
	js, _ := jetstream.New(nc)
	one := top
	one.Replicas = 1
	if _, err := one.Ensure(t.Context(), js, pipeline.StreamsVerify); err != nil {
		t.Errorf("a worker with STREAMS_MANAGE=false refuses the streams made from deploy/nats: %v", err)
	}
}
