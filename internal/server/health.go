package server

import (
	"context"
	"log/slog"
	"time"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
)

// Pinger is the database as the health check sees it (a *pgxpool.Pool).
type Pinger interface {
	Ping(ctx context.Context) error
}

// WatchDatabase keeps the health status of the server ("") and of
// UsersService in step with the database: NOT_SERVING while a ping fails,
// SERVING again once one succeeds. It pings at once and then every
// interval, each ping bounded by the interval, until ctx ends. Without it a
// probe would call the service healthy while every RPC fails.
func WatchDatabase(ctx context.Context, db Pinger, h *health.Server, interval time.Duration, log *slog.Logger) {
	var reachable *bool // unknown until the first ping
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		pingCtx, cancel := context.WithTimeout(ctx, interval)
		err := db.Ping(pingCtx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if ok := err == nil; reachable == nil || *reachable != ok {
			reachable = &ok
			status := healthpb.HealthCheckResponse_SERVING
			if ok {
				log.Info("database reachable")
			} else {
				status = healthpb.HealthCheckResponse_NOT_SERVING
				log.Warn("database unreachable", "error", err)
			}
			h.SetServingStatus("", status)
			h.SetServingStatus(usersv1.UsersService_ServiceDesc.ServiceName, status)
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}
