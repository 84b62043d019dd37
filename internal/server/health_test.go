package server_test

import (
	"context"
	"log/slog"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/agynio/users/internal/server"
	"github.com/agynio/users/internal/testing/tcpproxy"
	"github.com/agynio/users/internal/testing/testdb"
)

// waitForStatus polls h until the server and UsersService report want, or
// fails after 10s.
func waitForStatus(t *testing.T, h healthpb.HealthServer, want healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var got []healthpb.HealthCheckResponse_ServingStatus
		for _, service := range []string{"", "agynio.api.users.v1.UsersService"} {
			resp, err := h.Check(t.Context(), &healthpb.HealthCheckRequest{Service: service})
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, resp.GetStatus())
		}
		if got[0] == want && got[1] == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("health = %v, want %v for the server and UsersService", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestHealthTracksTheDatabase(t *testing.T) {
	t.Parallel()
	real, err := url.Parse(testdb.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	r, err := tcpproxy.Start(real.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	r.Cut() // no database until the first status is seen
	given := *real
	given.Host = r.Addr()
	pool, err := pgxpool.New(t.Context(), testdb.WithQuery(t, given.String(), "connect_timeout", "1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)

	discard := slog.New(slog.DiscardHandler)
	_, h := server.NewGRPCServer(server.New(pool, nil, discard), discard)
	waitForStatus(t, h, healthpb.HealthCheckResponse_NOT_SERVING) // before any ping

	watch := server.NewDatabaseWatch(pool, h, 50*time.Millisecond, discard)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go watch.Run(ctx)

	r.Restore()
	waitForStatus(t, h, healthpb.HealthCheckResponse_SERVING)
	r.Cut()
	waitForStatus(t, h, healthpb.HealthCheckResponse_NOT_SERVING)
	// Liveness does not follow the database: an outage must not restart
	// every pod.
	if resp, err := h.Check(t.Context(), &healthpb.HealthCheckRequest{Service: server.LivenessService}); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("liveness while the database is down = %v, %v; want SERVING", resp.GetStatus(), err)
	}
	r.Restore()
	waitForStatus(t, h, healthpb.HealthCheckResponse_SERVING)
}

// EndStreams ends open Watch streams once they have heard NOT_SERVING: a
// graceful stop would otherwise wait for them until its timeout.
func TestHealthEndStreamsEndsWatchStreams(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	watch, err := healthpb.NewHealthClient(e.cc).Watch(t.Context(), &healthpb.HealthCheckRequest{Service: "agynio.api.users.v1.UsersService"})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := watch.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("first answer %v, %v; want NOT_SERVING (no database check yet)", resp.GetStatus(), err)
	}
	e.health.Shutdown()
	e.health.EndStreams()
	done := make(chan error, 1)
	go func() {
		for {
			if _, err := watch.Recv(); err != nil {
				done <- err
				return
			}
		}
	}()
	select {
	case err := <-done:
		wantCode(t, err, codes.Canceled)
	case <-time.After(10 * time.Second):
		t.Fatal("the Watch stream is still open 10s after Shutdown")
	}
}

// Shutdown is NOT_SERVING for good, whatever the database says after it,
// while liveness stays SERVING through the drain: a liveness probe that
// failed then would kill the calls the drain waits for.
func TestHealthShutdownIsForGoodButLivenessStays(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	e := newEnvOn(t, pool)
	watch := server.NewDatabaseWatch(pool, e.health, time.Second, slog.New(slog.DiscardHandler))
	watch.Check(t.Context())
	waitForStatus(t, e.health, healthpb.HealthCheckResponse_SERVING)

	e.health.Shutdown()
	watch.Check(t.Context()) // the database still answers
	waitForStatus(t, e.health, healthpb.HealthCheckResponse_NOT_SERVING)
	if e.health.Ready() {
		t.Error("Ready() after Shutdown = true, want false")
	}
	resp, err := e.health.Check(t.Context(), &healthpb.HealthCheckRequest{Service: server.LivenessService})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("liveness after Shutdown = %v, %v; want SERVING", resp.GetStatus(), err)
	}
}
