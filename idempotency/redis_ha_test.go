package idempotency_test

import (
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

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

// TestRedisSentinel_failover kills the primary: Sentinel promotes the
// replica, and the store, asking Sentinel again, keeps working there with the
// outcome written before the failover (replicated before the kill).
func TestRedisSentinel_failover(t *testing.T) {
	t.Parallel()
	s := testenv.StartRedisSentinel(t)
	client := testRedisClient(t, idempotency.RedisClientConfig{Addrs: []string{s.SentinelAddr}, MasterName: s.MasterName})
	st, err := idempotency.NewRedis(client, idempotency.RedisConfig{Prefix: "test"})
	if err != nil {
		t.Fatalf("NewRedis: %v", err)
	}
	ctx := t.Context()
	key := idempotency.Key{MchID: "1900000109", OutTradeNo: "FAILOVER1"}
	c, err := st.Claim(ctx, key, "fp1", time.Minute)
	if err != nil || c.State != idempotency.StateClaimed {
		t.Fatalf("Claim = %+v, %v", c, err)
	}
	if err := st.Complete(ctx, key, c.Token, []byte("created"), time.Hour); err != nil {
		t.Fatalf("Complete: %v", err)
	}
	// The write must reach the replica before the primary dies; Redis
	// replication is asynchronous, so a write not yet replicated is lost.
	primary := redis.NewClient(&redis.Options{Addr: s.Primary.Addr})
	defer primary.Close()
	if n, err := primary.Wait(ctx, 1, 10*time.Second).Result(); err != nil || n < 1 {
		t.Fatalf("WAIT 1 = %d, %v", n, err)
	}
	s.WaitReplicaKnown(ctx)
	s.Primary.Stop()
	deadline := time.Now().Add(60 * time.Second)
	for {
		addr, err := s.MasterAddr(ctx)
		if err == nil && addr == s.Replica.Addr {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Sentinel did not promote the replica: master %q, %v", addr, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	var got idempotency.Claim
	for {
		got, err = st.Claim(ctx, key, "fp1", time.Minute)
		if err == nil {
			break
		}
		if !errors.Is(err, idempotency.ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("Claim after failover: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got.State != idempotency.StateDone || string(got.Outcome) != "created" {
		t.Errorf("Claim after failover = %+v, want done with the outcome written before it", got)
	}
}
