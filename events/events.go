package events

import (
	"time"

	"github.com/wxcombine/orderworker/wechat"
)

// Version is the version of every type in this package. Readers reject other
// versions.
const Version = 1

// CreateOrderJob asks a worker to create a combine order at WeChat Pay.
// Publish it on Subjects.Job(TradeType) with Nats-Msg-Id = JobMsgID.
type CreateOrderJob struct {
	Version int `json:"version"`
	// CorrelationID is the producer's id for tracing; it is copied to every
	// event the job causes.
	CorrelationID string `json:"correlation_id,omitempty"`
	// CreatedAt is when the producer created the job.
	CreatedAt time.Time `json:"created_at"`
	// TradeType selects the create endpoint; it must equal the subject's
	// last token.
	TradeType wechat.TradeType `json:"trade_type"`
	// Flavour is the WeChat Pay product the request is validated against.
	// Empty means the worker's configured flavour.
	Flavour wechat.Flavour `json:"flavour,omitempty"`
	// Request is the WeChat Pay create body, sent as is.
	Request wechat.CombineOrderRequest `json:"request"`
}

// MsgID answers the job's Nats-Msg-Id (JobMsgID).
func (j *CreateOrderJob) MsgID() string {
	return JobMsgID(j.Request.CombineMchID, j.Request.CombineOutTradeNo)
}

