package wechatsim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/wxcombine/orderworker/wechat"
)

// Server plays WeChat Pay: it serves the combine-transaction API under /v3/
// and the admin API under /sim/. It is safe for concurrent use.
type Server struct {
	cfg       Config
	merchants map[string]*MerchantConfig
	known     map[string]bool // every configured mchid

	faultMu sync.Mutex
	faults  FaultConfig
	rng     *rand.Rand
	buckets map[string]*bucket

	mu      sync.Mutex
	entries map[orderKey]*entry
	byTxID  map[string]*entry

	stats counters
	clock simClock

	done      chan struct{}   // closed by Close: hanging requests and notifiers return
	ctx       context.Context // cancelled by Close; parent of notification requests
	cancel    context.CancelFunc
	closeOnce sync.Once
	wg        sync.WaitGroup // notification goroutines and the HTTP server goroutine

	httpMu  sync.Mutex
	httpSrv *http.Server
}

// New checks cfg, applies its defaults and answers a Server. Call Close when
// done with it.
func New(cfg Config) (*Server, error) {
	if err := cfg.applyDefaults(); err != nil {
		return nil, err
	}
	// Compile the contract now, not on the first request: under load its
	// first compilation could outlast a client's timeout.
	if _, err := loadContract(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:       cfg,
		merchants: make(map[string]*MerchantConfig, len(cfg.Merchants)),
		known:     make(map[string]bool, len(cfg.Merchants)),
		faults:    cfg.Faults,
		buckets:   make(map[string]*bucket),
		entries:   make(map[orderKey]*entry),
		byTxID:    make(map[string]*entry),
		done:      make(chan struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	seed := uint64(cfg.Seed) //nolint:gosec // G115: a negative seed is as good a seed as any; only its bits matter
	if seed == 0 {
		seed = rand.Uint64()
	}
	s.rng = rand.New(rand.NewPCG(seed, seed^0x9E3779B97F4A7C15))
	s.stats.init()
	for i := range cfg.Merchants {
		m := &cfg.Merchants[i]
		s.merchants[m.MchID] = m
		s.known[m.MchID] = true
	}
	return s, nil
}

// Handler answers the simulator's HTTP handler: the WeChat Pay API under
// /v3/ and the admin API under /sim/ (see the package documentation).
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/v3/", s.serveAPI)
	mux.HandleFunc("POST /sim/pay/{mchid}/{no}", s.servePay)
	mux.HandleFunc("GET /sim/orders/{mchid}/{no}", s.serveOrder)
	mux.HandleFunc("GET /sim/stats", s.serveStats)
	mux.HandleFunc("GET /sim/faults", s.serveFaults)
	mux.HandleFunc("PUT /sim/faults", s.serveSetFaults)
	mux.HandleFunc("PUT /sim/orders/{mchid}/{no}/trade-state", s.serveSetTradeState)
	mux.HandleFunc("GET /sim/clock", s.serveClock)
	mux.HandleFunc("POST /sim/clock", s.serveSetClock)
	mux.HandleFunc("GET /sim/ledger", s.serveLedger)
	mux.HandleFunc("GET /sim/ledger/{mchid}/{no}", s.serveLedgerEntry)
	return mux
}

// Start listens on addr (such as "127.0.0.1:0") and serves Handler from a
// goroutine owned by the Server until Close. It answers the base URL, such
// as "http://127.0.0.1:41234".
func (s *Server) Start(addr string) (string, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("wechatsim: listen: %w", err)
	}
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	s.httpMu.Lock()
	if s.httpSrv != nil {
		s.httpMu.Unlock()
		_ = l.Close()
		return "", errors.New("wechatsim: already started")
	}
	s.httpSrv = srv
	s.httpMu.Unlock()
	s.wg.Add(1)
	go func() { // owner: s; exits when Close shuts srv down
		defer s.wg.Done()
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.cfg.Logger.Error("wechatsim: serve", slog.String("error", err.Error()))
		}
	}()
	return "http://" + l.Addr().String(), nil
}

// Close releases hanging requests, stops pending notification retries, shuts
// down the listener of Start (waiting up to 5 s for answers in flight) and
// waits for every goroutine the Server started. It is safe to call twice.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.done)
		s.cancel()
		s.httpMu.Lock()
		srv := s.httpSrv
		s.httpMu.Unlock()
		if srv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := srv.Shutdown(ctx); err != nil {
				_ = srv.Close()
			}
			cancel()
		}
		s.wg.Wait()
	})
}

// SetFaults replaces the injected faults at run time.
func (s *Server) SetFaults(f FaultConfig) error {
	if err := f.validate(); err != nil {
		return err
	}
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	s.faults = f
	clear(s.buckets)
	return nil
}

// Faults answers the injected faults in force.
func (s *Server) Faults() FaultConfig {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	return s.faults
}

// Flavour answers the product flavour whose rules apply.
func (s *Server) Flavour() wechat.Flavour { return s.cfg.Flavour }

// Platform answers the keys that sign answers and notifications.
func (s *Server) Platform() *Platform { return s.cfg.Platform }
