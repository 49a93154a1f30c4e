package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wxcombine/orderworker/loadgen"
)

// Call is one create request that the recording proxy forwarded from a
// worker to the simulator.
type Call struct {
	Order loadgen.OrderKey `json:"order"`
	// Instance names the worker process that sent it.
	Instance string `json:"instance"`
	// Start is when the request arrived, End when the proxy finished
	// answering it (or gave up).
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// Status is the simulator's HTTP status, 0 when it never answered (the
	// worker gave up first, as after a timeout-after-create fault).
	Status int `json:"status"`
	// Code is WeChat Pay's error code of a non-2xx answer with a body.
	Code string `json:"code,omitempty"`
	// Ref is the prepay_id, h5_url or code_url of a 2xx answer.
	Ref string `json:"ref,omitempty"`
	// Delivered reports that the whole answer was written back to the worker
	// before it gave up.
	Delivered bool `json:"delivered"`
	// Fault names the proxy's own fault on this call, if any: FaultWithheld
	// (the simulator's answer was withheld), FaultServiceUnavailable (503
	// answered by the proxy, never forwarded) or FaultClockSkew (the
	// Authorization timestamp was moved, as by a skewed clock).
	Fault string `json:"fault,omitempty"`
}

// The recording proxy's faults, as in Call.Fault and ProxyFaults.Counts.
const (
	FaultWithheld           = "withheld_answer"
	FaultServiceUnavailable = "service_unavailable_503"
	FaultClockSkew          = "clock_skew"
)

// ProxyFaults are the faults the recording proxy injects between the
// workers and the simulator.
type ProxyFaults struct {
	// Withhold selects orders whose every create is forwarded (the order is
	// committed at the simulator) and whose answer is withheld until the
	// worker gives up: unknown outcomes until the delivery limit.
	Withhold func(loadgen.OrderKey) bool
	// ServiceUnavailable reports whether to answer a create 503
	// SERVICE_UNAVAILABLE (as WeChat Pay's interface rules document) without
	// forwarding it; nil never.
	ServiceUnavailable func() bool
}

// Recorder is a reverse proxy between the workers and the simulator that
// records every create call with the worker that made it and what it got.
// Each worker instance gets its own listener, so a call is attributed to a
// process without trusting anything in the request. Everything else is
// forwarded untouched; the raw request target is kept byte for byte, as the
// signature covers it.
type Recorder struct {
	target string
	client *http.Client
	faults ProxyFaults
	// skew, when not zero, is added to every request's Authorization
	// timestamp (nanoseconds), re-signed by nobody: the simulator judges it.
	skew atomic.Int64

	mu      sync.Mutex
	calls   []Call
	servers []*http.Server
	counts  map[string]int
}

// NewRecorder answers a recorder forwarding to target, such as
// http://127.0.0.1:8090.
func NewRecorder(target string) *Recorder {
	return &Recorder{
		target: strings.TrimRight(target, "/"),
		client: &http.Client{Transport: &http.Transport{
			MaxIdleConns: 512, MaxIdleConnsPerHost: 512, IdleConnTimeout: 90 * time.Second,
			DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		}},
	}
}

// SetFaults sets the proxy's faults; call it before Listen.
func (r *Recorder) SetFaults(f ProxyFaults) { r.faults = f }

// SetClockSkew moves every request's Authorization timestamp by d from now
// on, as a worker whose clock is off by d would sign it; 0 ends the skew.
func (r *Recorder) SetClockSkew(d time.Duration) { r.skew.Store(int64(d)) }

// FaultCounts answers how many calls each proxy fault hit.
func (r *Recorder) FaultCounts() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.counts)
}

func (r *Recorder) count(kind string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.counts == nil {
		r.counts = map[string]int{}
	}
	r.counts[kind]++
}

// skewAuthorization answers h with its timestamp="…" moved by d.
func skewAuthorization(h string, d time.Duration) string {
	const param = `timestamp="`
	i := strings.Index(h, param)
	if i < 0 {
		return h
	}
	rest := h[i+len(param):]
	j := strings.IndexByte(rest, '"')
	if j < 0 {
		return h
	}
	ts, err := strconv.ParseInt(rest[:j], 10, 64)
	if err != nil {
		return h
	}
	return h[:i+len(param)] + strconv.FormatInt(ts+int64(d/time.Second), 10) + rest[j:]
}

