package idempotency_test

import (
	"testing"

	"github.com/wxcombine/orderworker/idempotency"
	"github.com/wxcombine/orderworker/idempotency/storetest"
	"github.com/wxcombine/orderworker/internal/testenv"
)

// TestRedisCluster runs the conformance suite on a real three-node Redis
// Cluster: the store's keys of one order share a hash tag, so its scripts
// run on one node; the client follows the slot map (REDIS_ADDRS with
// several addresses).
func TestRedisCluster(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) storetest.Backend {
		c := testenv.StartRedisCluster(t)
		client := testRedisClient(t, idempotency.RedisClientConfig{Addrs: c.Addrs, Cluster: true})
		s, err := idempotency.NewRedis(client, idempotency.RedisConfig{Prefix: "test"})
		if err != nil {
			t.Fatalf("NewRedis: %v", err)
		}
		return storetest.Backend{Store: s, Stop: c.Stop, Start: c.Start}
	})
}

// TestRedisSentinel runs the conformance suite through Sentinel: the
// client asks a real redis-server --sentinel for the primary
// (REDIS_MASTER_NAME), which has a replica.
func TestRedisSentinel(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) storetest.Backend {
		s := testenv.StartRedisSentinel(t)
		client := testRedisClient(t, idempotency.RedisClientConfig{Addrs: []string{s.SentinelAddr}, MasterName: s.MasterName})
		st, err := idempotency.NewRedis(client, idempotency.RedisConfig{Prefix: "test"})
		if err != nil {
			t.Fatalf("NewRedis: %v", err)
		}
		return storetest.Backend{Store: st, Stop: s.Stop, Start: s.Start}
	})
}
