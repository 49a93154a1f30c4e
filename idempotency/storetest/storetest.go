// Package storetest is the conformance suite of [idempotency.Store]: every
// backend runs it unchanged against a real server.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/wxcombine/orderworker/idempotency"
)

// Backend is one store under test, on a server of its own.
type Backend struct {
	// Store is the store under test.
	Store idempotency.Store
	// Stop makes the store's server unreachable; Start brings it back on
	// the same address. The store's client must give up on a call quickly
	// (configure short timeouts) and reconnect by itself.
	Stop, Start func()
	// Durable reports that what was written before Stop is still there
	// after Start (JetStream file storage), rather than lost (redis-server
	// without persistence).
	Durable bool
}

// Timings of the suite. Leases and TTLs are short to keep it fast, and every
// sleep leaves a wide margin so that a loaded machine does not flake.
const (
	shortLease = 300 * time.Millisecond
	longLease  = 30 * time.Second
	shortTTL   = 2 * time.Second
	longTTL    = time.Hour
	margin     = 400 * time.Millisecond
)

// Run runs every conformance test. newBackend is called once per subtest,
// which runs in parallel with the others, so each gets a server of its own.
func Run(t *testing.T, newBackend func(t *testing.T) Backend) {
	tests := []struct {
		name string
		fn   func(t *testing.T, b Backend)
	}{
		{"claim then in flight", testClaimInFlight},
		{"64 concurrent claims have one winner", testConcurrentClaims},
		{"duplicate after complete gets the same outcome", testDone},
		{"different fingerprint conflicts", testConflict},
		{"expired lease is taken over with a larger token", testTakeover},
		{"expired lease is stale before takeover", testExpiredStale},
		{"stale tokens are refused", testStaleTokens},
		{"release then claim again", testRelease},
		{"extend keeps the lease past its first expiry", testExtend},
		{"outcome expires after its ttl", testOutcomeTTL},
		{"keys are scoped by merchant", testMerchantScope},
		{"zero durations mean the defaults", testDefaults},
		{"invalid arguments are refused", testInvalid},
		{"store stopped and restarted", testOutage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, newBackend(t))
		})
	}
}

// key answers a key unique to the test; the name has characters that the
// backends must escape.
func key(t *testing.T, mchID, suffix string) idempotency.Key {
	return idempotency.Key{MchID: mchID, OutTradeNo: t.Name() + "|" + suffix}
}

const (
	mchA = "1900000109"
	mchB = "1900000110"
	fp1  = "sha256:6b86b273ff34fce19d6b804eff5a3f57"
	fp2  = "sha256:d4735e3a265e16eee03f59718b9b5d03"
)

// mustClaim claims k and checks the answer's state.
func mustClaim(t *testing.T, s idempotency.Store, k idempotency.Key, fp string, lease time.Duration, want idempotency.State) idempotency.Claim {
	t.Helper()
	c, err := s.Claim(t.Context(), k, fp, lease)
	if err != nil {
		t.Fatalf("Claim(%s, %s) error = %v, want %v", k, fp, err, want)
	}
	if c.State != want {
		t.Fatalf("Claim(%s, %s) = %v, want %v", k, fp, c.State, want)
	}
	if (c.State == idempotency.StateClaimed) != (c.Token != 0) {
		t.Fatalf("Claim(%s, %s) = %v with token %d, want a token exactly when claimed", k, fp, c.State, c.Token)
	}
	return c
}

// mustErr checks that err matches want (nil for success).
func mustErr(t *testing.T, call string, err, want error) {
	t.Helper()
	if want == nil && err != nil || want != nil && !errors.Is(err, want) {
		t.Fatalf("%s error = %v, want %v", call, err, want)
	}
	if errors.Is(want, idempotency.ErrStaleToken) && errors.Is(err, idempotency.ErrUnavailable) {
		t.Fatalf("%s error = %v, also wraps ErrUnavailable", call, err)
	}
}

