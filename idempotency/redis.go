package idempotency

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Defaults of the Redis backend.
const (
	// RedisPrefixDefault starts every Redis key of the store.
	RedisPrefixDefault = "orderworker:idem"
	// FenceGraceDefault is how long a key's fence counter outlives the end
	// of its last lease.
	FenceGraceDefault = time.Hour
)

// RedisConfig configures [NewRedis].
type RedisConfig struct {
	// Prefix starts every key, inside the hash tag; it must not contain
	// '{' or '}'. Defaults to RedisPrefixDefault.
	Prefix string
	// FenceGrace is how long a key's fence counter outlives the end of its
	// last lease, so that tokens keep growing by the counter rather than by
	// the server clock alone. Defaults to FenceGraceDefault.
	FenceGrace time.Duration
}

// Redis is the Redis backend of [Store]. It works with a single server,
// Sentinel or Cluster through [redis.UniversalClient].
type Redis struct {
	client     redis.UniversalClient
	prefix     string
	fenceGrace time.Duration
}

var _ Store = (*Redis)(nil)

// NewRedis returns a store on client, which the caller keeps owning and
// closes. It does no I/O; use [Redis.Ping] to check the connection.
func NewRedis(client redis.UniversalClient, cfg RedisConfig) (*Redis, error) {
	if client == nil {
		return nil, errors.New("idempotency: redis: nil client")
	}
	cfg.Prefix = cmp.Or(cfg.Prefix, RedisPrefixDefault)
	cfg.FenceGrace = cmp.Or(cfg.FenceGrace, FenceGraceDefault)
	if strings.ContainsAny(cfg.Prefix, "{}") {
		return nil, fmt.Errorf("idempotency: redis: Prefix %q must not contain '{' or '}'", cfg.Prefix)
	}
	if cfg.FenceGrace < 0 {
		return nil, fmt.Errorf("idempotency: redis: FenceGrace %v must not be negative", cfg.FenceGrace)
	}
	return &Redis{client: client, prefix: cfg.Prefix, fenceGrace: cfg.FenceGrace}, nil
}

// keys answers the lease, done and fence keys of key, in this order; they
// share one hash tag.
func (s *Redis) keys(key Key) []string {
	tag := "{" + s.prefix + ":" + escape(key.MchID) + ":" + escape(key.OutTradeNo) + "}"
	return []string{tag + ":lease", tag + ":done", tag + ":fence"}
}

// claimScript: KEYS lease, done, fence; ARGV fingerprint, lease ms, fence
// grace ms. Answers {"done", outcome}, {"conflict"}, {"in_flight", pttl} or
// {"claimed", token}.
var claimScript = redis.NewScript(`
local done = redis.call('HMGET', KEYS[2], 'fp', 'out')
if done[1] then
  if done[1] == ARGV[1] then return {'done', done[2]} end
  return {'conflict'}
end
local held = redis.call('HGET', KEYS[1], 'fp')
if held then
  if held == ARGV[1] then return {'in_flight', redis.call('PTTL', KEYS[1])} end
  return {'conflict'}
end
local t = redis.call('TIME')
local tok = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = tonumber(redis.call('GET', KEYS[3]) or '0')
if last >= tok then tok = last + 1 end
tok = string.format('%.0f', tok)
local lease = tonumber(ARGV[2])
local fence = lease + tonumber(ARGV[3])
local left = redis.call('PTTL', KEYS[3])
if left > fence then fence = left end
redis.call('SET', KEYS[3], tok, 'PX', fence)
redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'tok', tok)
redis.call('PEXPIRE', KEYS[1], lease)
return {'claimed', tok}
`)

