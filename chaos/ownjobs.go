package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/loadgen"
	"github.com/wxcombine/orderworker/wechat"
)

// The harness publishes a few jobs of its own, besides the load
// generator's, for the faults that need a job of a chosen size or a chosen
// moment: oversized jobs (at MaxJobBytes and one byte past it) and late
// duplicates after the idempotency record expired. Their order numbers
// start with ownPrefix, which the load generator counts as another run's.
const ownPrefix = "CX"

// ownJob is one job the harness publishes itself.
type ownJob struct {
	key     loadgen.OrderKey
	subject string
	body    []byte
}

// newOwnJob answers a valid Native job of merchant m with number no, padded
// with JSON whitespace to exactly size bytes when size > 0 (whitespace
// keeps the job valid: the worker sends WeChat Pay the decoded request).
func newOwnJob(m loadgen.Merchant, no string, size int) (ownJob, error) {
	now := time.Now()
	job := events.CreateOrderJob{
		Version: events.Version, CorrelationID: "chaos-" + no, CreatedAt: now, TradeType: wechat.TradeTypeNative,
		Request: wechat.CombineOrderRequest{
			CombineAppID: m.AppID, CombineMchID: m.MchID, CombineOutTradeNo: no, NotifyURL: m.NotifyURL,
			TimeExpire: now.Add(2 * time.Hour).Truncate(time.Second).Format(time.RFC3339),
			SceneInfo:  &wechat.SceneInfo{PayerClientIP: "203.0.113.9", DeviceID: "POS-CHAOS"},
			// A combine order has at least two sub-orders.
			SubOrders: []wechat.SubOrder{{
				MchID: m.MchID, Attach: "chaos", OutTradeNo: no + "S0", Description: "chaos order " + no,
				Amount: wechat.Amount{TotalAmount: 100 + int64(len(no)), Currency: wechat.CurrencyCNY},
			}, {
				MchID: m.MchID, Attach: "chaos", OutTradeNo: no + "S1", Description: "chaos order " + no + " part 2",
				Amount: wechat.Amount{TotalAmount: 200, Currency: wechat.CurrencyCNY},
			}},
		},
	}
	body, err := json.Marshal(&job)
	if err != nil {
		return ownJob{}, fmt.Errorf("chaos: own job: %w", err)
	}
	if size > 0 {
		if len(body) > size {
			return ownJob{}, fmt.Errorf("chaos: own job is %d bytes, more than %d", len(body), size)
		}
		body = append(body, bytes.Repeat([]byte{' '}, size-len(body))...)
	}
	return ownJob{key: loadgen.OrderKey{MchID: m.MchID, OutTradeNo: no}, subject: events.Subjects{}.Job(wechat.TradeTypeNative), body: body}, nil
}

// publish publishes j with msgID and waits for JetStream to store it. A
// publish that got no answer (a cluster electing a stream leader, a node
// killed under it) is repeated with the same msgID for up to
// loadgen.RepublishFor, which makes a stored first try a duplicate; a job
// refused for its size is not.
func (j ownJob) publish(ctx context.Context, js jetstream.JetStream, msgID string) error {
	msg := nats.NewMsg(j.subject)
	msg.Data = j.body
	msg.Header.Set(events.HeaderMsgID, msgID)
	if _, err := loadgen.PublishStored(ctx, js, msg, loadgen.RepublishFor); err != nil {
		return fmt.Errorf("chaos: publish own job %s (%d bytes): %w", j.key, len(j.body), err)
	}
	return nil
}

// ownNumber answers the order number of the harness's job i of kind.
func ownNumber(runID, kind string, i int) string {
	return ownPrefix + runID[2:] + kind + strconv.Itoa(i)
}
