// Package telemetry is how the service is watched: JSON logs, Prometheus
// metrics and OpenTelemetry traces. The gRPC and database instrumentation
// comes from the ecosystem's libraries; this package only assembles it.
package telemetry

import (
	"io"
	"log/slog"

	"github.com/IBM/pgxpoolprometheus"
	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/agynio/users/internal/buildinfo"
)

// NewLogger returns the service's logger: JSON lines on w, from level up.
func NewLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}

// Metrics is what /metrics serves: a registry of the service's own, so
// that nothing a library registers globally leaks in, and the gRPC server
// metrics that the gRPC server's interceptors record.
type Metrics struct {
	Registry *prometheus.Registry
	GRPC     *grpcprom.ServerMetrics
	// RejectedCalls counts the calls that gRPC refused before the
	// interceptors, and so GRPC, saw them (server.WithRejectedCounter).
	RejectedCalls *prometheus.CounterVec
	// DroppedClaims counts the optional login claims dropped
	// (server.WithDroppedClaimsCounter).
	DroppedClaims *prometheus.CounterVec
}

// NewMetrics registers the Go runtime and process collectors, a
// users_build_info gauge, per-method gRPC counters and latency histograms
// (grpc_server_*), the calls refused before those saw them
// (users_grpc_rejected_total), and the statistics of pool (pgxpool_*).
func NewMetrics(pool *pgxpool.Pool) *Metrics {
	reg := prometheus.NewRegistry()
	grpcMetrics := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
		// From a cached point read (sub-millisecond) to DB_TIMEOUT.
		grpcprom.WithHistogramBuckets([]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}),
	))
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "users_build_info",
		Help:        "Always 1; the labels say which build of the service is running.",
		ConstLabels: prometheus.Labels{"version": buildinfo.Version, "revision": buildinfo.Revision()},
	})
	buildInfo.Set(1)
	// Apart from grpc_server_handled_total rather than fed into it: these
	// calls never reached a handler, and feeding grpcprom would mean
	// running its interceptor for a call that never came through it.
	rejected := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "users_grpc_rejected_total",
		Help: "Calls that gRPC ended before the service saw them, by code: RESOURCE_EXHAUSTED for a request over the size limit, UNIMPLEMENTED for an unknown method (grpc_method=\"unknown\") or compression, CANCELED for a client that left first.",
	}, []string{"grpc_service", "grpc_method", "grpc_code"})
	droppedClaims := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "users_login_claims_dropped_total",
		Help: "Optional claims of a login that were malformed or too long, and so stored empty (email, photo_url, preferred_username, a name holding NUL) or cut (name), by claim.",
	}, []string{"claim"})
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo,
		grpcMetrics,
		rejected,
		droppedClaims,
		pgxpoolprometheus.NewCollector(pool, map[string]string{"pool": "service"}),
	)
	return &Metrics{Registry: reg, GRPC: grpcMetrics, RejectedCalls: rejected, DroppedClaims: droppedClaims}
}

// ObserveReadiness registers users_ready, read from ready at each scrape:
// what /readyz answers, as a series that alerts and dashboards can follow
// per pod. Read rather than set, so that it cannot drift from the answer.
func (m *Metrics) ObserveReadiness(ready func() bool) {
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "users_ready",
		Help: "1 while this replica is ready (/readyz answers 200: the database answered the last check and shutdown has not begun), else 0.",
	}, func() float64 {
		if ready() {
			return 1
		}
		return 0
	}))
}
