package wechatsim_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxcombine/orderworker/wechat"
	"github.com/wxcombine/orderworker/wechat/wechatsim"
	"github.com/wxcombine/orderworker/wechat/wechatsim/contract"
)

// The contract test holds two independent readings of WeChat Pay's request
// contract against each other: the client's (wechat.DecodeCreateRequest and
// wechat.Validate) and the simulator's (the vendored OpenAPI schemas plus
// its own rules, over HTTP). Every example request of the seeds and the
// OpenAPI files must be accepted by both; every generated bad request (one
// documented constraint broken) must be refused by both, naming the same
// field. A disagreement names the reading that is wrong.

const seedMch = "1230000109" // the seeds' second merchant number; every example's appid is appA

// contractCase is one request and what the contract says of it.
type contractCase struct {
	name    string
	flavour wechat.Flavour
	trade   wechat.TradeType
	body    []byte
	// field is the JSON pointer a refusal must name; good cases have
	// accept set instead.
	field  string
	accept bool
}

// contractFixture holds one simulator per flavour that knows the seeds'
// merchants (1900000109 and 1230000109, both bound to wxd678efh567hg6787).
type contractFixture struct {
	platform *wechatsim.Platform
	sims     []wechatsim.MerchantConfig
	clients  map[string]*wechat.Merchant
}

var contractKeys = sync.OnceValues(func() (*contractFixture, error) {
	// A 1024-bit platform signs the thousands of answers 4x faster; the
	// answers' signatures are not what this test is about.
	p, err := wechatsim.GeneratePlatform(1024)
	if err != nil {
		return nil, err
	}
	cf := &contractFixture{platform: p, clients: map[string]*wechat.Merchant{}}
	for _, id := range []string{mchA, seedMch} {
		mc, m, err := wechatsim.GenerateMerchant(p, id, appA)
		if err != nil {
			return nil, err
		}
		cf.sims = append(cf.sims, mc)
		c := *m
		c.Platform = p.Verifier(wechatsim.ModePublicKey)
		cf.clients[c.MchID] = &c
	}
	return cf, nil
})

func startContractSim(t *testing.T, flavour wechat.Flavour) string {
	t.Helper()
	cf, err := contractKeys()
	if err != nil {
		t.Fatal(err)
	}
	s, err := wechatsim.New(wechatsim.Config{Flavour: flavour, Platform: cf.platform, Merchants: cf.sims})
	if err != nil {
		t.Fatal(err)
	}
	url, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return url
}

// clientReading answers the field the client refuses body at, or ok.
func clientReading(c contractCase) (field, issue string, ok bool) {
	req, err := wechat.DecodeCreateRequest(c.body)
	if err == nil {
		err = wechat.Validate(c.flavour, c.trade, req)
	}
	var ve *wechat.ValidationError
	if errors.As(err, &ve) {
		return ve.Field, ve.Issue, false
	}
	return "", "", err == nil
}

// simReading sends body to the simulator at base, signed by the merchant
// its combine_mchid names, and answers the field of a PARAM_ERROR, or ok
// for a 200.
func simReading(t *testing.T, base string, c contractCase) (field, issue string, ok bool) {
	t.Helper()
	cf, _ := contractKeys()
	var head struct {
		MchID any `json:"combine_mchid"`
	}
	_ = json.Unmarshal(c.body, &head)
	m := cf.clients[mchA]
	if id, _ := head.MchID.(string); cf.clients[id] != nil {
		m = cf.clients[id]
	}
	req := signedRequest(t, m, base, http.MethodPost, c.trade.Path(), c.body, time.Now().Unix())
	httpResp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "(no answer)", err.Error(), false
	}
	body, err := io.ReadAll(httpResp.Body)
	_ = httpResp.Body.Close()
	if err != nil {
		return "(no answer)", err.Error(), false
	}
	resp := rawResponse{status: httpResp.StatusCode, body: body}
	if resp.status == http.StatusOK {
		return "", "", true
	}
	var e struct {
		Code   string `json:"code"`
		Detail struct {
			Field string `json:"field"`
			Issue string `json:"issue"`
		} `json:"detail"`
	}
	_ = json.Unmarshal(resp.body, &e)
	if e.Code != "PARAM_ERROR" {
		return "(" + strconv.Itoa(resp.status) + " " + e.Code + ")", string(resp.body), false
	}
	return e.Detail.Field, e.Detail.Issue, false
}

