package pipeline

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/events"
)

// PauseBucketDefault is the JetStream KV bucket that holds the pause
// switches, one key per consumer.
const PauseBucketDefault = "orderworker_control"

// PauseConfig configures a Pause.
type PauseConfig struct {
	// JetStream reaches the bucket. Required.
	JetStream jetstream.JetStream
	// Bucket is the KV bucket of the switches. Defaults to
	// PauseBucketDefault; created when missing.
	Bucket string
	// Stream and Consumer name the switch: every worker of one durable
	// consumer of one jobs stream (one flavour) watches the same key, and
	// another flavour's is its own. Default to events.StreamJobs and
	// ConsumerDefault.
	Stream, Consumer string
	// Replicas is the bucket's replica count when it is created. Defaults
	// to 1.
	Replicas int
	// OnChange, when set, is called with every change of the state (and
	// once with the initial one), from the watching goroutine. Defaults to
	// none.
	OnChange func(PauseState)
}

// PauseState is the value of a pause switch. The key's absence means
// running.
type PauseState struct {
	Paused bool      `json:"paused"`
	Reason string    `json:"reason,omitempty"`
	By     string    `json:"by,omitempty"`
	At     time.Time `json:"at"`
}

// Pause is the operator's switch that stops and resumes consumption on
// every worker of one consumer at once, whatever scales them (KEDA's
// minimum replicas override `kubectl scale --replicas=0`). The state is a
// key of a JetStream KV bucket that every worker watches, so a switch set
// once reaches the workers running now and those started later, and
// survives restarts. The consume loop calls Wait before each pull; Paused
// feeds readiness and metrics. It is safe for concurrent use.
type Pause struct {
	kv  jetstream.KeyValue
	key string

	mu      sync.Mutex
	state   PauseState
	resumed chan struct{} // closed while running; open while paused
	pausing chan struct{} // closed while paused; open while running

	stop func()
	done chan struct{}
}

// PauseKey answers the key of the switch of consumer on the jobs stream.
func PauseKey(stream, consumer string) string {
	return "pause." + cmp.Or(stream, events.StreamJobs) + "." + cmp.Or(consumer, ConsumerDefault)
}

// pauseBucket answers the bucket of the switches, created when missing.
func pauseBucket(ctx context.Context, js jetstream.JetStream, bucket string, replicas int) (jetstream.KeyValue, error) {
	bucket = cmp.Or(bucket, PauseBucketDefault)
	kv, err := js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: bucket, Description: "orderworker: operators' pause switches, one key per consumer",
			History: 5, Replicas: cmp.Or(replicas, 1),
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, bucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("pipeline: pause bucket %s: %w", bucket, err)
	}
	return kv, nil
}

// NewPause binds the switch of cfg.Consumer, reads its current state and
// watches it until Stop.
func NewPause(ctx context.Context, cfg PauseConfig) (*Pause, error) {
	if cfg.JetStream == nil {
		return nil, errors.New("pipeline: pause: missing JetStream")
	}
	kv, err := pauseBucket(ctx, cfg.JetStream, cfg.Bucket, cfg.Replicas)
	if err != nil {
		return nil, err
	}
	p := &Pause{kv: kv, key: PauseKey(cfg.Stream, cfg.Consumer), resumed: make(chan struct{}), pausing: make(chan struct{}), done: make(chan struct{})}
	close(p.resumed)
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w, err := kv.Watch(wctx, p.key)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("pipeline: pause: watch %s: %w", p.key, err)
	}
	p.stop = cancel
	// The initial value arrives first, then a nil entry.
	initial := make(chan struct{})
	go func() { // Owned by p: ends on Stop.
		defer close(p.done)
		defer func() { _ = w.Stop() }()
		first := true
		for {
			select {
			case <-wctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil {
					if first {
						first = false
						p.apply(PauseState{}, cfg.OnChange, true)
						close(initial)
					}
					continue
				}
				var st PauseState
				if e.Operation() == jetstream.KeyValuePut {
					if err := json.Unmarshal(e.Value(), &st); err != nil {
						st = PauseState{Paused: true, Reason: "unreadable switch value; treated as paused"}
					}
				}
				p.apply(st, cfg.OnChange, first)
				if first {
					first = false
					close(initial)
				}
			}
		}
	}()
	select {
	case <-initial:
		return p, nil
	case <-ctx.Done():
		p.Stop()
		return nil, fmt.Errorf("pipeline: pause: initial state: %w", ctx.Err())
	}
}

func (p *Pause) apply(st PauseState, onChange func(PauseState), initial bool) {
	p.mu.Lock()
	changed := st.Paused != p.state.Paused
	p.state = st
	switch {
	case changed && st.Paused:
		p.resumed = make(chan struct{})
		close(p.pausing)
	case changed:
		p.pausing = make(chan struct{})
		close(p.resumed)
	}
	p.mu.Unlock()
	if onChange != nil && (changed || initial) {
		onChange(st)
	}
}

// Paused reports whether consumption is paused now.
func (p *Pause) Paused() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state.Paused
}

// State answers the switch's current value.
func (p *Pause) State() PauseState {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state
}

// Wait answers nil at once while running; while paused it blocks until
// consumption resumes (nil) or ctx ends (ctx's error).
func (p *Pause) Wait(ctx context.Context) error {
	p.mu.Lock()
	resumed := p.resumed
	p.mu.Unlock()
	select {
	case <-resumed:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Pausing answers a channel closed once consumption is paused (at once if
// it is paused now). After a resume, call it again for the next pause.
func (p *Pause) Pausing() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pausing
}

// Stop ends the watch. Wait keeps answering from the last state.
func (p *Pause) Stop() {
	p.stop()
	<-p.done
}

// SetPause sets the switch of consumer on the jobs stream in bucket
// (PauseBucketDefault when ""): paused with a reason, or running (the key is
// deleted). Every worker of that consumer follows within moments.
func SetPause(ctx context.Context, js jetstream.JetStream, bucket, stream, consumer string, st PauseState) error {
	kv, err := pauseBucket(ctx, js, bucket, 1)
	if err != nil {
		return err
	}
	key := PauseKey(stream, consumer)
	if !st.Paused {
		if err := kv.Delete(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("pipeline: resume %s: %w", key, err)
		}
		return nil
	}
	if st.At.IsZero() {
		st.At = time.Now().UTC()
	}
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if _, err := kv.Put(ctx, key, data); err != nil {
		return fmt.Errorf("pipeline: pause %s: %w", key, err)
	}
	return nil
}

// GetPause answers the switch of consumer on the jobs stream in bucket; a
// missing key or bucket is running.
func GetPause(ctx context.Context, js jetstream.JetStream, bucket, stream, consumer string) (PauseState, error) {
	kv, err := js.KeyValue(ctx, cmp.Or(bucket, PauseBucketDefault))
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return PauseState{}, nil
	}
	if err != nil {
		return PauseState{}, err
	}
	e, err := kv.Get(ctx, PauseKey(stream, consumer))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return PauseState{}, nil
	}
	if err != nil {
		return PauseState{}, err
	}
	var st PauseState
	if json.Unmarshal(e.Value(), &st) != nil {
		st = PauseState{Paused: true, Reason: "unreadable switch value"} // as the workers read it
	}
	return st, nil
}
