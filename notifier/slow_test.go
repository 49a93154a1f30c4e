package notifier_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wxcombine/orderworker/metrics"
	"github.com/wxcombine/orderworker/notifier"
	"github.com/wxcombine/orderworker/wechat"
)

// slowConnections is how many slow senders attack at once.
const slowConnections = 300

// TestServer_slowSenders: 300 connections drip their headers (a real
// serial, a current timestamp, a plausible signature) and then their bodies
// a byte at a time, reconnecting whenever the server cuts them off, against
// the public server exactly as cmd/notifier builds it (notifier.NewServer,
// default limits) on loopback. Genuine notifications sent meanwhile must
// get a 2xx at least 95% of the time. Before bodies were read under their
// own deadline ahead of admission, each slow body held one of the 256
// admission places for the server's whole ReadTimeout, and most genuine
// notifications were answered 503.
func TestServer_slowSenders(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 300 slow connections for several seconds")
	}
	b := setup(t, nil)
	reg := prometheus.NewRegistry()
	h, err := notifier.New(notifier.Config{
		Merchants: []*wechat.Merchant{b.keys.merchant()}, Publisher: b.js, PublishTimeout: 2 * time.Second,
		Metrics: metrics.NewNotifier(reg),
	})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := notifier.NewServer(l.Addr().String(), h, log.New(&bytes.Buffer{}, "", 0))
	go func() { _ = srv.Serve(l) }() // Owned by the test: ends on Close below.
	t.Cleanup(func() { _ = srv.Close() })
	addr := l.Addr().String()

	ctx, stop := context.WithCancel(t.Context())
	var (
		wg            sync.WaitGroup
		dials, cutOff atomic.Int64
		headersDone   atomic.Int64
		template      = notification(t, b.keys.pubKey, testPubKeyID, b.keys.apiV3, "EV-SLOW", paidOrder("SLOW"), time.Now())
		lines         = requestLines(template)
	)
	for range slowConnections {
		wg.Add(1)
		go func() { // Ends when ctx does.
			defer wg.Done()
			for ctx.Err() == nil {
				dials.Add(1)
				if dripOnce(ctx, addr, lines, template.body, &headersDone) {
					cutOff.Add(1)
				}
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond) // let the slow senders reach their bodies

	const genuine = 40
	ok := 0
	var failures []string
	for i := range genuine {
		no := "G" + strconv.Itoa(i)
		n := notification(t, b.keys.pubKey, testPubKeyID, b.keys.apiV3, "EV-"+no, paidOrder(no), time.Now())
		status, body := post(ctx, "http://"+addr+notifier.PathPrefix+testMchID, n)
		if status/100 == 2 {
			ok++
		} else {
			failures = append(failures, fmt.Sprintf("%d %s", status, body))
		}
		time.Sleep(100 * time.Millisecond)
	}
	stop()
	_ = srv.Close() // ends the slow connections' reads
	wg.Wait()
	rate := float64(ok) / genuine
	t.Logf("%d slow connections (%d dials, %d reached their body, %d cut off by the server): %d of %d genuine notifications got 2xx (%.1f%%)",
		slowConnections, dials.Load(), headersDone.Load(), cutOff.Load(), ok, genuine, 100*rate)
	if headersDone.Load() < slowConnections {
		t.Errorf("only %d slow senders got past their headers; the attack did not take place", headersDone.Load())
	}
	if rate < 0.95 {
		t.Errorf("genuine success %.1f%% < 95%% under %d slow connections; failures: %v", 100*rate, slowConnections, failures)
	}
}

// requestLines answers the request line and header lines of a notification.
func requestLines(n signed) []string {
	lines := []string{
		"POST " + notifier.PathPrefix + testMchID + " HTTP/1.1\r\n",
		"Host: notify.example\r\n",
		"Content-Type: application/json\r\n",
		"Content-Length: " + strconv.Itoa(len(n.body)) + "\r\n",
	}
	for _, k := range []string{wechat.HeaderTimestamp, wechat.HeaderNonce, wechat.HeaderSerial, wechat.HeaderSignature} {
		lines = append(lines, k+": "+n.header.Get(k)+"\r\n")
	}
	return append(lines, "\r\n")
}

// dripOnce sends the headers a line per 150 ms and then the body a byte per
// 200 ms until the server closes the connection or ctx ends; it reports
// whether the server cut it off.
func dripOnce(ctx context.Context, addr string, lines []string, body []byte, headersDone *atomic.Int64) bool {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		time.Sleep(50 * time.Millisecond)
		return false
	}
	defer c.Close()
	go func() { <-ctx.Done(); _ = c.Close() }() // Owned by dripOnce: ends with ctx (or after c is closed).
	tick := func(d time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
			return true
		}
	}
	for _, l := range lines {
		if _, err := c.Write([]byte(l)); err != nil {
			return ctx.Err() == nil
		}
		if !tick(150 * time.Millisecond) {
			return false
		}
	}
	headersDone.Add(1)
	for i := range body {
		if _, err := c.Write(body[i : i+1]); err != nil {
			return ctx.Err() == nil
		}
		if !tick(200 * time.Millisecond) {
			return false
		}
		// An answer (408) means the server gave up on us.
		_ = c.SetReadDeadline(time.Now().Add(time.Millisecond))
		var one [1]byte
		if n, err := c.Read(one[:]); n > 0 || err != nil && !errors.Is(err, errTimeout(err)) {
			return ctx.Err() == nil
		}
	}
	return false
}

// errTimeout answers err itself when it is a timeout, so errors.Is matches
// it; otherwise a sentinel that matches nothing.
func errTimeout(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return err
	}
	return errNever
}

var errNever = errors.New("never")

// post sends n and answers the status and body (0 on a transport error).
func post(ctx context.Context, url string, n signed) (int, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(n.body))
	if err != nil {
		return 0, err.Error()
	}
	req.Header = n.header.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	return resp.StatusCode, buf.String()
}
