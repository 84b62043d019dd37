package telemetry

import (
	"context"
	"errors"

	"github.com/exaring/otelpgx"
	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"google.golang.org/grpc/stats"

	"github.com/agynio/users/internal/buildinfo"
)

// Tracing is the OpenTelemetry set-up. Off, it costs nothing: no spans
// are made at all, rather than spans that are thrown away.
type Tracing struct {
	provider *sdktrace.TracerProvider // nil when off
}

// StartTracing exports spans over OTLP/gRPC to the collector that the
// standard OTEL_EXPORTER_OTLP_* variables name, and takes trace context
// from incoming W3C traceparent/baggage metadata. With enabled false it
// returns a Tracing that is off.
func StartTracing(ctx context.Context, enabled bool) (*Tracing, error) {
	if !enabled {
		return &Tracing{}, nil
	}
	exporter, err := otlptracegrpc.New(ctx)
	if err != nil {
		return nil, err
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(
		semconv.ServiceName("users"),
		semconv.ServiceVersion(buildinfo.Version),
	))
	if err != nil && !errors.Is(err, resource.ErrSchemaURLConflict) {
		return nil, err
	}
	provider := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter), sdktrace.WithResource(res))
	otel.SetTracerProvider(provider)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	return &Tracing{provider: provider}, nil
}

// Enabled reports whether spans are exported.
func (t *Tracing) Enabled() bool { return t.provider != nil }

// QueryTracer returns the pgx tracer that makes a span of each statement,
// or nil when tracing is off. The spans carry the SQL text, which holds
// only placeholders, never the parameters: those are personal data.
func (t *Tracing) QueryTracer() pgx.QueryTracer {
	if !t.Enabled() {
		return nil
	}
	return otelpgx.NewTracer(otelpgx.WithTracerProvider(t.provider))
}

// Shutdown flushes the spans still buffered.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if !t.Enabled() {
		return nil
	}
	return t.provider.Shutdown(ctx)
}

// GRPCStatsHandler returns the gRPC instrumentation that makes a span of
// each RPC, as a child of the caller's span when its metadata carries one,
// or nil when tracing is off.
func (t *Tracing) GRPCStatsHandler() stats.Handler {
	if !t.Enabled() {
		return nil
	}
	return otelgrpc.NewServerHandler(
		otelgrpc.WithTracerProvider(t.provider),
		otelgrpc.WithPropagators(otel.GetTextMapPropagator()),
	)
}
