package idempotency

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

// Durability is what a store keeps across a restart of its server, as far
// as the store can tell.
//
// The worker's promise of one true outcome per order survives a store that
// forgets — a job whose record is gone asks WeChat Pay (package pipeline,
// "Asking WeChat Pay") — but every forgotten record costs WeChat Pay calls,
// and between a restart and the next duplicate the store cannot stop two
// workers from racing on one order. A store that keeps its records is the
// supported setup: Redis with AOF (appendonly yes, appendfsync everysec or
// always) or RDB snapshots, and replicas; the KV backend on file storage
// with replicas.
type Durability struct {
	// Verified reports whether the store could be asked at all (a managed
	// Redis may refuse CONFIG).
	Verified bool
	// Persistent reports whether restarts keep records: AOF or RDB
	// snapshots for Redis, file storage for KV.
	Persistent bool
	// Detail says what was found, for the log.
	Detail string
}

// Durability answers what the Redis server keeps across a restart, from
// CONFIG GET appendonly and save. A server that refuses CONFIG (renamed or
// forbidden by ACL, as managed services do) answers Verified false.
func (s *Redis) Durability(ctx context.Context) (Durability, error) {
	vals, err := s.client.ConfigGet(ctx, "appendonly").Result()
	if err != nil {
		var refused redis.Error // a server's answer: unknown command, NOPERM…
		if !errors.As(err, &refused) {
			return Durability{}, redisUnavailable("config get", Key{}, err)
		}
		return Durability{Detail: "CONFIG GET refused: " + err.Error()}, nil
	}
	save, err := s.client.ConfigGet(ctx, "save").Result()
	if err != nil {
		// appendonly was answered, so the server is up: a refusal of this
		// one key leaves the question open, it is no outage.
		return Durability{Detail: "CONFIG GET save refused: " + err.Error()}, nil //nolint:nilerr // see above
	}
	aof := strings.EqualFold(vals["appendonly"], "yes")
	rdb := strings.TrimSpace(save["save"]) != ""
	d := Durability{Verified: true, Persistent: aof || rdb,
		Detail: fmt.Sprintf("appendonly=%s save=%q", vals["appendonly"], save["save"])}
	return d, nil
}

// Durability answers whether the bucket keeps records across a restart
// (file storage) and how many replicas it has.
func (s *KV) Durability(ctx context.Context) (Durability, error) {
	st, err := s.kv.Status(ctx)
	if err != nil {
		return Durability{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok {
		return Durability{Detail: "bucket status of another kind"}, nil
	}
	info := bs.StreamInfo()
	return Durability{Verified: true, Persistent: info.Config.Storage == jetstream.FileStorage,
		Detail: fmt.Sprintf("storage=%s replicas=%d", info.Config.Storage, info.Config.Replicas)}, nil
}
