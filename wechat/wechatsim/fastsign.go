package wechatsim

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"math/big"

	"github.com/wxcombine/orderworker/wechat"
)

// sha256DigestInfo is the DER prefix of a SHA-256 DigestInfo (PKCS #1 v1.5).
var sha256DigestInfo = []byte{0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20}

// fastSignMaxBits is the largest key signed with math/big. Go's
// constant-time crypto/rsa has assembly for 1024-bit primes (2048-bit keys)
// but not for smaller ones, where math/big's CRT is about twice as fast. A
// simulator needs no constant-time signing; the signatures are identical
// (PKCS #1 v1.5 is deterministic).
const fastSignMaxBits = 1024

// signMessage answers Base64(SHA256withRSA(message)) with key.
func signMessage(key wechat.PrivateKey, message []byte) (string, error) {
	k := key.RSA()
	if k == nil || k.N.BitLen() > fastSignMaxBits || len(k.Primes) != 2 || k.Precomputed.Dp == nil {
		return wechat.Sign(key, message)
	}
	sum := sha256.Sum256(message)
	sig := signPKCS1v15Big(k, sum[:])
	if rsa.VerifyPKCS1v15(&k.PublicKey, crypto.SHA256, sum[:], sig) != nil { // guard against a fault
		return wechat.Sign(key, message)
	}
	return base64.StdEncoding.EncodeToString(sig), nil
}

// signPKCS1v15Big signs a SHA-256 hash with the CRT and math/big.
func signPKCS1v15Big(k *rsa.PrivateKey, hashed []byte) []byte {
	n := k.Size()
	em := make([]byte, n)
	em[1] = 1
	t := len(sha256DigestInfo) + len(hashed)
	for i := 2; i < n-t-1; i++ {
		em[i] = 0xff
	}
	copy(em[n-t:], sha256DigestInfo)
	copy(em[n-len(hashed):], hashed)
	m := new(big.Int).SetBytes(em)
	p, q := k.Primes[0], k.Primes[1]
	s1 := new(big.Int).Exp(m, k.Precomputed.Dp, p)
	s2 := new(big.Int).Exp(m, k.Precomputed.Dq, q)
	h := new(big.Int).Sub(s1, s2)
	h.Mul(h, k.Precomputed.Qinv).Mod(h, p)
	h.Mul(h, q).Add(h, s2)
	return h.FillBytes(em)
}
