package server

import (
	"context"
	"log/slog"
	"runtime"
	"runtime/debug"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/encoding"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
)

// Limits of the gRPC transport. Every request of the API fits in a few
// kilobytes (the longest is a ResolveOrCreateUser at the field limits,
// about 11 KiB); anything far bigger is refused before it is read.
const (
	MaxRequestBytes      = 64 << 10
	MaxConcurrentStreams = 256 // per connection
)

// A connection is sent GOAWAY once it is MaxConnectionAge old (gRPC adds
// up to 10% either way), so that clients spread over the replicas there
// are now, new ones included, rather than staying on those they first
// reached. Calls in flight then have MaxConnectionAgeGrace to finish
// before the connection is closed: far longer than a call takes (each
// database call is bounded by DB_TIMEOUT; serve raises the grace for a
// long one). Long-lived streams (health Watch) are cut then, and clients
// open them again on their new connection.
const (
	MaxConnectionAge      = 5 * time.Minute
	MaxConnectionAgeGrace = 30 * time.Second
)

// keepalive: ping idle clients so that dead connections are noticed, and
// refuse clients that ping more often than once in 10s (GOAWAY
// ENHANCE_YOUR_CALM), which would otherwise cost the server for nothing.
var (
	keepaliveParams = keepalive.ServerParameters{
		MaxConnectionIdle: 15 * time.Minute,
		Time:              time.Minute,
		Timeout:           20 * time.Second,
	}
	keepalivePolicy = keepalive.EnforcementPolicy{
		MinTime:             10 * time.Second,
		PermitWithoutStream: true,
	}
)

// streamWorkers is how many goroutines serve calls: more than a replica
// has in flight at once under load (its calls mostly wait on the
// database), so that few fall back to a goroutine of their own.
func streamWorkers() uint32 { return uint32(32 * runtime.GOMAXPROCS(0)) }

// Option adds to what NewGRPCServer builds.
type Option func(*options)

type options struct {
	metrics               *grpcprom.ServerMetrics
	rejected              *prometheus.CounterVec
	creds                 credentials.TransportCredentials
	statsHandler          stats.Handler
	maxConcurrentStreams  uint32
	maxConnectionAge      time.Duration
	maxConnectionAgeGrace time.Duration
	asserters             *trustedAsserters
}

// WithMetrics records per-method counters and latency histograms.
func WithMetrics(m *grpcprom.ServerMetrics) Option { return func(o *options) { o.metrics = m } }

// WithRejectedCounter counts the calls that gRPC refuses before any
// interceptor, and so the per-method metrics, sees them (see rejections),
// in a counter labelled grpc_service, grpc_method and grpc_code.
func WithRejectedCounter(c *prometheus.CounterVec) Option {
	return func(o *options) { o.rejected = c }
}

// WithCredentials serves TLS (or mutual TLS) instead of plaintext.
func WithCredentials(c credentials.TransportCredentials) Option {
	return func(o *options) { o.creds = c }
}

// WithStatsHandler instruments every RPC (OpenTelemetry spans); nil is none.
// It comes beside the server's own stats handler (see rejections).
func WithStatsHandler(h stats.Handler) Option { return func(o *options) { o.statsHandler = h } }

// WithMaxConcurrentStreams replaces MaxConcurrentStreams (tests use a
// small number to see it hold).
func WithMaxConcurrentStreams(n uint32) Option {
	return func(o *options) { o.maxConcurrentStreams = n }
}

// WithMaxConnectionAge replaces MaxConnectionAge and MaxConnectionAgeGrace
// (serve raises the grace above the longest call DB_TIMEOUT allows; tests
// use a short age to see it hold).
func WithMaxConnectionAge(age, grace time.Duration) Option {
	return func(o *options) { o.maxConnectionAge, o.maxConnectionAgeGrace = age, grace }
}

// WithIdentityAssertingClients says that clients authenticate with mutual
// TLS, and that only those whose certificate has one of names as a DNS or
// URI SAN may name the caller in x-identity-id: from any other client a
// call that carries it is PERMISSION_DENIED. Without this option the
// header is taken from any client.
func WithIdentityAssertingClients(names []string) Option {
	return func(o *options) { o.asserters = newTrustedAsserters(names) }
}