func TestContract_TwoReadingsAgree(t *testing.T) {
	t.Parallel()
	goods, published := examples(t)
	var cases []contractCase
	for _, g := range goods {
		cases = append(cases, g)
		cases = append(cases, mutations(t, g)...)
	}
	cases = append(cases, published...)
	sims := map[wechat.Flavour]string{}
	for _, c := range cases {
		if sims[c.flavour] == "" {
			sims[c.flavour] = startContractSim(t, c.flavour)
		}
	}
	var (
		mu                sync.Mutex
		goodBoth, badBoth int
		wg                sync.WaitGroup
		work              = make(chan contractCase)
	)
	for range 4 {
		wg.Go(func() {
			for c := range work {
				g, b, msg := judge(t, sims[c.flavour], c)
				mu.Lock()
				goodBoth, badBoth = goodBoth+g, badBoth+b
				mu.Unlock()
				if msg != "" {
					t.Error(msg)
				}
			}
		})
	}
	for _, c := range cases {
		if c.accept {
			// A good case creates an order: each gets a fresh simulator so
			// that examples sharing an order number do not collide.
			g, _, msg := judge(t, startContractSim(t, c.flavour), c)
			mu.Lock()
			goodBoth += g
			mu.Unlock()
			if msg != "" {
				t.Error(msg)
			}
			continue
		}
		work <- c
	}
	close(work)
	wg.Wait()
	good, bad := 0, 0
	for _, c := range cases {
		if c.accept {
			good++
		} else {
			bad++
		}
	}
	t.Logf("contract: %d of %d good requests accepted by both readings; %d of %d bad requests refused by both, naming the same field",
		goodBoth, good, badBoth, bad)
	if good < 30 || bad < 300 {
		t.Errorf("only %d good and %d bad cases: the generators lost their input", good, bad)
	}
}

// judge runs c through both readings and answers whether both accepted a
// good case or refused a bad one at its field, or a message naming the
// reading that is wrong.
func judge(t *testing.T, base string, c contractCase) (goodBoth, badBoth int, msg string) {
	cField, cIssue, cOK := clientReading(c)
	sField, sIssue, sOK := simReading(t, base, c)
	where := fmt.Sprintf("%s [%s %s]", c.name, c.flavour, c.trade)
	if c.accept {
		switch {
		case cOK && sOK:
			return 1, 0, ""
		case !cOK && !sOK:
			return 0, 0, fmt.Sprintf("%s: both readings refuse a request the contract accepts (client %s: %s; simulator %s: %s)\n%s", where, cField, cIssue, sField, sIssue, c.body)
		case !cOK:
			return 0, 0, fmt.Sprintf("%s: the client's reading is wrong: it refuses %s (%s), the simulator and the contract accept\n%s", where, cField, cIssue, c.body)
		default:
			return 0, 0, fmt.Sprintf("%s: the simulator's reading is wrong: it refuses %s (%s), the client and the contract accept\n%s", where, sField, sIssue, c.body)
		}
	}
	cRight := !cOK && cField == c.field
	sRight := !sOK && sField == c.field
	switch {
	case cRight && sRight:
		return 0, 1, ""
	case !cRight && !sRight:
		return 0, 0, fmt.Sprintf("%s: both readings are wrong: the contract refuses %s; client %s %s (%s), simulator %s %s (%s)", where, c.field, okWord(cOK), cField, cIssue, okWord(sOK), sField, sIssue)
	case !cRight:
		return 0, 0, fmt.Sprintf("%s: the client's reading is wrong: the contract and the simulator refuse %s; the client %s %s (%s)", where, c.field, okWord(cOK), cField, cIssue)
	default:
		return 0, 0, fmt.Sprintf("%s: the simulator's reading is wrong: the contract and the client refuse %s; the simulator %s %s (%s)", where, c.field, okWord(sOK), sField, sIssue)
	}
}

func okWord(ok bool) string {
	if ok {
		return "accepts"
	}
	return "refuses at"
}

// ---- good examples ----

// examples answers the contract package's examples as cases: the good ones
// (accepted) and the seeds as published (refused at their Field).
func examples(t *testing.T) (goods, published []contractCase) {
	t.Helper()
	seeds, err := contract.SeedExamples()
	if err != nil {
		t.Fatal(err)
	}
	oapi, err := contract.OpenAPIExamples()
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range append(seeds, oapi...) {
		c := contractCase{name: x.Name, flavour: wechat.Flavour(x.Flavour), trade: wechat.TradeType(x.TradeType),
			body: x.Body, field: x.Field, accept: x.Field == ""}
		if c.accept {
			goods = append(goods, c)
		} else {
			published = append(published, c)
		}
	}
	return goods, published
}

func mustMarshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := contract.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ---- bad requests ----

// maxBytes are the documented byte limits of string fields, by pointer with
// array indexes replaced by "*".
var maxBytes = map[string]int{
	"/combine_appid": 32, "/combine_mchid": 32, "/combine_out_trade_no": 32,
	"/scene_info/device_id": 16, "/scene_info/payer_client_ip": 45,
	"/scene_info/h5_info/app_name": 64, "/scene_info/h5_info/app_url": 128,
	"/scene_info/h5_info/bundle_id": 128, "/scene_info/h5_info/package_name": 128,
	"/sub_orders/*/mchid": 32, "/sub_orders/*/sub_mchid": 32, "/sub_orders/*/sub_appid": 32,
	"/sub_orders/*/individual_auth_id": 64, "/sub_orders/*/individual_name": 128,
	"/sub_orders/*/attach": 128, "/sub_orders/*/out_trade_no": 32, "/sub_orders/*/detail": 6000,
	"/sub_orders/*/description": 127, "/sub_orders/*/goods_tag": 32,
	"/combine_payer_info/openid": 128, "/combine_payer_info/sub_openid": 128,
	"/time_start": 32, "/time_expire": 32, "/notify_url": 255,
}

// asciiOnly are fields whose over-long value must stay in their alphabet.
var asciiOnly = map[string]bool{
	"/combine_appid": true, "/combine_mchid": true, "/combine_out_trade_no": true, "/scene_info/payer_client_ip": true,
	"/sub_orders/*/mchid": true, "/sub_orders/*/sub_mchid": true, "/sub_orders/*/sub_appid": true,
	"/sub_orders/*/individual_auth_id": true, "/sub_orders/*/out_trade_no": true,
	"/combine_payer_info/openid": true, "/combine_payer_info/sub_openid": true,
	"/time_start": true, "/time_expire": true, "/notify_url": true, "/scene_info/h5_info/app_url": true,
}

func pattern(ptr string) string {
	parts := strings.Split(ptr, "/")
	for i, p := range parts {
		if _, err := strconv.Atoi(p); err == nil && p != "" {
			parts[i] = "*"
		}
	}
	return strings.Join(parts, "/")
}

// leaf is one scalar of a request, by pointer.
type leaf struct {
	ptr string
	val any
}

func leaves(v any, ptr string, out *[]leaf) {
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			leaves(x[k], ptr+"/"+k, out)
		}
	case []any:
		for i, it := range x {
			leaves(it, ptr+"/"+strconv.Itoa(i), out)
		}
	default:
		*out = append(*out, leaf{ptr, v})
	}
}

// edit applies f to a fresh copy of body's JSON value at ptr's parent.
func edit(t *testing.T, body []byte, ptr string, f func(parent any, key string) any) []byte {
	t.Helper()
	var root any
	if err := json.Unmarshal(body, &root); err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(ptr, "/")[1:]
	cur := root
	for _, p := range parts[:len(parts)-1] {
		switch c := cur.(type) {
		case map[string]any:
			cur = c[p]
		case []any:
			i, _ := strconv.Atoi(p)
			cur = c[i]
		}
	}
	root2 := f(cur, parts[len(parts)-1])
	if root2 != nil {
		root = root2
	}
	return mustMarshal(t, root)
}

func set(t *testing.T, body []byte, ptr string, v any) []byte {
	return edit(t, body, ptr, func(parent any, key string) any {
		switch p := parent.(type) {
		case map[string]any:
			p[key] = v
		case []any:
			i, _ := strconv.Atoi(key)
			p[i] = v
		}
		return nil
	})
}

func del(t *testing.T, body []byte, ptr string) []byte {
	return edit(t, body, ptr, func(parent any, key string) any {
		if p, ok := parent.(map[string]any); ok {
			delete(p, key)
		}
		return nil
	})
}

func rename(t *testing.T, body []byte, ptr, to string) []byte {
	return edit(t, body, ptr, func(parent any, key string) any {
		if p, ok := parent.(map[string]any); ok {
			p[to] = p[key]
			delete(p, key)
		}
		return nil
	})
}

// invalidUTF8 marks a string to be replaced by invalid UTF-8 bytes after
// marshalling.
const invalidUTF8 = "INVALID-UTF8-MARK"