func testClaimInFlight(t *testing.T, b Backend) {
	k := key(t, mchA, "1")
	mustClaim(t, b.Store, k, fp1, longLease, idempotency.StateClaimed)
	c := mustClaim(t, b.Store, k, fp1, longLease, idempotency.StateInFlight)
	if c.ExpiresIn <= longLease-10*time.Second || c.ExpiresIn > longLease {
		t.Errorf("Claim(%s) ExpiresIn = %v, want at most and about %v", k, c.ExpiresIn, longLease)
	}
	if c.Outcome != nil {
		t.Errorf("Claim(%s) in flight Outcome = %q, want none", k, c.Outcome)
	}
}

func testConcurrentClaims(t *testing.T, b Backend) {
	const n = 64
	k := key(t, mchA, "1")
	var (
		start  = make(chan struct{})
		wg     sync.WaitGroup
		claims = make([]idempotency.Claim, n)
		errs   = make([]error, n)
	)
	for i := range n {
		wg.Go(func() {
			<-start
			claims[i], errs[i] = b.Store.Claim(t.Context(), k, fp1, longLease)
		})
	}
	close(start)
	wg.Wait()
	count := map[idempotency.State]int{}
	var winner idempotency.Claim
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Claim %d error = %v, want none", i, errs[i])
		}
		count[claims[i].State]++
		if claims[i].State == idempotency.StateClaimed {
			winner = claims[i]
		}
	}
	if count[idempotency.StateClaimed] != 1 || count[idempotency.StateInFlight] != n-1 {
		t.Fatalf("%d concurrent claims: %d claimed, %d in flight, %v in all; want 1 and %d",
			n, count[idempotency.StateClaimed], count[idempotency.StateInFlight], count, n-1)
	}
	// The winner's token holds the key.
	mustErr(t, "Complete(winner)", b.Store.Complete(t.Context(), k, winner.Token, []byte("ok"), longTTL), nil)
}

func testDone(t *testing.T, b Backend) {
	tests := []struct {
		name    string
		outcome []byte
	}{
		{"prepay result", []byte(`{"prepay_id":"wx201410272009395522657a690389285100"}`)},
		{"terminal failure", []byte(`{"code":"PARAM_ERROR","message":"sub_orders[0].amount"}`)},
		{"binary", []byte{0, 0xff, '\n', '"', 0x80, 0}},
		{"empty", nil},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := key(t, mchA, fmt.Sprint(i))
			c := mustClaim(t, b.Store, k, fp1, longLease, idempotency.StateClaimed)
			mustErr(t, "Complete", b.Store.Complete(t.Context(), k, c.Token, tt.outcome, longTTL), nil)
			for range 3 {
				d := mustClaim(t, b.Store, k, fp1, longLease, idempotency.StateDone)
				if !bytes.Equal(d.Outcome, tt.outcome) {
					t.Fatalf("Claim(%s) Outcome = %q, want %q", k, d.Outcome, tt.outcome)
				}
			}
		})
	}
}

func testConflict(t *testing.T, b Backend) {
	ctx := t.Context()
	k := key(t, mchA, "1")
	c := mustClaim(t, b.Store, k, fp1, longLease, idempotency.StateClaimed)
	mustClaim(t, b.Store, k, fp2, longLease, idempotency.StateConflict)
	// The conflict changed nothing: the holder still completes.
	mustClaim(t, b.Store, k, fp1, longLease, idempotency.StateInFlight)
	mustErr(t, "Complete", b.Store.Complete(ctx, k, c.Token, []byte("ok"), longTTL), nil)
	mustClaim(t, b.Store, k, fp2, longLease, idempotency.StateConflict)
	d := mustClaim(t, b.Store, k, fp1, longLease, idempotency.StateDone)
	if string(d.Outcome) != "ok" {
		t.Errorf("Claim(%s) Outcome = %q after a conflict, want %q", k, d.Outcome, "ok")
	}
}

