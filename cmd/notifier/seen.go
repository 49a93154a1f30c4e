package main

// The payments-seen record and the events stream (see notifier/payments.go
// and notifier.EnsureStream). The settings share their names and meaning
// with cmd/worker's:
//
//	PAYMENTS_SEEN_BACKEND   redis, kv or none; default IDEMPOTENCY_BACKEND, else redis (the worker's default).
//	                        It must be the workers' record: the same backend, Redis and REDIS_KEY_PREFIX or bucket.
//	PAYMENTS_SEEN_TTL       how long a payment is remembered (default 72h, at least 25h)
//	PAYMENTS_SEEN_KV_BUCKET the bucket of the kv backend (default orderworker_seen)
//	DUPLICATE_WINDOW        the events stream's duplicate window (default 10m); with PAYMENTS_SEEN_BACKEND=none it
//	                        must be at least 25h, or the notifier refuses to start
//	REDIS_ADDRS, REDIS_MASTER_NAME, REDIS_USERNAME, REDIS_PASSWORD_FILE, REDIS_DB, REDIS_TLS, REDIS_TLS_CA_FILE,
//	REDIS_TLS_SERVER_NAME, REDIS_KEY_PREFIX   the redis backend
//	STREAM_REPLICAS, STREAM_STORAGE           the events stream, when the notifier creates it
//
// The KV bucket is opened on first use, so the notifier starts (and
// answers 500, which WeChat Pay retries) while NATS is still unreachable.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/idempotency"
)

// seenConfig is the configuration of this file.
type seenConfig struct {
	Backend, KVBucket, RedisPrefix string
	TTL, DuplicateWindow           time.Duration
	Redis                          idempotency.RedisClientConfig
	Replicas                       int
	Storage                        jetstream.StorageType
}

// loadSeenConfig reads the settings of this file and reports every problem.
func loadSeenConfig(getenv func(string) string) (seenConfig, error) {
	get := func(k, def string) string { return cmp.Or(strings.TrimSpace(getenv(k)), def) }
	var errs []string
	bad := func(k, format string, args ...any) { errs = append(errs, k+": "+fmt.Sprintf(format, args...)) }
	dur := func(k, def string) time.Duration {
		d, err := time.ParseDuration(get(k, def))
		if err != nil || d <= 0 {
			bad(k, "%q is not a positive duration", get(k, def))
		}
		return d
	}
	c := seenConfig{
		Backend:  get("PAYMENTS_SEEN_BACKEND", get("IDEMPOTENCY_BACKEND", "redis")),
		KVBucket: get("PAYMENTS_SEEN_KV_BUCKET", idempotency.SeenKVBucketDefault), RedisPrefix: get("REDIS_KEY_PREFIX", ""),
		TTL: dur("PAYMENTS_SEEN_TTL", "72h"), DuplicateWindow: dur("DUPLICATE_WINDOW", "10m"),
		Storage: jetstream.FileStorage,
	}
	n, err := strconv.Atoi(get("STREAM_REPLICAS", "1"))
	if err != nil || n < 1 || n > 5 {
		bad("STREAM_REPLICAS", "%q is not an integer from 1 to 5", get("STREAM_REPLICAS", "1"))
	}
	c.Replicas = n
	switch s := get("STREAM_STORAGE", "file"); s {
	case "file":
	case "memory":
		c.Storage = jetstream.MemoryStorage
	default:
		bad("STREAM_STORAGE", "%q is not file or memory", s)
	}
	switch c.Backend {
	case "redis":
		c.Redis = loadSeenRedis(get, bad)
	case "kv", "none":
	default:
		bad("PAYMENTS_SEEN_BACKEND", "%q is not redis, kv or none", c.Backend)
	}
	if err := idempotency.CheckReplayProtection(c.Backend != "none", c.TTL, c.DuplicateWindow); err != nil {
		bad("PAYMENTS_SEEN_BACKEND", "%v (PAYMENTS_SEEN_TTL, DUPLICATE_WINDOW)", err)
	}
	if len(errs) > 0 {
		return c, fmt.Errorf("configuration: %d problem(s):\n  %s", len(errs), strings.Join(errs, "\n  "))
	}
	return c, nil
}