func withInvalidUTF8(b []byte) []byte {
	return bytes.ReplaceAll(b, []byte(invalidUTF8), []byte("shop\xff\xfe"))
}

func get(body []byte, ptr string) (any, bool) {
	var root any
	_ = json.Unmarshal(body, &root)
	cur := root
	for _, p := range strings.Split(ptr, "/")[1:] {
		switch c := cur.(type) {
		case map[string]any:
			v, ok := c[p]
			if !ok {
				return nil, false
			}
			cur = v
		case []any:
			i, err := strconv.Atoi(p)
			if err != nil || i >= len(c) {
				return nil, false
			}
			cur = c[i]
		default:
			return nil, false
		}
	}
	return cur, true
}

// mutations answers the bad requests derived from good case g: each breaks
// one documented constraint, and field is where.
func mutations(t *testing.T, g contractCase) []contractCase {
	t.Helper()
	var out []contractCase
	add := func(name, field string, body []byte) {
		out = append(out, contractCase{name: g.name + ": " + name, flavour: g.flavour, trade: g.trade, body: body, field: field})
	}
	var root any
	_ = json.Unmarshal(g.body, &root)
	var ls []leaf
	if !strings.Contains(g.name, "required fields") { // a subset of the every-field example's leaves
		leaves(root, "", &ls)
	}
	for _, l := range ls {
		if strings.HasPrefix(l.ptr, "/sub_orders/") && !strings.HasPrefix(l.ptr, "/sub_orders/0/") {
			continue // the merchant flavour's second sub-order repeats the first
		}
		pat := pattern(l.ptr)
		if s, ok := l.val.(string); ok {
			add("4-byte character in "+l.ptr, l.ptr, set(t, g.body, l.ptr, s+"\U0001F600"))
			add("invalid UTF-8 in "+l.ptr, l.ptr, withInvalidUTF8(set(t, g.body, l.ptr, invalidUTF8)))
			add("number for string "+l.ptr, l.ptr, set(t, g.body, l.ptr, 12345678))
			if n, ok := maxBytes[pat]; ok {
				long := strings.Repeat("汉", n/3) + strings.Repeat("a", n%3+1) // n+1 bytes, fewer characters
				if asciiOnly[pat] {
					long = strings.Repeat("1", n+1)
					if pat == "/notify_url" {
						long = "https://yourapp.com/" + strings.Repeat("n", n+1-len("https://yourapp.com/"))
					}
				}
				add(fmt.Sprintf("%d bytes in %s", len(long), l.ptr), l.ptr, set(t, g.body, l.ptr, long))
			}
		} else {
			add("string for "+fmt.Sprintf("%T", l.val)+" "+l.ptr, l.ptr, set(t, g.body, l.ptr, "1"))
		}
		add("null "+l.ptr, l.ptr, set(t, g.body, l.ptr, nil))
	}
	// Missing required fields (schema and flavour).
	for _, p := range requiredPointers(t, g) {
		if _, ok := get(g.body, p); ok {
			add("missing "+p, p, del(t, g.body, p))
		}
	}
	// Unknown and case-variant keys.
	for _, p := range []string{"", "/sub_orders/0", "/scene_info", "/sub_orders/0/amount", "/combine_payer_info"} {
		if _, ok := get(g.body, p); ok || p == "" {
			add("unknown field in "+cmpOrStr(p, "/"), p+"/unknown_field", set(t, g.body, p+"/unknown_field", "x"))
		}
	}
	for _, r := range [][2]string{{"/combine_appid", "Combine_AppID"}, {"/sub_orders/0/out_trade_no", "Out_Trade_No"},
		{"/sub_orders/0/amount/total_amount", "TOTAL_AMOUNT"}} {
		parent := r[0][:strings.LastIndex(r[0], "/")]
		add("case-variant key "+r[1], parent+"/"+r[1], rename(t, g.body, r[0], r[1]))
	}
	// Object-valued null.
	for _, p := range []string{"/scene_info", "/combine_payer_info", "/sub_orders/0/settle_info", "/subsidy_info", "/scene_info/h5_info"} {
		if _, ok := get(g.body, p); ok {
			add("null object "+p, p, set(t, g.body, p, nil))
		}
	}
	out = append(out, ruleMutations(t, g)...)
	return out
}

