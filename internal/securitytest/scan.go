// Package securitytest finds secrets and personal data where they must not
// be: in logs, error texts, metrics, events and exported trace spans. Its [Scanner] is fed the
// secrets of a test setup (merchant private keys, APIv3 keys, openids, Redis
// passwords) and reports every place where one of them, or a recognizable
// part of one, shows up.
//
// The package's tests run the real services (worker, notifier, simulator)
// built with `go build`, drive their error paths, and scan everything they
// emit, the spans of their console trace exporter included; another test floods the notifier with forged notifications and
// measures how fast genuine ones are still answered. The chaos harness
// (package chaos) scans its logs with the same Scanner.
package securitytest

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// windowLen is the length of the pieces of encoded key material looked for:
// any leaked run of windowLen+windowStride-1 characters contains a whole
// piece.
const (
	windowLen    = 32
	windowStride = 16
)

// Finding is one secret found in one source.
type Finding struct {
	// Source names what was scanned: a file path, "metrics", an event.
	Source string `json:"source"`
	// Secret is the label of the secret; never the secret itself.
	Secret string `json:"secret"`
	// Form says which representation matched, such as "pem-body" or "hex".
	Form string `json:"form"`
	// Offset is the byte offset of the match in the source.
	Offset int `json:"offset"`
}

// String formats the finding without the secret.
func (f Finding) String() string {
	return fmt.Sprintf("%s: %s (%s) at byte %d", f.Source, f.Secret, f.Form, f.Offset)
}

type needle struct {
	secret, form string
}

// Scanner looks for registered secrets. Needles are grouped by length, so a
// scan costs one map look-up per byte and needle length, whatever their
// number. It is not safe for concurrent registration and scanning.
type Scanner struct {
	byLen map[int]map[string]needle
	lens  []int
}

// NewScanner answers an empty scanner.
func NewScanner() *Scanner { return &Scanner{byLen: map[int]map[string]needle{}} }

// Add registers one literal needle; needles shorter than 8 bytes are
// refused, as they would match by chance.
func (s *Scanner) Add(secret, form, value string) {
	if len(value) < 8 {
		return
	}
	m := s.byLen[len(value)]
	if m == nil {
		m = map[string]needle{}
		s.byLen[len(value)] = m
		s.lens = append(s.lens, len(value))
		slices.Sort(s.lens)
	}
	if _, ok := m[value]; !ok {
		m[value] = needle{secret: secret, form: form}
	}
}

// addWindows registers the overlapping windowLen-byte pieces of an encoded
// secret, except those that also encode public material (public holds the
// public key's encodings: a private key's DER contains its modulus).
func (s *Scanner) addWindows(secret, form, encoded, public string) {
	for i := 0; i+windowLen <= len(encoded); i += windowStride {
		if w := encoded[i : i+windowLen]; !strings.Contains(public, w) {
			s.Add(secret, form, w)
		}
	}
}

// publicForms answers the encodings of key's public half that a private
// key's encodings share: the modulus in hex and in base64 at every byte
// alignment, and the public key's DER forms.
func publicForms(key *rsa.PrivateKey) string {
	var b strings.Builder
	n := key.N.Bytes()
	for shift := range 3 {
		for pad := range 3 {
			buf := append(make([]byte, pad), n[shift:]...)
			b.WriteString(base64.StdEncoding.EncodeToString(buf) + "\n")
			b.WriteString(base64.RawURLEncoding.EncodeToString(buf) + "\n")
		}
	}
	b.WriteString(hex.EncodeToString(n) + "\n")
	if der, err := x509.MarshalPKIXPublicKey(&key.PublicKey); err == nil {
		b.WriteString(base64.StdEncoding.EncodeToString(der) + "\n" + hex.EncodeToString(der) + "\n")
	}
	der := x509.MarshalPKCS1PublicKey(&key.PublicKey)
	b.WriteString(base64.StdEncoding.EncodeToString(der) + "\n" + hex.EncodeToString(der) + "\n")
	return b.String()
}

// AddPrivateKeyPEM registers an RSA private key given as PEM: pieces of the
// PEM body as written and as one unbroken base64 string, of the DER in hex,
// and the leading digits of the private exponent and primes in decimal and
// hex (as fmt's %v of an rsa.PrivateKey would print them).
func (s *Scanner) AddPrivateKeyPEM(secret string, pemData []byte) error {
	block, _ := pem.Decode(pemData)
	if block == nil {
		return errors.New("securitytest: no PEM block")
	}
	var key *rsa.PrivateKey
	if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		key, _ = k.(*rsa.PrivateKey)
	} else if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		key = k
	}
	if key == nil {
		return errors.New("securitytest: not an RSA private key")
	}
	public := publicForms(key)
	s.addWindows(secret, "pem-body", base64.StdEncoding.EncodeToString(block.Bytes), public)
	for _, line := range strings.Split(string(pemData), "\n") {
		if line = strings.TrimSpace(line); len(line) >= windowLen && !strings.HasPrefix(line, "-----") && !strings.Contains(public, line) {
			s.Add(secret, "pem-line", line)
		}
	}
	s.addWindows(secret, "base64url", base64.RawURLEncoding.EncodeToString(block.Bytes), public)
	s.addWindows(secret, "der-hex", hex.EncodeToString(block.Bytes), public)
	for _, part := range []struct {
		name string
		dec  string
		hex  string
	}{
		{"d", key.D.String(), key.D.Text(16)},
		{"p", key.Primes[0].String(), key.Primes[0].Text(16)},
		{"q", key.Primes[1].String(), key.Primes[1].Text(16)},
	} {
		s.Add(secret, "decimal-"+part.name, part.dec[:40])
		s.Add(secret, "hex-"+part.name, part.hex[:40])
	}
	return nil
}

// AddAPIv3Key registers an APIv3 key as is, in base64 and in hex.
func (s *Scanner) AddAPIv3Key(secret, key string) {
	s.Add(secret, "raw", key)
	s.Add(secret, "base64", base64.StdEncoding.EncodeToString([]byte(key)))
	s.Add(secret, "hex", hex.EncodeToString([]byte(key)))
}

// AddOpenID registers an openid (personal data).
func (s *Scanner) AddOpenID(secret, openID string) { s.Add(secret, "openid", openID) }

// Len answers how many needles are registered.
func (s *Scanner) Len() int {
	n := 0
	for _, m := range s.byLen {
		n += len(m)
	}
	return n
}

// Scan answers every match in data; overlapping pieces of one secret at
// nearby offsets are reported once per 256 bytes.
func (s *Scanner) Scan(source string, data []byte) []Finding {
	var out []Finding
	last := map[string]int{}
	for _, l := range s.lens {
		m := s.byLen[l]
		for i := 0; i+l <= len(data); i++ {
			n, ok := m[string(data[i:i+l])]
			if !ok {
				continue
			}
			if prev, seen := last[n.secret]; seen && i-prev < 256 {
				continue
			}
			last[n.secret] = i
			out = append(out, Finding{Source: source, Secret: n.secret, Form: n.form, Offset: i})
		}
	}
	return out
}

// ScanFile scans one file.
func (s *Scanner) ScanFile(path string) ([]Finding, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("securitytest: %w", err)
	}
	return s.Scan(path, data), nil
}

// ScanDir scans every regular file under dir.
func (s *Scanner) ScanDir(dir string) ([]Finding, error) {
	var out []Finding
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := s.ScanFile(path)
		out = append(out, f...)
		return err
	})
	return out, err
}
