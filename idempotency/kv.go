package idempotency

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of the JetStream KV backend.
const (
	// KVBucketDefault names the KV bucket of the store.
	KVBucketDefault = "orderworker_idempotency"
	// KVMaxAgeDefault is the bucket's backstop age: twice OutcomeTTLDefault.
	KVMaxAgeDefault = 2 * OutcomeTTLDefault
	// KVMarkerTTLDefault is how long a delete marker stays after a record
	// expires or is released.
	KVMarkerTTLDefault = time.Minute
	// KVTimeoutDefault bounds each call.
	KVTimeoutDefault = 5 * time.Second
)

// casAttempts bounds how often one call re-reads a key after losing a
// compare-and-set race. Each lost race means another writer made progress,
// so a handful is plenty; running out counts as unavailable.
const casAttempts = 8

// KVConfig configures [NewKV] and the bucket it creates or updates.
type KVConfig struct {
	// Bucket names the KV bucket: letters, digits, '-' and '_'. Defaults to
	// KVBucketDefault.
	Bucket string
	// Replicas is the bucket's replica count in a JetStream cluster, 1 to
	// 5. Defaults to 1.
	Replicas int
	// Storage is where the bucket keeps its data. Defaults to
	// jetstream.FileStorage.
	Storage jetstream.StorageType
	// MaxAge is the bucket's age limit, a backstop behind the per-record
	// TTLs: JetStream removes any record older than this, so every lease
	// and outcome TTL must be at most MaxAge (longer ones are refused).
	// Defaults to KVMaxAgeDefault (48h).
	MaxAge time.Duration
	// MarkerTTL is how long the delete marker left by an expired or
	// released record stays, at least 1s. Defaults to KVMarkerTTLDefault.
	MarkerTTL time.Duration
	// Timeout bounds each call, and NewKV; an earlier ctx deadline wins. A
	// request sent just as the connection drops gets no answer, so this is
	// how long such a call takes to fail. Defaults to KVTimeoutDefault.
	Timeout time.Duration
}

// KV is the JetStream KV backend of [Store]: one record per order, written
// with compare-and-set on its revision, which is the fencing token.
type KV struct {
	kv        jetstream.KeyValue
	js        jetstream.JetStream
	subject   string // "$KV.<bucket>."; records are published here directly to give updates a TTL.
	maxAge    time.Duration
	markerTTL time.Duration
	timeout   time.Duration
}

var _ Store = (*KV)(nil)

var bucketName = regexp.MustCompile(`\A[a-zA-Z0-9_-]+\z`)

// NewKV creates the bucket, or updates its settings if it exists, and
// returns a store on it. It needs nats-server 2.11 or later (per-message
// TTLs). js must use the default API prefix (no JetStream domain).
// It returns an error wrapping ErrUnavailable if NATS cannot be reached.
func NewKV(ctx context.Context, js jetstream.JetStream, cfg KVConfig) (*KV, error) {
	if js == nil {
		return nil, errors.New("idempotency: kv: nil JetStream")
	}
	cfg.Bucket = cmp.Or(cfg.Bucket, KVBucketDefault)
	cfg.Replicas = cmp.Or(cfg.Replicas, 1)
	cfg.MaxAge = cmp.Or(cfg.MaxAge, KVMaxAgeDefault)
	cfg.MarkerTTL = cmp.Or(cfg.MarkerTTL, KVMarkerTTLDefault)
	cfg.Timeout = cmp.Or(cfg.Timeout, KVTimeoutDefault)
	switch {
	case !bucketName.MatchString(cfg.Bucket):
		return nil, fmt.Errorf("idempotency: kv: Bucket %q: only letters, digits, '-' and '_'", cfg.Bucket)
	case cfg.Replicas < 1 || cfg.Replicas > 5:
		return nil, fmt.Errorf("idempotency: kv: Replicas %d: must be 1 to 5", cfg.Replicas)
	case cfg.Storage != jetstream.FileStorage && cfg.Storage != jetstream.MemoryStorage:
		return nil, fmt.Errorf("idempotency: kv: Storage %v: unknown", cfg.Storage)
	case cfg.MaxAge < time.Second:
		return nil, fmt.Errorf("idempotency: kv: MaxAge %v: must be at least 1s", cfg.MaxAge)
	case cfg.MarkerTTL < time.Second:
		return nil, fmt.Errorf("idempotency: kv: MarkerTTL %v: must be at least 1s", cfg.MarkerTTL)
	case cfg.Timeout < 0:
		return nil, fmt.Errorf("idempotency: kv: Timeout %v: must be positive", cfg.Timeout)
	}
	s := &KV{
		js:        js,
		subject:   "$KV." + cfg.Bucket + ".",
		maxAge:    cfg.MaxAge,
		markerTTL: cfg.MarkerTTL,
		timeout:   cfg.Timeout,
	}
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:         cfg.Bucket,
		Description:    "orderworker idempotency: order claims and outcomes",
		History:        1,
		TTL:            cfg.MaxAge,
		Storage:        cfg.Storage,
		Replicas:       cfg.Replicas,
		LimitMarkerTTL: cfg.MarkerTTL,
	})
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, jetstream.ErrLimitMarkerTTLNotSupported):
		return nil, fmt.Errorf("idempotency: kv: bucket %s needs per-message TTLs (nats-server 2.11 or later): %w", cfg.Bucket, err)
	case errors.As(err, &apiErr):
		return nil, fmt.Errorf("idempotency: kv: bucket %s: %w", cfg.Bucket, err)
	case err != nil:
		return nil, fmt.Errorf("%w: kv: bucket %s: %w", ErrUnavailable, cfg.Bucket, err)
	}
	s.kv = kv
	return s, nil
}

