package pipeline_test

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/idempotency"
	"github.com/wxcombine/orderworker/pipeline"
	"github.com/wxcombine/orderworker/wechat"
)

// Example_processor handles one native job with hand-written collaborators;
// in production they are *wechat.Client, an idempotency store and
// pipeline.JetStreamPublisher, and a Runner calls Process.
func Example_processor() {
	pub := &fakePublisher{}
	p, err := pipeline.New(pipeline.Config{
		Payer:     &fakePayer{results: []payResult{{res: &wechat.PrepayResult{CodeURL: "weixin://wxpay/bizpayurl?pr=abc"}}}},
		Signer:    fakeSigner{key: testKey},
		Store:     &fakeStore{claim: idempotency.Claim{State: idempotency.StateClaimed, Token: 1}},
		Publisher: pub,
		Flavour:   wechat.FlavourMerchant,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	job := newJob(wechat.TradeTypeNative, "EXAMPLE1")
	data, _ := json.Marshal(job)
	err = p.Process(context.Background(), pipeline.Delivery{
		Subject: (events.Subjects{}).Job(job.TradeType), Data: data, NumDelivered: 1,
	})
	var ev events.PrepayCreated
	_ = json.Unmarshal(pub.msgs[0].Data, &ev)
	fmt.Println("error:", err)
	fmt.Println(pub.msgs[0].Subject, pub.msgs[0].Header.Get(events.HeaderMsgID))
	fmt.Println(ev.CodeURL, ev.Attempts)
	// Output:
	// error: <nil>
	// combine.orders.prepay.created outcome:1900000109:EXAMPLE1
	// weixin://wxpay/bizpayurl?pr=abc 1
}