func testTakeover(t *testing.T, b Backend) {
	ctx := t.Context()
	k := key(t, mchA, "1")
	old := mustClaim(t, b.Store, k, fp1, shortLease, idempotency.StateClaimed)
	time.Sleep(shortLease + margin)
	cur := mustClaim(t, b.Store, k, fp1, longLease, idempotency.StateClaimed)
	if cur.Token <= old.Token {
		t.Fatalf("takeover token = %d, want more than %d", cur.Token, old.Token)
	}
	mustErr(t, "Complete(old)", b.Store.Complete(ctx, k, old.Token, []byte("old"), longTTL), idempotency.ErrStaleToken)
	mustErr(t, "Extend(old)", b.Store.Extend(ctx, k, old.Token, longLease), idempotency.ErrStaleToken)
	mustErr(t, "Release(old)", b.Store.Release(ctx, k, old.Token), idempotency.ErrStaleToken)
	// The refusals left the new holder's lease alone.
	mustClaim(t, b.Store, k, fp1, longLease, idempotency.StateInFlight)
	mustErr(t, "Complete(new)", b.Store.Complete(ctx, k, cur.Token, []byte("new"), longTTL), nil)
	if d := mustClaim(t, b.Store, k, fp1, longLease, idempotency.StateDone); string(d.Outcome) != "new" {
		t.Errorf("Claim(%s) Outcome = %q, want %q", k, d.Outcome, "new")
	}
}

func testExpiredStale(t *testing.T, b Backend) {
	calls := []struct {
		name string
		call func(ctx context.Context, k idempotency.Key, token uint64) error
	}{
		{"Complete", func(ctx context.Context, k idempotency.Key, token uint64) error {
			return b.Store.Complete(ctx, k, token, []byte("late"), longTTL)
		}},
		{"Extend", func(ctx context.Context, k idempotency.Key, token uint64) error {
			return b.Store.Extend(ctx, k, token, longLease)
		}},
		{"Release", func(ctx context.Context, k idempotency.Key, token uint64) error {
			return b.Store.Release(ctx, k, token)
		}},
	}
	keys := make([]idempotency.Key, len(calls))
	tokens := make([]uint64, len(calls))
	for i := range calls {
		keys[i] = key(t, mchA, fmt.Sprint(i))
		tokens[i] = mustClaim(t, b.Store, keys[i], fp1, shortLease, idempotency.StateClaimed).Token
	}
	time.Sleep(shortLease + margin)
	for i, c := range calls {
		mustErr(t, c.name+" after expiry", c.call(t.Context(), keys[i], tokens[i]), idempotency.ErrStaleToken)
		// Nothing was stored or renewed: the key is free.
		mustClaim(t, b.Store, keys[i], fp1, longLease, idempotency.StateClaimed)
	}
}

func testStaleTokens(t *testing.T, b Backend) {
	ctx := t.Context()
	t.Run("wrong token", func(t *testing.T) {
		k := key(t, mchA, "1")
		c := mustClaim(t, b.Store, k, fp1, longLease, idempotency.StateClaimed)
		for _, tok := range []uint64{c.Token + 1, c.Token - 1, 0} {
			mustErr(t, "Complete", b.Store.Complete(ctx, k, tok, []byte("x"), longTTL), idempotency.ErrStaleToken)
			mustErr(t, "Extend", b.Store.Extend(ctx, k, tok, longLease), idempotency.ErrStaleToken)
			mustErr(t, "Release", b.Store.Release(ctx, k, tok), idempotency.ErrStaleToken)
		}
		mustClaim(t, b.Store, k, fp1, longLease, idempotency.StateInFlight)
		mustErr(t, "Complete", b.Store.Complete(ctx, k, c.Token, []byte("ok"), longTTL), nil)
	})
	t.Run("after complete", func(t *testing.T) {
		k := key(t, mchA, "2")
		c := mustClaim(t, b.Store, k, fp1, longLease, idempotency.StateClaimed)
		mustErr(t, "Complete", b.Store.Complete(ctx, k, c.Token, []byte("first"), longTTL), nil)
		mustErr(t, "Complete again", b.Store.Complete(ctx, k, c.Token, []byte("second"), longTTL), idempotency.ErrStaleToken)
		mustErr(t, "Extend", b.Store.Extend(ctx, k, c.Token, longLease), idempotency.ErrStaleToken)
		mustErr(t, "Release", b.Store.Release(ctx, k, c.Token), idempotency.ErrStaleToken)
		if d := mustClaim(t, b.Store, k, fp1, longLease, idempotency.StateDone); string(d.Outcome) != "first" {
			t.Errorf("Claim(%s) Outcome = %q, want %q", k, d.Outcome, "first")
		}
	})
	t.Run("after release", func(t *testing.T) {
		k := key(t, mchA, "3")
		c := mustClaim(t, b.Store, k, fp1, longLease, idempotency.StateClaimed)
		mustErr(t, "Release", b.Store.Release(ctx, k, c.Token), nil)
		mustErr(t, "Release again", b.Store.Release(ctx, k, c.Token), idempotency.ErrStaleToken)
		mustErr(t, "Extend", b.Store.Extend(ctx, k, c.Token, longLease), idempotency.ErrStaleToken)
		mustErr(t, "Complete", b.Store.Complete(ctx, k, c.Token, []byte("x"), longTTL), idempotency.ErrStaleToken)
	})
	t.Run("never claimed", func(t *testing.T) {
		k := key(t, mchA, "4")
		mustErr(t, "Complete", b.Store.Complete(ctx, k, 1, []byte("x"), longTTL), idempotency.ErrStaleToken)
		mustErr(t, "Extend", b.Store.Extend(ctx, k, 1, longLease), idempotency.ErrStaleToken)
		mustErr(t, "Release", b.Store.Release(ctx, k, 1), idempotency.ErrStaleToken)
		mustClaim(t, b.Store, k, fp1, longLease, idempotency.StateClaimed)
	})
}

