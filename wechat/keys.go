package wechat

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// PublicKeyIDPrefix starts the serial of a WeChat Pay public key
// (public-key mode), as opposed to a platform certificate's hex serial.
const PublicKeyIDPrefix = "PUB_KEY_ID_"

// PrivateKey is a merchant's RSA signing key. It prints as REDACTED in every
// fmt verb and slog record, so it cannot leak through logs or errors.
type PrivateKey struct{ key *rsa.PrivateKey }

// NewPrivateKey wraps an RSA key.
func NewPrivateKey(k *rsa.PrivateKey) PrivateKey { return PrivateKey{key: k} }

// RSA answers the wrapped key.
func (k PrivateKey) RSA() *rsa.PrivateKey { return k.key }

// Public answers the public half.
func (k PrivateKey) Public() *rsa.PublicKey {
	if k.key == nil {
		return nil
	}
	return &k.key.PublicKey
}

// String redacts the key.
func (PrivateKey) String() string { return "REDACTED" }

// GoString redacts the key from %#v.
func (PrivateKey) GoString() string { return "wechat.PrivateKey{REDACTED}" }

// Format redacts the key from every fmt verb, %+v included.
func (PrivateKey) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte("REDACTED")) }

// LogValue redacts the key from slog records.
func (PrivateKey) LogValue() slog.Value { return slog.StringValue("REDACTED") }

// MarshalJSON redacts the key from JSON, which slog's JSONHandler uses for
// structs that contain it.
func (PrivateKey) MarshalJSON() ([]byte, error) { return []byte(`"REDACTED"`), nil }

// APIv3Key is the 32-byte key that encrypts notifications. It prints as
// REDACTED in every fmt verb and slog record.
type APIv3Key []byte

// APIv3KeySize is the only key size WeChat Pay issues (AES-256).
const APIv3KeySize = 32

// String redacts the key.
func (APIv3Key) String() string { return "REDACTED" }

// GoString redacts the key from %#v.
func (APIv3Key) GoString() string { return "wechat.APIv3Key{REDACTED}" }

// Format redacts the key from every fmt verb.
func (APIv3Key) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte("REDACTED")) }

// LogValue redacts the key from slog records.
func (APIv3Key) LogValue() slog.Value { return slog.StringValue("REDACTED") }

// MarshalJSON redacts the key from JSON; without it a struct holding the key
// would print it in Base64 through slog's JSONHandler.
func (APIv3Key) MarshalJSON() ([]byte, error) { return []byte(`"REDACTED"`), nil }

// Validate reports whether the key has the size WeChat Pay issues.
func (k APIv3Key) Validate() error {
	if len(k) != APIv3KeySize {
		return fmt.Errorf("wechat: APIv3 key is %d bytes, want %d", len(k), APIv3KeySize)
	}
	return nil
}

// ParsePrivateKey parses a PEM "PRIVATE KEY" (PKCS#8, as in apiclient_key.pem)
// or "RSA PRIVATE KEY" (PKCS#1) block. Errors never quote the key.
func ParsePrivateKey(pemBytes []byte) (PrivateKey, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return PrivateKey{}, errors.New("wechat: private key: no PEM block")
	}
	var (
		parsed any
		err    error
	)
	switch block.Type {
	case "PRIVATE KEY":
		parsed, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		parsed, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return PrivateKey{}, fmt.Errorf("wechat: private key: unexpected PEM block %q", block.Type)
	}
	if err != nil {
		return PrivateKey{}, errors.New("wechat: private key: not a valid PKCS#8 or PKCS#1 key")
	}
	k, ok := parsed.(*rsa.PrivateKey)
	if !ok {
		return PrivateKey{}, errors.New("wechat: private key: not an RSA key")
	}
	if k.N.BitLen() < 2048 {
		return PrivateKey{}, fmt.Errorf("wechat: private key: %d-bit RSA key, want at least 2048", k.N.BitLen())
	}
	return PrivateKey{key: k}, nil
}

// CheckSecretFile refuses a secret file (a merchant private key, an APIv3
// key) that anyone on the machine could read or replace: a file readable or
// writable by others (mode 0644, 0666…), or one in a directory others may
// write without the sticky bit (0777), where anyone could swap the key.
// Owner and group access is allowed: Kubernetes mounts Secrets with
// defaultMode 0440 and fsGroup, in a sticky 1777 volume root. The error
// names the file and its mode, never its content.
func CheckSecretFile(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("wechat: secret file: %w", err)
	}
	if perm := st.Mode().Perm(); perm&0o006 != 0 {
		return fmt.Errorf("wechat: secret file %s has mode %04o: others may read or change it; chmod o-rwx (0600 or 0440)", path, perm)
	}
	dir := filepath.Dir(path)
	if dst, err := os.Stat(dir); err == nil && dst.Mode().Perm()&0o002 != 0 && dst.Mode()&os.ModeSticky == 0 {
		return fmt.Errorf("wechat: secret file %s is in directory %s with mode %04o: anyone may replace it; chmod o-w", path, dir, dst.Mode().Perm())
	}
	return nil
}

// LoadPrivateKey reads a PEM private key file. The services check it with
// CheckSecretFile first; the library does not, so tests and tools can read
// keys from a checkout.
func LoadPrivateKey(path string) (PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return PrivateKey{}, fmt.Errorf("wechat: read private key: %w", err)
	}
	return ParsePrivateKey(b)
}

// ParsePublicKey parses the platform's verification key: a PEM "PUBLIC KEY"
// (the WeChat Pay public key, public-key mode) or a "CERTIFICATE" (a platform
// certificate). For a certificate it also answers its serial in upper-case hex,
// the value WeChat Pay sends in Wechatpay-Serial; for a bare key the serial is
// empty and the caller supplies the PUB_KEY_ID_….
func ParsePublicKey(pemBytes []byte) (key *rsa.PublicKey, serial string, err error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, "", errors.New("wechat: public key: no PEM block")
	}
	switch block.Type {
	case "PUBLIC KEY":
		parsed, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, "", fmt.Errorf("wechat: public key: %w", err)
		}
		k, ok := parsed.(*rsa.PublicKey)
		if !ok {
			return nil, "", errors.New("wechat: public key: not an RSA key")
		}
		return k, "", nil
	case "CERTIFICATE":
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, "", fmt.Errorf("wechat: certificate: %w", err)
		}
		k, ok := cert.PublicKey.(*rsa.PublicKey)
		if !ok {
			return nil, "", errors.New("wechat: certificate: not an RSA key")
		}
		return k, strings.ToUpper(hex.EncodeToString(cert.SerialNumber.Bytes())), nil
	}
	return nil, "", fmt.Errorf("wechat: public key: unexpected PEM block %q", block.Type)
}

// LoadPublicKey reads a PEM public key or certificate file; see ParsePublicKey.
func LoadPublicKey(path string) (key *rsa.PublicKey, serial string, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, "", fmt.Errorf("wechat: read public key: %w", err)
	}
	return ParsePublicKey(b)
}

// MarshalPrivateKeyPEM encodes a key as PKCS#8 PEM, the format of
// apiclient_key.pem. Used to write generated keys for tests and the demo.
func MarshalPrivateKeyPEM(k PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k.key)
	if err != nil {
		return nil, fmt.Errorf("wechat: marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// MarshalPublicKeyPEM encodes a public key as PKIX PEM, the format of the
// WeChat Pay public key file.
func MarshalPublicKeyPEM(k *rsa.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return nil, fmt.Errorf("wechat: marshal public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}
