package chaos

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"

	"github.com/wxcombine/orderworker/loadgen"
)

// AckDropper is a TCP proxy between the workers and nats-server that speaks
// just enough of the NATS client protocol to lose acknowledgements: it reads
// every job the server delivers (MSG/HMSG with a $JS.ACK reply subject),
// and for the jobs of the selected orders drops every +ACK the worker sends
// back. To JetStream this is exactly a worker that died after publishing the
// outcome and before acknowledging — on every delivery, the last one
// included — so the job reaches the consumer's MaxDeliver with its outcome
// published. Everything else passes through byte for byte.
type AckDropper struct {
	target string
	drop   func(loadgen.OrderKey) bool
	ln     net.Listener

	mu      sync.Mutex
	replies map[string]loadgen.OrderKey // ack subjects of selected jobs
	dropped int
	jobs    map[loadgen.OrderKey]bool
	conns   map[net.Conn]bool
	closed  bool
}

// NewAckDropper listens on a free loopback port and forwards to the NATS
// server at target (host:port); drop selects the orders whose acks are lost.
func NewAckDropper(target string, drop func(loadgen.OrderKey) bool) (*AckDropper, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("chaos: ack dropper: %w", err)
	}
	p := &AckDropper{target: target, drop: drop, ln: ln, replies: map[string]loadgen.OrderKey{},
		jobs: map[loadgen.OrderKey]bool{}, conns: map[net.Conn]bool{}}
	go p.serve() // Owned by p; ends in Close.
	return p, nil
}

// URL answers the proxy's nats:// URL.
func (p *AckDropper) URL() string { return "nats://" + p.ln.Addr().String() }

// Dropped answers how many acknowledgements were dropped and of how many
// orders' jobs.
func (p *AckDropper) Dropped() (acks, orders int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dropped, len(p.jobs)
}

// Close stops listening and cuts every connection.
func (p *AckDropper) Close() {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.conns = map[net.Conn]bool{}
	p.mu.Unlock()
	_ = p.ln.Close()
	for c := range conns {
		_ = c.Close()
	}
}

func (p *AckDropper) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = true
	return true
}

func (p *AckDropper) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.handle(c) // Owned by p; ends when either side closes.
	}
}

func (p *AckDropper) handle(client net.Conn) {
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		_ = client.Close() // the server is down: the worker reconnects later
		return
	}
	if !p.track(client) || !p.track(server) {
		_ = client.Close()
		_ = server.Close()
		return
	}
	done := make(chan struct{}, 2)
	go func() { p.pipe(server, client, p.fromServer); done <- struct{}{} }() // Owned by handle.
	go func() { p.pipe(client, server, p.fromClient); done <- struct{}{} }() // Owned by handle.
	<-done
	_ = client.Close()
	_ = server.Close()
	<-done
	p.mu.Lock()
	delete(p.conns, client)
	delete(p.conns, server)
	p.mu.Unlock()
}

// pipe copies protocol frames from src to dst; filter sees each frame (its
// control line and payload) and reports whether to forward it.
func (p *AckDropper) pipe(src io.Reader, dst io.Writer, filter func(op []string, payload []byte) bool) {
	r := bufio.NewReaderSize(src, 64<<10)
	w := bufio.NewWriterSize(dst, 64<<10)
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			if len(line) > 0 {
				_, _ = w.Write(line)
				_ = w.Flush()
			}
			return
		}
		line = bytes.Clone(line)
		op := strings.Fields(string(line))
		var payload []byte
		if n := payloadSize(op); n >= 0 {
			payload = make([]byte, n+2) // payload and its CRLF
			if _, err := io.ReadFull(r, payload); err != nil {
				return
			}
		}
		if filter(op, payload) {
			if _, err := w.Write(line); err != nil {
				return
			}
			if _, err := w.Write(payload); err != nil {
				return
			}
		}
		if r.Buffered() == 0 {
			if err := w.Flush(); err != nil {
				return
			}
		}
	}
}

// payloadSize answers the payload length a control line announces, or -1:
// MSG/PUB end with the size, HMSG/HPUB with the total size.
func payloadSize(op []string) int {
	if len(op) < 3 {
		return -1
	}
	switch strings.ToUpper(op[0]) {
	case "MSG", "PUB", "HMSG", "HPUB":
		n, err := strconv.Atoi(op[len(op)-1])
		if err != nil || n < 0 {
			return -1
		}
		return n
	}
	return -1
}

// fromServer learns the ack subject of every delivered job of a selected
// order: MSG <subject> <sid> <reply> <size>, HMSG <subject> <sid> <reply>
// <header size> <total size>.
func (p *AckDropper) fromServer(op []string, payload []byte) bool {
	verb := strings.ToUpper(op[0])
	var reply string
	var body []byte
	switch {
	case verb == "MSG" && len(op) == 5:
		reply, body = op[3], payload
	case verb == "HMSG" && len(op) == 6:
		reply = op[3]
		if h, err := strconv.Atoi(op[4]); err == nil && h <= len(payload) {
			body = payload[h:]
		}
	default:
		return true
	}
	if !strings.HasPrefix(reply, "$JS.ACK.") {
		return true
	}
	if key := jobKeyOf(body); key.OutTradeNo != "" && p.drop(key) {
		p.mu.Lock()
		p.replies[reply] = key
		p.mu.Unlock()
	}
	return true
}

// fromClient drops a +ACK (or an empty ack) published to the ack subject of
// a selected job; naks, progress and terminations pass.
func (p *AckDropper) fromClient(op []string, payload []byte) bool {
	if strings.ToUpper(op[0]) != "PUB" || len(op) < 3 {
		return true
	}
	body := bytes.TrimSpace(payload)
	if len(body) != 0 && !bytes.Equal(body, []byte("+ACK")) {
		return true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	key, ok := p.replies[op[1]]
	if !ok {
		return true
	}
	delete(p.replies, op[1])
	p.dropped++
	p.jobs[key] = true
	return false
}

// jobKeyOf reads a job's order from its body, leniently.
func jobKeyOf(body []byte) loadgen.OrderKey {
	if !json.Valid(bytes.TrimSpace(body)) {
		return loadgen.OrderKey{}
	}
	return jobKey(body)
}
