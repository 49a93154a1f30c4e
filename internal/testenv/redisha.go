package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis Cluster and Sentinel, each made of real redis-server processes on
// free loopback ports, so that a store can be tested on the topologies the
// README offers (REDIS_ADDRS with several addresses, REDIS_MASTER_NAME).

// haWait bounds waiting for a cluster or a sentinel to agree on its state:
// generous, as the test machine may be loaded.
const haWait = 60 * time.Second

// clusterSlots is the number of hash slots of a Redis Cluster.
const clusterSlots = 16384

// RedisCluster is a Redis Cluster of three primaries without replicas, each a
// redis-server process owned by one test, without persistence (its cluster
// configuration, nodes.conf, survives a restart; its data does not).
type RedisCluster struct {
	tb testing.TB
	// Addrs are the nodes' client addresses.
	Addrs []string
	Nodes []*Redis
}

// StartRedisCluster starts three redis-server processes in cluster mode on
// free ports, assigns each a third of the hash slots, joins them with
// CLUSTER MEET, waits until every node reports cluster_state:ok, and stops
// them when the test ends.
func StartRedisCluster(tb testing.TB) *RedisCluster {
	tb.Helper()
	RequireRedis(tb)
	c := &RedisCluster{tb: tb}
	root := tb.TempDir()
	busPorts := make([]int, 3)
	for i := range 3 {
		port := FreePort(tb)
		busPorts[i] = FreePort(tb)
		dir := filepath.Join(root, "node"+strconv.Itoa(i))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			tb.Fatalf("redis cluster: %v", err)
		}
		// The bus port is chosen rather than left at port+10000, which may be
		// taken or past 65535.
		n := newRedis(tb, dir, port, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "3000", "--cluster-port", strconv.Itoa(busPorts[i]))
		c.Nodes = append(c.Nodes, n)
		c.Addrs = append(c.Addrs, n.Addr)
	}
	tb.Cleanup(c.Stop)
	for _, n := range c.Nodes {
		n.Start()
	}
	ctx, cancel := context.WithTimeout(context.Background(), haWait)
	defer cancel()
	per := clusterSlots / len(c.Nodes)
	for i, n := range c.Nodes {
		lo, hi := i*per, (i+1)*per-1
		if i == len(c.Nodes)-1 {
			hi = clusterSlots - 1
		}
		slots := make([]any, 0, hi-lo+3)
		slots = append(slots, "CLUSTER", "ADDSLOTS")
		for s := lo; s <= hi; s++ {
			slots = append(slots, s)
		}
		if err := do(ctx, n.Addr, slots...); err != nil {
			tb.Fatalf("redis cluster: ADDSLOTS on %s: %v", n.Addr, err)
		}
	}
	for i, n := range c.Nodes[1:] {
		if err := do(ctx, c.Nodes[0].Addr, "CLUSTER", "MEET", "127.0.0.1", n.port, busPorts[i+1]); err != nil {
			tb.Fatalf("redis cluster: MEET %s: %v", n.Addr, err)
		}
	}
	c.waitOK(ctx)
	return c
}

// waitOK waits until every node reports cluster_state:ok and knows all the
// others.
func (c *RedisCluster) waitOK(ctx context.Context) {
	c.tb.Helper()
	want := "cluster_known_nodes:" + strconv.Itoa(len(c.Nodes))
	for _, n := range c.Nodes {
		var last string
		for {
			last, _ = text(ctx, n.Addr, "CLUSTER", "INFO")
			if strings.Contains(last, "cluster_state:ok") && strings.Contains(last, want) {
				break
			}
			if !sleep(ctx, 100*time.Millisecond) {
				c.tb.Fatalf("redis cluster: node %s not ok after %v: %q", n.Addr, haWait, last)
			}
		}
	}
}

// Stop kills every node; their data is lost.
func (c *RedisCluster) Stop() {
	for _, n := range c.Nodes {
		n.Stop()
	}
}

// Start restarts every node with its cluster configuration and waits until
// the cluster is ok again.
func (c *RedisCluster) Start() {
	c.tb.Helper()
	for _, n := range c.Nodes {
		n.Start()
	}
	ctx, cancel := context.WithTimeout(context.Background(), haWait)
	defer cancel()
	c.waitOK(ctx)
}

// SentinelMaster is the master name StartRedisSentinel monitors.
const SentinelMaster = "testmaster"

// RedisSentinel is a primary, a replica of it and one Sentinel monitoring
// them (quorum 1), each a process owned by one test, without persistence.
type RedisSentinel struct {
	tb testing.TB
	// SentinelAddr is the Sentinel's address; MasterName the monitored name.
	SentinelAddr string
	MasterName   string
	Primary      *Redis
	Replica      *Redis

	mu       sync.Mutex
	sentinel *exec.Cmd
}

