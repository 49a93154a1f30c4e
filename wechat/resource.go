package wechat

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"errors"
	"fmt"
)

// Notification envelope constants.
const (
	EventTransactionSuccess = "TRANSACTION.SUCCESS"
	ResourceTypeEncrypted   = "encrypt-resource"
	AlgorithmAES256GCM      = "AEAD_AES_256_GCM"
	// AssociatedDataTransaction is the AAD of payment notifications.
	AssociatedDataTransaction = "transaction"
	// ResourceNonceLength is the length of a resource nonce: 12 ASCII
	// characters, used verbatim as the GCM nonce.
	ResourceNonceLength = 12
)

// NotificationEnvelope is the JSON body WeChat Pay POSTs to notify_url.
type NotificationEnvelope struct {
	ID           string   `json:"id"`
	CreateTime   string   `json:"create_time"`
	EventType    string   `json:"event_type"`
	ResourceType string   `json:"resource_type"`
	Summary      string   `json:"summary"`
	Resource     Resource `json:"resource"`
}

// Resource is the encrypted part of a notification.
type Resource struct {
	Algorithm      string `json:"algorithm"`
	Ciphertext     string `json:"ciphertext"` // Base64(ciphertext ‖ 16-byte tag)
	AssociatedData string `json:"associated_data"`
	Nonce          string `json:"nonce"`
	OriginalType   string `json:"original_type"`
}

// ErrDecrypt reports a resource that cannot be decrypted: a wrong APIv3 key,
// a tampered ciphertext, an unsupported algorithm or a malformed field.
var ErrDecrypt = errors.New("wechat: cannot decrypt notification resource")

// DecryptResource opens an AEAD_AES_256_GCM resource with the 32-byte APIv3
// key; other key sizes are rejected rather than silently using AES-128/192.
func DecryptResource(key APIv3Key, r Resource) ([]byte, error) {
	if err := key.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDecrypt, err)
	}
	if r.Algorithm != AlgorithmAES256GCM {
		return nil, fmt.Errorf("%w: algorithm %q", ErrDecrypt, r.Algorithm)
	}
	if len(r.Nonce) != ResourceNonceLength {
		return nil, fmt.Errorf("%w: nonce is %d bytes, want %d", ErrDecrypt, len(r.Nonce), ResourceNonceLength)
	}
	ct, err := base64.StdEncoding.DecodeString(r.Ciphertext)
	if err != nil {
		return nil, fmt.Errorf("%w: ciphertext is not base64", ErrDecrypt)
	}
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	pt, err := aead.Open(nil, []byte(r.Nonce), ct, []byte(r.AssociatedData))
	if err != nil {
		return nil, fmt.Errorf("%w: authentication failed", ErrDecrypt)
	}
	return pt, nil
}

// EncryptResource seals plaintext as WeChat Pay does: AES-256-GCM with a
// fresh 12-character nonce, returned Base64 with the tag appended. It is the
// counterpart of DecryptResource, for the simulator and for tests.
func EncryptResource(key APIv3Key, associatedData, originalType string, plaintext []byte) (Resource, error) {
	if err := key.Validate(); err != nil {
		return Resource{}, err
	}
	aead, err := newGCM(key)
	if err != nil {
		return Resource{}, err
	}
	nonce := NewNonce()[:ResourceNonceLength]
	ct := aead.Seal(nil, []byte(nonce), plaintext, []byte(associatedData))
	return Resource{
		Algorithm:      AlgorithmAES256GCM,
		Ciphertext:     base64.StdEncoding.EncodeToString(ct),
		AssociatedData: associatedData,
		Nonce:          nonce,
		OriginalType:   originalType,
	}, nil
}

func newGCM(key APIv3Key) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDecrypt, err)
	}
	return cipher.NewGCM(block)
}
