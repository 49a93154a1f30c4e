package notifier_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/wxcombine/orderworker/notifier"
	"github.com/wxcombine/orderworker/wechat"
)

// BenchmarkHandler measures the handler's cost per request with an in-memory
// publisher: a genuine notification (RSA verify, AES-GCM, JSON, publish), a
// forgery that reaches RSA verification, and a stale replay refused before
// the body is read.
func BenchmarkHandler(b *testing.B) {
	k := loadKeys(b)
	h, err := notifier.New(notifier.Config{Merchants: []*wechat.Merchant{k.merchant()}, Publisher: &memPublisher{}})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	cases := []struct {
		name string
		n    func(i int) signed
		want int
	}{
		{"genuine", func(i int) signed {
			no := "B" + strconv.Itoa(i)
			return notification(b, k.pubKey, testPubKeyID, k.apiV3, "EV-"+no, paidOrder(no), now)
		}, http.StatusNoContent},
		{"forged", func(int) signed {
			return notification(b, k.forger, testPubKeyID, k.apiV3, "EV-F", paidOrder("F"), now)
		}, http.StatusUnauthorized},
		{"stale", func(int) signed {
			return notification(b, k.pubKey, testPubKeyID, k.apiV3, "EV-S", paidOrder("S"), now.Add(-time.Hour))
		}, http.StatusUnauthorized},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			const distinct = 256 // signed before timing (b.Loop); repeats of genuine ones are duplicates
			ns := make([]signed, distinct)
			for i := range ns {
				ns[i] = c.n(i)
			}
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				n := ns[i%distinct]
				req := httptest.NewRequest(http.MethodPost, notifier.PathPrefix+testMchID, bytes.NewReader(n.body))
				req.Header = n.header.Clone()
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != c.want && rec.Code != http.StatusOK {
					b.Fatalf("status %d, want %d", rec.Code, c.want)
				}
			}
		})
	}
}
