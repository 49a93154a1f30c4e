package wechatsim

import (
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"strconv"
	"time"
)

// writeAdmin writes an admin answer as indented JSON.
func writeAdmin(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func adminError(w http.ResponseWriter, status int, msg string) {
	writeAdmin(w, status, map[string]string{"error": msg})
}

// servePay serves POST /sim/pay/{mchid}/{no}[?notify=false][&discount=N]:
// notify=false pays without a notification, discount takes N fen off each
// sub-order (PayOptions).
func (s *Server) servePay(w http.ResponseWriter, r *http.Request) {
	var opts PayOptions
	q := r.URL.Query()
	if v := q.Get("notify"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			adminError(w, http.StatusBadRequest, "notify: "+err.Error())
			return
		}
		opts.SkipNotification = !b
	}
	if v := q.Get("discount"); v != "" {
		d, err := strconv.ParseInt(v, 10, 64)
		if err != nil || d < 0 {
			adminError(w, http.StatusBadRequest, "discount: want a non-negative number of fen")
			return
		}
		opts.Discount = d
	}
	o, err := s.PayWith(r.Context(), r.PathValue("mchid"), r.PathValue("no"), opts)
	switch {
	case errors.Is(err, ErrOrderNotFound):
		adminError(w, http.StatusNotFound, err.Error())
	case err != nil:
		adminError(w, http.StatusConflict, err.Error())
	default:
		writeAdmin(w, http.StatusOK, o)
	}
}

// serveOrder serves GET /sim/orders/{mchid}/{no}.
func (s *Server) serveOrder(w http.ResponseWriter, r *http.Request) {
	info, ok := s.Order(r.PathValue("mchid"), r.PathValue("no"))
	if !ok {
		adminError(w, http.StatusNotFound, "no create named this order number")
		return
	}
	writeAdmin(w, http.StatusOK, info)
}

// serveStats serves GET /sim/stats.
func (s *Server) serveStats(w http.ResponseWriter, _ *http.Request) {
	writeAdmin(w, http.StatusOK, s.Stats())
}

// adminFaults is FaultConfig on the admin API, with durations written as Go
// duration strings ("50ms").
type adminFaults struct {
	FaultConfig
	Latency       string `json:"latency"`
	LatencyJitter string `json:"latency_jitter"`
}

// serveFaults serves GET /sim/faults.
func (s *Server) serveFaults(w http.ResponseWriter, _ *http.Request) {
	f := s.Faults()
	writeAdmin(w, http.StatusOK, adminFaults{FaultConfig: f, Latency: f.Latency.String(), LatencyJitter: f.LatencyJitter.String()})
}

// serveSetFaults serves PUT /sim/faults: the body replaces every fault
// setting; omitted fields become zero.
func (s *Server) serveSetFaults(w http.ResponseWriter, r *http.Request) {
	var in adminFaults
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		adminError(w, http.StatusBadRequest, "faults: "+err.Error())
		return
	}
	f := in.FaultConfig
	for _, d := range []struct {
		s   string
		dst *time.Duration
	}{{in.Latency, &f.Latency}, {in.LatencyJitter, &f.LatencyJitter}} {
		*d.dst = 0
		if d.s == "" {
			continue
		}
		v, err := time.ParseDuration(d.s)
		if err != nil {
			adminError(w, http.StatusBadRequest, "faults: "+err.Error())
			return
		}
		*d.dst = v
	}
	if err := s.SetFaults(f); err != nil {
		adminError(w, http.StatusBadRequest, err.Error())
		return
	}
	s.serveFaults(w, r)
}

// serveSetTradeState serves PUT /sim/orders/{mchid}/{no}/trade-state with
// {"trade_states": ["REFUND"]} (one state for all sub-orders, or one each).
func (s *Server) serveSetTradeState(w http.ResponseWriter, r *http.Request) {
	var in struct {
		TradeStates []string `json:"trade_states"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		adminError(w, http.StatusBadRequest, "trade-state: "+err.Error())
		return
	}
	err := s.SetTradeState(r.PathValue("mchid"), r.PathValue("no"), in.TradeStates...)
	switch {
	case errors.Is(err, ErrOrderNotFound):
		adminError(w, http.StatusNotFound, err.Error())
	case err != nil:
		adminError(w, http.StatusBadRequest, err.Error())
	default:
		s.serveOrder(w, r)
	}
}

// adminClock is the business clock on the admin API.
type adminClock struct {
	Now string `json:"now"`
	// Advance, on POST, moves the clock by a Go duration ("2h1m").
	Advance string `json:"advance,omitempty"`
}

// serveClock serves GET /sim/clock.
func (s *Server) serveClock(w http.ResponseWriter, _ *http.Request) {
	writeAdmin(w, http.StatusOK, adminClock{Now: s.Now().Format(time.RFC3339Nano)})
}

// serveSetClock serves POST /sim/clock with {"now": RFC 3339} (SetNow) or
// {"advance": "2h"} (Advance).
func (s *Server) serveSetClock(w http.ResponseWriter, r *http.Request) {
	var in adminClock
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		adminError(w, http.StatusBadRequest, "clock: "+err.Error())
		return
	}
	switch {
	case (in.Now == "") == (in.Advance == ""):
		adminError(w, http.StatusBadRequest, "clock: give exactly one of now and advance")
		return
	case in.Now != "":
		t, err := time.Parse(time.RFC3339Nano, in.Now)
		if err != nil {
			adminError(w, http.StatusBadRequest, "clock: "+err.Error())
			return
		}
		s.SetNow(t)
	default:
		d, err := time.ParseDuration(in.Advance)
		if err != nil {
			adminError(w, http.StatusBadRequest, "clock: "+err.Error())
			return
		}
		s.Advance(d)
	}
	s.serveClock(w, r)
}

// serveLedger serves GET /sim/ledger.
func (s *Server) serveLedger(w http.ResponseWriter, _ *http.Request) {
	writeAdmin(w, http.StatusOK, s.Ledgers())
}

// serveLedgerEntry serves GET /sim/ledger/{mchid}/{no}.
func (s *Server) serveLedgerEntry(w http.ResponseWriter, r *http.Request) {
	l, ok := s.Ledger(r.PathValue("mchid"), r.PathValue("no"))
	if !ok {
		adminError(w, http.StatusNotFound, "no order of this number was created")
		return
	}
	writeAdmin(w, http.StatusOK, l)
}

func pemEncode(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
