package idempotency_test

import (
	"errors"
	"testing"
	"time"

	"github.com/wxcombine/orderworker/idempotency"
	"github.com/wxcombine/orderworker/internal/testenv"
)

// checkSeen runs the same checks on either backend.
func checkSeen(t *testing.T, s idempotency.Seen) {
	t.Helper()
	ctx := t.Context()
	a := idempotency.Key{MchID: "1900000109", OutTradeNo: "P:1"}
	b := idempotency.Key{MchID: "1900000109", OutTradeNo: "P.1"} // escapes differently from a
	if ok, err := s.Seen(ctx, idempotency.SeenPayment, a); err != nil || ok {
		t.Fatalf("Seen(fresh) = %v, %v; want false", ok, err)
	}
	if err := s.MarkSeen(ctx, idempotency.SeenPayment, a, 0); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.Seen(ctx, idempotency.SeenPayment, a); err != nil || !ok {
		t.Errorf("Seen(marked) = %v, %v; want true", ok, err)
	}
	if ok, _ := s.Seen(ctx, idempotency.SeenClosed, a); ok {
		t.Error("a payment record answers for the close")
	}
	if ok, _ := s.Seen(ctx, idempotency.SeenPayment, b); ok {
		t.Error("the record of P:1 answers for P.1")
	}
	if _, err := s.Seen(ctx, idempotency.SeenPayment, idempotency.Key{MchID: "1"}); err == nil {
		t.Error("Seen(empty order number) = nil error")
	}
}

func TestRedisSeen(t *testing.T) {
	t.Parallel()
	srv := testenv.StartRedis(t)
	client := testRedisClient(t, idempotency.RedisClientConfig{Addrs: []string{srv.Addr}})
	s, err := idempotency.NewRedisSeen(client, "")
	if err != nil {
		t.Fatal(err)
	}
	checkSeen(t, s)
	k := idempotency.Key{MchID: "1900000109", OutTradeNo: "TTL1"}
	if err := s.MarkSeen(t.Context(), idempotency.SeenPayment, k, 0); err != nil {
		t.Fatal(err)
	}
	ttl, err := client.PTTL(t.Context(), idempotency.RedisPrefixDefault+":seen:payment:1900000109:TTL1").Result()
	if err != nil || ttl <= idempotency.NotifyHorizon || ttl > idempotency.SeenTTLDefault {
		t.Errorf("record TTL = %v (%v), want the default %v", ttl, err, idempotency.SeenTTLDefault)
	}
	srv.Stop()
	if _, err := s.Seen(t.Context(), idempotency.SeenPayment, k); !errors.Is(err, idempotency.ErrUnavailable) {
		t.Errorf("Seen with Redis down = %v, want ErrUnavailable", err)
	}
}

func TestKVSeen(t *testing.T) {
	t.Parallel()
	srv := testenv.StartNATS(t)
	js := srv.JetStream(t)
	s, err := idempotency.NewKVSeen(t.Context(), js, idempotency.SeenKVConfig{})
	if err != nil {
		t.Fatal(err)
	}
	checkSeen(t, s)
	kv, err := js.KeyValue(t.Context(), idempotency.SeenKVBucketDefault)
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(t.Context())
	if err != nil || st.TTL() != idempotency.SeenTTLDefault {
		t.Errorf("bucket TTL = %v (%v), want %v", st.TTL(), err, idempotency.SeenTTLDefault)
	}
}

func TestCheckReplayProtection(t *testing.T) {
	t.Parallel()
	tests := []struct {
		hasSeen         bool
		seenTTL, window time.Duration
		ok              bool
	}{
		{true, 72 * time.Hour, 10 * time.Minute, true},
		{true, 25 * time.Hour, 0, true},
		{true, 24 * time.Hour, 10 * time.Minute, false}, // shorter than WeChat Pay's retries
		{false, 0, 10 * time.Minute, false},             // the default window alone
		{false, 0, 48 * time.Hour, true},
	}
	for _, tt := range tests {
		err := idempotency.CheckReplayProtection(tt.hasSeen, tt.seenTTL, tt.window)
		if (err == nil) != tt.ok {
			t.Errorf("CheckReplayProtection(%v, %v, %v) = %v, want ok %v", tt.hasSeen, tt.seenTTL, tt.window, err, tt.ok)
		}
	}
}
