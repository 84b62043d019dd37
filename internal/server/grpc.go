package server

import (
	"context"
	"log/slog"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
)

// NewGRPCServer returns the gRPC server the binary runs, with s as
// UsersService, the grpc.health.v1 service (returned NOT_SERVING, for
// DatabaseWatch to set and shutdown to end) and server reflection (so
// grpcurl works without proto files).
func NewGRPCServer(s *Server, log *slog.Logger) (*grpc.Server, *Health) {
	healthSrv := newHealth()
	// Recovery comes first in each chain, so that a panic anywhere below is
	// an INTERNAL status for one call, not a crash of every call in flight.
	recovered := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		method, _ := grpc.Method(ctx)
		log.ErrorContext(ctx, "panic", "method", method, "panic", p)
		return status.Error(codes.Internal, "internal error")
	})
	srv := grpc.NewServer(
		grpc.ForceServerCodecV2(requestCodec{encoding.GetCodecV2("proto")}),
		grpc.ChainUnaryInterceptor(recovery.UnaryServerInterceptor(recovered), rejectInvalidUTF8),
		grpc.ChainStreamInterceptor(recovery.StreamServerInterceptor(recovered), healthSrv.endWatchesOnShutdown),
	)
	usersv1.RegisterUsersServiceServer(srv, s)

	healthpb.RegisterHealthServer(srv, healthSrv)
	reflection.Register(srv)
	return srv, healthSrv
}