func cmpOrStr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// requiredPointers lists the pointers the contract requires in g.
func requiredPointers(t *testing.T, g contractCase) []string {
	ps := []string{"/combine_appid", "/combine_mchid", "/combine_out_trade_no", "/sub_orders",
		"/sub_orders/0/mchid", "/sub_orders/0/attach", "/sub_orders/0/amount", "/sub_orders/0/amount/total_amount",
		"/sub_orders/0/amount/currency", "/sub_orders/0/out_trade_no", "/sub_orders/0/description",
		"/scene_info/payer_client_ip", "/scene_info/h5_info/type"}
	if g.flavour != wechat.FlavourIndividual {
		ps = append(ps, "/notify_url")
	}
	switch g.trade {
	case wechat.TradeTypeJSAPI, wechat.TradeTypeMiniProgram:
		ps = append(ps, "/combine_payer_info", "/combine_payer_info/openid")
	case wechat.TradeTypeH5:
		ps = append(ps, "/scene_info", "/scene_info/device_id", "/scene_info/h5_info")
	}
	switch g.flavour {
	case wechat.FlavourPartner, wechat.FlavourEcommerce:
		ps = append(ps, "/sub_orders/0/sub_mchid")
	case wechat.FlavourIndividual:
		ps = append(ps, "/sub_orders/0/individual_auth_id")
	}
	ps = append(ps, "/combine_payer_info/identity/type", "/combine_payer_info/identity/number", "/combine_payer_info/identity/name",
		"/contract_info/mchid", "/contract_info/plan_id", "/contract_info/notify_url",
		"/subsidy_info/subsidy_detail/0/subsidy_period_type", "/subsidy_info/subsidy_detail/0/subsidy_plan",
		"/subsidy_info/subsidy_detail/0/subsidy_plan/0/subsidy_percent")
	return ps
}

