package server

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
)

// A database check that answers while Shutdown runs must not turn health
// SERVING again: whatever the interleaving, once Shutdown has returned the
// server and UsersService are NOT_SERVING, and stay so. Each round races
// Shutdown against goroutines that set SERVING as fast as they can, as
// many database checks landing at once would.
func TestShutdownWinsOverConcurrentDatabaseChecks(t *testing.T) {
	t.Parallel()
	const rounds, checkers = 500, 4
	for round := range rounds {
		h := newHealth()
		var stop atomic.Bool
		var started, wg sync.WaitGroup
		started.Add(checkers)
		for range checkers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				started.Done()
				for !stop.Load() {
					h.set(healthpb.HealthCheckResponse_SERVING)
				}
			}()
		}
		started.Wait()
		h.Shutdown()
		stop.Store(true)
		wg.Wait()
		h.set(healthpb.HealthCheckResponse_SERVING) // one more, after the race

		for _, service := range []string{"", usersv1.UsersService_ServiceDesc.ServiceName} {
			resp, err := h.Check(context.Background(), &healthpb.HealthCheckRequest{Service: service})
			if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
				t.Fatalf("round %d: health of %q after Shutdown = %v, %v; want NOT_SERVING", round, service, resp.GetStatus(), err)
			}
		}
	}
}
