package idempotency_test

import (
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/idempotency"
	"github.com/wxcombine/orderworker/internal/testenv"
)

func TestRedis_Durability(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name           string
		args           []string
		wantPersistent bool
	}{
		{"nothing kept (the default of Debian's test servers here)", nil, false},
		{"AOF", []string{"--appendonly", "yes"}, true},
		{"RDB snapshots", []string{"--save", "3600 1"}, true},
		{"CONFIG renamed away, as managed services do", []string{"--rename-command", "CONFIG", ""}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := testenv.StartRedisWith(t, tt.args...)
			rc, err := idempotency.NewRedisClient(idempotency.RedisClientConfig{Addrs: []string{r.Addr}})
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			s, err := idempotency.NewRedis(rc, idempotency.RedisConfig{})
			if err != nil {
				t.Fatal(err)
			}
			d, err := s.Durability(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if d.Persistent != tt.wantPersistent {
				t.Errorf("Durability() = %+v, want persistent %v", d, tt.wantPersistent)
			}
			if renamed := len(tt.args) > 0 && tt.args[0] == "--rename-command"; d.Verified == renamed {
				t.Errorf("Durability() = %+v, want verified %v", d, !renamed)
			}
		})
	}
	t.Run("server down", func(t *testing.T) {
		r := testenv.StartRedis(t)
		rc, _ := idempotency.NewRedisClient(idempotency.RedisClientConfig{Addrs: []string{r.Addr}, MaxRetries: -1})
		defer rc.Close()
		s, _ := idempotency.NewRedis(rc, idempotency.RedisConfig{})
		r.Stop()
		if _, err := s.Durability(t.Context()); err == nil {
			t.Error("Durability() of a stopped server = nil error, want ErrUnavailable")
		}
	})
}

func TestKV_Durability(t *testing.T) {
	t.Parallel()
	srv := testenv.StartNATS(t)
	js := testJetStream(t, srv.URL)
	for _, storage := range []jetstream.StorageType{jetstream.FileStorage, jetstream.MemoryStorage} {
		s, err := idempotency.NewKV(t.Context(), js, idempotency.KVConfig{Bucket: "durability_" + storage.String(), Storage: storage})
		if err != nil {
			t.Fatal(err)
		}
		d, err := s.Durability(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if !d.Verified || d.Persistent != (storage == jetstream.FileStorage) {
			t.Errorf("%s: Durability() = %+v", storage, d)
		}
	}
}
