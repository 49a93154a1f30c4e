package wechatsim

import (
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
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

// servePay serves POST /sim/pay/{mchid}/{no}.
func (s *Server) servePay(w http.ResponseWriter, r *http.Request) {
	o, err := s.Pay(r.Context(), r.PathValue("mchid"), r.PathValue("no"))
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

func pemEncode(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
