package securitytest_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxcombine/orderworker/internal/testenv"
	"github.com/wxcombine/orderworker/wechat"
)

// wechatDeadline is how long WeChat Pay waits for a notification's answer.
const wechatDeadline = 5 * time.Second

// Flood bounds: loopback only, a few seconds, a capped number of requests.
const (
	floodSenders  = 256
	floodDuration = 4 * time.Second
	floodCap      = 40_000
	genuineEvery  = 100 * time.Millisecond
)

// forgery builds one forged request to base.
type forgery func(base string) *http.Request

func TestNotifier_genuineAnsweredUnderForgedFlood(t *testing.T) {
	s := newSetup(t)
	n := testenv.StartNATS(t)
	ensureEventsStream(t, n.URL)
	base, _ := s.startNotifier(t, n.URL, "LOG_LEVEL=info")
	genuine := s.paidOrders(t, 2*int(floodDuration/genuineEvery)+10, "FLD")

	known := s.keys.Platform.PubKeyID
	notifyPath := "/v3/notify/" + s.mchID
	big := bytes.Repeat([]byte(`{"id":"x","resource":{"ciphertext":"AAAA"}}`), 60<<10/44)
	junkSig := make([]byte, 256)
	_, _ = rand.Read(junkSig)
	headers := func(r *http.Request, serial, sig string, ts int64) {
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set(wechat.HeaderSerial, serial)
		r.Header.Set(wechat.HeaderSignature, sig)
		r.Header.Set(wechat.HeaderTimestamp, strconv.FormatInt(ts, 10))
		r.Header.Set(wechat.HeaderNonce, "FORGEDNONCEFORGEDNONCE12345678")
	}
	cheap := []forgery{
		func(b string) *http.Request { // no Wechatpay-* headers
			r, _ := http.NewRequest(http.MethodPost, b+notifyPath, bytes.NewReader(big[:1024]))
			return r
		},
		func(b string) *http.Request { // unknown serial
			r, _ := http.NewRequest(http.MethodPost, b+notifyPath, bytes.NewReader(big))
			headers(r, "PUB_KEY_ID_0000000000000000000000000000", base64.StdEncoding.EncodeToString(junkSig), time.Now().Unix())
			return r
		},
		func(b string) *http.Request { // stale timestamp
			r, _ := http.NewRequest(http.MethodPost, b+notifyPath, bytes.NewReader(big))
			headers(r, known, base64.StdEncoding.EncodeToString(junkSig), time.Now().Add(-time.Hour).Unix())
			return r
		},
		func(b string) *http.Request { // signature probe
			r, _ := http.NewRequest(http.MethodPost, b+notifyPath, bytes.NewReader(big))
			headers(r, known, wechat.SignTestPrefix+"probe", time.Now().Unix())
			return r
		},
		func(b string) *http.Request { // unknown merchant
			r, _ := http.NewRequest(http.MethodPost, b+"/v3/notify/1999999999", bytes.NewReader(big))
			headers(r, known, base64.StdEncoding.EncodeToString(junkSig), time.Now().Unix())
			return r
		},
		func(b string) *http.Request { // oversized body
			r, _ := http.NewRequest(http.MethodPost, b+notifyPath, bytes.NewReader(append(big, big...)))
			headers(r, known, base64.StdEncoding.EncodeToString(junkSig), time.Now().Unix())
			return r
		},
	}
	// Expensive forgeries look right until the RSA signature is checked
	// over a 60 KiB body: the serial is the public one.
	expensive := []forgery{func(b string) *http.Request {
		r, _ := http.NewRequest(http.MethodPost, b+notifyPath, bytes.NewReader(big))
		headers(r, known, base64.StdEncoding.EncodeToString(junkSig), time.Now().Unix())
		return r
	}}

	next := 0
	for _, phase := range []struct {
		name      string
		forgeries []forgery
		want2xx   bool // every genuine notification must be accepted
	}{
		{"cheap forgeries (rejected before the body is read)", cheap, true},
		// Forgeries that carry the real serial pass the header checks; the
		// notifier's bounded waits for capacity keep them from turning
		// genuine notifications away.
		{"forgeries with the real serial (RSA verification over 60 KiB)", expensive, true},
	} {
		t.Run(phase.name, func(t *testing.T) {
			r := flood(t, base, notifyPath, phase.forgeries, func() (http.Header, []byte) {
				tx := genuine[next%len(genuine)]
				next++
				return s.notification(t, tx, fmt.Sprintf("NOTIFY-%s-%d", tx.CombineOutTradeNo, next))
			})
			t.Logf("forged: %d requests from %d senders in %s (%.0f/s), answers %v", r.forged, floodSenders, r.elapsed.Round(time.Millisecond), float64(r.forged)/r.elapsed.Seconds(), r.forgedStatus)
			t.Logf("genuine: %d sent, answers %v; latency p50 %s p99 %s max %s", len(r.latencies), r.genuineStatus,
				pct(r.latencies, 0.50), pct(r.latencies, 0.99), pct(r.latencies, 1))
			if r.forgedStatus[200]+r.forgedStatus[204] > 0 {
				t.Errorf("a forged notification was accepted: %v", r.forgedStatus)
			}
			for i, d := range r.latencies {
				if d > wechatDeadline || r.genuineErr[i] != nil {
					t.Errorf("genuine notification %d: answered after %s (err %v), want within %s", i, d, r.genuineErr[i], wechatDeadline)
				}
			}
			ok := r.genuineStatus[200] + r.genuineStatus[204]
			if phase.want2xx && ok != len(r.latencies) {
				t.Errorf("genuine notifications accepted: %d of %d (%v), want all", ok, len(r.latencies), r.genuineStatus)
			}
			if !phase.want2xx {
				t.Logf("genuine notifications accepted at once: %d of %d; the others were answered 503 (WeChat Pay retries them)", ok, len(r.latencies))
			}
		})
	}
}

