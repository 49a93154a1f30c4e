// Package tracing is the OpenTelemetry tracing of the worker and the
// notifier: setup from the standard OTEL_* environment variables, the W3C
// trace context (traceparent, tracestate) carried in NATS headers, an slog
// handler that stamps trace_id and span_id on every record written inside a
// span, and the wrappers and span helpers the pipeline and the notifier hook
// in with a line or two per call site.
//
// # Off unless configured
//
// Tracing is on only when OTEL_TRACES_EXPORTER names an exporter other than
// "none" (otlp, console) or an OTLP endpoint is set
// (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), and
// OTEL_SDK_DISABLED is not "true"; [Setup] then builds the exporter with
// go.opentelemetry.io/contrib/exporters/autoexport, which reads every other
// OTEL_* variable (protocol, headers, OTEL_SERVICE_NAME,
// OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER and its argument, the batch
// processor's OTEL_BSP_*). Off, every helper here returns before it
// allocates a span: [Start] answers the span already in the context, which
// is never recording.
//
// Even off, the context a producer put in a job's headers is carried on to
// the outcome events and dead letters unchanged, so the consumers of those
// events still join the producer's trace.
//
// # What never goes on a span
//
// Spans carry identifiers (subjects, message ids, combine_mchid,
// combine_out_trade_no, correlation ids, WeChat Pay's Request-ID and
// notification id, codes and statuses) and error texts, which the services
// keep free of secrets. No request or response body, no header of a WeChat
// Pay request (Authorization carries a signature), no key and no openid is
// ever set as an attribute; internal/securitytest scans exported spans for
// them.
package tracing

import (
	"context"
	"os"
	"strings"
	"sync/atomic"

	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// ScopeName is the instrumentation scope of every span of the services.
const ScopeName = "github.com/wxcombine/orderworker"

// state is the provider in use; swapped as a whole so that a span never
// starts on a provider that was replaced half-way.
type state struct {
	enabled bool
	tracer  trace.Tracer
}

var current atomic.Pointer[state]

func init() { SetProvider(nil) }

// SetProvider makes tp the provider of every span started here; nil turns
// tracing off. Setup calls it; tests call it with an SDK provider and an
// in-memory exporter (go.opentelemetry.io/otel/sdk/trace/tracetest), and
// with nil when they end. It does not touch the otel global provider.
func SetProvider(tp trace.TracerProvider) {
	if tp == nil {
		current.Store(&state{tracer: noop.NewTracerProvider().Tracer(ScopeName)})
		return
	}
	current.Store(&state{enabled: true, tracer: tp.Tracer(ScopeName)})
}

// Enabled reports whether spans are recorded.
func Enabled() bool { return current.Load().enabled }

// Configured reports whether getenv turns tracing on (see the package
// documentation).
func Configured(getenv func(string) string) bool {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return false
	}
	switch exp := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")); exp {
	case "":
		return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
	default:
		return exp != "none"
	}
}

// Setup turns tracing on when the environment configures it: the exporter
// autoexport builds from OTEL_TRACES_EXPORTER, a batch span processor, the
// sampler of OTEL_TRACES_SAMPLER (default: parent-based, always on) and a
// resource named service unless OTEL_SERVICE_NAME says otherwise. It also
// installs the provider and the W3C propagator as the otel globals. The
// answered shutdown flushes the spans still buffered; call it before the
// process exits. Unconfigured, Setup does nothing and shutdown is a no-op.
func Setup(ctx context.Context, service string) (shutdown func(context.Context) error, err error) {
	none := func(context.Context) error { return nil }
	if !Configured(os.Getenv) {
		return none, nil
	}
	exp, err := autoexport.NewSpanExporter(ctx)
	if err != nil {
		return none, err
	}
	if autoexport.IsNoneSpanExporter(exp) {
		return none, nil
	}
	tp, err := NewProvider(ctx, exp, service)
	if err != nil {
		return none, err
	}
	SetProvider(tp)
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagator)
	return func(ctx context.Context) error {
		SetProvider(nil)
		return tp.Shutdown(ctx)
	}, nil
}

// NewProvider answers the SDK provider Setup uses, exporting to exp through
// a batch span processor; the benchmark builds its exporters with it.
func NewProvider(ctx context.Context, exp sdktrace.SpanExporter, service string) (*sdktrace.TracerProvider, error) {
	// Later detectors win: OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
	// override the default name.
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", service)),
		resource.WithTelemetrySDK(), resource.WithHost(), resource.WithFromEnv())
	if err != nil {
		return nil, err
	}
	return sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res)), nil
}

// propagator reads and writes traceparent and tracestate. It is used
// directly rather than through the otel global, whose default propagates
// nothing.
var propagator = propagation.TraceContext{}

// Start starts a span named name, a child of the span in ctx. Off, it
// answers ctx and a span that records nothing, without allocating; a span
// from Start must still be ended.
func Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	s := current.Load()
	if !s.enabled {
		return ctx, idle(ctx)
	}
	return s.tracer.Start(ctx, name, opts...)
}

// NoSpan is a span that records nothing; ending it does nothing.
var NoSpan = trace.SpanFromContext(context.Background())

// idle answers the span of ctx when it does not record (tracing off), so
// that its context is still seen, or NoSpan when it records: a span of a
// provider since replaced must not be ended by a caller of Start.
func idle(ctx context.Context) trace.Span {
	if span := trace.SpanFromContext(ctx); !span.IsRecording() {
		return span
	}
	return NoSpan
}

// End records err (if any) as the span's error status and ends it.
func End(span trace.Span, err error) {
	Fail(span, err)
	span.End()
}

// Fail records err (if any) as the span's error status.
func Fail(span trace.Span, err error) {
	if err != nil && span.IsRecording() {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
}

// Set sets attributes on the span in ctx when it records; attrs is called
// only then, so building the attributes costs nothing while tracing is off.
func Set(ctx context.Context, attrs func() []attribute.KeyValue) {
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(attrs()...)
	}
}

// TraceID answers the trace id of the recording span in ctx, or "" when
// there is none: exemplars name only traces that hold this service's spans.
func TraceID(ctx context.Context) string {
	span := trace.SpanFromContext(ctx)
	if sc := span.SpanContext(); sc.IsSampled() && span.IsRecording() {
		return sc.TraceID().String()
	}
	return ""
}
