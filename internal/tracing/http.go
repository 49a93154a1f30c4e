package tracing

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// headerRequestID is WeChat Pay's request identifier, on every answer and
// on every notification; its support asks for it.
const headerRequestID = "Request-ID"

// Transport answers next with a client span around each request: method,
// host, path, status and WeChat Pay's Request-ID. The status and Request-ID
// also go on the span that was current when the request started (the
// WeChat Pay call's attempt). No trace context is sent: WeChat Pay is
// outside the trace, and its answers' headers, not the requests', are
// recorded. No header of the request is recorded (Authorization carries its
// signature).
func Transport(next http.RoundTripper) http.RoundTripper { return transport{next} }

type transport struct{ next http.RoundTripper }

func (t transport) RoundTrip(req *http.Request) (*http.Response, error) {
	parent := trace.SpanFromContext(req.Context())
	ctx, span := Start(req.Context(), req.Method, trace.WithSpanKind(trace.SpanKindClient))
	if !span.IsRecording() {
		return t.next.RoundTrip(req)
	}
	span.SetAttributes(attribute.String("http.request.method", req.Method), attribute.String("server.address", req.URL.Hostname()),
		attribute.String("url.path", req.URL.Path))
	resp, err := t.next.RoundTrip(req.WithContext(ctx))
	if err == nil {
		attrs := []attribute.KeyValue{attribute.Int("http.response.status_code", resp.StatusCode)}
		if id := resp.Header.Get(headerRequestID); id != "" {
			attrs = append(attrs, attribute.String("wechat.request_id", id))
		}
		span.SetAttributes(attrs...)
		parent.SetAttributes(attrs...)
	}
	End(span, err)
	return resp, err
}

// StartServer starts the server span of an incoming request on a public
// endpoint: always a new root, so that a sender cannot choose the trace or
// force sampling, linked to the trace context in the request's headers if
// any (an ingress's); it records WeChat Pay's Request-ID. The answered
// request carries the span.
func StartServer(r *http.Request, name string) (*http.Request, trace.Span) {
	if !Enabled() {
		return r, idle(r.Context())
	}
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer), trace.WithNewRoot()}
	if r.Header.Get("traceparent") != "" {
		remote := trace.SpanContextFromContext(propagator.Extract(context.Background(), propagation.HeaderCarrier(r.Header)))
		if remote.IsValid() {
			opts = append(opts, trace.WithLinks(trace.Link{SpanContext: remote}))
		}
	}
	ctx, span := Start(r.Context(), name, opts...)
	attrs := []attribute.KeyValue{attribute.String("http.request.method", r.Method), attribute.String("url.path", r.URL.Path)}
	if id := r.Header.Get(headerRequestID); id != "" {
		attrs = append(attrs, attribute.String("wechat.request_id", id))
	}
	span.SetAttributes(attrs...)
	return r.WithContext(ctx), span
}
