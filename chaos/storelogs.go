package chaos

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/wxcombine/orderworker/loadgen"
)

// LogNote is one line a worker logged about an order: when, and which
// worker. The checker reads two kinds (storeFailureMsgs, handBackMsgs).
//
// A store failure is a worker's own report, in its log, that it could not
// store an order's outcome after WeChat Pay answered: the store refused or
// timed out the write ("outcome not stored"), or the write came after the
// claim's lease ran out ("lease lost before the outcome was stored"). The
// harness's probe of the store (Outage.StoreUp) measures one write; a
// worker's writes can stay slower than its lease for a while after, as
// the KV bucket's stream catches a node up. The answer the worker holds is
// then lost with the job, and the next attempt creates again, with the
// same body: WeChat Pay answers the same prepay_id.
type LogNote struct {
	Instance string
	At       time.Time
}

// storeFailureMsgs are the worker's log messages of a write of the
// outcome that did not take (pipeline/outcome.go, Processor.settle).
var storeFailureMsgs = [][]byte{
	[]byte("lease lost before the outcome was stored; the record decides"),
	[]byte("outcome not stored; job held until the store answers"),
}

// storeFailureNear bounds how long after a disruption of the store began
// a worker's store failure counts as the disruption's: a worker that
// reports failures with no disruption near is not believed.
const storeFailureNear = 2 * time.Minute

// handBackMsgs are the worker's log message of a job handed back for a
// later delivery without an outcome (Processor.retryLater): after a create
// answered that the order number is taken, closed or paid, the query that
// would settle it failed too, and the next delivery starts over, create
// first.
var handBackMsgs = [][]byte{[]byte("retries exhausted for this delivery; job handed back")}

// readLogNotes reads the lines with one of msgs each worker logged in dir
// (worker-N.log, JSON lines), per order.
func readLogNotes(dir string, msgs [][]byte) (map[loadgen.OrderKey][]LogNote, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "worker-*.log"))
	if err != nil {
		return nil, err
	}
	out := map[loadgen.OrderKey][]LogNote{}
	for _, path := range paths {
		instance := strings.TrimSuffix(filepath.Base(path), ".log")
		if err := scanLogNotes(path, instance, msgs, out); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("chaos: %s: %w", path, err)
		}
	}
	return out, nil
}

func scanLogNotes(path, instance string, msgs [][]byte, out map[loadgen.OrderKey][]LogNote) error {
	f, err := os.Open(path) //nolint:gosec // G304: the harness's own log directory
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !slices.ContainsFunc(msgs, func(m []byte) bool { return bytes.Contains(line, m) }) {
			continue
		}
		var rec struct {
			Time       time.Time `json:"time"`
			Msg        string    `json:"msg"`
			MchID      string    `json:"combine_mchid"`
			OutTradeNo string    `json:"combine_out_trade_no"`
		}
		if json.Unmarshal(line, &rec) != nil || rec.OutTradeNo == "" {
			continue
		}
		key := loadgen.OrderKey{MchID: rec.MchID, OutTradeNo: rec.OutTradeNo}
		out[key] = append(out[key], LogNote{Instance: instance, At: rec.Time})
	}
	return sc.Err()
}

// storeFailedAfter reports whether the worker that made prev logged that
// it could not store the order's outcome after prev's answer and before
// cur, with a disruption of the store begun shortly before.
func storeFailedAfter(ev *Evidence, prev, cur Call) bool {
	for _, f := range ev.StoreFailures[cur.Order] {
		if f.Instance != prev.Instance || f.At.Before(prev.End.Add(-time.Second)) || !f.At.Before(cur.Start) {
			continue
		}
		for _, o := range ev.Outages {
			if o.ofStore() && o.Down.Before(f.At) && f.At.Sub(o.storeUp()) < storeFailureNear {
				return true
			}
		}
	}
	return false
}

// handedBackAfter reports whether the worker that made prev logged that it
// handed the order's job back, between prev's answer and cur.
func handedBackAfter(ev *Evidence, prev, cur Call) bool {
	return slices.ContainsFunc(ev.HandedBack[cur.Order], func(n LogNote) bool {
		return n.Instance == prev.Instance && !n.At.Before(prev.End.Add(-time.Second)) && n.At.Before(cur.Start)
	})
}