func loadSeenRedis(get func(k, def string) string, bad func(k, format string, args ...any)) idempotency.RedisClientConfig {
	r := idempotency.RedisClientConfig{
		MasterName: get("REDIS_MASTER_NAME", ""), Username: get("REDIS_USERNAME", ""),
		CAFile: get("REDIS_TLS_CA_FILE", ""), ServerName: get("REDIS_TLS_SERVER_NAME", ""),
	}
	for _, a := range strings.Split(get("REDIS_ADDRS", ""), ",") {
		if a = strings.TrimSpace(a); a != "" {
			r.Addrs = append(r.Addrs, a)
		}
	}
	if len(r.Addrs) == 0 {
		bad("REDIS_ADDRS", "is required with PAYMENTS_SEEN_BACKEND=redis (or set PAYMENTS_SEEN_BACKEND=kv, as the workers do)")
	}
	var err error
	if r.DB, err = strconv.Atoi(get("REDIS_DB", "0")); err != nil || r.DB < 0 {
		bad("REDIS_DB", "%q is not a database number", get("REDIS_DB", "0"))
	}
	if r.TLS, err = strconv.ParseBool(get("REDIS_TLS", "false")); err != nil {
		bad("REDIS_TLS", "%q is not true or false", get("REDIS_TLS", "false"))
	}
	if pf := get("REDIS_PASSWORD_FILE", ""); pf != "" {
		b, err := os.ReadFile(pf)
		if err != nil {
			bad("REDIS_PASSWORD_FILE", "file %s cannot be read", pf)
		}
		r.Password = strings.TrimSpace(string(b))
	}
	return r
}

// openSeen answers the payments-seen record (nil with "none") and the
// function that closes it.
func openSeen(c seenConfig, js jetstream.JetStream) (idempotency.Seen, func(), error) {
	switch c.Backend {
	case "redis":
		return idempotency.OpenRedisSeen(c.Redis, c.RedisPrefix)
	case "kv":
		return &lazyKVSeen{js: js, cfg: idempotency.SeenKVConfig{Bucket: c.KVBucket, TTL: c.TTL, Replicas: c.Replicas, Storage: c.Storage}}, func() {}, nil
	}
	return nil, func() {}, nil
}

// eventsStream is the events stream the notifier creates when it is
// missing.
func (c seenConfig) eventsStream(prefix, name string) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name: cmp.Or(name, events.StreamEvents), Subjects: events.Subjects{Prefix: prefix}.Events(),
		Replicas: c.Replicas, Storage: c.Storage, Duplicates: c.DuplicateWindow,
	}
}

// lazyKVSeen opens the KV Seen record on first use.
type lazyKVSeen struct {
	js  jetstream.JetStream
	cfg idempotency.SeenKVConfig

	mu   sync.Mutex
	seen *idempotency.KVSeen
}

func (l *lazyKVSeen) get(ctx context.Context) (*idempotency.KVSeen, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen != nil {
		return l.seen, nil
	}
	s, err := idempotency.NewKVSeen(ctx, l.js, l.cfg)
	if err != nil {
		return nil, errors.Join(idempotency.ErrUnavailable, err)
	}
	l.seen = s
	return s, nil
}

// Seen implements idempotency.Seen.
func (l *lazyKVSeen) Seen(ctx context.Context, kind idempotency.SeenKind, key idempotency.Key) (bool, error) {
	s, err := l.get(ctx)
	if err != nil {
		return false, err
	}
	return s.Seen(ctx, kind, key)
}

// MarkSeen implements idempotency.Seen.
func (l *lazyKVSeen) MarkSeen(ctx context.Context, kind idempotency.SeenKind, key idempotency.Key, ttl time.Duration) error {
	s, err := l.get(ctx)
	if err != nil {
		return err
	}
	return s.MarkSeen(ctx, kind, key, ttl)
}
