package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/idempotency"
	"github.com/wxcombine/orderworker/internal/proc"
	"github.com/wxcombine/orderworker/pipeline"
)

// The JetStream cluster of a cluster run: ClusterNodes nats-server
// processes on loopback, each with its own store, joined by routes that all
// pass through a [routeProxy] so that one node can be cut off from the
// others (a network partition) while its clients still reach it.

// ClusterNodes is the size of the JetStream cluster of a cluster run; the
// workers' STREAM_REPLICAS (streams, consumer and KV bucket) equals it.
const ClusterNodes = 3

// Disruption kinds of a cluster run.
const (
	// KindKillStreamLeader SIGKILLs the node leading the jobs stream and
	// starts it again, store kept.
	KindKillStreamLeader = "kill_stream_leader"
	// KindKillConsumerLeader SIGKILLs the node leading the workers'
	// consumer and starts it again, store kept.
	KindKillConsumerLeader = "kill_consumer_leader"
	// KindRestartNode stops a node (SIGTERM) and starts it with its store.
	KindRestartNode = "restart_node"
	// KindWipeNode stops a node and starts it with its store removed: it
	// must catch up from its peers.
	KindWipeNode = "wipe_node"
	// KindPartitionNode cuts every route of one node for a while; clients
	// connected to it stay connected.
	KindPartitionNode = "partition_node"
)

// natsNode is one nats-server of the cluster.
type natsNode struct {
	idx                          int
	name                         string
	clientPort, monPort, routePt int
	// proxyPort is where the other nodes reach this node's routes.
	proxyPort int
	conf      string
	store     string
	p         *proc.Proc
}

func nodeName(i int) string { return "chaos-nats-" + strconv.Itoa(i+1) }

// setupNATSCluster picks the ports, writes the configurations and starts
// the route proxies.
func (c *cluster) setupNATSCluster() error {
	c.routes = newRouteProxy(c)
	for i := range ClusterNodes {
		n := &natsNode{idx: i, name: nodeName(i), store: filepath.Join(c.dir, "nats", nodeName(i))}
		for _, port := range []*int{&n.clientPort, &n.monPort, &n.routePt} {
			var err error
			if *port, err = proc.FreePort(); err != nil {
				return err
			}
		}
		c.nodes = append(c.nodes, n)
	}
	for _, n := range c.nodes {
		port, err := c.routes.listen(n)
		if err != nil {
			return err
		}
		n.proxyPort = port
	}
	for _, n := range c.nodes {
		var routes []string
		for _, o := range c.nodes {
			if o != n {
				routes = append(routes, fmt.Sprintf("%q", "nats-route://"+proc.Addr(o.proxyPort)))
			}
		}
		// advertise makes the routes other nodes learn by gossip point at
		// the proxy too, so that no route bypasses it. sync_interval is
		// the server's default (2m): a SIGKILLed process loses nothing
		// the kernel holds, and docs/operations.md says what fsync buys.
		// max_payload carries the dead letter of a job of MaxJobBytes
		// (the worker refuses to start otherwise).
		body := fmt.Sprintf(`server_name: %q
listen: %q
http: %q
max_payload: 4MB
jetstream { store_dir: %q }
cluster {
  name: chaos
  listen: %q
  advertise: %q
  routes: [%s]
}
`, n.name, proc.Addr(n.clientPort), proc.Addr(n.monPort), n.store,
			proc.Addr(n.routePt), proc.Addr(n.proxyPort), strings.Join(routes, ", "))
		n.conf = filepath.Join(c.dir, n.name+".conf")
		if err := os.MkdirAll(c.dir, 0o750); err != nil {
			return fmt.Errorf("chaos: %w", err)
		}
		if err := os.WriteFile(n.conf, []byte(body), 0o600); err != nil {
			return fmt.Errorf("chaos: %w", err)
		}
	}
	return nil
}

// startNode starts node n and waits until it answers /healthz (which, in
// a cluster, also waits for JetStream to be current).
func (c *cluster) startNode(ctx context.Context, n *natsNode) error {
	p, err := Start(n.name, filepath.Join(c.logs, n.name+".log"), nil, c.cfg.NATSServer, "-c", n.conf)
	if err != nil {
		return err
	}
	c.track(p)
	c.mu.Lock()
	n.p = p
	c.mu.Unlock()
	return proc.WaitHTTP(ctx, p, "http://"+proc.Addr(n.monPort)+"/healthz", 90*time.Second)
}

