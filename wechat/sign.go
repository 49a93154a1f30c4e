package wechat

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// AuthScheme is the Authorization scheme of every signed request.
const AuthScheme = "WECHATPAY2-SHA256-RSA2048"

// SignTestPrefix starts the deliberately wrong signatures WeChat Pay sends
// as probes (签名探测); a verifier must reject them.
const SignTestPrefix = "WECHATPAY/SIGNTEST/"

// RequestMessage builds the five-line string a request signature covers:
// method, request target (path and query exactly as sent), timestamp, nonce
// and body, each followed by "\n" — the last line too, even when body already
// ends with one.
func RequestMessage(method, target string, timestamp int64, nonce string, body []byte) []byte {
	var b strings.Builder
	b.Grow(len(method) + len(target) + len(nonce) + len(body) + 16)
	b.WriteString(method)
	b.WriteByte('\n')
	b.WriteString(target)
	b.WriteByte('\n')
	b.WriteString(strconv.FormatInt(timestamp, 10))
	b.WriteByte('\n')
	b.WriteString(nonce)
	b.WriteByte('\n')
	b.Write(body)
	b.WriteByte('\n')
	return []byte(b.String())
}

// ResponseMessage builds the three-line string a response or notification
// signature covers: timestamp, nonce and the raw body (empty for 204), each
// followed by "\n".
func ResponseMessage(timestamp, nonce string, body []byte) []byte {
	m := make([]byte, 0, len(timestamp)+len(nonce)+len(body)+3)
	m = append(m, timestamp...)
	m = append(m, '\n')
	m = append(m, nonce...)
	m = append(m, '\n')
	m = append(m, body...)
	return append(m, '\n')
}

// PaySignMessage builds the string a client pay signature covers: appid,
// timestamp, nonce and the package (JSAPI and mini program: "prepay_id=…";
// APP: the bare prepay_id), each followed by "\n".
func PaySignMessage(appID, timestamp, nonce, pkg string) []byte {
	return []byte(appID + "\n" + timestamp + "\n" + nonce + "\n" + pkg + "\n")
}

// Sign answers Base64(RSASSA-PKCS1-v1_5(SHA-256(message))). PKCS#1 v1.5 is
// deterministic, so the same key and message always give the same signature.
func Sign(key PrivateKey, message []byte) (string, error) {
	if key.key == nil {
		return "", fmt.Errorf("wechat: sign: %w", ErrNoKey)
	}
	sum := sha256.Sum256(message)
	sig, err := rsa.SignPKCS1v15(nil, key.key, crypto.SHA256, sum[:])
	if err != nil {
		return "", fmt.Errorf("wechat: sign: %w", err)
	}
	return base64.StdEncoding.EncodeToString(sig), nil
}

// ErrNoKey reports a merchant without a private key: the worker's
// credentials are incomplete (an operator error, see OperatorError).
var ErrNoKey = errors.New("wechat: no private key")

// ErrSignature reports a signature that does not verify, a probe signature,
// or signature headers that are missing or malformed.
var ErrSignature = errors.New("wechat: signature verification failed")

// VerifySignature checks a Base64 SHA256withRSA signature over message.
// WECHATPAY/SIGNTEST/ probes are always rejected.
func VerifySignature(key *rsa.PublicKey, message []byte, signature string) error {
	if strings.HasPrefix(signature, SignTestPrefix) {
		return fmt.Errorf("%w: signature probe", ErrSignature)
	}
	sig, err := base64.StdEncoding.DecodeString(signature)
	if err != nil {
		return fmt.Errorf("%w: signature is not base64", ErrSignature)
	}
	sum := sha256.Sum256(message)
	if err := rsa.VerifyPKCS1v15(key, crypto.SHA256, sum[:], sig); err != nil {
		return ErrSignature
	}
	return nil
}

// nonceAlphabet is the alphabet of the official SDKs' 32-character nonces.
const nonceAlphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// NonceLength is the length of every nonce this package generates.
const NonceLength = 32

// NewNonce answers a 32-character nonce from crypto/rand, drawn uniformly
// from [0-9A-Za-z].
func NewNonce() string {
	var b [NonceLength]byte
	// 62 letters: reject bytes ≥ 248 (4×62) so every letter is equally likely.
	var buf [64]byte
	n := 0
	for n < NonceLength {
		_, _ = rand.Read(buf[:]) // crypto/rand.Read never fails (Go 1.24+).
		for _, c := range buf {
			if c >= 248 {
				continue
			}
			b[n] = nonceAlphabet[c%62]
			n++
			if n == NonceLength {
				break
			}
		}
	}
	return string(b[:])
}

