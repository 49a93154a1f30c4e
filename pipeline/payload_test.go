package pipeline_test

import (
	"context"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/pipeline"
	"github.com/wxcombine/orderworker/wechat"
)

// TestRunner_deadLetterMustFit: a server whose max_payload cannot carry the
// dead letter of the largest job the worker accepts is refused at start,
// naming the limit to lower, so no job can ever be left without a dead
// letter.
func TestRunner_deadLetterMustFit(t *testing.T) {
	t.Parallel()
	srv, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		MaxPayload: 256 << 10, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	for _, tt := range []struct {
		maxJob  int
		wantErr bool
	}{{events.MaxJobSize, true}, {128 << 10, false}} {
		proc, err := pipeline.New(pipeline.Config{Payer: &fakePayer{results: []payResult{ok}}, Signer: fakeSigner{key: testKey},
			Store: &fakeStore{}, Publisher: &fakePublisher{}, Flavour: wechat.FlavourMerchant, MaxJobSize: tt.maxJob})
		if err != nil {
			t.Fatal(err)
		}
		r, err := pipeline.NewRunner(pipeline.RunnerConfig{JetStream: js, Processor: proc})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		err = r.Run(ctx)
		cancel()
		if got := err != nil && strings.Contains(err.Error(), "max_payload"); got != tt.wantErr {
			t.Errorf("MaxJobSize %d on a 256 KiB server: Run() = %v, want a max_payload error: %v", tt.maxJob, err, tt.wantErr)
		}
	}
}