// startNATSCluster starts every node at once (they wait for each other to
// elect a meta leader).
func (c *cluster) startNATSCluster(ctx context.Context) error {
	errs := make([]error, len(c.nodes))
	var wg sync.WaitGroup
	for i, n := range c.nodes {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = c.startNode(ctx, n) }()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// clusterURL is every node's client URL, comma-separated, as NATS_URL.
func (c *cluster) clusterURL() string {
	var urls []string
	for _, n := range c.nodes {
		urls = append(urls, "nats://"+proc.Addr(n.clientPort))
	}
	return strings.Join(urls, ",")
}

// nodeByName answers the node of a server name, or nil.
func (c *cluster) nodeByName(name string) *natsNode {
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	return nil
}

// leader answers the node leading the jobs stream (consumer false) or the
// workers' consumer (consumer true), from stream or consumer info.
func (c *cluster) leader(ctx context.Context, js jetstream.JetStream, consumer bool) (*natsNode, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var ci *jetstream.ClusterInfo
	if consumer {
		cons, err := js.Consumer(ctx, events.StreamJobs, pipeline.ConsumerDefault)
		if err != nil {
			return nil, err
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return nil, err
		}
		ci = info.Cluster
	} else {
		st, err := js.Stream(ctx, events.StreamJobs)
		if err != nil {
			return nil, err
		}
		info, err := st.Info(ctx)
		if err != nil {
			return nil, err
		}
		ci = info.Cluster
	}
	if ci == nil || ci.Leader == "" {
		return nil, errors.New("no leader")
	}
	if n := c.nodeByName(ci.Leader); n != nil {
		return n, nil
	}
	return nil, fmt.Errorf("leader %q is no node of the cluster", ci.Leader)
}

// natsFault carries out one JetStream cluster disruption and records it
// as an outage of the node.
func (c *cluster) natsFault(ctx context.Context, js jetstream.JetStream, kind string, pick int, pause time.Duration) (target string, down float64, err error) {
	var n *natsNode
	switch kind {
	case KindKillStreamLeader, KindKillConsumerLeader:
		// Right after another disruption the group may have no leader
		// for a while: ask again until it has one.
		var lerr error
		_ = waitUntil(ctx, 45*time.Second, "a leader", func() bool {
			n, lerr = c.leader(ctx, js, kind == KindKillConsumerLeader)
			return lerr == nil
		})
		if lerr != nil {
			return "", 0, fmt.Errorf("find the leader: %w", lerr)
		}
	default:
		n = c.nodes[pick%len(c.nodes)]
	}
	o := Outage{Server: n.name, Down: time.Now(), Store: c.cfg.KVBackend}
	switch kind {
	case KindKillStreamLeader, KindKillConsumerLeader:
		n.p.Kill()
	case KindPartitionNode:
		c.routes.cut(n.idx, true)
		sleepCtx(ctx, pause)
		c.routes.cut(n.idx, false)
		o.Up = time.Now()
		o.StoreUp = c.storeBack(ctx)
		c.addOutage(o)
		return n.name + " (partitioned)", o.Up.Sub(o.Down).Seconds(), nil
	default:
		n.p.Stop(15 * time.Second)
	}
	if kind == KindWipeNode {
		if err := os.RemoveAll(n.store); err != nil {
			return n.name, 0, fmt.Errorf("wipe %s: %w", n.store, err)
		}
	}
	sleepCtx(ctx, pause)
	err = c.startNode(ctx, n)
	o.Up = time.Now()
	o.StoreUp = c.storeBack(ctx)
	c.addOutage(o)
	return n.name, o.Up.Sub(o.Down).Seconds(), err
}

// storeBack answers when the disruption just undone is over for the
// idempotency store (Outage.StoreUp). With Redis, now. With the JetStream
// KV backend, the node being up again is not enough: the bucket's stream
// may still be electing a leader or catching a node up, and a worker's
// write through any node fails meanwhile ("no response from stream"). So
// the store is back when a write to the bucket succeeds through each node
// in turn, as the harness measures it, within a minute.
func (c *cluster) storeBack(ctx context.Context) time.Time {
	if !c.cfg.KVBackend {
		return time.Now()
	}
	for _, n := range c.nodes {
		_ = waitUntil(ctx, time.Minute, "the idempotency bucket through "+n.name, func() bool { return c.probeBucket(ctx, n) == nil })
	}
	return time.Now()
}

// probeBucket writes the probe key of node n in the idempotency bucket
// through a connection to n alone. The key is no order's: records are
// named <mchid>.<out_trade_no>, and a probe's first token is "chaos-probe".
func (c *cluster) probeBucket(ctx context.Context, n *natsNode) error {
	nc, err := nats.Connect("nats://"+proc.Addr(n.clientPort), nats.NoReconnect(), nats.Timeout(2*time.Second))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	kv, err := js.KeyValue(pctx, idempotency.KVBucketDefault)
	if err != nil {
		return err
	}
	_, err = kv.Put(pctx, "chaos-probe."+n.name, []byte(time.Now().UTC().Format(time.RFC3339Nano)))
	return err
}

func (c *cluster) addOutage(o Outage) {
	c.mu.Lock()
	c.outages = append(c.outages, o)
	c.mu.Unlock()
}

// routeProxy forwards the route connections between the nodes: one
// listener per node, in front of its route port. It tells which node
// dialled a connection from the server ID in the route CONNECT, so that
// cutting a node closes both the routes it accepted and those it dialled.
type routeProxy struct {
	c *cluster

	mu    sync.Mutex
	ids   map[string]int // server_id -> node
	cutOf map[int]bool
	conns map[net.Conn][2]int // both ends -> (from, to)
	lns   []net.Listener
}

func newRouteProxy(c *cluster) *routeProxy {
	return &routeProxy{c: c, ids: map[string]int{}, cutOf: map[int]bool{}, conns: map[net.Conn][2]int{}}
}

// listen starts the listener in front of n's route port.
func (r *routeProxy) listen(n *natsNode) (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("chaos: route proxy: %w", err)
	}
	r.mu.Lock()
	r.lns = append(r.lns, ln)
	r.mu.Unlock()
	go func() { // Owned by r; ends in close.
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go r.handle(conn, n) // Owned by r; ends when either side closes.
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// handle reads the dialler's CONNECT, names its node, and pipes.
func (r *routeProxy) handle(in net.Conn, to *natsNode) {
	out, err := net.DialTimeout("tcp", proc.Addr(to.routePt), 2*time.Second)
	if err != nil {
		_ = in.Close()
		return
	}
	// The accepting server speaks first (INFO); the dialler answers
	// CONNECT {"name":<server_id>,...}. Pipe the server's side at once and
	// read the dialler's first line before piping it.
	go func() { _, _ = io.Copy(in, out); _ = in.Close(); _ = out.Close() }() // Owned by handle's pair.
	_ = in.SetReadDeadline(time.Now().Add(5 * time.Second))
	var first []byte
	buf := make([]byte, 4096)
	for !strings.Contains(string(first), "\r\n") && len(first) < 64<<10 {
		k, err := in.Read(buf)
		first = append(first, buf[:k]...)
		if err != nil {
			break
		}
	}
	_ = in.SetReadDeadline(time.Time{})
	from := r.nodeOfConnect(first)
	r.mu.Lock()
	if r.cutOf[from] || r.cutOf[to.idx] {
		r.mu.Unlock()
		_ = in.Close()
		_ = out.Close()
		return
	}
	r.conns[in] = [2]int{from, to.idx}
	r.conns[out] = [2]int{from, to.idx}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.conns, in)
		delete(r.conns, out)
		r.mu.Unlock()
	}()
	if _, err := out.Write(first); err != nil {
		_ = in.Close()
		_ = out.Close()
		return
	}
	_, _ = io.Copy(out, in)
	_ = in.Close()
	_ = out.Close()
}

