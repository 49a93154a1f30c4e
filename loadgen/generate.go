package loadgen

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/wechat"
)

// Kind is what a generated job is meant to provoke.
type Kind string

// The kinds of job.
const (
	// KindValid must be created (or fail with a WeChat Pay error).
	KindValid Kind = "valid"
	// KindInvalid breaks a WeChat Pay rule (a sub-order of 0 fen): it must
	// fail and be dead-lettered, and WeChat Pay must not be called.
	KindInvalid Kind = "invalid"
	// KindMalformed has an unknown field, so it is not a CreateOrderJob: it
	// must fail and be dead-lettered.
	KindMalformed Kind = "malformed"
)

// Job is one generated message.
type Job struct {
	Key       OrderKey
	Kind      Kind
	TradeType wechat.TradeType
	SubOrders int
	// Subject, MsgID and Body are what is published.
	Subject string
	MsgID   string
	Body    []byte
	// CreatedAt is the job's created_at.
	CreatedAt time.Time
	// Duplicate is set on a re-publication of an earlier job; LateDuplicate
	// when it carries a new Nats-Msg-Id.
	Duplicate, LateDuplicate bool
}

// generator builds the jobs of one run from a seeded source; it is not safe
// for concurrent use.
type generator struct {
	cfg     *Config
	rng     *mrand.Rand
	types   []wechat.TradeType
	weights []float64 // cumulative
	seq     int
	sent    []*Job // distinct jobs, for duplicates
	late    int
}

func newGenerator(cfg *Config) *generator {
	g := &generator{cfg: cfg, rng: mrand.New(mrand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))}
	for _, t := range wechat.TradeTypes { // fixed order: reproducible
		if w, ok := cfg.Mix[t]; ok && w > 0 {
			sum := w
			if n := len(g.weights); n > 0 {
				sum += g.weights[n-1]
			}
			g.types = append(g.types, t)
			g.weights = append(g.weights, sum)
		}
	}
	return g
}

// duplicate answers a re-publication of an earlier job, or nil when it is
// not time for one: each distinct order is followed by a duplicate with
// probability DuplicateShare.
func (g *generator) duplicate() *Job {
	if len(g.sent) == 0 || g.cfg.DuplicateShare == 0 || g.rng.Float64() >= g.cfg.DuplicateShare {
		return nil
	}
	orig := g.sent[g.rng.IntN(len(g.sent))]
	d := *orig
	d.Duplicate = true
	if g.cfg.LateDuplicateShare > 0 && g.rng.Float64() < g.cfg.LateDuplicateShare {
		g.late++
		d.LateDuplicate = true
		d.MsgID = orig.MsgID + ":late" + strconv.Itoa(g.late)
	}
	return &d
}

// next answers the next distinct job, created at now.
func (g *generator) next(now time.Time) (*Job, error) {
	cfg := g.cfg
	g.seq++
	m := &cfg.Merchants[(g.seq-1)%len(cfg.Merchants)]
	t := g.tradeType()
	n := cfg.SubOrdersMin + g.rng.IntN(cfg.SubOrdersMax-cfg.SubOrdersMin+1)
	kind := KindValid
	switch r := g.rng.Float64(); {
	case r < cfg.InvalidShare:
		kind = KindInvalid
	case r < cfg.InvalidShare+cfg.MalformedShare:
		kind = KindMalformed
	}
	no := cfg.RunID + fmt.Sprintf("%08d", g.seq)
	req := g.request(m, t, no, n, now)
	if kind == KindInvalid {
		req.SubOrders[0].Amount.TotalAmount = 0
	}
	job := events.CreateOrderJob{
		Version:       events.Version,
		CorrelationID: no,
		CreatedAt:     now,
		TradeType:     t,
		Request:       req,
	}
	if cfg.SetFlavour {
		job.Flavour = cfg.Flavour
	}
	body, err := json.Marshal(&job)
	if err != nil {
		return nil, fmt.Errorf("loadgen: marshal job: %w", err)
	}
	if kind == KindMalformed {
		// Still JSON, with the identity readable, but not a CreateOrderJob.
		body = append([]byte(`{"loadgen_unknown_field":true,`), bytes.TrimPrefix(body, []byte("{"))...)
	}
	j := &Job{
		Key:       OrderKey{MchID: m.MchID, OutTradeNo: no},
		Kind:      kind,
		TradeType: t,
		SubOrders: n,
		Subject:   cfg.Subjects.Job(t),
		MsgID:     events.JobMsgID(m.MchID, no),
		Body:      body,
		CreatedAt: now,
	}
	g.sent = append(g.sent, j)
	return j, nil
}

