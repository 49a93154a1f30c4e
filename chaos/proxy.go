package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
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

	mu      sync.Mutex
	calls   []Call
	servers []*http.Server
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
