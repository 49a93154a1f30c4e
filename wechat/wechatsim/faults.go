package wechatsim

import (
	"context"
	"math"
	"time"
)

// Fault kinds, as counted in Stats.Faults and OrderInfo.Outcomes.
const (
	FaultSystemError        = "SYSTEMERROR"
	FaultBankError          = "BANKERROR"
	FaultFrequencyLimited   = "FREQUENCY_LIMITED"
	FaultRateLimited        = "RATE_LIMITED" // the per-merchant limit, answered as FREQUENCY_LIMITED
	FaultBad502             = "BAD_GATEWAY"
	FaultTimeoutAfterCreate = "TIMEOUT_AFTER_CREATE"
	FaultSignTest           = "SIGNTEST"
	FaultLatency            = "LATENCY"
	// FaultServiceUnavailable is a 502 or 503 answered with a
	// SERVICE_UNAVAILABLE JSON body.
	FaultServiceUnavailable = "SERVICE_UNAVAILABLE"
	// FaultUnsigned counts error answers sent without a signature.
	FaultUnsigned = "UNSIGNED_ERROR"
	// FaultNotifyDropped counts payments whose notification was never sent.
	FaultNotifyDropped = "NOTIFY_DROPPED"
)

// roll is the outcome of one request's fault dice.
type roll struct {
	kind    string // "" or one of the answer faults above
	signTst bool
	delay   time.Duration
}

// rollFaults throws the dice for one API request of merchant mchID.
func (s *Server) rollFaults(mchID string) roll {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	f := &s.faults
	var r roll
	if f.RatePerMerchant > 0 && !s.takeToken(mchID, f.RatePerMerchant) {
		r.kind = FaultRateLimited
	} else if u := s.rng.Float64(); u < f.SystemErrorRate {
		r.kind = FaultSystemError
	} else if u -= f.SystemErrorRate; u < f.BankErrorRate {
		r.kind = FaultBankError
	} else if u -= f.BankErrorRate; u < f.FrequencyLimitedRate {
		r.kind = FaultFrequencyLimited
	} else if u -= f.FrequencyLimitedRate; u < f.Bad502Rate {
		r.kind = FaultBad502
	} else if u -= f.Bad502Rate; u < f.TimeoutAfterCreateRate {
		r.kind = FaultTimeoutAfterCreate
	} else if u -= f.TimeoutAfterCreateRate; u < f.ServiceUnavailableRate {
		r.kind = FaultServiceUnavailable
	}
	r.signTst = f.SignTestRate > 0 && s.rng.Float64() < f.SignTestRate
	r.delay = f.Latency
	if f.LatencyJitter > 0 {
		r.delay += time.Duration(s.rng.Int64N(int64(f.LatencyJitter)))
	}
	return r
}

// chance answers true with probability p, from the seeded dice.
func (s *Server) chance(p float64) bool {
	if p <= 0 {
		return false
	}
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	return s.rng.Float64() < p
}

// bucket is a token bucket holding at most one second's worth of tokens.
type bucket struct {
	tokens float64
	last   time.Time
}

// takeToken spends one of mchID's tokens; s.faultMu is held.
func (s *Server) takeToken(mchID string, rate float64) bool {
	now := s.wall()
	b := s.buckets[mchID]
	burst := math.Max(rate, 1)
	if b == nil {
		b = &bucket{tokens: burst, last: now}
		s.buckets[mchID] = b
	}
	b.tokens = math.Min(burst, b.tokens+now.Sub(b.last).Seconds()*rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// sleep waits d unless ctx ends or the server closes first; it reports
// whether the whole delay passed.
func (s *Server) sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
	case <-s.done:
	}
	return false
}

// hang blocks until the client gives up (ctx ends when the connection
// closes) or the server closes.
func (s *Server) hang(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-s.done:
	}
}