func (g *generator) tradeType() wechat.TradeType {
	x := g.rng.Float64() * g.weights[len(g.weights)-1]
	i, _ := slices.BinarySearch(g.weights, x)
	return g.types[min(i, len(g.types)-1)]
}

// request builds a create request that passes wechat.Validate for the
// configured flavour and trade type t.
func (g *generator) request(m *Merchant, t wechat.TradeType, no string, n int, now time.Time) wechat.CombineOrderRequest {
	f := g.cfg.Flavour
	req := wechat.CombineOrderRequest{
		CombineAppID:      m.AppID,
		CombineMchID:      m.MchID,
		CombineOutTradeNo: no,
		NotifyURL:         m.NotifyURL,
		TimeExpire:        now.Add(2 * time.Hour).Truncate(time.Second).Format(time.RFC3339),
	}
	switch t {
	case wechat.TradeTypeH5:
		// device_id is required for h5 and 7–16 bytes everywhere.
		req.SceneInfo = &wechat.SceneInfo{PayerClientIP: "203.0.113.7", DeviceID: "H5-" + strconv.Itoa(1000+g.rng.IntN(9000)), H5Info: &wechat.H5Info{Type: wechat.H5TypeWap}}
	case wechat.TradeTypeNative:
		req.SceneInfo = &wechat.SceneInfo{PayerClientIP: "203.0.113.8", DeviceID: "POS-" + strconv.Itoa(1000+g.rng.IntN(9000))}
	case wechat.TradeTypeJSAPI, wechat.TradeTypeMiniProgram:
		req.CombinePayerInfo = &wechat.PayerInfo{OpenID: "oLoadgen" + strconv.FormatUint(g.rng.Uint64()%1e12, 36)}
	}
	if f == wechat.FlavourIndividual {
		req.TradeScenario = wechat.TradeScenarioRecommerce
	}
	// The e-commerce flavour allows one sub-order per sub_mchid.
	subs := g.rng.Perm(len(m.SubMchIDs))
	payees := g.rng.Perm(len(m.IndividualAuthIDs))
	for i := range n {
		s := wechat.SubOrder{
			MchID:       m.MchID,
			Attach:      "loadgen",
			Amount:      wechat.Amount{TotalAmount: 1 + g.rng.Int64N(50_000), Currency: wechat.CurrencyCNY},
			OutTradeNo:  no + "S" + strconv.Itoa(i),
			Description: "loadgen order " + no + " part " + strconv.Itoa(i+1),
		}
		switch f {
		case wechat.FlavourMerchant:
			s.MchID = m.SubMchIDs[subs[i%len(subs)]]
		case wechat.FlavourPartner, wechat.FlavourEcommerce:
			s.SubMchID = m.SubMchIDs[subs[i%len(subs)]]
		case wechat.FlavourIndividual:
			s.IndividualAuthID = m.IndividualAuthIDs[payees[i%len(payees)]]
			if t == wechat.TradeTypeMiniProgram { // the app endpoint has no order_service_type
				s.OrderServiceType = wechat.OrderServiceTypeIndividualTrade
			}
		}
		req.SubOrders = append(req.SubOrders, s)
	}
	return req
}

const alnum = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// randomAlnum answers n random letters and digits.
func randomAlnum(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+).
	for i := range b {
		b[i] = alnum[int(b[i])%len(alnum)]
	}
	return string(b)
}
