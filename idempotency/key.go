package idempotency

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// validate checks a key and a fingerprint.
func validate(key Key, fingerprint string) error {
	if err := validateKey(key); err != nil {
		return err
	}
	if fingerprint == "" {
		return fmt.Errorf("idempotency: key %s: empty fingerprint", key)
	}
	return nil
}

// validateKey checks that both parts of key are set.
func validateKey(key Key) error {
	switch {
	case key.MchID == "":
		return errors.New("idempotency: key: empty MchID")
	case key.OutTradeNo == "":
		return fmt.Errorf("idempotency: key %s: empty OutTradeNo", key)
	}
	return nil
}

// escape keeps A–Z, a–z, 0–9, '_' and '-' and writes every other byte as
// "=XX", so that escaped parts never contain a separator (':', '.', '{',
// '}') and distinct inputs give distinct outputs. The result is a valid
// JetStream KV key token.
func escape(s string) string {
	const hex = "0123456789ABCDEF"
	n := 0
	for i := 0; i < len(s); i++ {
		if !plain(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if plain(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('=')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0x0f])
	}
	return b.String()
}

func plain(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-'
}

// millis rounds d up to whole milliseconds, at least 1.
func millis(d time.Duration) int64 {
	ms := int64((d + time.Millisecond - 1) / time.Millisecond)
	return max(ms, 1)
}

// orDefault answers def when d is zero or negative.
func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}
