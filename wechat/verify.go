package wechat

import (
	"crypto/rsa"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Headers of signed responses and notifications.
const (
	HeaderTimestamp     = "Wechatpay-Timestamp"
	HeaderNonce         = "Wechatpay-Nonce"
	HeaderSignature     = "Wechatpay-Signature"
	HeaderSerial        = "Wechatpay-Serial"
	HeaderSignatureType = "Wechatpay-Signature-Type"
	HeaderRequestID     = "Request-Id"
)

// ClockSkewDefault is how far a signed timestamp may be from now, in either
// direction, before a response or notification is rejected (WeChat Pay's
// recommended five minutes).
const ClockSkewDefault = 5 * time.Minute

// Verifier checks WeChat Pay's signatures on responses and notifications. It
// holds any number of platform keys by serial — platform certificates (hex
// serials) and the WeChat Pay public key (PUB_KEY_ID_…) side by side — so
// certificate rotation and the move to public-key mode need no downtime. It is
// safe for concurrent use.
type Verifier struct {
	mu    sync.RWMutex
	keys  map[string]*rsa.PublicKey
	order []string // serials in the order they were first added

	// Skew is the accepted clock difference. Defaults to ClockSkewDefault.
	Skew time.Duration
	// NowFunc answers the current time. Defaults to time.Now.
	NowFunc func() time.Time
}

// NewVerifier answers a verifier that trusts the given keys, keyed by serial.
func NewVerifier(keys map[string]*rsa.PublicKey) *Verifier {
	v := &Verifier{keys: make(map[string]*rsa.PublicKey, len(keys))}
	serials := make([]string, 0, len(keys))
	for s := range keys {
		serials = append(serials, s)
	}
	slices.Sort(serials) // map order is random; keep Serials deterministic
	for _, s := range serials {
		v.AddKey(s, keys[s])
	}
	return v
}

// AddKey trusts one more key under serial (a certificate serial or a
// PUB_KEY_ID_…), replacing any key with that serial.
func (v *Verifier) AddKey(serial string, key *rsa.PublicKey) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.keys == nil {
		v.keys = make(map[string]*rsa.PublicKey)
	}
	if _, ok := v.keys[serial]; !ok {
		v.order = append(v.order, serial)
	}
	v.keys[serial] = key
}

// RemoveKey stops trusting serial, for example a retired platform certificate.
func (v *Verifier) RemoveKey(serial string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.keys, serial)
	v.order = slices.DeleteFunc(v.order, func(s string) bool { return s == serial })
}

// Serials answers the trusted serials: public-key IDs (PUB_KEY_ID_…) first,
// then platform certificate serials, each group in the order the keys were
// added (NewVerifier adds its map's keys in sorted order). The order is
// deterministic. The first serial is the preferred one: a client sends it as
// the request's Wechatpay-Serial so that WeChat Pay signs the answer with a
// key it knows — the public key once there is one, since it never expires.
func (v *Verifier) Serials() []string {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make([]string, 0, len(v.order))
	for _, s := range v.order {
		if strings.HasPrefix(s, PublicKeyIDPrefix) {
			out = append(out, s)
		}
	}
	for _, s := range v.order {
		if !strings.HasPrefix(s, PublicKeyIDPrefix) {
			out = append(out, s)
		}
	}
	return out
}

// Has reports whether serial is trusted.
func (v *Verifier) Has(serial string) bool { return v.key(serial) != nil }

func (v *Verifier) key(serial string) *rsa.PublicKey {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.keys[serial]
}

func (v *Verifier) now() time.Time {
	if v.NowFunc != nil {
		return v.NowFunc()
	}
	return time.Now()
}

// Verify checks the Wechatpay-* headers over the raw body: all four headers
// present, a known serial, a timestamp within Skew of now (NowFunc), a
// SHA256withRSA signature that is not a WECHATPAY/SIGNTEST/ probe. Every
// failure wraps ErrSignature.
func (v *Verifier) Verify(h http.Header, body []byte) error {
	return v.VerifyAt(h, body, v.now())
}

// VerifyAt is Verify with the current time given, for callers that own the
// clock (a Client with Config.NowFunc).
func (v *Verifier) VerifyAt(h http.Header, body []byte, now time.Time) error {
	ts, nonce, sig, serial := h.Get(HeaderTimestamp), h.Get(HeaderNonce), h.Get(HeaderSignature), h.Get(HeaderSerial)
	switch {
	case ts == "":
		return fmt.Errorf("%w: %s header missing", ErrSignature, HeaderTimestamp)
	case nonce == "":
		return fmt.Errorf("%w: %s header missing", ErrSignature, HeaderNonce)
	case sig == "":
		return fmt.Errorf("%w: %s header missing", ErrSignature, HeaderSignature)
	case serial == "":
		return fmt.Errorf("%w: %s header missing", ErrSignature, HeaderSerial)
	}
	if st := h.Get(HeaderSignatureType); st != "" && st != AuthScheme {
		return fmt.Errorf("%w: unsupported signature type %q", ErrSignature, st)
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: timestamp %q is not an integer", ErrSignature, ts)
	}
	skew := v.Skew
	if skew == 0 {
		skew = ClockSkewDefault
	}
	if d := now.Sub(time.Unix(sec, 0)); d > skew || d < -skew {
		return fmt.Errorf("%w: timestamp %d is %s away from now, beyond %s", ErrSignature, sec, d.Round(time.Second), skew)
	}
	key := v.key(serial)
	if key == nil {
		return fmt.Errorf("%w: unknown serial %q", ErrSignature, serial)
	}
	return VerifySignature(key, ResponseMessage(ts, nonce, body), sig)
}

// SignResponseHeaders sets the Wechatpay-* headers of a response or
// notification signed with key under serial, as WeChat Pay does. It is the
// counterpart of Verify, for the simulator and for tests.
func SignResponseHeaders(h http.Header, key PrivateKey, serial string, timestamp int64, nonce string, body []byte) error {
	ts := strconv.FormatInt(timestamp, 10)
	sig, err := Sign(key, ResponseMessage(ts, nonce, body))
	if err != nil {
		return err
	}
	h.Set(HeaderTimestamp, ts)
	h.Set(HeaderNonce, nonce)
	h.Set(HeaderSignature, sig)
	h.Set(HeaderSerial, serial)
	h.Set(HeaderSignatureType, AuthScheme)
	return nil
}