// kvRecord is the JSON value of one order's key.
type kvRecord struct {
	// State is "held" or "done".
	State       string `json:"state"`
	Fingerprint string `json:"fp"`
	// Token is the holder's token once Extend has rewritten the record;
	// zero means the record's own revision.
	Token uint64 `json:"token,omitempty"`
	// LeaseMS is how long a held record lasts from its timestamp.
	LeaseMS int64 `json:"lease_ms,omitempty"`
	// TTLMS is how long a done record lasts from its timestamp.
	TTLMS   int64  `json:"ttl_ms,omitempty"`
	Outcome []byte `json:"outcome,omitempty"`
}

const (
	stateHeld = "held"
	stateDone = "done"
)

// deadline answers when the record, written at created, ends.
func (r kvRecord) deadline(created time.Time) time.Time {
	ms := r.LeaseMS
	if r.State == stateDone {
		ms = r.TTLMS
	}
	return created.Add(time.Duration(ms) * time.Millisecond)
}

// kvEntry is a decoded, live record; absent, expired and released records
// have none.
type kvEntry struct {
	rec      kvRecord
	revision uint64
	left     time.Duration // until the deadline
}

// token answers the holder's token of a held record.
func (e kvEntry) token() uint64 {
	if e.rec.Token != 0 {
		return e.rec.Token
	}
	return e.revision
}

// kvKey answers the KV key of an order.
func kvKey(key Key) string { return escape(key.MchID) + "." + escape(key.OutTradeNo) }

// load reads the record of k. It answers live == false for an absent key
// and, with the revision to take over, for an expired record.
func (s *KV) load(ctx context.Context, op string, key Key, k string) (e kvEntry, revision uint64, live bool, err error) {
	got, err := s.kv.Get(ctx, k)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return kvEntry{}, 0, false, nil
	}
	if err != nil {
		return kvEntry{}, 0, false, kvUnavailable(op, key, err)
	}
	var rec kvRecord
	if err := json.Unmarshal(got.Value(), &rec); err != nil || (rec.State != stateHeld && rec.State != stateDone) {
		return kvEntry{}, 0, false, fmt.Errorf("idempotency: kv %s %s: revision %d is not a record", op, key, got.Revision())
	}
	left := time.Until(rec.deadline(got.Created()))
	if left <= 0 {
		return kvEntry{}, got.Revision(), false, nil
	}
	return kvEntry{rec: rec, revision: got.Revision(), left: left}, got.Revision(), true, nil
}

// Claim implements [Store.Claim].
func (s *KV) Claim(ctx context.Context, key Key, fingerprint string, lease time.Duration) (Claim, error) {
	if err := validate(key, fingerprint); err != nil {
		return Claim{}, err
	}
	lease = orDefault(lease, LeaseDefault)
	if err := s.checkAge("claim", key, "lease", lease); err != nil {
		return Claim{}, err
	}
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	k := kvKey(key)
	rec := kvRecord{State: stateHeld, Fingerprint: fingerprint, LeaseMS: millis(lease)}
	for range casAttempts {
		e, revision, live, err := s.load(ctx, "claim", key, k)
		if err != nil {
			return Claim{}, err
		}
		if live {
			switch {
			case e.rec.Fingerprint != fingerprint:
				return Claim{State: StateConflict}, nil
			case e.rec.State == stateDone:
				return Claim{State: StateDone, Outcome: e.rec.Outcome}, nil
			default:
				return Claim{State: StateInFlight, ExpiresIn: e.left}, nil
			}
		}
		var token uint64
		if revision == 0 {
			token, err = s.create(ctx, k, rec, lease)
		} else {
			token, err = s.update(ctx, k, rec, revision, lease)
		}
		if lostRace(err) {
			continue
		}
		if err != nil {
			return Claim{}, kvUnavailable("claim", key, err)
		}
		return Claim{State: StateClaimed, Token: token}, nil
	}
	return Claim{}, kvContention("claim", key)
}

// Extend implements [Store.Extend].
func (s *KV) Extend(ctx context.Context, key Key, token uint64, lease time.Duration) error {
	lease = orDefault(lease, LeaseDefault)
	if err := s.checkAge("extend", key, "lease", lease); err != nil {
		return err
	}
	return s.fenced(ctx, "extend", key, token, func(ctx context.Context, k string, e kvEntry) error {
		rec := e.rec
		rec.Token = token
		rec.LeaseMS = millis(lease)
		_, err := s.update(ctx, k, rec, e.revision, lease)
		return err
	})
}

