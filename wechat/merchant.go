package wechat

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// Merchant holds one merchant's credentials: what signs its requests and
// client pay parameters, what verifies WeChat Pay's answers and notifications
// to it, and what decrypts those notifications. Secrets print as REDACTED.
type Merchant struct {
	// MchID is the merchant number, the combine_mchid of its orders.
	MchID string
	// Serial is the serial of the merchant API certificate whose private key
	// is PrivateKey (the Authorization serial_no).
	Serial string
	// PrivateKey signs requests and client pay parameters.
	PrivateKey PrivateKey
	// APIv3Key decrypts notifications. It must be 32 bytes.
	APIv3Key APIv3Key
	// Platform verifies WeChat Pay's signatures: platform certificates and/or
	// the WeChat Pay public key.
	Platform *Verifier
}

// LogValue logs the merchant's public identity only: mchid, certificate
// serial and trusted platform serials.
func (m Merchant) LogValue() slog.Value { // value receiver: covers Merchant and *Merchant
	var serials []string
	if m.Platform != nil {
		serials = m.Platform.Serials()
	}
	return slog.GroupValue(
		slog.String("mchid", m.MchID),
		slog.String("serial", m.Serial),
		slog.Any("platform_serials", serials),
	)
}

// Validate reports the first missing or malformed credential. It never
// quotes a secret.
func (m *Merchant) Validate() error {
	switch {
	case m.MchID == "":
		return errors.New("wechat: merchant: mchid is empty")
	case m.Serial == "":
		return fmt.Errorf("wechat: merchant %s: certificate serial is empty", m.MchID)
	case m.PrivateKey.RSA() == nil:
		return fmt.Errorf("wechat: merchant %s: private key is missing", m.MchID)
	case m.Platform == nil || len(m.Platform.Serials()) == 0:
		return fmt.Errorf("wechat: merchant %s: no platform certificate or WeChat Pay public key", m.MchID)
	}
	if err := m.APIv3Key.Validate(); err != nil {
		return fmt.Errorf("wechat: merchant %s: %w", m.MchID, err)
	}
	return nil
}

// MerchantFiles names the files a merchant's credentials are loaded from,
// usually mounted from a Kubernetes Secret.
type MerchantFiles struct {
	MchID  string
	Serial string
	// PrivateKeyFile is the PEM merchant key (apiclient_key.pem).
	PrivateKeyFile string
	// APIv3KeyFile holds the 32-byte APIv3 key; surrounding white space is
	// ignored.
	APIv3KeyFile string
	// PublicKeyFile is the WeChat Pay public key (public-key mode); it needs
	// PublicKeyID (PUB_KEY_ID_…).
	PublicKeyFile string
	PublicKeyID   string
	// PlatformCertFiles are platform certificates; each one's serial is read
	// from the certificate.
	PlatformCertFiles []string
}

// LoadMerchant reads a merchant's credential files and validates them. At
// least one of PublicKeyFile and PlatformCertFiles is needed; both may be
// given during a migration to public-key mode.
func LoadMerchant(f MerchantFiles) (*Merchant, error) {
	key, err := LoadPrivateKey(f.PrivateKeyFile)
	if err != nil {
		return nil, fmt.Errorf("merchant %s: %w", f.MchID, err)
	}
	raw, err := os.ReadFile(f.APIv3KeyFile)
	if err != nil {
		return nil, fmt.Errorf("merchant %s: read APIv3 key: %w", f.MchID, err)
	}
	m := &Merchant{
		MchID:      f.MchID,
		Serial:     f.Serial,
		PrivateKey: key,
		APIv3Key:   APIv3Key(strings.TrimSpace(string(raw))),
		Platform:   NewVerifier(nil),
	}
	if f.PublicKeyFile != "" {
		if !strings.HasPrefix(f.PublicKeyID, PublicKeyIDPrefix) {
			return nil, fmt.Errorf("merchant %s: public key ID must start with %s", f.MchID, PublicKeyIDPrefix)
		}
		pub, _, err := LoadPublicKey(f.PublicKeyFile)
		if err != nil {
			return nil, fmt.Errorf("merchant %s: %w", f.MchID, err)
		}
		m.Platform.AddKey(f.PublicKeyID, pub)
	}
	for _, path := range f.PlatformCertFiles {
		pub, serial, err := LoadPublicKey(path)
		if err != nil {
			return nil, fmt.Errorf("merchant %s: %w", f.MchID, err)
		}
		if serial == "" {
			return nil, fmt.Errorf("merchant %s: %s is not a certificate", f.MchID, path)
		}
		m.Platform.AddKey(serial, pub)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}