// ruleMutations break the rules a schema cannot say.
func ruleMutations(t *testing.T, g contractCase) []contractCase {
	t.Helper()
	var out []contractCase
	add := func(name, field string, body []byte) {
		out = append(out, contractCase{name: g.name + ": " + name, flavour: g.flavour, trade: g.trade, body: body, field: field})
	}
	subs := func(n int) []byte {
		one, _ := get(g.body, "/sub_orders/0")
		var list []any
		for i := range n {
			b, _ := json.Marshal(one)
			var so map[string]any
			_ = json.Unmarshal(b, &so)
			so["out_trade_no"] = fmt.Sprintf("SUBNO%06d", i)
			if _, ok := so["sub_mchid"]; ok {
				so["sub_mchid"] = strconv.Itoa(1900000200 + i)
			}
			list = append(list, so)
		}
		return set(t, g.body, "/sub_orders", list)
	}
	lo, hi := g.flavour.SubOrderLimits()
	add(fmt.Sprintf("%d sub-orders", hi+1), "/sub_orders", subs(hi+1))
	if lo > 1 {
		add(fmt.Sprintf("%d sub-order", lo-1), "/sub_orders", subs(lo-1))
	}
	add("empty sub_orders", "/sub_orders", set(t, g.body, "/sub_orders", []any{}))
	two := subs(2)
	add("duplicate out_trade_no", "/sub_orders/1/out_trade_no", set(t, two, "/sub_orders/1/out_trade_no", "SUBNO000000"))
	if g.flavour == wechat.FlavourEcommerce {
		add("two sub-orders of one sub_mchid", "/sub_orders/1/sub_mchid", set(t, two, "/sub_orders/1/sub_mchid", "1900000200"))
	}
	minNo := wechat.MinCombineOutTradeNoLength(g.flavour)
	if minNo > 1 {
		add("combine_out_trade_no too short", "/combine_out_trade_no", set(t, g.body, "/combine_out_trade_no", strings.Repeat("P", minNo-1)))
	}
	add("'#' in combine_out_trade_no", "/combine_out_trade_no", set(t, g.body, "/combine_out_trade_no", "P2015#0806"))
	add("'#' in out_trade_no", "/sub_orders/0/out_trade_no", set(t, g.body, "/sub_orders/0/out_trade_no", "2015#0806"))
	add("out_trade_no of 5", "/sub_orders/0/out_trade_no", set(t, g.body, "/sub_orders/0/out_trade_no", "20150"))
	if g.trade == wechat.TradeTypeMiniProgram {
		add("'*' on the individual-payee page", "/combine_out_trade_no", set(t, g.body, "/combine_out_trade_no", "P2015*0806"))
	} else {
		out = append(out, contractCase{name: g.name + ": '@' and '*' in order numbers", flavour: g.flavour, trade: g.trade,
			body: set(t, set(t, g.body, "/combine_out_trade_no", "P2015@0806*1"), "/sub_orders/0/out_trade_no", "S2015@08*06"), accept: true})
	}
	if _, ok := get(g.body, "/notify_url"); ok {
		add("notify_url with a query", "/notify_url", set(t, g.body, "/notify_url", "https://yourapp.com/notify?shop=1"))
		add("notify_url over http", "/notify_url", set(t, g.body, "/notify_url", "http://yourapp.com/notify"))
		add("notify_url with a fragment", "/notify_url", set(t, g.body, "/notify_url", "https://yourapp.com/notify#x"))
	}
	add("total_amount 0", "/sub_orders/0/amount/total_amount", set(t, g.body, "/sub_orders/0/amount/total_amount", 0))
	add("total_amount over 10000000", "/sub_orders/0/amount/total_amount", set(t, g.body, "/sub_orders/0/amount/total_amount", 10000001))
	add("fractional total_amount", "/sub_orders/0/amount/total_amount", set(t, g.body, "/sub_orders/0/amount/total_amount", 1.5))
	add("currency USD", "/sub_orders/0/amount/currency", set(t, g.body, "/sub_orders/0/amount/currency", "USD"))
	if _, ok := get(g.body, "/scene_info"); ok {
		add("device_id of 6 bytes", "/scene_info/device_id", set(t, g.body, "/scene_info/device_id", "POS1:1"))
		add("payer_client_ip not an IP", "/scene_info/payer_client_ip", set(t, g.body, "/scene_info/payer_client_ip", "14.17.22"))
	}
	if _, ok := get(g.body, "/scene_info/h5_info"); ok {
		add("h5_info.type Windows", "/scene_info/h5_info/type", set(t, g.body, "/scene_info/h5_info/type", "Windows"))
	}
	if _, ok := get(g.body, "/limit_pay"); ok {
		add("limit_pay no_credit", "/limit_pay/0", set(t, g.body, "/limit_pay", []any{"no_credit"}))
		add("limit_pay twice", "/limit_pay/1", set(t, g.body, "/limit_pay", []any{"no_debit", "no_debit"}))
	}
	if _, ok := get(g.body, "/time_expire"); ok {
		add("time_expire not RFC 3339", "/time_expire", set(t, g.body, "/time_expire", "2018-06-08 10:34:56"))
	}
	if _, ok := get(g.body, "/sub_orders/0/settle_info"); ok {
		add("negative subsidy_amount", "/sub_orders/0/settle_info/subsidy_amount", set(t, g.body, "/sub_orders/0/settle_info/subsidy_amount", -1))
	}
	switch g.flavour {
	case wechat.FlavourMerchant:
		add("sub_mchid in the merchant flavour", "/sub_orders/0/sub_mchid", set(t, g.body, "/sub_orders/0/sub_mchid", "1900000109"))
	case wechat.FlavourPartner, wechat.FlavourEcommerce:
		if g.trade == wechat.TradeTypeApp {
			add("individual_auth_id outside the individual flavour", "/sub_orders/0/individual_auth_id", set(t, g.body, "/sub_orders/0/individual_auth_id", "1900000109"))
			add("trade_scenario outside the individual flavour", "/trade_scenario", set(t, g.body, "/trade_scenario", "RECOMMERCE"))
		}
	case wechat.FlavourIndividual:
		add("sub_mchid for an individual payee", "/sub_orders/0/sub_mchid", set(t, g.body, "/sub_orders/0/sub_mchid", "1900000109"))
	}
	if g.trade == wechat.TradeTypeH5 || g.trade == wechat.TradeTypeNative {
		add("detail on "+string(g.trade), "/sub_orders/0/detail", set(t, g.body, "/sub_orders/0/detail", "买单费用"))
		add("outer profit_sharing on "+string(g.trade), "/sub_orders/0/profit_sharing", set(t, g.body, "/sub_orders/0/profit_sharing", true))
		add("subsidy_info on "+string(g.trade), "/subsidy_info", set(t, g.body, "/subsidy_info", map[string]any{}))
	}
	if g.trade == wechat.TradeTypeMiniProgram {
		add("time_start on miniprogram", "/time_start", set(t, g.body, "/time_start", "2018-06-08T10:34:56+08:00"))
	}
	return out
}