func testRelease(t *testing.T, b Backend) {
	k := key(t, mchA, "1")
	prev := mustClaim(t, b.Store, k, fp1, longLease, idempotency.StateClaimed)
	for i := range 3 {
		mustErr(t, "Release", b.Store.Release(t.Context(), k, prev.Token), nil)
		// A retry may carry a corrected request: the fingerprint is free too.
		fp := []string{fp1, fp2}[i%2]
		c := mustClaim(t, b.Store, k, fp, longLease, idempotency.StateClaimed)
		if c.Token <= prev.Token {
			t.Fatalf("claim %d after release: token %d, want more than %d", i, c.Token, prev.Token)
		}
		prev = c
	}
}

func testExtend(t *testing.T, b Backend) {
	ctx := t.Context()
	k := key(t, mchA, "1")
	const first = time.Second
	c := mustClaim(t, b.Store, k, fp1, first, idempotency.StateClaimed)
	start := time.Now()
	mustErr(t, "Extend", b.Store.Extend(ctx, k, c.Token, 3*first), nil)
	time.Sleep(first + margin - time.Since(start))
	in := mustClaim(t, b.Store, k, fp1, longLease, idempotency.StateInFlight)
	if in.ExpiresIn <= 0 || in.ExpiresIn > 3*first {
		t.Errorf("Claim(%s) ExpiresIn = %v after Extend(%v), want in (0, %v]", k, in.ExpiresIn, 3*first, 3*first)
	}
	// Extending again keeps the token valid.
	mustErr(t, "Extend again", b.Store.Extend(ctx, k, c.Token, longLease), nil)
	mustErr(t, "Complete", b.Store.Complete(ctx, k, c.Token, []byte("ok"), longTTL), nil)
	mustClaim(t, b.Store, k, fp1, longLease, idempotency.StateDone)
}

func testOutcomeTTL(t *testing.T, b Backend) {
	ctx := t.Context()
	k := key(t, mchA, "1")
	c := mustClaim(t, b.Store, k, fp1, longLease, idempotency.StateClaimed)
	mustErr(t, "Complete", b.Store.Complete(ctx, k, c.Token, []byte("short"), shortTTL), nil)
	mustClaim(t, b.Store, k, fp1, longLease, idempotency.StateDone)
	time.Sleep(shortTTL + margin)
	// Gone: the next claim, even with another fingerprint, starts afresh.
	n := mustClaim(t, b.Store, k, fp2, longLease, idempotency.StateClaimed)
	if n.Token <= c.Token {
		t.Errorf("claim after outcome expiry: token %d, want more than %d", n.Token, c.Token)
	}
}