// Listen starts a listener for one worker instance and answers its base
// URL.
func (r *Recorder) Listen(instance string) (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("chaos: proxy listen: %w", err)
	}
	srv := &http.Server{Handler: r.handler(instance), ReadHeaderTimeout: 10 * time.Second}
	r.mu.Lock()
	r.servers = append(r.servers, srv)
	r.mu.Unlock()
	go func() { _ = srv.Serve(l) }() // Owned by r; ends in Close.
	return "http://" + l.Addr().String(), nil
}

// Close stops every listener.
func (r *Recorder) Close() {
	r.mu.Lock()
	servers := r.servers
	r.servers = nil
	r.mu.Unlock()
	for _, s := range servers {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = s.Shutdown(ctx)
		cancel()
		_ = s.Close()
	}
}

// Calls answers a copy of the recorded create calls.
func (r *Recorder) Calls() []Call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Call(nil), r.calls...)
}

// hopHeaders are not forwarded (RFC 9110 §7.6.1).
var hopHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Te": true,
	"Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
}

// isCreate reports whether a request is a combine-order create:
// POST /v3/combine-transactions/{trade_type}.
func isCreate(req *http.Request) bool {
	rest, ok := strings.CutPrefix(req.URL.Path, "/v3/combine-transactions/")
	return ok && req.Method == http.MethodPost && rest != "" && !strings.Contains(rest, "/")
}

func (r *Recorder) handler(instance string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		call := Call{Instance: instance, Start: time.Now()}
		body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, 4<<20))
		if err != nil {
			return // the worker went away
		}
		create := isCreate(req)
		if create {
			var b struct {
				MchID      string `json:"combine_mchid"`
				OutTradeNo string `json:"combine_out_trade_no"`
			}
			_ = json.Unmarshal(body, &b)
			call.Order = loadgen.OrderKey{MchID: b.MchID, OutTradeNo: b.OutTradeNo}
		}
		defer func() {
			if create {
				call.End = time.Now()
				r.mu.Lock()
				r.calls = append(r.calls, call)
				r.mu.Unlock()
			}
		}()
		if create && r.faults.ServiceUnavailable != nil && r.faults.ServiceUnavailable() {
			call.Fault, call.Status, call.Code = FaultServiceUnavailable, http.StatusServiceUnavailable, "SERVICE_UNAVAILABLE"
			r.count(FaultServiceUnavailable)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, werr := io.WriteString(w, `{"code":"SERVICE_UNAVAILABLE","message":"服务不可用，请稍后重试"}`)
			call.Delivered = werr == nil && req.Context().Err() == nil
			return
		}
		//nolint:gosec // G704: the target is the simulator the harness started; only the path comes from the worker
		out, err := http.NewRequestWithContext(req.Context(), req.Method, r.target+req.RequestURI, bytes.NewReader(body))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		for k, v := range req.Header {
			if !hopHeaders[k] {
				out.Header[k] = v
			}
		}
		if d := time.Duration(r.skew.Load()); d != 0 {
			out.Header.Set("Authorization", skewAuthorization(req.Header.Get("Authorization"), d))
			if create {
				call.Fault = FaultClockSkew
			}
			r.count(FaultClockSkew)
		}
		resp, err := r.client.Do(out) //nolint:gosec // G704: see above
		if err != nil {
			if req.Context().Err() == nil {
				w.WriteHeader(http.StatusBadGateway)
			}
			return
		}
		defer resp.Body.Close()
		rb, err := io.ReadAll(resp.Body)
		if err != nil {
			return
		}
		call.Status = resp.StatusCode
		if create {
			var a struct {
				Code     string `json:"code"`
				PrepayID string `json:"prepay_id"`
				H5URL    string `json:"h5_url"`
				CodeURL  string `json:"code_url"`
			}
			_ = json.Unmarshal(rb, &a)
			if resp.StatusCode/100 == 2 {
				call.Ref = firstNonEmpty(a.PrepayID, a.H5URL, a.CodeURL)
			} else {
				call.Code = a.Code
			}
		}
		for k, v := range resp.Header {
			if !hopHeaders[k] {
				w.Header()[k] = v
			}
		}
		if create && resp.StatusCode/100 == 2 && r.faults.Withhold != nil && r.faults.Withhold(call.Order) {
			// The order is committed at the simulator; the worker never
			// learns it, as after a timeout.
			call.Fault = FaultWithheld
			r.count(FaultWithheld)
			<-req.Context().Done()
			return
		}
		// The worker may still be waiting only if it has not hung up yet.
		waiting := req.Context().Err() == nil
		w.WriteHeader(resp.StatusCode)
		_, werr := w.Write(rb)
		if f, ok := w.(http.Flusher); ok && werr == nil {
			f.Flush()
		}
		call.Delivered = waiting && werr == nil
	})
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}
