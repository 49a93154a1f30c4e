package wechatsim

import (
	"sync"
	"time"
)

// simClock is the simulator's business clock: Config.NowFunc moved by an
// offset that SetNow and Advance change. Orders (prepay validity, order
// lifetime, success times, notification create_time) follow it; request
// authentication, answer signatures and the rate limit follow the wall
// clock (Config.NowFunc), so that a client can keep talking to a
// simulator whose clock was moved hours ahead.
type simClock struct {
	mu     sync.Mutex
	offset time.Duration
}

// wall answers Config.NowFunc's time.
func (s *Server) wall() time.Time { return s.cfg.NowFunc() }

// now answers the business clock's time.
func (s *Server) now() time.Time {
	s.clock.mu.Lock()
	d := s.clock.offset
	s.clock.mu.Unlock()
	return s.cfg.NowFunc().Add(d)
}

// Now answers the simulator's business clock.
func (s *Server) Now() time.Time { return s.now() }

// SetNow moves the business clock to t; it keeps running from there.
func (s *Server) SetNow(t time.Time) {
	s.clock.mu.Lock()
	defer s.clock.mu.Unlock()
	s.clock.offset = t.Sub(s.cfg.NowFunc())
}

// Advance moves the business clock forward by d (backward if d < 0).
func (s *Server) Advance(d time.Duration) {
	s.clock.mu.Lock()
	defer s.clock.mu.Unlock()
	s.clock.offset += d
}