// extendScript: KEYS lease, fence; ARGV token, lease ms, fence grace ms.
// Answers 1, or 0 for a stale token.
var extendScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'tok') ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local fence = tonumber(ARGV[2]) + tonumber(ARGV[3])
if redis.call('PTTL', KEYS[2]) < fence then redis.call('PEXPIRE', KEYS[2], fence) end
return 1
`)

// completeScript: KEYS lease, done, fence; ARGV token, outcome, ttl ms.
// Answers 1, or 0 for a stale token.
var completeScript = redis.NewScript(`
local held = redis.call('HMGET', KEYS[1], 'tok', 'fp')
if held[1] ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[2], 'fp', held[2], 'out', ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
if redis.call('PTTL', KEYS[3]) < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[3], ARGV[3]) end
return 1
`)

// releaseScript: KEYS lease; ARGV token. Answers 1, or 0 for a stale token.
// The fence keeps its expiry, which outlasts the lease.
var releaseScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'tok') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
`)

// Claim implements [Store.Claim].
func (s *Redis) Claim(ctx context.Context, key Key, fingerprint string, lease time.Duration) (Claim, error) {
	if err := validate(key, fingerprint); err != nil {
		return Claim{}, err
	}
	lease = orDefault(lease, LeaseDefault)
	res, err := claimScript.Run(ctx, s.client, s.keys(key), fingerprint, millis(lease), millis(s.fenceGrace)).Slice()
	if err != nil {
		return Claim{}, redisUnavailable("claim", key, err)
	}
	c, ok := parseClaim(res)
	if !ok {
		return Claim{}, fmt.Errorf("idempotency: redis claim %s: unexpected reply %v", key, replyShape(res))
	}
	return c, nil
}

// parseClaim decodes the reply of claimScript.
func parseClaim(res []any) (Claim, bool) {
	if len(res) == 0 {
		return Claim{}, false
	}
	state, _ := res[0].(string)
	switch {
	case state == "conflict" && len(res) == 1:
		return Claim{State: StateConflict}, true
	case len(res) != 2:
		return Claim{}, false
	case state == "done":
		out, ok := res[1].(string)
		return Claim{State: StateDone, Outcome: []byte(out)}, ok
	case state == "in_flight":
		ms, ok := res[1].(int64)
		return Claim{State: StateInFlight, ExpiresIn: time.Duration(max(ms, 0)) * time.Millisecond}, ok
	case state == "claimed":
		s, _ := res[1].(string)
		tok, err := strconv.ParseUint(s, 10, 64)
		return Claim{State: StateClaimed, Token: tok}, err == nil && tok > 0
	}
	return Claim{}, false
}

// replyShape describes an unexpected reply without its contents, which may
// hold an outcome.
func replyShape(res []any) string {
	types := make([]string, len(res))
	for i, v := range res {
		types[i] = fmt.Sprintf("%T", v)
	}
	if len(res) > 0 {
		if s, ok := res[0].(string); ok && len(s) < 16 {
			types[0] = strconv.Quote(s)
		}
	}
	return "[" + strings.Join(types, " ") + "]"
}

// Extend implements [Store.Extend].
func (s *Redis) Extend(ctx context.Context, key Key, token uint64, lease time.Duration) error {
	if err := validateKey(key); err != nil {
		return err
	}
	lease = orDefault(lease, LeaseDefault)
	k := s.keys(key)
	ok, err := extendScript.Run(ctx, s.client, []string{k[0], k[2]}, token, millis(lease), millis(s.fenceGrace)).Bool()
	return s.fenced("extend", key, ok, err)
}

// Complete implements [Store.Complete].
func (s *Redis) Complete(ctx context.Context, key Key, token uint64, outcome []byte, ttl time.Duration) error {
	if err := validateKey(key); err != nil {
		return err
	}
	ttl = orDefault(ttl, OutcomeTTLDefault)
	ok, err := completeScript.Run(ctx, s.client, s.keys(key), token, outcome, millis(ttl)).Bool()
	return s.fenced("complete", key, ok, err)
}

// Release implements [Store.Release].
func (s *Redis) Release(ctx context.Context, key Key, token uint64) error {
	if err := validateKey(key); err != nil {
		return err
	}
	ok, err := releaseScript.Run(ctx, s.client, s.keys(key)[:1], token).Bool()
	return s.fenced("release", key, ok, err)
}

