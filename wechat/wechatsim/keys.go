package wechatsim

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/wxcombine/orderworker/wechat"
)

// KeyBitsDefault is the RSA key size WeChat Pay uses for platform and
// merchant keys.
const KeyBitsDefault = 2048

// Platform holds WeChat Pay's side of the keys: the platform certificate key
// (certificate mode) and the WeChat Pay public key (public-key mode). They are
// distinct key pairs, as in production, so a client that verifies with the
// wrong one fails.
type Platform struct {
	// CertKey signs answers and notifications in certificate mode.
	CertKey wechat.PrivateKey
	// CertSerial is the platform certificate's serial in upper-case hex, the
	// Wechatpay-Serial of certificate mode.
	CertSerial string
	// CertPEM is the self-signed platform certificate.
	CertPEM []byte
	// PubKey signs answers and notifications in public-key mode.
	PubKey wechat.PrivateKey
	// PubKeyID is the Wechatpay-Serial of public-key mode (PUB_KEY_ID_…).
	PubKeyID string
}

// GeneratePlatform creates a platform certificate key with a self-signed
// certificate and a separate WeChat Pay public key, each of bits bits (0
// means KeyBitsDefault). Load tests may use 1024 bits: answers are then
// signed about six times faster and still verify with the same code.
func GeneratePlatform(bits int) (*Platform, error) {
	if bits == 0 {
		bits = KeyBitsDefault
	}
	certKey, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		return nil, fmt.Errorf("wechatsim: generate platform key: %w", err)
	}
	pubKey, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		return nil, fmt.Errorf("wechatsim: generate public-key-mode key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 159))
	if err != nil {
		return nil, fmt.Errorf("wechatsim: certificate serial: %w", err)
	}
	serial.SetBit(serial, 159, 1) // 20 bytes, 40 hex digits like real serials
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "Tenpay.com Root CA (wechatsim)", Organization: []string{"wechatsim"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(5, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &certKey.PublicKey, certKey)
	if err != nil {
		return nil, fmt.Errorf("wechatsim: create platform certificate: %w", err)
	}
	return &Platform{
		CertKey:    wechat.NewPrivateKey(certKey),
		CertSerial: strings.ToUpper(hex.EncodeToString(serial.Bytes())),
		CertPEM:    pemEncode("CERTIFICATE", der),
		PubKey:     wechat.NewPrivateKey(pubKey),
		PubKeyID:   wechat.PublicKeyIDPrefix + randomDigits(28),
	}, nil
}

// Verifier answers a verifier that trusts what a merchant of the given mode
// trusts: the platform certificate (ModeCert), the WeChat Pay public key
// (ModePublicKey) or both (ModeMigration).
func (p *Platform) Verifier(mode KeyMode) *wechat.Verifier {
	v := wechat.NewVerifier(nil)
	if mode != ModePublicKey {
		v.AddKey(p.CertSerial, p.CertKey.Public())
	}
	if mode != ModeCert {
		v.AddKey(p.PubKeyID, p.PubKey.Public())
	}
	return v
}

func (p *Platform) validate() error {
	switch {
	case p.CertKey.RSA() == nil || p.CertSerial == "":
		return errors.New("wechatsim: platform certificate key or serial is missing")
	case p.PubKey.RSA() == nil || !strings.HasPrefix(p.PubKeyID, wechat.PublicKeyIDPrefix):
		return fmt.Errorf("wechatsim: public-key-mode key or %s… ID is missing", wechat.PublicKeyIDPrefix)
	}
	return nil
}

// GenerateMerchant creates matching credentials for one merchant: the
// simulator's view (its public key, APIv3 key and bound appids) and the
// client's view (private key, APIv3 key and a verifier trusting both of p's
// keys). With no appIDs one appid is made up.
func GenerateMerchant(p *Platform, mchID string, appIDs ...string) (MerchantConfig, *wechat.Merchant, error) {
	return generateMerchant(p, mchID, KeyBitsDefault, appIDs)
}

func generateMerchant(p *Platform, mchID string, bits int, appIDs []string) (MerchantConfig, *wechat.Merchant, error) {
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		return MerchantConfig{}, nil, fmt.Errorf("wechatsim: generate merchant %s key: %w", mchID, err)
	}
	apiV3 := wechat.APIv3Key(randomAlnum(wechat.APIv3KeySize))
	if len(appIDs) == 0 {
		appIDs = []string{"wx" + strings.ToLower(randomAlnum(16))}
	}
	serial := strings.ToUpper(hex.EncodeToString(randomBytes(20)))
	mc := MerchantConfig{MchID: mchID, Serial: serial, PublicKey: &k.PublicKey, APIv3Key: apiV3, AppIDs: appIDs}
	m := &wechat.Merchant{
		MchID: mchID, Serial: serial, PrivateKey: wechat.NewPrivateKey(k),
		APIv3Key: apiV3, Platform: p.Verifier(ModeMigration),
	}
	return mc, m, nil
}

