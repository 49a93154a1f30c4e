package idempotency_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/idempotency"
	"github.com/wxcombine/orderworker/idempotency/storetest"
	"github.com/wxcombine/orderworker/internal/testenv"
)

// testJetStream connects to url with settings that fail calls at once while
// the server is down (no reconnect buffer) and reconnect quickly.
func testJetStream(tb testing.TB, url string) jetstream.JetStream {
	tb.Helper()
	nc, err := nats.Connect(url,
		nats.MaxReconnects(-1),
		nats.ReconnectWait(50*time.Millisecond),
		nats.ReconnectBufSize(-1),
		nats.Timeout(time.Second))
	if err != nil {
		tb.Fatalf("nats connect: %v", err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatalf("jetstream: %v", err)
	}
	return js
}

func newKVBackend(t *testing.T) storetest.Backend {
	srv := testenv.StartNATS(t)
	js := testJetStream(t, srv.URL)
	s, err := idempotency.NewKV(t.Context(), js, idempotency.KVConfig{Timeout: 3 * time.Second, MarkerTTL: time.Second})
	if err != nil {
		t.Fatalf("NewKV: %v", err)
	}
	return storetest.Backend{Store: s, Stop: srv.Stop, Start: srv.Start, Durable: true}
}

func TestKV(t *testing.T) {
	t.Parallel()
	storetest.Run(t, newKVBackend)
}

func TestNewKV(t *testing.T) {
	srv := testenv.StartNATS(t)
	js := testJetStream(t, srv.URL)
	ctx := t.Context()
	tests := []struct {
		name    string
		cfg     idempotency.KVConfig
		wantErr bool
	}{
		{"defaults", idempotency.KVConfig{}, false},
		{"memory", idempotency.KVConfig{Bucket: "mem", Storage: jetstream.MemoryStorage, MaxAge: time.Hour}, false},
		{"bad bucket name", idempotency.KVConfig{Bucket: "a.b"}, true},
		{"too many replicas", idempotency.KVConfig{Replicas: 6}, true},
		{"max age below 1s", idempotency.KVConfig{MaxAge: time.Millisecond}, true},
		{"marker ttl below 1s", idempotency.KVConfig{MarkerTTL: 500 * time.Millisecond}, true},
		{"replicas beyond the single server", idempotency.KVConfig{Bucket: "r3", Replicas: 3}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := idempotency.NewKV(ctx, js, tt.cfg)
			if (err != nil) != tt.wantErr {
				t.Fatalf("NewKV(%+v) error = %v, want error %t", tt.cfg, err, tt.wantErr)
			}
			if err != nil && errors.Is(err, idempotency.ErrUnavailable) {
				t.Errorf("NewKV(%+v) error = %v, want a config error, not ErrUnavailable", tt.cfg, err)
			}
		})
	}

	// A second NewKV with other settings updates the bucket.
	if _, err := idempotency.NewKV(ctx, js, idempotency.KVConfig{Bucket: "upd", MaxAge: time.Hour}); err != nil {
		t.Fatalf("NewKV(upd): %v", err)
	}
	if _, err := idempotency.NewKV(ctx, js, idempotency.KVConfig{Bucket: "upd", MaxAge: 3 * time.Hour}); err != nil {
		t.Fatalf("NewKV(upd) again: %v", err)
	}
	kv, err := js.KeyValue(ctx, "upd")
	if err != nil {
		t.Fatalf("KeyValue(upd): %v", err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	if st.TTL() != 3*time.Hour || st.History() != 1 || st.LimitMarkerTTL() != idempotency.KVMarkerTTLDefault {
		t.Errorf("bucket TTL %v, history %d, marker TTL %v; want 3h, 1, %v", st.TTL(), st.History(), st.LimitMarkerTTL(), idempotency.KVMarkerTTLDefault)
	}
}

func TestKV_TTLBeyondMaxAge(t *testing.T) {
	srv := testenv.StartNATS(t)
	js := testJetStream(t, srv.URL)
	s, err := idempotency.NewKV(t.Context(), js, idempotency.KVConfig{MaxAge: time.Hour})
	if err != nil {
		t.Fatalf("NewKV: %v", err)
	}
	ctx := t.Context()
	k := idempotency.Key{MchID: "1900000109", OutTradeNo: "o1"}
	if _, err := s.Claim(ctx, k, "fp", 2*time.Hour); err == nil || errors.Is(err, idempotency.ErrUnavailable) {
		t.Errorf("Claim(lease 2h) error = %v, want a MaxAge error", err)
	}
	c, err := s.Claim(ctx, k, "fp", time.Minute)
	if err != nil {
		t.Fatalf("Claim: %v", err)
	}
	if err := s.Complete(ctx, k, c.Token, []byte("x"), 2*time.Hour); err == nil || errors.Is(err, idempotency.ErrStaleToken) {
		t.Errorf("Complete(ttl 2h) error = %v, want a MaxAge error", err)
	}
	// The refused Complete left the lease in place.
	if err := s.Complete(ctx, k, c.Token, []byte("x"), time.Hour); err != nil {
		t.Errorf("Complete(ttl 1h) error = %v, want nil", err)
	}
}

func TestNewKV_Unreachable(t *testing.T) {
	t.Parallel()
	srv := testenv.StartNATS(t)
	js := testJetStream(t, srv.URL)
	srv.Stop()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err := idempotency.NewKV(ctx, js, idempotency.KVConfig{Timeout: time.Second})
	if !errors.Is(err, idempotency.ErrUnavailable) {
		t.Errorf("NewKV with NATS down: error = %v, want ErrUnavailable", err)
	}
}

// BenchmarkKVClaimComplete claims and completes distinct keys from 50
// goroutines against an in-process JetStream server with file storage.
func BenchmarkKVClaimComplete(b *testing.B) {
	srv := testenv.StartNATS(b)
	js := testJetStream(b, srv.URL)
	s, err := idempotency.NewKV(context.Background(), js, idempotency.KVConfig{})
	if err != nil {
		b.Fatalf("NewKV: %v", err)
	}
	benchClaimComplete(b, s, 25)
}