// fenced maps the reply of a fenced script.
func (s *Redis) fenced(op string, key Key, ok bool, err error) error {
	switch {
	case err != nil:
		return redisUnavailable(op, key, err)
	case !ok:
		return fmt.Errorf("idempotency: redis %s %s: %w", op, key, ErrStaleToken)
	}
	return nil
}

// Ping implements [Store.Ping].
func (s *Redis) Ping(ctx context.Context) error {
	if err := s.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("%w: redis ping: %w", ErrUnavailable, err)
	}
	return nil
}

// redisUnavailable wraps every Redis failure: connection errors, timeouts,
// a done ctx and server errors alike leave the outcome unknown, so the
// caller must fail closed.
func redisUnavailable(op string, key Key, err error) error {
	return fmt.Errorf("%w: redis %s %s: %w", ErrUnavailable, op, key, err)
}

// RedisClientConfig configures [NewRedisClient]. One config reaches a single
// server, a Sentinel-managed primary or a Cluster.
type RedisClientConfig struct {
	// Addrs are host:port addresses: one server, the Sentinels when
	// MasterName is set, or Cluster seed nodes when there are several (or
	// Cluster is set). Required.
	Addrs []string
	// MasterName selects Sentinel: the name of the monitored primary.
	// Defaults to "" (no Sentinel).
	MasterName string
	// Cluster forces Cluster mode with a single seed address. Defaults to
	// false (Cluster only when Addrs has several entries).
	Cluster bool
	// Username is the ACL user. Defaults to "" (the default user).
	Username string
	// Password is the ACL or requirepass password; it is never logged.
	// Defaults to "" (no AUTH).
	Password string
	// SentinelUsername and SentinelPassword authenticate to the Sentinels.
	// Default to "" (no AUTH).
	SentinelUsername string
	// SentinelPassword is never logged. Defaults to "".
	SentinelPassword string
	// DB selects the database; Cluster allows only 0. Defaults to 0.
	DB int
	// TLS turns on TLS. Defaults to false.
	TLS bool
	// CAFile is a PEM file of the CAs that sign the servers' certificates,
	// used with TLS. Defaults to "" (the system roots).
	CAFile string
	// ServerName is the name checked in the servers' certificates, used
	// with TLS. Defaults to "" (the host of each address).
	ServerName string
	// DialTimeout bounds connecting. Defaults to 5s.
	DialTimeout time.Duration
	// DialAttempts is how many times one connection is dialed, 100ms
	// apart, before a command fails. Defaults to 5.
	DialAttempts int
	// ReadTimeout bounds waiting for a reply. Defaults to 3s.
	ReadTimeout time.Duration
	// WriteTimeout bounds sending a command. Defaults to ReadTimeout.
	WriteTimeout time.Duration
	// MaxRetries is how often a command is retried after a network error;
	// -1 disables retries. Defaults to 3.
	MaxRetries int
	// PoolSize is the number of connections per node. Defaults to 10 per
	// CPU.
	PoolSize int
}

// LogValue logs the config without its passwords.
func (c RedisClientConfig) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Any("addrs", c.Addrs),
		slog.String("master_name", c.MasterName),
		slog.Bool("cluster", c.Cluster),
		slog.String("username", c.Username),
		slog.Bool("password_set", c.Password != ""),
		slog.Int("db", c.DB),
		slog.Bool("tls", c.TLS),
		slog.String("ca_file", c.CAFile),
	)
}

// Defaults of [RedisClientConfig].
const (
	// RedisDialTimeoutDefault bounds connecting to Redis.
	RedisDialTimeoutDefault = 5 * time.Second
	// RedisReadTimeoutDefault bounds waiting for a Redis reply.
	RedisReadTimeoutDefault = 3 * time.Second
)