// StartRedisSentinel starts a primary, a replica (--replicaof the primary)
// and `redis-server --sentinel` monitoring them as SentinelMaster, waits
// until the replica is in sync and the Sentinel answers the primary's
// address, and stops them all when the test ends.
func StartRedisSentinel(tb testing.TB) *RedisSentinel {
	tb.Helper()
	RequireRedis(tb)
	root := tb.TempDir()
	s := &RedisSentinel{tb: tb, MasterName: SentinelMaster}
	mk := func(name string, port int, args ...string) *Redis {
		dir := filepath.Join(root, name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			tb.Fatalf("redis sentinel: %v", err)
		}
		return newRedis(tb, dir, port, args...)
	}
	pport := FreePort(tb)
	s.Primary = mk("primary", pport)
	s.Replica = mk("replica", FreePort(tb), "--replicaof", "127.0.0.1", strconv.Itoa(pport))
	tb.Cleanup(s.stopAll)
	s.Primary.Start()
	s.Replica.Start()

	sport := FreePort(tb)
	s.SentinelAddr = "127.0.0.1:" + strconv.Itoa(sport)
	sdir := filepath.Join(root, "sentinel")
	if err := os.MkdirAll(sdir, 0o700); err != nil {
		tb.Fatalf("redis sentinel: %v", err)
	}
	// Sentinel rewrites its configuration file, so it gets one of its own.
	conf := filepath.Join(sdir, "sentinel.conf")
	body := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nlogfile %s\n"+
		"sentinel monitor %s 127.0.0.1 %d 1\n"+
		"sentinel down-after-milliseconds %s 1000\n"+
		"sentinel failover-timeout %s 10000\n",
		sport, sdir, filepath.Join(sdir, "sentinel.log"), s.MasterName, pport, s.MasterName, s.MasterName)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		tb.Fatalf("redis sentinel: %v", err)
	}
	cmd := exec.Command("redis-server", conf, "--sentinel") //nolint:gosec // G204: arguments come from the test itself
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start redis-server --sentinel: %v", err)
	}
	s.mu.Lock()
	s.sentinel = cmd
	s.mu.Unlock()
	waitTCP(tb, s.SentinelAddr)

	ctx, cancel := context.WithTimeout(context.Background(), haWait)
	defer cancel()
	s.waitInSync(ctx)
	for {
		addr, err := s.MasterAddr(ctx)
		if err == nil && addr == s.Primary.Addr {
			break
		}
		if !sleep(ctx, 100*time.Millisecond) {
			tb.Fatalf("redis sentinel: master address %q (%v), want %s", addr, err, s.Primary.Addr)
		}
	}
	return s
}

// MasterAddr asks the Sentinel for the current primary's address.
func (s *RedisSentinel) MasterAddr(ctx context.Context) (string, error) {
	c := redis.NewClient(&redis.Options{Addr: s.SentinelAddr, MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	v, err := c.Do(ctx, "SENTINEL", "get-master-addr-by-name", s.MasterName).StringSlice()
	if err != nil {
		return "", err
	}
	if len(v) != 2 {
		return "", fmt.Errorf("sentinel answered %q", v)
	}
	return v[0] + ":" + v[1], nil
}

// WaitReplicaKnown waits until the Sentinel lists the replica, which it
// learns from the primary's INFO (every 10s), so that it can fail over.
func (s *RedisSentinel) WaitReplicaKnown(ctx context.Context) {
	s.tb.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.SentinelAddr, MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, haWait)
	defer cancel()
	_, port, _ := strings.Cut(s.Replica.Addr, ":")
	for {
		v, err := c.Do(ctx, "SENTINEL", "replicas", s.MasterName).Slice()
		if err == nil && strings.Contains(fmt.Sprint(v), port) {
			return
		}
		if !sleep(ctx, 200*time.Millisecond) {
			s.tb.Fatalf("redis sentinel: replica %s not known after %v: %v %v", s.Replica.Addr, haWait, v, err)
		}
	}
}

// waitInSync waits until the replica's link to the primary is up.
func (s *RedisSentinel) waitInSync(ctx context.Context) {
	s.tb.Helper()
	var last string
	for {
		last, _ = text(ctx, s.Replica.Addr, "INFO", "replication")
		if strings.Contains(last, "master_link_status:up") {
			return
		}
		if !sleep(ctx, 100*time.Millisecond) {
			s.tb.Fatalf("redis sentinel: replica not in sync after %v: %q", haWait, last)
		}
	}
}

// Stop kills the primary and the replica, so that no data server is
// reachable; the Sentinel keeps running. Their data is lost.
func (s *RedisSentinel) Stop() {
	s.Primary.Stop()
	s.Replica.Stop()
}

// Start restarts the primary, then the replica, and waits until the replica
// is in sync again.
func (s *RedisSentinel) Start() {
	s.tb.Helper()
	s.Primary.Start()
	s.Replica.Start()
	ctx, cancel := context.WithTimeout(context.Background(), haWait)
	defer cancel()
	s.waitInSync(ctx)
}

func (s *RedisSentinel) stopAll() {
	s.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sentinel != nil {
		_ = s.sentinel.Process.Kill()
		_ = s.sentinel.Wait()
		s.sentinel = nil
	}
}

// do sends one command to the server at addr and answers its error.
func do(ctx context.Context, addr string, args ...any) error {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	return c.Do(ctx, args...).Err()
}

// text sends one command whose answer is a string.
func text(ctx context.Context, addr string, args ...any) (string, error) {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	return c.Do(ctx, args...).Text()
}

// sleep waits d and reports false when ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