// Manifest file names inside a keys directory written by WriteKeys.
const (
	manifestFile      = "wechatsim.json"
	platformDir       = "platform"
	certKeyFile       = "platform_cert_key.pem" // simulator only
	certFile          = "platform_cert.pem"
	pubKeyPrivateFile = "wechatpay_pub_key_private.pem" // simulator only
	pubKeyFile        = "wechatpay_pub_key.pem"
	merchantKeyFile   = "apiclient_key.pem"
	apiV3KeyFile      = "apiv3_key"
	serialFile        = "serial"
	pubKeyIDFile      = "pub_key_id"
)

type fileSpec struct {
	path string
	data []byte
	mode os.FileMode
}

type manifest struct {
	CertSerial string             `json:"cert_serial"`
	PubKeyID   string             `json:"pub_key_id"`
	Merchants  []manifestMerchant `json:"merchants"`
}

type manifestMerchant struct {
	MchID     string   `json:"mchid"`
	Serial    string   `json:"serial"`
	AppIDs    []string `json:"app_ids"`
	SubMchIDs []string `json:"sub_mchids,omitempty"`
}

// WriteKeys writes p and the merchants' credentials under dir: the
// platform's private keys for the simulator (dir/platform), a wechatsim.json
// manifest, and one directory per merchant in exactly the layout cmd/worker
// and cmd/notifier read from WECHAT_MERCHANT_DIR/<mchid>/ (apiclient_key.pem,
// apiv3_key, serial, wechatpay_pub_key.pem with pub_key_id, and
// platform_cert.pem), so dir can be given to them as it is. Private key files
// are written with mode 0600.
func WriteKeys(dir string, p *Platform, merchants []MerchantConfig, clients []*wechat.Merchant) error {
	if len(merchants) != len(clients) {
		return errors.New("wechatsim: WriteKeys needs one client credential per merchant")
	}
	pd := filepath.Join(dir, platformDir)
	if err := os.MkdirAll(pd, 0o750); err != nil {
		return fmt.Errorf("wechatsim: %w", err)
	}
	certKey, err := wechat.MarshalPrivateKeyPEM(p.CertKey)
	if err != nil {
		return err
	}
	pubPriv, err := wechat.MarshalPrivateKeyPEM(p.PubKey)
	if err != nil {
		return err
	}
	pub, err := wechat.MarshalPublicKeyPEM(p.PubKey.Public())
	if err != nil {
		return err
	}
	files := []fileSpec{
		{filepath.Join(pd, certKeyFile), certKey, 0o600},
		{filepath.Join(pd, certFile), p.CertPEM, 0o644},
		{filepath.Join(pd, pubKeyPrivateFile), pubPriv, 0o600},
		{filepath.Join(pd, pubKeyFile), pub, 0o644},
	}
	man := manifest{CertSerial: p.CertSerial, PubKeyID: p.PubKeyID}
	for i, mc := range merchants {
		m := clients[i]
		if m.MchID != mc.MchID {
			return fmt.Errorf("wechatsim: WriteKeys: merchant %d is %s on the simulator side and %s on the client side", i, mc.MchID, m.MchID)
		}
		md := filepath.Join(dir, mc.MchID)
		if err := os.MkdirAll(md, 0o750); err != nil {
			return fmt.Errorf("wechatsim: %w", err)
		}
		key, err := wechat.MarshalPrivateKeyPEM(m.PrivateKey)
		if err != nil {
			return err
		}
		files = append(files,
			fileSpec{filepath.Join(md, merchantKeyFile), key, 0o600},
			fileSpec{filepath.Join(md, apiV3KeyFile), []byte(m.APIv3Key), 0o600},
			fileSpec{filepath.Join(md, serialFile), []byte(mc.Serial + "\n"), 0o644},
			fileSpec{filepath.Join(md, pubKeyFile), pub, 0o644},
			fileSpec{filepath.Join(md, pubKeyIDFile), []byte(p.PubKeyID + "\n"), 0o644},
			fileSpec{filepath.Join(md, certFile), p.CertPEM, 0o644})
		man.Merchants = append(man.Merchants, manifestMerchant{MchID: mc.MchID, Serial: mc.Serial, AppIDs: mc.AppIDs, SubMchIDs: mc.SubMchIDs})
	}
	mb, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		return fmt.Errorf("wechatsim: manifest: %w", err)
	}
	files = append(files, fileSpec{filepath.Join(dir, manifestFile), append(mb, '\n'), 0o644})
	for _, f := range files {
		if err := os.WriteFile(f.path, f.data, f.mode); err != nil {
			return fmt.Errorf("wechatsim: write %s: %w", filepath.Base(f.path), err)
		}
	}
	return nil
}

