package idempotency

import (
	"strings"
	"testing"
	"time"
)

func TestEscape(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"1900000109", "1900000109"},
		{"order_2024-01", "order_2024-01"},
		{"a|b*c@d", "a=7Cb=2Ac=40d"},
		{"x:y.z{}", "x=3Ay=2Ez=7B=7D"},
		{"a=b", "a=3Db"},
		{"订", "=E8=AE=A2"},
	}
	for _, tt := range tests {
		if got := escape(tt.in); got != tt.want {
			t.Errorf("escape(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestRedisKeys(t *testing.T) {
	s := &Redis{prefix: "p"}
	tests := []struct {
		key  Key
		want string // the hash tag
	}{
		{Key{MchID: "1900000109", OutTradeNo: "o1"}, "{p:1900000109:o1}"},
		{Key{MchID: "1:2", OutTradeNo: "3}"}, "{p:1=3A2:3=7D}"},
	}
	for _, tt := range tests {
		keys := s.keys(tt.key)
		if len(keys) != 3 {
			t.Fatalf("keys(%s) = %q, want 3 keys", tt.key, keys)
		}
		for _, k := range keys {
			// Redis Cluster hashes the text between the first '{' and the
			// next '}'; every key of an order must have the same.
			if !strings.HasPrefix(k, tt.want+":") || strings.Count(k, "{") != 1 || strings.Count(k, "}") != 1 {
				t.Errorf("keys(%s) has %q, want hash tag %s", tt.key, k, tt.want)
			}
		}
	}
}

func TestKVKey(t *testing.T) {
	if got, want := kvKey(Key{MchID: "1900000109", OutTradeNo: "a.b*"}), "1900000109.a=2Eb=2A"; got != want {
		t.Errorf("kvKey = %q, want %q", got, want)
	}
}

func TestRounding(t *testing.T) {
	tests := []struct {
		d          time.Duration
		wantMillis int64
		wantWhole  time.Duration
	}{
		{0, 1, time.Second},
		{time.Microsecond, 1, time.Second},
		{1500 * time.Microsecond, 2, time.Second},
		{time.Second, 1000, time.Second},
		{1001 * time.Millisecond, 1001, 2 * time.Second},
		{24 * time.Hour, 86_400_000, 24 * time.Hour},
	}
	for _, tt := range tests {
		if got := millis(tt.d); got != tt.wantMillis {
			t.Errorf("millis(%v) = %d, want %d", tt.d, got, tt.wantMillis)
		}
		if got := wholeSeconds(tt.d); got != tt.wantWhole {
			t.Errorf("wholeSeconds(%v) = %v, want %v", tt.d, got, tt.wantWhole)
		}
	}
}

func TestState_String(t *testing.T) {
	for s, want := range map[State]string{StateClaimed: "claimed", StateInFlight: "in_flight", StateDone: "done", StateConflict: "conflict", 0: "unknown"} {
		if got := s.String(); got != want {
			t.Errorf("State(%d).String() = %q, want %q", s, got, want)
		}
	}
}