// Authorization holds the five pairs of a request's Authorization header.
type Authorization struct {
	MchID     string
	Serial    string // serial_no: the merchant API certificate serial
	Timestamp int64
	Nonce     string
	Signature string
}

// String formats the header value in the official SDK's pair order. WeChat
// Pay accepts the pairs in any order.
func (a Authorization) String() string {
	return fmt.Sprintf(`%s mchid="%s",nonce_str="%s",timestamp="%d",serial_no="%s",signature="%s"`,
		AuthScheme, a.MchID, a.Nonce, a.Timestamp, a.Serial, a.Signature)
}

// ErrAuthorization reports an Authorization header that cannot be parsed.
var ErrAuthorization = errors.New("wechat: malformed Authorization header")

// ParseAuthorization parses an Authorization header. The five pairs may come
// in any order; all five are required, each once, and nothing else is allowed.
func ParseAuthorization(header string) (Authorization, error) {
	var a Authorization
	scheme, rest, ok := strings.Cut(header, " ")
	if !ok || scheme != AuthScheme {
		return a, fmt.Errorf("%w: scheme is not %s", ErrAuthorization, AuthScheme)
	}
	seen := make(map[string]bool, 5)
	for rest = strings.TrimSpace(rest); rest != ""; {
		eq := strings.IndexByte(rest, '=')
		if eq <= 0 {
			return a, fmt.Errorf("%w: expected key=\"value\"", ErrAuthorization)
		}
		key := strings.TrimSpace(rest[:eq])
		rest = rest[eq+1:]
		if !strings.HasPrefix(rest, `"`) {
			return a, fmt.Errorf("%w: value of %s is not quoted", ErrAuthorization, key)
		}
		end := strings.IndexByte(rest[1:], '"')
		if end < 0 {
			return a, fmt.Errorf("%w: unterminated value of %s", ErrAuthorization, key)
		}
		val := rest[1 : 1+end]
		rest = strings.TrimSpace(rest[end+2:])
		if rest != "" {
			if rest[0] != ',' {
				return a, fmt.Errorf("%w: expected ',' after %s", ErrAuthorization, key)
			}
			rest = strings.TrimSpace(rest[1:])
			if rest == "" {
				return a, fmt.Errorf("%w: trailing ','", ErrAuthorization)
			}
		}
		if seen[key] {
			return a, fmt.Errorf("%w: %s given twice", ErrAuthorization, key)
		}
		seen[key] = true
		switch key {
		case "mchid":
			a.MchID = val
		case "serial_no":
			a.Serial = val
		case "nonce_str":
			a.Nonce = val
		case "signature":
			a.Signature = val
		case "timestamp":
			ts, err := strconv.ParseInt(val, 10, 64)
			if err != nil || ts <= 0 {
				return a, fmt.Errorf("%w: timestamp is not a positive integer", ErrAuthorization)
			}
			a.Timestamp = ts
		default:
			return a, fmt.Errorf("%w: unknown key %q", ErrAuthorization, key)
		}
	}
	for _, k := range []string{"mchid", "serial_no", "nonce_str", "timestamp", "signature"} {
		if !seen[k] || (k != "timestamp" && pairValue(a, k) == "") {
			return a, fmt.Errorf("%w: %s is missing", ErrAuthorization, k)
		}
	}
	return a, nil
}

func pairValue(a Authorization, k string) string {
	switch k {
	case "mchid":
		return a.MchID
	case "serial_no":
		return a.Serial
	case "nonce_str":
		return a.Nonce
	case "signature":
		return a.Signature
	}
	return ""
}

// SignRequest builds the Authorization for one request. target is the
// request target exactly as sent (path, escaped once, plus "?query").
func SignRequest(key PrivateKey, mchID, serial, method, target string, timestamp int64, nonce string, body []byte) (Authorization, error) {
	sig, err := Sign(key, RequestMessage(method, target, timestamp, nonce, body))
	if err != nil {
		return Authorization{}, err
	}
	return Authorization{MchID: mchID, Serial: serial, Timestamp: timestamp, Nonce: nonce, Signature: sig}, nil
}
