package chaos

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxcombine/orderworker/internal/proc"
)

// The replicated Redis of a cluster run: a primary, a replica and three
// Sentinels (quorum 2), real redis-server processes with persistence on.
// The replica reaches the primary through a [replLink], a TCP proxy that
// can hold the replication stream, so that a failover can be made to lose
// the writes the replica had not received, as asynchronous replication
// does when a primary dies after a burst.

// SentinelMasterName is the name the Sentinels monitor: the workers'
// REDIS_MASTER_NAME.
const SentinelMasterName = "chaos"

// Disruption kinds of the replicated Redis.
const (
	// KindFailoverSynced SIGKILLs the primary once the replica has every
	// write; Sentinel promotes the replica.
	KindFailoverSynced = "redis_failover_synced"
	// KindFailoverLagging holds the replication stream for a while, then
	// SIGKILLs the primary: the writes of that while are lost when Sentinel
	// promotes the replica.
	KindFailoverLagging = "redis_failover_lagging"
)

// redisNode is one data server of the replicated Redis.
type redisNode struct {
	name string
	port int
	args []string
	p    *proc.Proc
}

func (n *redisNode) addr() string { return proc.Addr(n.port) }

// sentinelSet is the replicated Redis.
type sentinelSet struct {
	data      [2]*redisNode // [0] starts as the primary
	sentinels []*proc.Proc
	addrs     []string // the Sentinels' addresses
	link      *replLink
}

func (c *cluster) startSentinels(ctx context.Context) error {
	s := &sentinelSet{}
	c.sent = s
	var err error
	ports := make([]int, 2)
	for i := range ports {
		if ports[i], err = proc.FreePort(); err != nil {
			return err
		}
	}
	if s.link, err = newReplLink(proc.Addr(ports[0])); err != nil {
		return err
	}
	for i, name := range []string{"redis-a", "redis-b"} {
		dir := filepath.Join(c.dir, name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("chaos: %w", err)
		}
		args := []string{"--port", strconv.Itoa(ports[i]), "--bind", "127.0.0.1", "--dir", dir,
			"--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--logfile", ""}
		if i == 1 {
			args = append(args, "--replicaof", "127.0.0.1", strconv.Itoa(s.link.port()))
		}
		s.data[i] = &redisNode{name: name, port: ports[i], args: args}
		if err := c.startRedisNode(ctx, s.data[i]); err != nil {
			return err
		}
	}
	for i := range 3 {
		port, err := proc.FreePort()
		if err != nil {
			return err
		}
		dir := filepath.Join(c.dir, "sentinel-"+strconv.Itoa(i+1))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("chaos: %w", err)
		}
		conf := filepath.Join(dir, "sentinel.conf")
		body := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\n"+
			"sentinel monitor %s 127.0.0.1 %d 2\n"+
			"sentinel down-after-milliseconds %s 1000\n"+
			"sentinel failover-timeout %s 10000\n",
			port, dir, SentinelMasterName, ports[0], SentinelMasterName, SentinelMasterName)
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			return fmt.Errorf("chaos: %w", err)
		}
		name := "sentinel-" + strconv.Itoa(i+1)
		p, err := Start(name, filepath.Join(c.logs, name+".log"), nil, c.cfg.RedisServer, conf, "--sentinel")
		if err != nil {
			return err
		}
		c.track(p)
		s.sentinels = append(s.sentinels, p)
		s.addrs = append(s.addrs, proc.Addr(port))
		if err := proc.WaitTCP(ctx, p, proc.Addr(port), 30*time.Second); err != nil {
			return err
		}
	}
	// Sentinel learns the replica from the primary's INFO and the other
	// Sentinels from their hellos; it cannot fail over before both.
	return waitUntil(ctx, 60*time.Second, "the Sentinels to know the replica and each other", func() bool {
		for _, a := range s.addrs {
			m, err := sentinelMaster(ctx, a)
			if err != nil || m["num-slaves"] != "1" || m["num-other-sentinels"] != "2" {
				return false
			}
		}
		return true
	})
}

func (c *cluster) startRedisNode(ctx context.Context, n *redisNode) error {
	p, err := Start(n.name, filepath.Join(c.logs, n.name+".log"), nil, c.cfg.RedisServer, n.args...)
	if err != nil {
		return err
	}
	c.track(p)
	c.mu.Lock()
	n.p = p
	c.mu.Unlock()
	return proc.WaitTCP(ctx, p, n.addr(), 30*time.Second)
}

// sentinelMaster answers SENTINEL MASTER's fields.
func sentinelMaster(ctx context.Context, addr string) (map[string]string, error) {
	// RESP2: RESP3 answers a map, which Slice does not read.
	cl := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second, Protocol: 2})
	defer cl.Close()
	v, err := cl.Do(ctx, "SENTINEL", "MASTER", SentinelMasterName).Slice()
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for i := 0; i+1 < len(v); i += 2 {
		m[fmt.Sprint(v[i])] = fmt.Sprint(v[i+1])
	}
	return m, nil
}

// currentPrimary answers the data node the Sentinels name as primary.
func (c *cluster) currentPrimary(ctx context.Context) (*redisNode, error) {
	m, err := sentinelMaster(ctx, c.sent.addrs[0])
	if err != nil {
		return nil, err
	}
	for _, n := range c.sent.data {
		if m["port"] == strconv.Itoa(n.port) {
			return n, nil
		}
	}
	return nil, fmt.Errorf("sentinel names %s:%s, no data node", m["ip"], m["port"])
}