// MerchantFiles answers where WriteKeys put mchID's client credentials, for
// wechat.LoadMerchant. It names both the public key and the platform
// certificate, so the merchant verifies answers in every KeyMode.
func MerchantFiles(dir, mchID, serial, pubKeyID string) wechat.MerchantFiles {
	return wechat.MerchantFiles{
		MchID:             mchID,
		Serial:            serial,
		PrivateKeyFile:    filepath.Join(dir, mchID, merchantKeyFile),
		APIv3KeyFile:      filepath.Join(dir, mchID, apiV3KeyFile),
		PublicKeyFile:     filepath.Join(dir, mchID, pubKeyFile),
		PublicKeyID:       pubKeyID,
		PlatformCertFiles: []string{filepath.Join(dir, mchID, certFile)},
	}
}

// Keys is what LoadKeys reads back from a directory written by WriteKeys.
type Keys struct {
	Platform  *Platform
	Merchants []MerchantConfig
	// Files are the merchants' client credential files, in Merchants order.
	Files []wechat.MerchantFiles
}

// LoadKeys reads a directory written by WriteKeys.
func LoadKeys(dir string) (*Keys, error) {
	mb, err := os.ReadFile(filepath.Join(dir, manifestFile))
	if err != nil {
		return nil, fmt.Errorf("wechatsim: read manifest: %w", err)
	}
	var man manifest
	if err := json.Unmarshal(mb, &man); err != nil {
		return nil, fmt.Errorf("wechatsim: manifest %s: %w", manifestFile, err)
	}
	pd := filepath.Join(dir, platformDir)
	certKey, err := loadPlatformKey(filepath.Join(pd, certKeyFile))
	if err != nil {
		return nil, err
	}
	pubKey, err := loadPlatformKey(filepath.Join(pd, pubKeyPrivateFile))
	if err != nil {
		return nil, err
	}
	certPEM, err := os.ReadFile(filepath.Join(pd, certFile))
	if err != nil {
		return nil, fmt.Errorf("wechatsim: platform: %w", err)
	}
	if _, serial, err := wechat.ParsePublicKey(certPEM); err != nil || serial != man.CertSerial {
		return nil, fmt.Errorf("wechatsim: platform certificate does not match manifest serial %s", man.CertSerial)
	}
	k := &Keys{Platform: &Platform{CertKey: certKey, CertSerial: man.CertSerial, CertPEM: certPEM, PubKey: pubKey, PubKeyID: man.PubKeyID}}
	if err := k.Platform.validate(); err != nil {
		return nil, err
	}
	for _, mm := range man.Merchants {
		files := MerchantFiles(dir, mm.MchID, mm.Serial, man.PubKeyID)
		m, err := wechat.LoadMerchant(files)
		if err != nil {
			return nil, fmt.Errorf("wechatsim: %w", err)
		}
		k.Merchants = append(k.Merchants, MerchantConfig{
			MchID: mm.MchID, Serial: mm.Serial, PublicKey: m.PrivateKey.Public(),
			APIv3Key: m.APIv3Key, AppIDs: mm.AppIDs, SubMchIDs: mm.SubMchIDs,
		})
		k.Files = append(k.Files, files)
	}
	return k, nil
}

// loadPlatformKey reads a PKCS #8 platform key. Unlike merchant keys, which
// wechat.LoadPrivateKey requires to be 2048 bits, platform keys may be 1024
// bits for load tests (see GeneratePlatform).
func loadPlatformKey(path string) (wechat.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return wechat.PrivateKey{}, fmt.Errorf("wechatsim: platform key: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" {
		return wechat.PrivateKey{}, fmt.Errorf("wechatsim: platform key %s: no PKCS #8 PEM block", filepath.Base(path))
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	rk, ok := k.(*rsa.PrivateKey)
	if err != nil || !ok || rk.N.BitLen() < 1024 {
		return wechat.PrivateKey{}, fmt.Errorf("wechatsim: platform key %s: not an RSA key of at least 1024 bits", filepath.Base(path))
	}
	return wechat.NewPrivateKey(rk), nil
}
