package pipeline_test

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wxcombine/orderworker/idempotency"
	"github.com/wxcombine/orderworker/pipeline"
	"github.com/wxcombine/orderworker/wechat"
)

// benchPayer answers a fixed result, as a payer that costs nothing.
type benchPayer struct{}

func (benchPayer) CreateCombineOrder(_ context.Context, t wechat.TradeType, _ *wechat.CombineOrderRequest) (*wechat.PrepayResult, error) {
	if t == wechat.TradeTypeNative {
		return &wechat.PrepayResult{CodeURL: "weixin://wxpay/bizpayurl/up?pr=NwY5Mz9&groupid=00"}, nil
	}
	return &wechat.PrepayResult{H5URL: "https://wx.tenpay.com/cgi-bin/mmpayweb-bin/checkmweb?prepay_id=wx1"}, nil
}

func (benchPayer) QueryByOutTradeNo(context.Context, string, string) (*wechat.CombineOrder, error) {
	return nil, wechat.ErrOrderNotExist
}

func (benchPayer) Close(context.Context, string, string, *wechat.CloseRequest) error { return nil }

type benchStore struct{}

func (benchStore) Claim(context.Context, idempotency.Key, string, time.Duration) (idempotency.Claim, error) {
	return idempotency.Claim{State: idempotency.StateClaimed, Token: 1}, nil
}
func (benchStore) Extend(context.Context, idempotency.Key, uint64, time.Duration) error { return nil }
func (benchStore) Complete(context.Context, idempotency.Key, uint64, []byte, time.Duration) error {
	return nil
}
func (benchStore) Release(context.Context, idempotency.Key, uint64) error { return nil }
func (benchStore) Ping(context.Context) error                             { return nil }

type benchPublisher struct{}

func (benchPublisher) Publish(context.Context, *nats.Msg) error { return nil }

// BenchmarkProcessor_ProcessH5 measures the pipeline around the WeChat Pay
// call and the store: decode, validate, fingerprint, settle, encode and
// publish an h5 order (no pay-parameter signature), logging JSON at info
// level as the worker does by default.
func BenchmarkProcessor_ProcessH5(b *testing.B) {
	log := slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	p, err := pipeline.New(pipeline.Config{
		Payer: benchPayer{}, Signer: fakeSigner{key: testKey}, Store: benchStore{}, Publisher: benchPublisher{},
		Flavour: wechat.FlavourMerchant, Logger: log,
	})
	if err != nil {
		b.Fatal(err)
	}
	ds := make([]pipeline.Delivery, 256)
	for i := range ds {
		ds[i] = delivery(b, newJob(wechat.TradeTypeH5, "bench"+strconv.Itoa(i)))
	}
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := p.Process(ctx, ds[i%len(ds)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
