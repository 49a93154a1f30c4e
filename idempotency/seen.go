package idempotency

// The record of what was published once per order.
//
// WeChat Pay re-sends a payment notification for up to 24 hours (15
// retries), and may send it again after it was acknowledged; the
// reconciler finds the same payment by querying. A JetStream stream's
// duplicate window (10 minutes by default) cannot tell a notification
// re-sent hours later from a new payment, so the notifier and the
// reconciler share a Seen record, kept longer than that horizon
// (SeenTTLDefault, 72h): a payment (or a close) already published is not
// published again, whichever process reports it.
//
// The record is written after the event was stored (PubAck), never before:
// a crash in between leaves the event stored and the record unwritten, and
// the next report publishes again under the same Nats-Msg-Id (a duplicate
// within the window) and writes the record. A record written before the
// event was stored could hide a payment for good.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

// SeenKind names what a Seen record remembers.
type SeenKind string

// The kinds of Seen records.
const (
	// SeenPayment: the order's PaymentSucceeded was stored.
	SeenPayment SeenKind = "payment"
	// SeenClosed: the order's OrderClosed was stored.
	SeenClosed SeenKind = "closed"
	// SeenPrepay: the order's prepay.created was stored. It outlives the
	// outcome record (IDEMPOTENCY_OUTCOME_TTL, or a store that lost it):
	// a duplicate past the stream's duplicate window schedules no second
	// reconciliation, and a worker that cannot recover the order's
	// prepay_id never closes an order whose prepay a checkout may hold.
	SeenPrepay SeenKind = "prepay"
)

// SeenTTLDefault is how long a Seen record lasts: three times WeChat Pay's
// 24-hour notification horizon.
const SeenTTLDefault = 72 * time.Hour

// NotifyHorizon is how long after a payment WeChat Pay may still send its
// notification: 15 retries over 24h4m, with margin. A Seen record, or a
// duplicate window standing in for it, must last at least this long.
const NotifyHorizon = 25 * time.Hour

// Seen remembers which orders' payments (and closes) were published. It is
// safe for concurrent use by many processes. Errors wrap ErrUnavailable
// when the backend cannot be reached.
type Seen interface {
	// Seen reports whether kind was recorded for key.
	Seen(ctx context.Context, kind SeenKind, key Key) (bool, error)
	// MarkSeen records kind for key for ttl (SeenTTLDefault if zero or
	// less).
	MarkSeen(ctx context.Context, kind SeenKind, key Key, ttl time.Duration) error
}

// CheckReplayProtection reports whether a payment reported again — a
// notification re-sent up to NotifyHorizon later, or the
// reconciler's query — is kept from being published twice: by a Seen
// record (hasSeen) that lasts seenTTL, at least the horizon, or without
// one by a duplicate window that long. Workers and the notifier refuse a
// configuration this rejects.
func CheckReplayProtection(hasSeen bool, seenTTL, duplicateWindow time.Duration) error {
	switch {
	case hasSeen && seenTTL < NotifyHorizon:
		return fmt.Errorf("the payments-seen record lasts %s, shorter than WeChat Pay's notification horizon %s: a re-sent notification would publish a second payment",
			seenTTL, NotifyHorizon)
	case !hasSeen && duplicateWindow < NotifyHorizon:
		return fmt.Errorf("without a payments-seen record, the duplicate window %s is shorter than WeChat Pay's notification horizon %s: a re-sent notification would publish a second payment",
			duplicateWindow, NotifyHorizon)
	}
	return nil
}

// RedisSeen is the Redis backend of Seen: one key per order and kind,
// "<prefix>:seen:<kind>:<mchid>:<out_trade_no>" (parts escaped), expiring
// after the TTL.
type RedisSeen struct {
	client redis.UniversalClient
	prefix string
}

// NewRedisSeen answers a Seen record on client (owned by the caller) whose
// keys start with prefix (RedisPrefixDefault if empty).
func NewRedisSeen(client redis.UniversalClient, prefix string) (*RedisSeen, error) {
	if client == nil {
		return nil, errors.New("idempotency: seen: nil redis client")
	}
	if prefix == "" {
		prefix = RedisPrefixDefault
	}
	if strings.ContainsAny(prefix, "{}") {
		return nil, fmt.Errorf("idempotency: seen: prefix %q must not contain '{' or '}'", prefix)
	}
	return &RedisSeen{client: client, prefix: prefix}, nil
}

