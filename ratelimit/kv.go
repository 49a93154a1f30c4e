package ratelimit

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// KV defaults.
const (
	// KVBucketDefault names the bucket of the KV store.
	KVBucketDefault = "orderworker_ratelimit"
	// kvMaxAge drops a merchant's state an hour after its last request:
	// by then its TAT is long past and a missing key means the same.
	kvMaxAge = time.Hour
	// kvCASAttempts bounds the re-reads after lost compare-and-set races;
	// each lost race means another worker took a request meanwhile.
	kvCASAttempts = 16
)

var kvKey = regexp.MustCompile(`^[-/_=.a-zA-Z0-9]+$`)

// KV is the Store on a JetStream KV bucket: per merchant, one key holding
// its TAT in Unix nanoseconds, advanced by compare-and-set. See the
// package doc for the clock it relies on.
type KV struct {
	kv  jetstream.KeyValue
	now func() time.Time
}

// KVConfig configures NewKV.
type KVConfig struct {
	// Bucket names the bucket. Defaults to KVBucketDefault.
	Bucket string
	// Replicas is the bucket's replica count. Defaults to 1.
	Replicas int
	// Storage is where the bucket keeps its data. Defaults to file storage.
	Storage jetstream.StorageType
	// Now answers the current time. Defaults to time.Now.
	Now func() time.Time
}

// NewKV creates or updates the bucket and answers the Store on it.
func NewKV(ctx context.Context, js jetstream.JetStream, cfg KVConfig) (*KV, error) {
	cfg.Bucket = cmp.Or(cfg.Bucket, KVBucketDefault)
	cfg.Replicas = cmp.Or(cfg.Replicas, 1)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: cfg.Bucket, Description: "WeChat Pay request budget (GCRA TAT) per merchant",
		History: 1, TTL: kvMaxAge, Storage: cfg.Storage, Replicas: cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("ratelimit: kv bucket %s: %w", cfg.Bucket, err)
	}
	return &KV{kv: kv, now: cfg.Now}, nil
}

// Allow implements Store: the GCRA of redis_rate, with the TAT in the KV.
func (s *KV) Allow(ctx context.Context, key string, rate float64, burst int) (bool, time.Duration, error) {
	if !kvKey.MatchString(key) {
		return false, 0, fmt.Errorf("kv: key %q has characters a KV key cannot hold", key)
	}
	interval := time.Duration(float64(time.Second) / rate)
	burstOffset := interval * time.Duration(max(burst, 1))
	for range kvCASAttempts {
		var tat time.Time
		var rev uint64
		e, err := s.kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return false, 0, fmt.Errorf("kv: get %s: %w", key, err)
		default:
			rev = e.Revision()
			n, perr := strconv.ParseInt(string(e.Value()), 10, 64)
			if perr != nil {
				return false, 0, fmt.Errorf("kv: %s holds %q, not a TAT", key, e.Value())
			}
			tat = time.Unix(0, n)
		}
		now := s.now()
		if tat.Before(now) {
			tat = now
		}
		newTAT := tat.Add(interval)
		if allowAt := newTAT.Add(-burstOffset); now.Before(allowAt) {
			return false, allowAt.Sub(now), nil
		}
		val := []byte(strconv.FormatInt(newTAT.UnixNano(), 10))
		if rev == 0 {
			_, err = s.kv.Create(ctx, key, val)
		} else {
			_, err = s.kv.Update(ctx, key, val, rev)
		}
		if err == nil {
			return true, 0, nil
		}
		if !lostRace(err) {
			return false, 0, fmt.Errorf("kv: write %s: %w", key, err)
		}
	}
	return false, 0, fmt.Errorf("kv: %s: lost %d compare-and-set races in a row", key, kvCASAttempts)
}

// lostRace reports a compare-and-set that another worker won.
func lostRace(err error) bool {
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