// PrepayCreated reports a created combine order and what the client needs to
// pay it. Exactly one of PrepayID, H5URL and CodeURL is set.
type PrepayCreated struct {
	Version           int              `json:"version"`
	CorrelationID     string           `json:"correlation_id,omitempty"`
	TradeType         wechat.TradeType `json:"trade_type"`
	CombineAppID      string           `json:"combine_appid"`
	CombineMchID      string           `json:"combine_mchid"`
	CombineOutTradeNo string           `json:"combine_out_trade_no"`
	PrepayID          string           `json:"prepay_id,omitempty"` // app, jsapi, miniprogram
	H5URL             string           `json:"h5_url,omitempty"`    // h5
	CodeURL           string           `json:"code_url,omitempty"`  // native
	// PayParams are the signed client pay parameters (app, jsapi,
	// miniprogram); nil for h5 and native.
	PayParams *PayParams `json:"pay_params,omitempty"`
	// Attempts is how many create calls the delivery that created the order
	// made (1 unless it retried).
	Attempts int `json:"attempts"`
	// CreatedAt is when the order was created (the event's time).
	CreatedAt time.Time `json:"created_at"`
	// ExpiresAt is when PrepayID (or H5URL, CodeURL) stops working
	// (PrepayExpiry: 2 hours, 5 minutes for an h5_url). A duplicate job
	// after it never gets this event again: the worker asks WeChat Pay
	// for a working one, or for the order's true state.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

// PayParams holds the client pay parameters of one trade type; exactly one
// field is set.
type PayParams struct {
	JSAPI       *JSAPIPayParams       `json:"jsapi,omitempty"`
	MiniProgram *MiniProgramPayParams `json:"miniprogram,omitempty"`
	App         *AppPayParams         `json:"app,omitempty"`
}

// JSAPIPayParams, MiniProgramPayParams and AppPayParams are the client pay
// parameters exactly as package wechat signs them; the aliases keep the
// wire contract's names in this package without a second definition.
type (
	// JSAPIPayParams are the arguments of WeixinJSBridge getBrandWCPayRequest.
	JSAPIPayParams = wechat.JSAPIPayParams
	// MiniProgramPayParams are the arguments of wx.requestPayment (no appId).
	MiniProgramPayParams = wechat.MiniProgramPayParams
	// AppPayParams are the fields of the OpenSDK PayReq.
	AppPayParams = wechat.AppPayParams
)

// Failure codes that do not come from WeChat Pay. A PrepayFailed otherwise
// carries WeChat Pay's code, normalized (wechat.NormalizeCode).
const (
	// CodeMalformedJob: the job is not valid JSON of CreateOrderJob.
	CodeMalformedJob = "MALFORMED_JOB"
	// CodeUnsupportedVersion: the job's version is not Version.
	CodeUnsupportedVersion = "UNSUPPORTED_VERSION"
	// CodeJobTooLarge: the job is larger than the size limit.
	CodeJobTooLarge = "JOB_TOO_LARGE"
	// CodeInvalidJob: the request fails validation before any WeChat Pay
	// call; Field names the offending field.
	CodeInvalidJob = "INVALID_JOB"
	// CodeOrderNumberConflict: the order number was already used with other
	// parameters. It is never published as an order's outcome: the
	// conflicting job is dead-lettered (ReasonConflict).
	CodeOrderNumberConflict = "ORDER_NUMBER_CONFLICT"
	// CodeOrderNotCreated: the delivery limit was reached and WeChat Pay
	// answered that the order does not exist; publish the same job again
	// (same order number and parameters).
	CodeOrderNotCreated = "ORDER_NOT_CREATED"
	// CodeOrderClosed: the order existed at WeChat Pay unpaid, could not be
	// completed, and was closed (or WeChat Pay reports it closed); publish
	// it again under new order numbers.
	CodeOrderClosed = "ORDER_CLOSED"
	// CodeConfiguration: WeChat Pay refused the request for a reason an
	// operator fixes (SIGN_ERROR, NOAUTH, MCH_NOT_EXISTS,
	// APPID_MCHID_NOT_MATCH, an unknown merchant, a missing key). The order
	// is not locked: replaying the dead letter after the fix calls WeChat
	// Pay again.
	CodeConfiguration = "CONFIGURATION"
	// CodeRetriesExhausted: WeChat Pay kept answering with retryable errors
	// until the delivery limit. Whether the order exists is unknown; retry
	// with the same order number and parameters.
	CodeRetriesExhausted = "RETRIES_EXHAUSTED"
)

// PrepayFailed reports that a combine order was not created.
type PrepayFailed struct {
	Version           int              `json:"version"`
	CorrelationID     string           `json:"correlation_id,omitempty"`
	TradeType         wechat.TradeType `json:"trade_type,omitempty"`
	CombineMchID      string           `json:"combine_mchid"`
	CombineOutTradeNo string           `json:"combine_out_trade_no"`
	// Code is WeChat Pay's code (e.g. PARAM_ERROR) or one of the Code*
	// constants.
	Code    string `json:"code"`
	Message string `json:"message"`
	// Field is the offending field, as a JSON path, when known.
	Field string `json:"field,omitempty"`
	// RetryWithNewOrderNumber reports whether publishing the order again
	// under a new combine_out_trade_no could succeed (ORDER_CLOSED,
	// OUT_TRADE_NO_USED).
	RetryWithNewOrderNumber bool `json:"retry_with_new_order_number"`
	// Final reports that this failure is the order's outcome, stored in its
	// record and published under OutcomeMsgID: no other outcome of the order
	// will ever be published. A failure with Final false speaks of one job
	// (refused before WeChat Pay, a configuration error, an order WeChat Pay
	// does not have): the order was not created by it, and the same job may
	// be published again (or its dead letter replayed) and then succeed.
	Final bool `json:"final"`
	// HTTPStatus is WeChat Pay's status, if it answered.
	HTTPStatus int `json:"http_status,omitempty"`
	// RequestID is WeChat Pay's Request-ID, if it answered.
	RequestID string `json:"request_id,omitempty"`
	// Attempts is how many create calls were made; 0 when none was.
	Attempts  int       `json:"attempts"`
	CreatedAt time.Time `json:"created_at"`
}

// PaymentSucceeded reports a paid combine order, from a verified and
// decrypted TRANSACTION.SUCCESS notification.
type PaymentSucceeded struct {
	Version int `json:"version"`
	// NotificationID is the notification's id.
	NotificationID       string `json:"notification_id"`
	CombineAppID         string `json:"combine_appid"`
	CombineMchID         string `json:"combine_mchid"`
	CombineOutTradeNo    string `json:"combine_out_trade_no"`
	CombineTransactionID string `json:"combine_transaction_id"`
	// SubOrders lists every sub-order with its own state.
	SubOrders []PaidSubOrder `json:"sub_orders"`
	// PayerOpenID is set only when the notifier is configured to publish it.
	PayerOpenID string `json:"payer_openid,omitempty"`
	// SuccessTime is the latest sub-order success time.
	SuccessTime time.Time `json:"success_time"`
	// ReceivedAt is when the notification arrived.
	ReceivedAt time.Time `json:"received_at"`
}

// PaidSubOrder is one sub-order of a PaymentSucceeded.
type PaidSubOrder struct {
	MchID         string     `json:"mchid"`
	SubMchID      string     `json:"sub_mchid,omitempty"`
	SubAppID      string     `json:"sub_appid,omitempty"`
	OutTradeNo    string     `json:"out_trade_no"`
	TransactionID string     `json:"transaction_id"`
	TradeType     string     `json:"trade_type,omitempty"` // NATIVE, JSAPI, APP, MWEB
	TradeState    string     `json:"trade_state"`          // SUCCESS, …
	BankType      string     `json:"bank_type,omitempty"`
	Attach        string     `json:"attach,omitempty"`
	SuccessTime   time.Time  `json:"success_time"`
	Amount        PaidAmount `json:"amount"`
}

// PaidAmount is a sub-order's amounts in fen.
type PaidAmount struct {
	TotalAmount   int64  `json:"total_amount"`
	Currency      string `json:"currency"`
	PayerAmount   int64  `json:"payer_amount"`
	PayerCurrency string `json:"payer_currency,omitempty"`
}

// Reason says why a job was dead-lettered; it is the dead-letter subject's
// last token.
type Reason string

// The dead-letter reasons.
const (
	// ReasonMalformed: the job is not valid JSON of CreateOrderJob, or its
	// subject names no trade type.
	ReasonMalformed Reason = "malformed"
	// ReasonUnsupportedVersion: the job's version is not Version.
	ReasonUnsupportedVersion Reason = "unsupported_version"
	// ReasonTooLarge: the job exceeds the size limit.
	ReasonTooLarge Reason = "too_large"
	// ReasonInvalid: the request fails validation (e.g. 51 sub-orders).
	ReasonInvalid Reason = "invalid"
	// ReasonRejected: WeChat Pay rejected the request with a non-retryable
	// error.
	ReasonRejected Reason = "rejected"
	// ReasonMaxDeliveries: retryable failures until the delivery limit.
	ReasonMaxDeliveries Reason = "max_deliveries"
	// ReasonConflict: the order number is used by an order with other
	// parameters; that order's outcome was published (when known) instead.
	ReasonConflict Reason = "conflict"
	// ReasonConfiguration: WeChat Pay refused the request for a reason an
	// operator fixes (CodeConfiguration); replay after the fix.
	ReasonConfiguration Reason = "configuration"
	// ReasonUnexpectedState: WeChat Pay reports the order in a state the
	// worker does not settle (REFUND, PAYERROR, sub-orders in different
	// states); nothing was published for the order.
	ReasonUnexpectedState Reason = "unexpected_state"
)

// Reasons lists every dead-letter reason.
var Reasons = []Reason{ReasonMalformed, ReasonUnsupportedVersion, ReasonTooLarge, ReasonInvalid, ReasonRejected, ReasonMaxDeliveries,
	ReasonConflict, ReasonConfiguration, ReasonUnexpectedState}

// DeadLetter is a job that will not be processed again, with why. Publish it
// on Subjects.DeadLetter(Reason) with Nats-Msg-Id = DeadLetterMsgID.
type DeadLetter struct {
	Version int    `json:"version"`
	Reason  Reason `json:"reason"`
	// Error describes the failure; it never holds keys or personal data.
	Error string `json:"error"`
	// CombineMchID and CombineOutTradeNo identify the order when the job
	// could be read that far.
	CombineMchID      string `json:"combine_mchid,omitempty"`
	CombineOutTradeNo string `json:"combine_out_trade_no,omitempty"`
	CorrelationID     string `json:"correlation_id,omitempty"`
	// OriginalSubject is the job's subject.
	OriginalSubject string `json:"original_subject"`
	// OriginalHeaders keeps Nats-Msg-Id, Correlation-Id and the producer's
	// other headers, without the server's Nats-* bookkeeping.
	OriginalHeaders map[string][]string `json:"original_headers,omitempty"`
	// OriginalData is the job's body, byte for byte (base64 in JSON).
	OriginalData []byte `json:"original_data"`
	// StreamSequence is the job's sequence in the jobs stream.
	StreamSequence uint64 `json:"stream_sequence,omitempty"`
	// DeliveryCount is how many times the job was delivered.
	DeliveryCount uint64 `json:"delivery_count"`
	// FirstFailedAt is when the job was first delivered (JetStream's
	// timestamp of the stored job), DeadAt when it was dead-lettered.
	FirstFailedAt time.Time `json:"first_failed_at"`
	DeadAt        time.Time `json:"dead_at"`
}

// PaymentOf builds the PaymentSucceeded event of a paid combine order as
// WeChat Pay reports it, in a notification (notificationID set) or a query
// answer (notificationID empty). It never copies the payer's openid.
// Timestamps that do not parse stay zero: the payment is genuine and must
// not be lost over a format detail.
func PaymentOf(o *wechat.CombineOrder, notificationID string, receivedAt time.Time) *PaymentSucceeded {
	e := &PaymentSucceeded{
		Version:              Version,
		NotificationID:       notificationID,
		CombineAppID:         o.CombineAppID,
		CombineMchID:         o.CombineMchID,
		CombineOutTradeNo:    o.CombineOutTradeNo,
		CombineTransactionID: o.CombineTransactionID,
		SubOrders:            make([]PaidSubOrder, len(o.SubOrders)),
		ReceivedAt:           receivedAt.UTC(),
	}
	for i, s := range o.SubOrders {
		t, _ := time.Parse(time.RFC3339, s.SuccessTime)
		if t.After(e.SuccessTime) {
			e.SuccessTime = t
		}
		e.SubOrders[i] = PaidSubOrder{
			MchID: s.MchID, SubMchID: s.SubMchID, SubAppID: s.SubAppID, OutTradeNo: s.OutTradeNo,
			TransactionID: s.TransactionID, TradeType: s.TradeType, TradeState: s.TradeState,
			BankType: s.BankType, Attach: s.Attach, SuccessTime: t,
			Amount: PaidAmount{
				TotalAmount: s.Amount.TotalAmount, Currency: s.Amount.Currency,
				PayerAmount: s.Amount.PayerAmount, PayerCurrency: s.Amount.PayerCurrency,
			},
		}
	}
	return e
}