func testMerchantScope(t *testing.T, b Backend) {
	ctx := t.Context()
	ka, kb := key(t, mchA, "1"), key(t, mchB, "1")
	ca := mustClaim(t, b.Store, ka, fp1, longLease, idempotency.StateClaimed)
	cb := mustClaim(t, b.Store, kb, fp2, longLease, idempotency.StateClaimed)
	mustErr(t, "Complete(A)", b.Store.Complete(ctx, ka, ca.Token, []byte("A"), longTTL), nil)
	mustClaim(t, b.Store, kb, fp2, longLease, idempotency.StateInFlight)
	// A's token does not reach B's key.
	mustErr(t, "Release(B, A's token)", b.Store.Release(ctx, kb, ca.Token), idempotency.ErrStaleToken)
	mustErr(t, "Complete(B)", b.Store.Complete(ctx, kb, cb.Token, []byte("B"), longTTL), nil)
	if d := mustClaim(t, b.Store, ka, fp1, longLease, idempotency.StateDone); string(d.Outcome) != "A" {
		t.Errorf("Claim(%s) Outcome = %q, want %q", ka, d.Outcome, "A")
	}
	if d := mustClaim(t, b.Store, kb, fp2, longLease, idempotency.StateDone); string(d.Outcome) != "B" {
		t.Errorf("Claim(%s) Outcome = %q, want %q", kb, d.Outcome, "B")
	}
	// Separators in either part do not make two keys meet.
	k1 := idempotency.Key{MchID: "1:2", OutTradeNo: "3"}
	k2 := idempotency.Key{MchID: "1", OutTradeNo: "2:3"}
	k3 := idempotency.Key{MchID: "1.2", OutTradeNo: "3"}
	k4 := idempotency.Key{MchID: "1", OutTradeNo: "2.3"}
	for _, k := range []idempotency.Key{k1, k2, k3, k4} {
		mustClaim(t, b.Store, k, fp1, longLease, idempotency.StateClaimed)
	}
}

func testDefaults(t *testing.T, b Backend) {
	ctx := t.Context()
	k := key(t, mchA, "1")
	c := mustClaim(t, b.Store, k, fp1, 0, idempotency.StateClaimed)
	in := mustClaim(t, b.Store, k, fp1, 0, idempotency.StateInFlight)
	if in.ExpiresIn <= idempotency.LeaseDefault-10*time.Second || in.ExpiresIn > idempotency.LeaseDefault {
		t.Errorf("Claim(%s, lease 0) ExpiresIn = %v, want about %v", k, in.ExpiresIn, idempotency.LeaseDefault)
	}
	mustErr(t, "Extend(0)", b.Store.Extend(ctx, k, c.Token, 0), nil)
	mustErr(t, "Complete(ttl 0)", b.Store.Complete(ctx, k, c.Token, []byte("ok"), 0), nil)
	mustClaim(t, b.Store, k, fp1, 0, idempotency.StateDone)
}

func testInvalid(t *testing.T, b Backend) {
	ctx := t.Context()
	tests := []struct {
		name string
		key  idempotency.Key
		fp   string
	}{
		{"empty MchID", idempotency.Key{OutTradeNo: "o1"}, fp1},
		{"empty OutTradeNo", idempotency.Key{MchID: mchA}, fp1},
		{"empty fingerprint", idempotency.Key{MchID: mchA, OutTradeNo: "o1"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := b.Store.Claim(ctx, tt.key, tt.fp, longLease)
			if err == nil || errors.Is(err, idempotency.ErrUnavailable) {
				t.Errorf("Claim(%+v, %q) error = %v, want an argument error", tt.key, tt.fp, err)
			}
			if tt.fp == "" {
				return
			}
			for name, err := range map[string]error{
				"Extend":   b.Store.Extend(ctx, tt.key, 1, longLease),
				"Complete": b.Store.Complete(ctx, tt.key, 1, nil, longTTL),
				"Release":  b.Store.Release(ctx, tt.key, 1),
			} {
				if err == nil || errors.Is(err, idempotency.ErrUnavailable) || errors.Is(err, idempotency.ErrStaleToken) {
					t.Errorf("%s(%+v) error = %v, want an argument error", name, tt.key, err)
				}
			}
		})
	}
}

