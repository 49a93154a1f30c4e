package wechat

import (
	"errors"
	"strconv"
)

// SignTypeRSA is the signType of JSAPI and mini-program pay parameters.
const SignTypeRSA = "RSA"

// PackageSignWXPay is the fixed package value of APP pay parameters.
const PackageSignWXPay = "Sign=WXPay"

// JSAPIPayParams are the arguments of WeixinJSBridge.invoke(
// "getBrandWCPayRequest", …) in an official-account web page. The JSON names
// are the ones the bridge expects.
type JSAPIPayParams struct {
	AppID     string `json:"appId"`
	TimeStamp string `json:"timeStamp"` // Unix seconds, as a string
	NonceStr  string `json:"nonceStr"`
	Package   string `json:"package"` // "prepay_id=…"
	SignType  string `json:"signType"`
	PaySign   string `json:"paySign"`
}

// MiniProgramPayParams are the arguments of wx.requestPayment. The mini
// program passes no appId — its own is implied — but the signature still
// starts with the appid, which for combine orders must be combine_appid.
type MiniProgramPayParams struct {
	TimeStamp string `json:"timeStamp"`
	NonceStr  string `json:"nonceStr"`
	Package   string `json:"package"` // "prepay_id=…"
	SignType  string `json:"signType"`
	PaySign   string `json:"paySign"`
}

// AppPayParams are the fields of the OpenSDK PayReq (Android and iOS), named
// as the app usually receives them from its server. PartnerID is
// combine_mchid; Sign covers the bare prepay_id, not Package.
type AppPayParams struct {
	AppID     string `json:"appid"`
	PartnerID string `json:"partnerid"`
	PrepayID  string `json:"prepayid"`
	Package   string `json:"package"` // always "Sign=WXPay"
	NonceStr  string `json:"noncestr"`
	TimeStamp string `json:"timestamp"`
	Sign      string `json:"sign"`
}

var errNoPrepayID = errors.New("wechat: pay parameters: prepay_id is empty")

// SignJSAPIPayParams signs JSAPI pay parameters with a given timestamp and
// nonce: paySign = SHA256withRSA(appId\ntimeStamp\nnonceStr\nprepay_id=…\n).
// Most callers use (*Client).JSAPIPayParams, which picks both.
func SignJSAPIPayParams(key PrivateKey, appID, prepayID string, timestamp int64, nonce string) (*JSAPIPayParams, error) {
	if prepayID == "" {
		return nil, errNoPrepayID
	}
	ts, pkg := strconv.FormatInt(timestamp, 10), "prepay_id="+prepayID
	sig, err := Sign(key, PaySignMessage(appID, ts, nonce, pkg))
	if err != nil {
		return nil, err
	}
	return &JSAPIPayParams{AppID: appID, TimeStamp: ts, NonceStr: nonce, Package: pkg, SignType: SignTypeRSA, PaySign: sig}, nil
}

// SignMiniProgramPayParams signs wx.requestPayment parameters with a given
// timestamp and nonce; the signed message starts with combineAppID.
func SignMiniProgramPayParams(key PrivateKey, combineAppID, prepayID string, timestamp int64, nonce string) (*MiniProgramPayParams, error) {
	p, err := SignJSAPIPayParams(key, combineAppID, prepayID, timestamp, nonce)
	if err != nil {
		return nil, err
	}
	return &MiniProgramPayParams{TimeStamp: p.TimeStamp, NonceStr: p.NonceStr, Package: p.Package, SignType: p.SignType, PaySign: p.PaySign}, nil
}

// SignAppPayParams signs APP pay parameters with a given timestamp and nonce:
// sign = SHA256withRSA(appid\ntimestamp\nnoncestr\nprepay_id\n) over the bare
// prepay_id. partnerID is the combine_mchid.
func SignAppPayParams(key PrivateKey, appID, partnerID, prepayID string, timestamp int64, nonce string) (*AppPayParams, error) {
	if prepayID == "" {
		return nil, errNoPrepayID
	}
	ts := strconv.FormatInt(timestamp, 10)
	sig, err := Sign(key, PaySignMessage(appID, ts, nonce, prepayID))
	if err != nil {
		return nil, err
	}
	return &AppPayParams{
		AppID: appID, PartnerID: partnerID, PrepayID: prepayID, Package: PackageSignWXPay,
		NonceStr: nonce, TimeStamp: ts, Sign: sig,
	}, nil
}

// JSAPIPayParams signs JSAPI pay parameters for an order of merchant mchID
// (its combine_mchid) created with combine_appid appID, with the client's
// clock and a fresh nonce. The same merchant key that created the order must
// sign, which is why these are Client methods.
func (c *Client) JSAPIPayParams(mchID, appID, prepayID string) (*JSAPIPayParams, error) {
	m, err := c.merchant(mchID)
	if err != nil {
		return nil, err
	}
	return SignJSAPIPayParams(m.PrivateKey, appID, prepayID, c.now().Unix(), NewNonce())
}

// MiniProgramPayParams signs wx.requestPayment parameters for an order of
// merchant mchID created with combineAppID.
func (c *Client) MiniProgramPayParams(mchID, combineAppID, prepayID string) (*MiniProgramPayParams, error) {
	m, err := c.merchant(mchID)
	if err != nil {
		return nil, err
	}
	return SignMiniProgramPayParams(m.PrivateKey, combineAppID, prepayID, c.now().Unix(), NewNonce())
}

// AppPayParams signs APP pay parameters for an order of merchant mchID
// created with combine_appid appID; partnerid is mchID.
func (c *Client) AppPayParams(mchID, appID, prepayID string) (*AppPayParams, error) {
	m, err := c.merchant(mchID)
	if err != nil {
		return nil, err
	}
	return SignAppPayParams(m.PrivateKey, appID, mchID, prepayID, c.now().Unix(), NewNonce())
}
