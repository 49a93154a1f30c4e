package securitytest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"strings"
	"testing"
)

func TestScanner(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pemData := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	lines := strings.Split(string(pemData), "\n")
	flat := base64.StdEncoding.EncodeToString(der)
	const apiV3 = "0123456789abcdefghijABCDEFGHIJ01"
	sc := NewScanner()
	if err := sc.AddPrivateKeyPEM("merchant key", pemData); err != nil {
		t.Fatal(err)
	}
	sc.AddAPIv3Key("apiv3", apiV3)
	sc.AddOpenID("openid", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o")

	tests := []struct {
		name string
		text string
		want string // secret label found, "" for none
	}{
		{"clean log line", `{"level":"INFO","msg":"prepay created","combine_out_trade_no":"CH1"}`, ""},
		{"PEM line in a log", `{"msg":"load key","detail":"` + lines[len(lines)-5] + `"}`, "merchant key"},
		{"modulus is public", lines[3], ""},
		{"JSON-escaped PEM", fmt.Sprintf("%q", string(pemData)), "merchant key"},
		{"base64 chunk across PEM lines", "x" + flat[len(flat)-300:len(flat)-240] + "x", "merchant key"},
		{"DER in hex", "der=" + hex.EncodeToString(der)[1200:1300], "merchant key"},
		{"private exponent printed", "D:" + key.D.String(), "merchant key"},
		{"APIv3 key", "key=" + apiV3, "apiv3"},
		{"APIv3 key in base64", base64.StdEncoding.EncodeToString([]byte(apiV3)), "apiv3"},
		{"openid", `"payer":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"`, "openid"},
		{"public key is not secret", string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&key.PublicKey)})), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := sc.Scan("test", []byte(tt.text))
			switch {
			case tt.want == "" && len(got) > 0:
				t.Errorf("Scan() = %v, want no finding", got)
			case tt.want != "" && (len(got) == 0 || got[0].Secret != tt.want):
				t.Errorf("Scan() = %v, want a finding of %q", got, tt.want)
			}
		})
	}
}
