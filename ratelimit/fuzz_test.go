package ratelimit_test

import (
	"fmt"
	"maps"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/wxcombine/orderworker/ratelimit"
)

// FuzzParseRates reads WECHAT_MERCHANT_QPS as an operator may write it.
// What it accepts is a positive, finite rate for each named merchant, and
// reads back the same when written out again.
func FuzzParseRates(f *testing.F) {
	for _, s := range []string{"", "1900000109=100", "1900000109=100,1900000110=20.5,*=50", "*=1e-3", "a=b", "=1", "x=1,x=2",
		"1900000109=NaN", "1900000109=+Inf", "1900000109 = 7 , ,", "1900000109=0x1p4", "1900000109=1e309"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ratelimit.ParseRates(s)
		if err != nil {
			return
		}
		check := func(k string, q float64) {
			if !(q > 0) || math.IsInf(q, 0) {
				t.Fatalf("ParseRates(%q): %s = %v, want a positive finite rate", s, k, q)
			}
			if k == "" || strings.ContainsAny(k, ",=") || k != strings.TrimSpace(k) {
				t.Fatalf("ParseRates(%q): merchant %q", s, k)
			}
		}
		var items []string
		for k, q := range r.PerMerchant {
			check(k, q)
			items = append(items, k+"="+strconv.FormatFloat(q, 'g', -1, 64))
		}
		if r.Default != 0 {
			check("*", r.Default)
			items = append(items, fmt.Sprintf("*=%s", strconv.FormatFloat(r.Default, 'g', -1, 64)))
		}
		back, err := ratelimit.ParseRates(strings.Join(items, ","))
		if err != nil || back.Default != r.Default || !maps.Equal(back.PerMerchant, r.PerMerchant) {
			t.Fatalf("ParseRates(%q) = %+v, written out and read again = %+v, %v", s, r, back, err)
		}
	})
}