type floodResult struct {
	forged        int
	elapsed       time.Duration // from the first forged request to the last answer
	forgedStatus  map[int]int
	latencies     []time.Duration
	genuineErr    []error
	genuineStatus map[int]int
}

// flood sends forgeries from floodSenders goroutines for floodDuration
// (at most floodCap requests) while one client sends a genuine
// notification every genuineEvery and times its answer.
func flood(t *testing.T, base, notifyPath string, forgeries []forgery, genuine func() (http.Header, []byte)) floodResult {
	t.Helper()
	res := floodResult{forgedStatus: map[int]int{}, genuineStatus: map[int]int{}}
	floodClient := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxConnsPerHost: floodSenders, MaxIdleConnsPerHost: floodSenders}}
	genuineClient := &http.Client{Timeout: 2 * wechatDeadline, Transport: &http.Transport{}}
	var (
		mu    sync.Mutex
		count atomic.Int64
		wg    sync.WaitGroup
	)
	begin := time.Now()
	stop := begin.Add(floodDuration)
	for i := range floodSenders {
		wg.Add(1)
		go func() { // Owned by flood; ends at stop or at floodCap.
			defer wg.Done()
			for j := i; time.Now().Before(stop) && count.Add(1) <= floodCap; j++ {
				resp, err := floodClient.Do(forgeries[j%len(forgeries)](base))
				status := -1
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					status = resp.StatusCode
				}
				mu.Lock()
				res.forged++
				res.forgedStatus[status]++
				mu.Unlock()
			}
		}()
	}
	time.Sleep(200 * time.Millisecond) // let the flood build up
	for time.Now().Before(stop) {
		h, body := genuine()
		req, _ := http.NewRequest(http.MethodPost, base+notifyPath, bytes.NewReader(body))
		req.Header = h
		start := time.Now()
		resp, err := genuineClient.Do(req)
		d := time.Since(start)
		status := -1
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			status = resp.StatusCode
		}
		res.latencies = append(res.latencies, d)
		res.genuineErr = append(res.genuineErr, err)
		res.genuineStatus[status]++
		time.Sleep(max(genuineEvery-d, 0))
	}
	wg.Wait()
	res.elapsed = time.Since(begin)
	floodClient.CloseIdleConnections()
	return res
}

func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(p*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)].Round(100 * time.Microsecond)
}