func testOutage(t *testing.T, b Backend) {
	ctx := t.Context()
	held, done, fresh := key(t, mchA, "held"), key(t, mchA, "done"), key(t, mchA, "fresh")
	h := mustClaim(t, b.Store, held, fp1, longLease, idempotency.StateClaimed)
	d := mustClaim(t, b.Store, done, fp1, longLease, idempotency.StateClaimed)
	mustErr(t, "Complete", b.Store.Complete(ctx, done, d.Token, []byte("kept"), longTTL), nil)

	b.Stop()
	calls := []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"Claim", func(ctx context.Context) error { _, err := b.Store.Claim(ctx, fresh, fp1, longLease); return err }},
		{"Claim(held)", func(ctx context.Context) error { _, err := b.Store.Claim(ctx, held, fp1, longLease); return err }},
		{"Extend", func(ctx context.Context) error { return b.Store.Extend(ctx, held, h.Token, longLease) }},
		{"Complete", func(ctx context.Context) error { return b.Store.Complete(ctx, held, h.Token, []byte("x"), longTTL) }},
		{"Release", func(ctx context.Context) error { return b.Store.Release(ctx, held, h.Token) }},
		{"Ping", func(ctx context.Context) error { return b.Store.Ping(ctx) }},
	}
	for _, c := range calls {
		// The safety deadline only stops a hang; the store's own timeouts
		// must answer well before it.
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		start := time.Now()
		err := c.call(cctx)
		elapsed := time.Since(start)
		timedOut := cctx.Err() != nil
		cancel()
		if !errors.Is(err, idempotency.ErrUnavailable) {
			t.Fatalf("%s while stopped: error = %v, want ErrUnavailable", c.name, err)
		}
		if timedOut {
			t.Fatalf("%s while stopped: returned only at the test's safety deadline (%v): %v", c.name, elapsed, err)
		}
		t.Logf("%s while stopped: %v after %v", c.name, err, elapsed.Round(time.Millisecond))
	}

	b.Start()
	waitPing(t, b.Store)
	f := mustClaim(t, b.Store, fresh, fp1, longLease, idempotency.StateClaimed)
	mustErr(t, "Complete(fresh)", b.Store.Complete(ctx, fresh, f.Token, []byte("after"), longTTL), nil)
	if got := mustClaim(t, b.Store, fresh, fp1, longLease, idempotency.StateDone); string(got.Outcome) != "after" {
		t.Errorf("Claim(%s) Outcome = %q, want %q", fresh, got.Outcome, "after")
	}
	if b.Durable {
		mustClaim(t, b.Store, held, fp1, longLease, idempotency.StateInFlight)
		mustErr(t, "Complete(held) after restart", b.Store.Complete(ctx, held, h.Token, []byte("held"), longTTL), nil)
		if got := mustClaim(t, b.Store, done, fp1, longLease, idempotency.StateDone); string(got.Outcome) != "kept" {
			t.Errorf("Claim(%s) Outcome = %q after restart, want %q", done, got.Outcome, "kept")
		}
		return
	}
	// The data is lost; tokens still grow, so the old holder is refused.
	n := mustClaim(t, b.Store, held, fp1, longLease, idempotency.StateClaimed)
	if n.Token <= h.Token {
		t.Errorf("claim after restart: token %d, want more than %d from before", n.Token, h.Token)
	}
	mustErr(t, "Complete(old holder) after restart", b.Store.Complete(ctx, held, h.Token, []byte("old"), longTTL), idempotency.ErrStaleToken)
	mustClaim(t, b.Store, done, fp1, longLease, idempotency.StateClaimed)
}

// waitPing waits until the restarted store answers.
func waitPing(t *testing.T, s idempotency.Store) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := s.Ping(t.Context())
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Ping after restart: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
