package pipeline_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/internal/testenv"
	"github.com/wxcombine/orderworker/wechat"
	"github.com/wxcombine/orderworker/wechat/wechatsim"
	"github.com/wxcombine/orderworker/wechat/wechatsim/contract"
)

// The seeds' second merchant number; the examples use it and testMchID,
// both bound to testAppID.
const seedMchID = "1230000109"

// recorder keeps the bodies of the create requests the worker sends.
type recorder struct {
	mu     sync.Mutex
	bodies map[string][]byte // by combine_out_trade_no
	next   http.RoundTripper
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPost && req.Body != nil && !strings.HasSuffix(req.URL.Path, "/close") {
		b, err := io.ReadAll(req.Body)
		if err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(bytes.NewReader(b))
		var v struct {
			No string `json:"combine_out_trade_no"`
		}
		_ = json.Unmarshal(b, &v)
		r.mu.Lock()
		r.bodies[v.No] = b
		r.mu.Unlock()
	}
	return r.next.RoundTrip(req)
}

func (r *recorder) body(no string) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bodies[no]
}

// newContractEnv is newEnv with a simulator and client that know both
// merchants of the examples, and a recorder on the client's transport.
func newContractEnv(t *testing.T, flavour wechat.Flavour) (*env, *recorder) {
	t.Helper()
	e := &env{t: t, flavour: flavour, nats: testenv.StartNATS(t), redis: testenv.StartRedis(t)}
	p := testPlatform(t)
	var sims []wechatsim.MerchantConfig
	var clients []*wechat.Merchant
	for _, id := range []string{testMchID, seedMchID} {
		mc, m, err := wechatsim.GenerateMerchant(p, id, testAppID)
		if err != nil {
			t.Fatal(err)
		}
		sims, clients = append(sims, mc), append(clients, m)
	}
	e.merchant = clients[0]
	var err error
	e.sim, err = wechatsim.New(wechatsim.Config{Flavour: flavour, Merchants: sims, Platform: p, Seed: 42})
	if err != nil {
		t.Fatal(err)
	}
	base, err := e.sim.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.sim.Close)
	rec := &recorder{bodies: map[string][]byte{}, next: http.DefaultTransport}
	e.client, err = wechat.New(wechat.Config{BaseURL: base, Merchants: clients, Flavour: flavour, HTTPClient: &http.Client{Transport: rec}})
	if err != nil {
		t.Fatal(err)
	}
	e.nc, err = nats.Connect(e.nats.URL, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.nc.Close)
	e.js, err = jetstream.New(e.nc)
	if err != nil {
		t.Fatal(err)
	}
	return e, rec
}

// withoutEmpty drops empty strings from a decoded JSON value: an empty
// optional string means "absent", and the client omits it.
func withoutEmpty(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, val := range x {
			if s, ok := val.(string); ok && s == "" {
				continue
			}
			out[k] = withoutEmpty(val)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, val := range x {
			out[i] = withoutEmpty(val)
		}
		return out
	}
	return v
}