// NewRedisClient builds a client from cfg: a Sentinel failover client when
// MasterName is set, a Cluster client for several addresses or Cluster, else
// a single-server client. The caller closes it. It does no I/O.
func NewRedisClient(cfg RedisClientConfig) (redis.UniversalClient, error) {
	opts, err := cfg.options()
	if err != nil {
		return nil, err
	}
	return redis.NewUniversalClient(opts), nil
}

// options validates cfg and converts it.
func (c RedisClientConfig) options() (*redis.UniversalOptions, error) {
	if len(c.Addrs) == 0 {
		return nil, errors.New("idempotency: redis client: Addrs is empty")
	}
	for i, a := range c.Addrs {
		if a == "" {
			return nil, fmt.Errorf("idempotency: redis client: Addrs[%d] is empty", i)
		}
	}
	cluster := c.MasterName == "" && (c.Cluster || len(c.Addrs) > 1)
	if cluster && c.DB != 0 {
		return nil, fmt.Errorf("idempotency: redis client: DB %d: Cluster allows only DB 0", c.DB)
	}
	if c.DB < 0 {
		return nil, fmt.Errorf("idempotency: redis client: DB %d is negative", c.DB)
	}
	if !c.TLS && (c.CAFile != "" || c.ServerName != "") {
		return nil, errors.New("idempotency: redis client: CAFile and ServerName need TLS")
	}
	if c.DialAttempts < 0 {
		return nil, fmt.Errorf("idempotency: redis client: DialAttempts %d is negative", c.DialAttempts)
	}
	if c.MaxRetries < -1 {
		return nil, fmt.Errorf("idempotency: redis client: MaxRetries %d is below -1", c.MaxRetries)
	}
	for name, d := range map[string]time.Duration{"DialTimeout": c.DialTimeout, "ReadTimeout": c.ReadTimeout, "WriteTimeout": c.WriteTimeout} {
		if d < 0 {
			return nil, fmt.Errorf("idempotency: redis client: %s %v is negative", name, d)
		}
	}
	opts := &redis.UniversalOptions{
		Addrs:            c.Addrs,
		MasterName:       c.MasterName,
		IsClusterMode:    c.Cluster && c.MasterName == "",
		Username:         c.Username,
		Password:         c.Password,
		SentinelUsername: c.SentinelUsername,
		SentinelPassword: c.SentinelPassword,
		DB:               c.DB,
		DialTimeout:      cmp.Or(c.DialTimeout, RedisDialTimeoutDefault),
		ReadTimeout:      cmp.Or(c.ReadTimeout, RedisReadTimeoutDefault),
		WriteTimeout:     cmp.Or(c.WriteTimeout, c.ReadTimeout, RedisReadTimeoutDefault),
		DialerRetries:    c.DialAttempts,
		MaxRetries:       c.MaxRetries,
		PoolSize:         c.PoolSize,
		// Honor the caller's ctx deadline as well as the timeouts above.
		ContextTimeoutEnabled: true,
	}
	if c.TLS {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName}
		if c.CAFile != "" {
			pem, err := os.ReadFile(c.CAFile)
			if err != nil {
				return nil, fmt.Errorf("idempotency: redis client: CAFile: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("idempotency: redis client: CAFile %s: no PEM certificate", c.CAFile)
			}
			tc.RootCAs = pool
		}
		opts.TLSConfig = tc
	}
	return opts, nil
}

// LogRedisTo sends go-redis's own messages (a pool that cannot dial, a
// Sentinel switching primaries) to log as warnings, instead of its default
// of plain text lines on stderr among a service's JSON ones. go-redis has
// one logger per process.
func LogRedisTo(log *slog.Logger) {
	redis.SetLogger(redisLogger{log: log.With(slog.String("component", "redis"))})
}

// redisLogger adapts a slog.Logger to go-redis's logging interface.
type redisLogger struct{ log *slog.Logger }

// Printf logs one go-redis message.
func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.WarnContext(ctx, strings.TrimSpace(fmt.Sprintf(format, v...)))
}