func info(ctx context.Context, addr, section string) string {
	cl := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second})
	defer cl.Close()
	s, _ := cl.Info(ctx, section).Result()
	return s
}

func infoField(s, key string) string {
	for _, line := range strings.Split(s, "\r\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			return v
		}
	}
	return ""
}

// failover kills the primary (after holding the replication stream for
// hold when lagging) and waits until the other node is the primary the
// Sentinels name and answers as one; then it starts the old primary again,
// which the Sentinels turn into a replica. The outage recorded runs from
// the kill to the promotion; Wiped marks that writes were lost.
func (c *cluster) failover(ctx context.Context, lagging bool, hold time.Duration) (string, float64, error) {
	old, err := c.currentPrimary(ctx)
	if err != nil {
		return "", 0, err
	}
	other := c.sent.data[0]
	if other == old {
		other = c.sent.data[1]
	}
	target := old.name
	if lagging {
		if old != c.sent.data[0] {
			return target, 0, errors.New("the replica does not replicate through the holdable link any more")
		}
		c.sent.link.hold(true)
		sleepCtx(ctx, hold)
	} else {
		// Caught up: the replica's offset has reached the primary's.
		err := waitUntil(ctx, 30*time.Second, "the replica to catch up", func() bool {
			p := infoField(info(ctx, old.addr(), "replication"), "master_repl_offset")
			r := infoField(info(ctx, other.addr(), "replication"), "slave_repl_offset")
			return p != "" && p == r
		})
		if err != nil {
			return target, 0, err
		}
	}
	o := Outage{Server: "redis", Down: time.Now(), Wiped: lagging}
	old.p.Kill()
	c.sent.link.drop()
	c.sent.link.hold(false)
	err = waitUntil(ctx, 60*time.Second, "Sentinel to promote "+other.name, func() bool {
		n, err := c.currentPrimary(ctx)
		return err == nil && n == other && infoField(info(ctx, other.addr(), "replication"), "role") == "master"
	})
	o.Up = time.Now()
	c.addOutage(o)
	if err != nil {
		return target, o.Up.Sub(o.Down).Seconds(), err
	}
	// The old primary comes back with its data; the Sentinels make it a
	// replica of the new one.
	if err := c.startRedisNode(ctx, old); err != nil {
		return target, o.Up.Sub(o.Down).Seconds(), err
	}
	err = waitUntil(ctx, 60*time.Second, old.name+" to replicate "+other.name, func() bool {
		return infoField(info(ctx, old.addr(), "replication"), "master_link_status") == "up"
	})
	return target, o.Up.Sub(o.Down).Seconds(), err
}

// waitUntil polls ok every 200ms until it holds, timeout passes or ctx ends.
func waitUntil(ctx context.Context, timeout time.Duration, what string, ok func() bool) error {
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("chaos: waited %s for %s", timeout, what)
		}
		sleepCtx(ctx, 200*time.Millisecond)
	}
	return nil
}

// replLink is a TCP proxy from the replica to the primary that can hold
// the stream from the primary (the replica then falls behind) and drop its
// connections (what the replica sees when the primary dies).
type replLink struct {
	target string
	ln     net.Listener

	mu    sync.Mutex
	held  bool
	wake  chan struct{} // closed when released
	conns map[net.Conn]bool
}

func newReplLink(target string) (*replLink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("chaos: replication link: %w", err)
	}
	l := &replLink{target: target, ln: ln, wake: make(chan struct{}), conns: map[net.Conn]bool{}}
	close(l.wake)
	go l.serve() // Owned by l; ends in close.
	return l, nil
}

func (l *replLink) port() int { return l.ln.Addr().(*net.TCPAddr).Port }

func (l *replLink) serve() {
	for {
		in, err := l.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.DialTimeout("tcp", l.target, 2*time.Second)
		if err != nil {
			_ = in.Close()
			continue
		}
		l.mu.Lock()
		l.conns[in], l.conns[out] = true, true
		l.mu.Unlock()
		go l.pipe(in, out, true)  // primary to replica; owned by l, ends when either side closes.
		go l.pipe(out, in, false) // replica to primary; owned by l, ends when either side closes.
	}
}

// pipe copies src to dst; gated, it waits while the link is held.
func (l *replLink) pipe(dst, src net.Conn, gated bool) {
	defer func() {
		_ = src.Close()
		_ = dst.Close()
		l.mu.Lock()
		delete(l.conns, src)
		delete(l.conns, dst)
		l.mu.Unlock()
	}()
	buf := make([]byte, 32<<10)
	for {
		k, err := src.Read(buf)
		if k > 0 && gated {
			l.mu.Lock()
			wake := l.wake
			l.mu.Unlock()
			<-wake
			l.mu.Lock()
			dropped := !l.conns[dst]
			l.mu.Unlock()
			if dropped {
				return // what was held is lost with the primary
			}
		}
		if k > 0 {
			if _, werr := dst.Write(buf[:k]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (l *replLink) hold(on bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if on && !l.held {
		l.wake = make(chan struct{})
	}
	if !on && l.held {
		close(l.wake)
	}
	l.held = on
}

// drop closes every connection of the link.
func (l *replLink) drop() {
	l.mu.Lock()
	var conns []net.Conn
	for conn := range l.conns {
		conns = append(conns, conn)
		delete(l.conns, conn)
	}
	l.mu.Unlock()
	for _, conn := range conns {
		_ = conn.Close()
	}
}

func (l *replLink) close() {
	_ = l.ln.Close()
	l.drop()
	l.hold(false)
}
