package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

func TestStartAdmin_pprof(t *testing.T) {
	tests := []struct {
		name      string
		withPprof bool
		want      int
	}{
		{"off by default", false, http.StatusNotFound},
		{"on with PPROF_ENABLED", true, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ready := func(context.Context) (string, error) { return "ready", nil }
			a, err := startAdmin("127.0.0.1:0", tt.withPprof, prometheus.NewRegistry(), ready, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = a.srv.Close() })
			resp, err := http.Get("http://" + a.addr + "/debug/pprof/")
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("GET /debug/pprof/ = %d, want %d", resp.StatusCode, tt.want)
			}
		})
	}
}

// A KV bucket opened while the cluster has no leader for it is retried;
// a mistake is not.
func TestJetStreamUnavailable(t *testing.T) {
	unavailable := fmt.Errorf("idempotency: kv: bucket b: %w", &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"})
	if !jetStreamUnavailable(unavailable) {
		t.Errorf("jetStreamUnavailable(%v) = false, want true", unavailable)
	}
	for _, err := range []error{
		errors.New("idempotency: kv: bad bucket name"),
		fmt.Errorf("x: %w", &jetstream.APIError{Code: 400, ErrorCode: 10058, Description: "stream name already in use with a different configuration"}),
	} {
		if jetStreamUnavailable(err) {
			t.Errorf("jetStreamUnavailable(%v) = true, want false", err)
		}
	}
}