func (s *RedisSeen) key(kind SeenKind, key Key) string {
	return s.prefix + ":seen:" + string(kind) + ":" + escape(key.MchID) + ":" + escape(key.OutTradeNo)
}

// OpenRedisSeen connects a client for cfg and answers a Seen record on it
// (keys under prefix) with the function that closes the client.
func OpenRedisSeen(cfg RedisClientConfig, prefix string) (*RedisSeen, func(), error) {
	rc, err := NewRedisClient(cfg)
	if err != nil {
		return nil, nil, err
	}
	s, err := NewRedisSeen(rc, prefix)
	if err != nil {
		_ = rc.Close()
		return nil, nil, err
	}
	return s, func() { _ = rc.Close() }, nil
}

// Seen implements Seen.
func (s *RedisSeen) Seen(ctx context.Context, kind SeenKind, key Key) (bool, error) {
	if err := validateKey(key); err != nil {
		return false, err
	}
	n, err := s.client.Exists(ctx, s.key(kind, key)).Result()
	if err != nil {
		return false, fmt.Errorf("%w: seen %s %s: %w", ErrUnavailable, kind, key, err)
	}
	return n == 1, nil
}

// MarkSeen implements Seen.
func (s *RedisSeen) MarkSeen(ctx context.Context, kind SeenKind, key Key, ttl time.Duration) error {
	if err := validateKey(key); err != nil {
		return err
	}
	if err := s.client.Set(ctx, s.key(kind, key), "1", orDefault(ttl, SeenTTLDefault)).Err(); err != nil {
		return fmt.Errorf("%w: mark %s %s: %w", ErrUnavailable, kind, key, err)
	}
	return nil
}

// SeenKVBucketDefault names the KV bucket of the Seen record.
const SeenKVBucketDefault = "orderworker_seen"

// SeenKVConfig configures NewKVSeen.
type SeenKVConfig struct {
	// Bucket names the bucket. Defaults to SeenKVBucketDefault.
	Bucket string
	// TTL is how long a record lasts: the bucket's MaxAge. Defaults to
	// SeenTTLDefault.
	TTL time.Duration
	// Replicas is the bucket's replica count. Defaults to 1.
	Replicas int
	// Storage is where the bucket keeps its data. Defaults to file storage.
	Storage jetstream.StorageType
}

// KVSeen is the JetStream KV backend of Seen: one key per order and kind
// in a bucket whose MaxAge is the TTL.
type KVSeen struct {
	kv  jetstream.KeyValue
	ttl time.Duration
}

// NewKVSeen creates or updates the bucket and answers a Seen record on it.
// MarkSeen's ttl is the bucket's: a shorter one is not honoured.
func NewKVSeen(ctx context.Context, js jetstream.JetStream, cfg SeenKVConfig) (*KVSeen, error) {
	if js == nil {
		return nil, errors.New("idempotency: seen: nil JetStream")
	}
	if cfg.Bucket == "" {
		cfg.Bucket = SeenKVBucketDefault
	}
	cfg.TTL = orDefault(cfg.TTL, SeenTTLDefault)
	if cfg.Replicas < 1 {
		cfg.Replicas = 1
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: cfg.Bucket, Description: "orderworker: payments, closes and prepays already published",
		History: 1, TTL: cfg.TTL, Replicas: cfg.Replicas, Storage: cfg.Storage,
	})
	if err != nil {
		return nil, fmt.Errorf("idempotency: seen: bucket %s: %w", cfg.Bucket, err)
	}
	return &KVSeen{kv: kv, ttl: cfg.TTL}, nil
}

func kvSeenKey(kind SeenKind, key Key) string {
	return string(kind) + "." + escape(key.MchID) + "." + escape(key.OutTradeNo)
}

// Seen implements Seen.
func (s *KVSeen) Seen(ctx context.Context, kind SeenKind, key Key) (bool, error) {
	if err := validateKey(key); err != nil {
		return false, err
	}
	e, err := s.kv.Get(ctx, kvSeenKey(kind, key))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("%w: seen %s %s: %w", ErrUnavailable, kind, key, err)
	}
	return time.Since(e.Created()) < s.ttl, nil
}

// MarkSeen implements Seen.
func (s *KVSeen) MarkSeen(ctx context.Context, kind SeenKind, key Key, _ time.Duration) error {
	if err := validateKey(key); err != nil {
		return err
	}
	if _, err := s.kv.Put(ctx, kvSeenKey(kind, key), []byte("1")); err != nil {
		return fmt.Errorf("%w: mark %s %s: %w", ErrUnavailable, kind, key, err)
	}
	return nil
}
