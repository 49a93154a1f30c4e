package wechatsim_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wxcombine/orderworker/wechat"
	"github.com/wxcombine/orderworker/wechat/wechatsim"
)

// BenchmarkCreate measures distinct signed creates per second through a
// real loopback listener, faults off.
//
//   - client: the wechat client signs every request (two RSA signatures per
//     create share the CPU: the client's and the simulator's).
//   - presigned: requests are signed before the timer starts, so the figure
//     is the simulator's own capacity (verify, validate, store, sign).
//   - presigned-1024: the same with a 1024-bit platform key (GeneratePlatform(1024),
//     wechatsim -platform-key-bits 1024), for load tests.
func BenchmarkCreate(b *testing.B) {
	b.Run("client", func(b *testing.B) {
		e := newEnv(b, wechatsim.Config{})
		var seq atomic.Int64
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				no := "B" + strconv.FormatInt(time.Now().UnixNano(), 36) + strconv.FormatInt(seq.Add(1), 36)
				if _, err := e.client.CreateCombineOrder(b.Context(), wechat.TradeTypeJSAPI, merchantOrder(no, "")); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "creates/s")
	})
	for _, bits := range []int{2048, 1024} {
		name := "presigned"
		if bits != 2048 {
			name = fmt.Sprintf("presigned-%d", bits)
		}
		b.Run(name, func(b *testing.B) { benchmarkPresigned(b, bits) })
	}
}

func benchmarkPresigned(b *testing.B, bits int) {
	f, err := keys()
	if err != nil {
		b.Fatal(err)
	}
	p := f.platform
	if bits != 2048 {
		if p, err = wechatsim.GeneratePlatform(bits); err != nil {
			b.Fatal(err)
		}
	}
	s, err := wechatsim.New(wechatsim.Config{Platform: p, Merchants: f.sim})
	if err != nil {
		b.Fatal(err)
	}
	base, err := s.Start("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.Close)

	type signed struct {
		auth string
		body []byte
	}
	reqs := make([]signed, b.N)
	var wg sync.WaitGroup
	workers := runtime.GOMAXPROCS(0)
	for w := range workers {
		wg.Go(func() {
			m := f.client[0]
			for i := w; i < b.N; i += workers {
				body := mustJSON(b, merchantOrder("PS"+strconv.FormatInt(time.Now().UnixNano(), 36)+strconv.Itoa(i), ""))
				a, err := wechat.SignRequest(m.PrivateKey, m.MchID, m.Serial, "POST", wechat.TradeTypeJSAPI.Path(), time.Now().Unix(), wechat.NewNonce(), body)
				if err != nil {
					b.Error(err)
					return
				}
				reqs[i] = signed{a.String(), body}
			}
		})
	}
	wg.Wait()
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	var next atomic.Int64
	if path := os.Getenv("WECHATSIM_BENCH_CPUPROFILE"); path != "" {
		pf, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			b.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	cpu0 := processCPU()
	b.ResetTimer()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r := reqs[next.Add(1)-1]
			req, err := http.NewRequest("POST", base+wechat.TradeTypeJSAPI.Path(), bytes.NewReader(r.body))
			if err != nil {
				b.Error(err)
				return
			}
			req.Header.Set("Authorization", r.auth)
			req.Header.Set("Content-Type", "application/json")
			resp, err := hc.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("create = %d", resp.StatusCode)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "creates/s")
	// CPU per create (simulator and benchmark client together) tells the
	// capacity of an idle machine when other processes share this one:
	// cores / CPU per create.
	b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-µs/create")
}

// processCPU answers the CPU time (user and system) the process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
