package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/wxcombine/orderworker/wechat"
)

// MaxJobSize is the largest job body DecodeJob accepts: 512 KiB, room for 50
// sub-orders with 6000-byte details, and below NATS's 1 MiB default payload
// limit so an oversized job still reaches a worker and is dead-lettered.
const MaxJobSize = 512 << 10

// Decoding errors, for errors.Is. ReasonOf maps them to dead-letter reasons.
var (
	// ErrTooLarge reports a body over the size limit.
	ErrTooLarge = errors.New("events: job too large")
	// ErrMalformed reports a body that is not JSON of the type, has unknown
	// fields, trailing data, or an unknown trade type or flavour.
	ErrMalformed = errors.New("events: malformed job")
	// ErrUnsupportedVersion reports a version other than Version.
	ErrUnsupportedVersion = errors.New("events: unsupported version")
)

// ReasonOf maps a DecodeJob error to its dead-letter reason; other errors
// are ReasonMalformed.
func ReasonOf(err error) Reason {
	switch {
	case errors.Is(err, ErrTooLarge):
		return ReasonTooLarge
	case errors.Is(err, ErrUnsupportedVersion):
		return ReasonUnsupportedVersion
	default:
		return ReasonMalformed
	}
}

// CodeOf maps a DecodeJob error to the failure code of its PrepayFailed.
func CodeOf(err error) string {
	switch ReasonOf(err) {
	case ReasonTooLarge:
		return CodeJobTooLarge
	case ReasonUnsupportedVersion:
		return CodeUnsupportedVersion
	default:
		return CodeMalformedJob
	}
}

// DecodeJob decodes a job body of at most maxSize bytes (MaxJobSize when
// maxSize is 0 or less). It is strict: the version must be Version, unknown
// fields and trailing data are errors, and the trade type and the flavour
// (if any) must be known. It does not validate the WeChat request itself.
//
// On error the returned job still carries whatever identity could be read
// (version, trade type, correlation id, combine_mchid,
// combine_out_trade_no), so the caller can publish a failure event. Errors
// wrap ErrTooLarge, ErrMalformed or ErrUnsupportedVersion.
func DecodeJob(data []byte, maxSize int) (CreateOrderJob, error) {
	if maxSize <= 0 {
		maxSize = MaxJobSize
	}
	if len(data) > maxSize {
		// Too large to parse at all: no identity.
		return CreateOrderJob{}, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), maxSize)
	}
	// A valid job is parsed once. Only a job that fails the strict decode
	// is read again, leniently, for the identity its failure event names;
	// a wrong version is reported before any other problem either way.
	var job CreateOrderJob
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	decodeErr := dec.Decode(&job)
	if decodeErr == nil {
		if _, err := dec.Token(); !errors.Is(err, io.EOF) {
			decodeErr = errors.New("data after the JSON object")
		}
	}
	ident := identityOf(job)
	if decodeErr != nil {
		ident = peekIdentity(data)
	}
	if ident.Version != Version {
		if ident.Version == 0 && !hasVersion(data) {
			return ident, fmt.Errorf("%w: no version field", ErrMalformed)
		}
		return ident, fmt.Errorf("%w: version %d, want %d", ErrUnsupportedVersion, ident.Version, Version)
	}
	if decodeErr != nil {
		return ident, fmt.Errorf("%w: %s", ErrMalformed, jsonProblem(decodeErr))
	}
	if !job.TradeType.Valid() {
		return ident, fmt.Errorf("%w: trade_type %q is not one of app, jsapi, h5, native, miniprogram", ErrMalformed, job.TradeType)
	}
	if job.Flavour != "" {
		if _, err := wechat.ParseFlavour(string(job.Flavour)); err != nil {
			return ident, fmt.Errorf("%w: flavour %q is not one of merchant, partner, ecommerce, individual", ErrMalformed, job.Flavour)
		}
	}
	if problem := requestProblem(data); problem != "" {
		return ident, fmt.Errorf("%w: %s", ErrMalformed, problem)
	}
	return job, nil
}

// requestProblem reads the job's request as WeChat Pay reads a body
// (wechat.CheckJSON) and describes the first problem, or answers "".
// encoding/json has already accepted the job, but it matches keys
// case-insensitively, turns null into "absent" and invalid UTF-8 into
// U+FFFD, so a request it decoded is not necessarily the one sent.
func requestProblem(data []byte) string {
	var raw struct {
		Request json.RawMessage `json:"request"`
	}
	// The strict decode has already accepted data, so this cannot fail.
	if json.Unmarshal(data, &raw) != nil || len(raw.Request) == 0 {
		return ""
	}
	var ve *wechat.ValidationError
	if err := wechat.CheckJSON(raw.Request, &wechat.CombineOrderRequest{}); errors.As(err, &ve) {
		return "field request" + ve.Field + ": " + ve.Issue
	}
	return ""
}

// jsonProblem describes a JSON error without quoting the input.
func jsonProblem(err error) string {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		return fmt.Sprintf("field %s: want %s, got JSON %s", typeErr.Field, typeErr.Type, typeErr.Value)
	case errors.As(err, &syntaxErr):
		return fmt.Sprintf("invalid JSON at offset %d", syntaxErr.Offset)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "truncated JSON"
	default:
		// Unknown fields: "json: unknown field \"x\"" names only the field.
		return err.Error()
	}
}

// identityOf answers the fields of job that name it in a failure event, as
// peekIdentity reads them.
func identityOf(job CreateOrderJob) CreateOrderJob {
	var id CreateOrderJob
	id.Version, id.CorrelationID, id.TradeType = job.Version, job.CorrelationID, job.TradeType
	id.Request.CombineMchID, id.Request.CombineOutTradeNo = job.Request.CombineMchID, job.Request.CombineOutTradeNo
	return id
}

// peekIdentity reads what it can of a job, ignoring every error, so that a
// job rejected later can still be named in a failure event.
func peekIdentity(data []byte) CreateOrderJob {
	var v struct {
		Version       json.RawMessage `json:"version"`
		CorrelationID json.RawMessage `json:"correlation_id"`
		TradeType     json.RawMessage `json:"trade_type"`
		Request       struct {
			CombineMchID      json.RawMessage `json:"combine_mchid"`
			CombineOutTradeNo json.RawMessage `json:"combine_out_trade_no"`
		} `json:"request"`
	}
	var job CreateOrderJob
	// A type error in one field still fills the others; data after the
	// first value is ignored.
	_ = json.NewDecoder(bytes.NewReader(data)).Decode(&v)
	_ = json.Unmarshal(v.Version, &job.Version)
	_ = json.Unmarshal(v.CorrelationID, &job.CorrelationID)
	_ = json.Unmarshal(v.TradeType, &job.TradeType)
	_ = json.Unmarshal(v.Request.CombineMchID, &job.Request.CombineMchID)
	_ = json.Unmarshal(v.Request.CombineOutTradeNo, &job.Request.CombineOutTradeNo)
	return job
}

// hasVersion reports whether data is a JSON object with a "version" key.
func hasVersion(data []byte) bool {
	var m map[string]json.RawMessage
	if json.NewDecoder(bytes.NewReader(data)).Decode(&m) != nil {
		return false
	}
	_, ok := m["version"]
	return ok
}