// NewGRPCServer returns the gRPC server the binary runs, with s as
// UsersService, the grpc.health.v1 service (returned NOT_SERVING, for
// DatabaseWatch to set and shutdown to end) and server reflection (so
// grpcurl works without proto files).
func NewGRPCServer(s *Server, log *slog.Logger, opts ...Option) (*grpc.Server, *Health) {
	o := options{
		maxConcurrentStreams:  MaxConcurrentStreams,
		maxConnectionAge:      MaxConnectionAge,
		maxConnectionAgeGrace: MaxConnectionAgeGrace,
	}
	for _, opt := range opts {
		opt(&o)
	}
	healthSrv := newHealth()
	rejected := &rejections{counter: o.rejected, log: log}

	// A panic is an INTERNAL status for that one call and a logged stack,
	// not a crash of every call in flight. Recovery comes first in each
	// chain, so that nothing below can take the process down, and once
	// more right above the handlers, so that metrics and the call's log
	// line see the INTERNAL a handler's panic became.
	recovered := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		method, _ := grpc.Method(ctx)
		log.ErrorContext(ctx, "panic", "method", method, "panic", p, "stack", string(debug.Stack()))
		return status.Error(codes.Internal, "internal error")
	})
	calls := callLog{log}
	// First of all, the mark that a call got past gRPC's own checks: the
	// calls that never get here are the ones rejections counts and logs.
	unary := []grpc.UnaryServerInterceptor{rejected.unary, recovery.UnaryServerInterceptor(recovered)}
	stream := []grpc.StreamServerInterceptor{rejected.stream, recovery.StreamServerInterceptor(recovered)}
	if o.metrics != nil {
		unary = append(unary, o.metrics.UnaryServerInterceptor())
		stream = append(stream, o.metrics.StreamServerInterceptor())
	}
	unary = append(unary,
		calls.unary,
		recovery.UnaryServerInterceptor(recovered),
		rejectInvalidRequests,
	)
	stream = append(stream,
		calls.stream,
		recovery.StreamServerInterceptor(recovered),
		rejectInvalidStreamRequests,
		healthSrv.endStreamsOnDrain,
	)
	if o.asserters != nil {
		unary = append(unary, o.asserters.unary)
		stream = append(stream, o.asserters.stream)
	}
	connParams := keepaliveParams
	connParams.MaxConnectionAge = o.maxConnectionAge
	connParams.MaxConnectionAgeGrace = o.maxConnectionAgeGrace

	serverOpts := []grpc.ServerOption{
		grpc.ForceServerCodecV2(requestCodec{encoding.GetCodecV2("proto")}),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
		grpc.MaxRecvMsgSize(MaxRequestBytes),
		grpc.MaxConcurrentStreams(o.maxConcurrentStreams),
		grpc.KeepaliveParams(connParams),
		grpc.KeepaliveEnforcementPolicy(keepalivePolicy),
		grpc.StatsHandler(rejected),
		// Calls run on a pool of goroutines rather than a new one each:
		// a new goroutine's stack grows, by copying, on every call
		// through the interceptors and pgx, which cost a tenth of a
		// GetUser's CPU. Past the pool, gRPC starts a goroutine as it
		// does without one. (An experimental option of grpc-go since 1.30.)
		grpc.NumStreamWorkers(streamWorkers()),
	}
	if o.creds != nil {
		serverOpts = append(serverOpts, grpc.Creds(o.creds))
	}
	if o.statsHandler != nil {
		serverOpts = append(serverOpts, grpc.StatsHandler(o.statsHandler))
	}
	srv := grpc.NewServer(serverOpts...)
	usersv1.RegisterUsersServiceServer(srv, s)
	healthpb.RegisterHealthServer(srv, healthSrv)
	reflection.Register(srv)
	rejected.learnServices(srv)
	if o.metrics != nil {
		o.metrics.InitializeMetrics(srv) // every method shows, at zero, from the start
	}
	return srv, healthSrv
}