// TestRunner_contractExamples: jobs whose request is, byte for byte, an
// example request of the seeds or the OpenAPI files go through the worker
// against the simulator. The examples the contract accepts become orders,
// sent unchanged; the seeds' examples as published, which break their own
// page's rules, fail naming the field, and the simulator sees no create.
// Only combine_out_trade_no is made unique per job (examples share one),
// by a prefix in its alphabet.
func TestRunner_contractExamples(t *testing.T) {
	t.Parallel()
	seeds, err := contract.SeedExamples()
	if err != nil {
		t.Fatal(err)
	}
	oapi, err := contract.OpenAPIExamples()
	if err != nil {
		t.Fatal(err)
	}
	byFlavour := map[wechat.Flavour][]contract.Example{}
	for _, x := range append(seeds, oapi...) {
		byFlavour[wechat.Flavour(x.Flavour)] = append(byFlavour[wechat.Flavour(x.Flavour)], x)
	}
	created, refused := 0, 0
	var mu sync.Mutex
	for _, f := range []wechat.Flavour{wechat.FlavourMerchant, wechat.FlavourPartner, wechat.FlavourEcommerce, wechat.FlavourIndividual} {
		t.Run(string(f), func(t *testing.T) {
			e, rec := newContractEnv(t, f)
			e.startWorker(workerOpts{})
			type sent struct {
				x   contract.Example
				no  string
				req map[string]any
			}
			var jobs []sent
			for i, x := range byFlavour[f] {
				var req map[string]any
				if err := json.Unmarshal(x.Body, &req); err != nil {
					t.Fatal(err)
				}
				no := fmt.Sprintf("E%02d%s", i, req["combine_out_trade_no"])
				body := bytes.Replace(x.Body, fmt.Appendf(nil, "%q", req["combine_out_trade_no"]), fmt.Appendf(nil, "%q", no), 1)
				req["combine_out_trade_no"] = no
				job := fmt.Appendf(nil, `{"version":%d,"correlation_id":"contract-%d","created_at":"2025-01-16T02:00:00Z","trade_type":%q,"flavour":%q,"request":%s}`,
					events.Version, i, x.TradeType, x.Flavour, body)
				e.publish((events.Subjects{}).Job(wechat.TradeType(x.TradeType)), job, events.JobMsgID(fmt.Sprint(req["combine_mchid"]), no))
				jobs = append(jobs, sent{x, no, req})
			}
			o := e.waitFor(60*time.Second, "one outcome per example", func(o outcomes) bool {
				return len(o.created)+len(o.failed) == len(jobs)
			})
			for _, j := range jobs {
				name := j.x.Name + " [" + j.x.TradeType + "]"
				mch := fmt.Sprint(j.req["combine_mchid"])
				if j.x.Field != "" {
					fails := o.failed[j.no]
					if len(fails) != 1 || len(o.created[j.no]) != 0 {
						t.Errorf("%s: %d failures, %d created, want one failure", name, len(fails), len(o.created[j.no]))
						continue
					}
					if fl := fails[0]; fl.Field != j.x.Field && !strings.Contains(fl.Message, j.x.Field) {
						t.Errorf("%s: failure %s %q field %q, want it to name %s", name, fl.Code, fl.Message, fl.Field, j.x.Field)
					}
					if info, ok := e.sim.Order(mch, j.no); ok && info.CreateCalls != 0 {
						t.Errorf("%s: the worker sent a request it should have refused", name)
					}
					mu.Lock()
					refused++
					mu.Unlock()
					continue
				}
				evs := o.created[j.no]
				if len(evs) != 1 || len(o.failed[j.no]) != 0 {
					t.Errorf("%s: %d created, failures %+v, want one prepay.created", name, len(evs), o.failed[j.no])
					continue
				}
				info, ok := e.sim.Order(mch, j.no)
				// A slow answer may be retried (same parameters, same
				// answer): one distinct answer, whatever the call count.
				if !ok || info.Answer == nil || info.DistinctSuccesses() != 1 ||
					evs[0].PrepayID+evs[0].H5URL+evs[0].CodeURL != info.Answer.PrepayID+info.Answer.H5URL+info.Answer.CodeURL {
					t.Errorf("%s: event %+v, simulator %+v: want the simulator's one answer", name, evs[0], info)
				}
				var got any
				if err := json.Unmarshal(rec.body(j.no), &got); err != nil {
					t.Errorf("%s: recorded body: %v", name, err)
					continue
				}
				if want := withoutEmpty(any(j.req)); !reflect.DeepEqual(got, want) {
					t.Errorf("%s: the worker sent\n%s\nwant the job's request\n%s", name, rec.body(j.no), mustJSON(t, want))
				}
				mu.Lock()
				created++
				mu.Unlock()
			}
			if len(o.deadLetters) != refusedIn(jobs, func(s sent) bool { return s.x.Field != "" }) {
				t.Errorf("%d dead letters, want one per refused example", len(o.deadLetters))
			}
		})
	}
	t.Logf("contract examples end to end: %d created through the worker, %d refused naming the field", created, refused)
}

// refusedIn counts the elements of s that keep reports true for.
func refusedIn[T any](s []T, keep func(T) bool) int {
	n := 0
	for _, v := range s {
		if keep(v) {
			n++
		}
	}
	return n
}