// Complete implements [Store.Complete].
func (s *KV) Complete(ctx context.Context, key Key, token uint64, outcome []byte, ttl time.Duration) error {
	ttl = orDefault(ttl, OutcomeTTLDefault)
	if err := s.checkAge("complete", key, "ttl", ttl); err != nil {
		return err
	}
	return s.fenced(ctx, "complete", key, token, func(ctx context.Context, k string, e kvEntry) error {
		rec := kvRecord{State: stateDone, Fingerprint: e.rec.Fingerprint, TTLMS: millis(ttl), Outcome: outcome}
		_, err := s.update(ctx, k, rec, e.revision, ttl)
		return err
	})
}

// Release implements [Store.Release]. It purges the key, leaving a marker
// that expires after MarkerTTL.
func (s *KV) Release(ctx context.Context, key Key, token uint64) error {
	return s.fenced(ctx, "release", key, token, func(ctx context.Context, k string, e kvEntry) error {
		return s.kv.Purge(ctx, k, jetstream.LastRevision(e.revision), jetstream.PurgeTTL(s.markerTTL))
	})
}

// fenced runs write on the record of key if token holds its live lease,
// re-reading after a lost race.
func (s *KV) fenced(ctx context.Context, op string, key Key, token uint64, write func(context.Context, string, kvEntry) error) error {
	if err := validateKey(key); err != nil {
		return err
	}
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	k := kvKey(key)
	for range casAttempts {
		e, _, live, err := s.load(ctx, op, key, k)
		if err != nil {
			return err
		}
		if !live || e.rec.State != stateHeld || e.token() != token {
			return fmt.Errorf("idempotency: kv %s %s: %w", op, key, ErrStaleToken)
		}
		err = write(ctx, k, e)
		if lostRace(err) {
			continue
		}
		if err != nil {
			return kvUnavailable(op, key, err)
		}
		return nil
	}
	return kvContention(op, key)
}

// create writes rec to a key without a live message (absent, or a marker)
// and answers its revision.
func (s *KV) create(ctx context.Context, k string, rec kvRecord, ttl time.Duration) (uint64, error) {
	data, err := json.Marshal(rec)
	if err != nil {
		return 0, err
	}
	return s.kv.Create(ctx, k, data, jetstream.KeyTTL(wholeSeconds(ttl)))
}

// update replaces revision of k with rec, which expires after ttl, and
// answers the new revision. jetstream.KeyValue.Update cannot set a TTL, so
// it publishes to the bucket's subject itself, with the same headers.
func (s *KV) update(ctx context.Context, k string, rec kvRecord, revision uint64, ttl time.Duration) (uint64, error) {
	data, err := json.Marshal(rec)
	if err != nil {
		return 0, err
	}
	msg := &nats.Msg{Subject: s.subject + k, Header: nats.Header{}, Data: data}
	ack, err := s.js.PublishMsg(ctx, msg,
		jetstream.WithExpectLastSequencePerSubject(revision),
		jetstream.WithMsgTTL(wholeSeconds(ttl)))
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// Ping implements [Store.Ping]: it reads the bucket's status.
func (s *KV) Ping(ctx context.Context) error {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	if _, err := s.kv.Status(ctx); err != nil {
		return fmt.Errorf("%w: kv ping: %w", ErrUnavailable, err)
	}
	return nil
}

// checkAge refuses a duration the bucket's MaxAge would cut short.
func (s *KV) checkAge(op string, key Key, name string, d time.Duration) error {
	if wholeSeconds(d) > s.maxAge {
		return fmt.Errorf("idempotency: kv %s %s: %s %v exceeds the bucket's MaxAge %v", op, key, name, d, s.maxAge)
	}
	return nil
}

// withTimeout bounds ctx by the configured timeout.
func (s *KV) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.timeout)
}

// wholeSeconds rounds d up to whole seconds, at least 1: JetStream message
// TTLs count whole seconds, and a record must outlive its deadline.
func wholeSeconds(d time.Duration) time.Duration {
	return max(time.Second, (d+time.Second-1)/time.Second*time.Second)
}

// lostRace reports a compare-and-set that another writer won.
func lostRace(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// kvUnavailable wraps every JetStream failure: timeouts, a lost connection,
// no responders, a done ctx and server errors alike leave the outcome
// unknown, so the caller must fail closed.
func kvUnavailable(op string, key Key, err error) error {
	return fmt.Errorf("%w: kv %s %s: %w", ErrUnavailable, op, key, err)
}

// kvContention reports a call that lost every compare-and-set race.
func kvContention(op string, key Key) error {
	return fmt.Errorf("%w: kv %s %s: lost %d compare-and-set races", ErrUnavailable, op, key, casAttempts)
}
