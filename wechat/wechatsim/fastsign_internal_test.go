package wechatsim

import (
	"crypto/rand"
	"crypto/rsa"
	"testing"

	"github.com/wxcombine/orderworker/wechat"
)

func TestSignMessage_MatchesCryptoRSA(t *testing.T) {
	for _, bits := range []int{1024, 2048} {
		k, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			t.Fatal(err)
		}
		key := wechat.NewPrivateKey(k)
		for _, msg := range []string{"", "1722850421\nd824f2e086d3c1df967785d13fcd22ef\n{}\n"} {
			got, err := signMessage(key, []byte(msg))
			if err != nil {
				t.Fatalf("signMessage(%d bits) = %v", bits, err)
			}
			want, err := wechat.Sign(key, []byte(msg))
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("signMessage(%d bits, %q) = %s, want %s", bits, msg, got, want)
			}
		}
	}
}
