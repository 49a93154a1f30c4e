package chaos

import (
	"cmp"
	"context"
	"fmt"
	mrand "math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/pipeline"
)

// What a cluster run (Config.Cluster) changes in a run: the servers it
// starts, its defaults, and the disruptions it plans.

// Defaults of a cluster run.
const (
	PartitionForDefault = 10 * time.Second
	LagForDefault       = 3 * time.Second
)

// clusterDefaults sets a cluster run's defaults and turns off the
// single-server disruptions, which name servers a cluster run has not.
func (cfg *Config) clusterDefaults() {
	if !cfg.Cluster {
		cfg.KVBackend = false
		cfg.StreamLeaderKills, cfg.ConsumerLeaderKills, cfg.NodeRestarts, cfg.NodeWipes = 0, 0, 0, 0
		cfg.Partitions, cfg.FailoversSynced, cfg.FailoversLagging = 0, 0, 0
		return
	}
	cfg.RedisRestarts, cfg.NATSRestarts, cfg.RedisWipes, cfg.RedisOutages = 0, 0, 0, 0
	// The ack dropper proxies one node; a node fault would cut the workers
	// off it for good.
	cfg.AckDropShare = 0
	one := func(n *int) { *n = max(cmp.Or(*n, 1), 0) }
	for _, n := range []*int{&cfg.StreamLeaderKills, &cfg.ConsumerLeaderKills, &cfg.NodeRestarts, &cfg.NodeWipes,
		&cfg.Partitions, &cfg.FailoversSynced, &cfg.FailoversLagging} {
		one(n)
	}
	if cfg.KVBackend {
		cfg.FailoversSynced, cfg.FailoversLagging = 0, 0
	}
	cfg.PartitionFor = cmp.Or(cfg.PartitionFor, PartitionForDefault)
	cfg.LagFor = cmp.Or(cfg.LagFor, LagForDefault)
}

// clusterKinds are the cluster disruptions to plan.
func (cfg *Config) clusterKinds() []string {
	var kinds []string
	for kind, n := range map[string]int{
		KindKillStreamLeader: cfg.StreamLeaderKills, KindKillConsumerLeader: cfg.ConsumerLeaderKills,
		KindRestartNode: cfg.NodeRestarts, KindWipeNode: cfg.NodeWipes, KindPartitionNode: cfg.Partitions,
		KindFailoverSynced: cfg.FailoversSynced, KindFailoverLagging: cfg.FailoversLagging,
	} {
		for range n {
			kinds = append(kinds, kind)
		}
	}
	return kinds
}

// clusterWant is how many of each cluster disruption a run plans.
func (cfg *Config) clusterWant() map[string]int {
	return map[string]int{
		KindKillStreamLeader: cfg.StreamLeaderKills, KindKillConsumerLeader: cfg.ConsumerLeaderKills,
		KindRestartNode: cfg.NodeRestarts, KindWipeNode: cfg.NodeWipes, KindPartitionNode: cfg.Partitions,
		KindFailoverSynced: cfg.FailoversSynced, KindFailoverLagging: cfg.FailoversLagging,
	}
}

// lagFirst moves the lagging failovers ahead of the caught-up ones (the
// times stay): only the first primary's replica replicates through the
// holdable link.
func lagFirst(plan []planned) []planned {
	var slots []int
	var lag, synced int
	for i, p := range plan {
		switch p.kind {
		case KindFailoverLagging:
			lag++
		case KindFailoverSynced:
			synced++
		default:
			continue
		}
		slots = append(slots, i)
	}
	for j, i := range slots {
		if j < lag {
			plan[i].kind = KindFailoverLagging
		} else {
			plan[i].kind = KindFailoverSynced
		}
	}
	_ = synced
	return plan
}

// startServers starts NATS and the idempotency store: one of each, or the
// cluster's.
func (c *cluster) startServers(ctx context.Context) error {
	cfg := c.cfg
	if !cfg.Cluster {
		cfg.logf("starting nats-server, redis-server and wechatsim")
		if err := c.startNATS(ctx); err != nil {
			return err
		}
		return c.startRedis(ctx)
	}
	cfg.logf("starting a JetStream cluster of %d nats-server processes", ClusterNodes)
	if err := c.setupNATSCluster(); err != nil {
		return err
	}
	if err := c.startNATSCluster(ctx); err != nil {
		return err
	}
	if cfg.KVBackend {
		cfg.logf("idempotency store: the JetStream KV bucket, R%d", ClusterNodes)
		return nil
	}
	cfg.logf("starting Redis: a primary, a replica and three Sentinels")
	return c.startSentinels(ctx)
}

// clusterDisruption carries out one cluster disruption into d.
func (c *cluster) clusterDisruption(ctx context.Context, rng *mrand.Rand, d *Disruption) {
	var err error
	switch d.Kind {
	case KindFailoverSynced, KindFailoverLagging:
		d.Target, d.DownSeconds, err = c.failover(ctx, d.Kind == KindFailoverLagging, c.cfg.LagFor)
		c.cfg.logf("%s: killed %s, Sentinel failed over in %.1fs", d.Kind, d.Target, d.DownSeconds)
	case KindPartitionNode:
		d.Target, d.DownSeconds, err = c.natsFault(ctx, c.js, d.Kind, rng.IntN(ClusterNodes), c.cfg.PartitionFor)
		c.cfg.logf("%s: %s cut off for %.1fs", d.Kind, d.Target, d.DownSeconds)
	default:
		d.Target, d.DownSeconds, err = c.natsFault(ctx, c.js, d.Kind, rng.IntN(ClusterNodes), time.Duration(1000+rng.IntN(2000))*time.Millisecond)
		c.cfg.logf("%s: %s down %.1fs", d.Kind, d.Target, d.DownSeconds)
	}
	if err != nil {
		d.Error = err.Error()
		c.cfg.logf("%s: %v", d.Kind, err)
	}
}

// waitSetup waits until the workers' consumer exists: the first worker has
// created the streams and the consumer.
func (c *cluster) waitSetup(ctx context.Context) error {
	nc, err := nats.Connect(c.natsURL(), nats.Name("chaos-setup"))
	if err != nil {
		return fmt.Errorf("chaos: connect: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("chaos: jetstream: %w", err)
	}
	return waitUntil(ctx, 60*time.Second, "the first worker to create the streams and the consumer", func() bool {
		_, err := js.Consumer(ctx, events.StreamJobs, pipeline.ConsumerDefault)
		return err == nil
	})
}
