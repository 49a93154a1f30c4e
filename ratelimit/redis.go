package ratelimit

import (
	"context"
	"math"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
)

// RedisPrefixDefault starts every key of the Redis store (after
// redis_rate's own "rate:").
const RedisPrefixDefault = "orderworker:wechat:"

// ratePeriod is the period of the redis_rate limits: a rate r is r·1000
// requests per 1000 s, so fractional rates (and rates lowered after
// FREQUENCY_LIMITED) keep a millirequest of precision.
const ratePeriod = 1000 * time.Second

// Redis is the Store on Redis (a single server, Sentinel or Cluster: each
// merchant is one key), with github.com/go-redis/redis_rate/v10.
type Redis struct {
	lim    *redis_rate.Limiter
	prefix string
}

// NewRedis answers the Store on rdb; prefix defaults to RedisPrefixDefault.
func NewRedis(rdb redis.UniversalClient, prefix string) *Redis {
	if prefix == "" {
		prefix = RedisPrefixDefault
	}
	return &Redis{lim: redis_rate.NewLimiter(rdb), prefix: prefix}
}

// Allow implements Store.
func (s *Redis) Allow(ctx context.Context, key string, rate float64, burst int) (bool, time.Duration, error) {
	limit := redis_rate.Limit{Rate: max(1, int(math.Round(rate*ratePeriod.Seconds()))), Burst: max(burst, 1), Period: ratePeriod}
	res, err := s.lim.Allow(ctx, s.prefix+key, limit)
	if err != nil {
		return false, 0, err
	}
	return res.Allowed > 0, res.RetryAfter, nil
}