// nodeOfConnect answers the node whose server ID the CONNECT line names,
// asking every node's /varz when the ID is new (a restarted server has a
// new one); -1 when unknown.
func (r *routeProxy) nodeOfConnect(first []byte) int {
	line, _, _ := strings.Cut(string(first), "\r\n")
	js, ok := strings.CutPrefix(line, "CONNECT ")
	if !ok {
		return -1
	}
	var ci struct {
		Name string `json:"name"`
	}
	if json.Unmarshal([]byte(js), &ci) != nil || ci.Name == "" {
		return -1
	}
	for attempt := range 2 {
		r.mu.Lock()
		n, ok := r.ids[ci.Name]
		r.mu.Unlock()
		if ok || attempt == 1 {
			if !ok {
				return -1
			}
			return n
		}
		r.refreshIDs()
	}
	return -1
}

func (r *routeProxy) refreshIDs() {
	client := &http.Client{Timeout: 2 * time.Second}
	for _, n := range r.c.nodes {
		resp, err := client.Get("http://" + proc.Addr(n.monPort) + "/varz")
		if err != nil {
			continue
		}
		var v struct {
			ID string `json:"server_id"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&v)
		_ = resp.Body.Close()
		if v.ID != "" {
			r.mu.Lock()
			r.ids[v.ID] = n.idx
			r.mu.Unlock()
		}
	}
}

// cut isolates node i (on) or heals it (off): every route from or to it is
// closed and new ones are refused until it is healed.
func (r *routeProxy) cut(i int, on bool) {
	r.mu.Lock()
	r.cutOf[i] = on
	var doomed []net.Conn
	if on {
		for conn, ends := range r.conns {
			if ends[0] == i || ends[1] == i {
				doomed = append(doomed, conn)
			}
		}
	}
	r.mu.Unlock()
	for _, conn := range doomed {
		_ = conn.Close()
	}
}

// close stops the listeners and cuts every connection.
func (r *routeProxy) close() {
	r.mu.Lock()
	lns := r.lns
	var conns []net.Conn
	for conn := range r.conns {
		conns = append(conns, conn)
	}
	r.mu.Unlock()
	for _, ln := range lns {
		_ = ln.Close()
	}
	for _, conn := range conns {
		_ = conn.Close()
	}
}

// NATSCluster is a JetStream cluster of ClusterNodes nats-server processes
// on loopback, started as a chaos run starts it (routes through the
// route proxy), for other harnesses such as the benchmark.
type NATSCluster struct {
	c *cluster
}

// StartNATSCluster starts the cluster with the nats-server binary bin, its
// stores, configurations and logs under dir, and waits until every node is
// healthy.
func StartNATSCluster(ctx context.Context, dir, bin string) (*NATSCluster, error) {
	cfg := &Config{Dir: dir, NATSServer: bin, Cluster: true}
	c := &cluster{cfg: cfg, dir: dir, logs: filepath.Join(dir, "logs"), exits: map[string]time.Time{}}
	if err := c.setupNATSCluster(); err != nil {
		c.shutdown()
		return nil, err
	}
	if err := c.startNATSCluster(ctx); err != nil {
		c.shutdown()
		return nil, err
	}
	return &NATSCluster{c: c}, nil
}

// URL answers every node's client URL, comma-separated (NATS_URL).
func (n *NATSCluster) URL() string { return n.c.clusterURL() }

// PIDs answers the nodes' process ids, by server name.
func (n *NATSCluster) PIDs() map[string]int {
	m := map[string]int{}
	for _, node := range n.c.nodes {
		m[node.name] = node.p.PID()
	}
	return m
}

// Stop stops every node.
func (n *NATSCluster) Stop() { n.c.shutdown() }

// StartSingleNATS starts one nats-server with JetStream as a NATSCluster
// of one node (no routes), for comparisons with the cluster.
func StartSingleNATS(ctx context.Context, dir, bin string) (*NATSCluster, error) {
	cfg := &Config{Dir: dir, NATSServer: bin}
	c := &cluster{cfg: cfg, dir: dir, logs: filepath.Join(dir, "logs"), exits: map[string]time.Time{}}
	n := &natsNode{name: nodeName(0), store: filepath.Join(dir, "nats", nodeName(0))}
	for _, port := range []*int{&n.clientPort, &n.monPort} {
		var err error
		if *port, err = proc.FreePort(); err != nil {
			return nil, err
		}
	}
	body := fmt.Sprintf("server_name: %q\nlisten: %q\nhttp: %q\njetstream { store_dir: %q }\n",
		n.name, proc.Addr(n.clientPort), proc.Addr(n.monPort), n.store)
	n.conf = filepath.Join(dir, n.name+".conf")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("chaos: %w", err)
	}
	if err := os.WriteFile(n.conf, []byte(body), 0o600); err != nil {
		return nil, fmt.Errorf("chaos: %w", err)
	}
	c.nodes = []*natsNode{n}
	if err := c.startNode(ctx, n); err != nil {
		c.shutdown()
		return nil, err
	}
	return &NATSCluster{c: c}, nil
}
