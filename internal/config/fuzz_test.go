package config

import (
	"strings"
	"testing"
)

// FuzzCompareVersion reads server versions as a nats-server's INFO may
// spell them. It never panics; an unreadable version is always refused
// (never taken for new enough); and between two readable versions the
// order is total: at least one is at least the other, and both only when
// they are equal.
func FuzzCompareVersion(f *testing.F) {
	for _, s := range [][2]string{{"2.10.4", "2.10.4"}, {"2.9.10", "2.10.4"}, {"v2.11.0-RC.1", "2.10.4"}, {"2.12", "2.10.4"},
		{"2.10.4+build", "2.10"}, {"", "2.10.4"}, {"2..4", "2.10.4"}, {"-1.2.3", "1.2.3"}, {"99999999999999999999.1", "2.10.4"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		pa, okA := parseVersion(a)
		pb, okB := parseVersion(b)
		errAB := CompareVersion(a, b, "test")
		if !okB {
			if errAB == nil || !strings.Contains(errAB.Error(), "bad minimum") {
				t.Fatalf("CompareVersion(%q, unreadable %q) = %v, want a bad-minimum error", a, b, errAB)
			}
			return
		}
		if !okA {
			if errAB == nil {
				t.Fatalf("unreadable server version %q accepted against %q", a, b)
			}
			return
		}
		errBA := CompareVersion(b, a, "test")
		if errAB != nil && errBA != nil {
			t.Fatalf("%q and %q are each older than the other", a, b)
		}
		if (errAB == nil && errBA == nil) != (pa == pb) {
			t.Fatalf("%q (%v) and %q (%v): both at least the other = %v, want %v", a, pa, b, pb, errAB == nil && errBA == nil, pa == pb)
		}
	})
}
