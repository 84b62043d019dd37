package server_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/agynio/users/internal/server"
	"github.com/agynio/users/internal/testdb"
)

// forward relays connections on addr to target, the database "coming
// back" at the address the service was given, until stop cuts every
// connection: the database "going away" again.
func forward(t *testing.T, addr, target string) (stop func()) {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	stop = func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}
	t.Cleanup(stop)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			d, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, d)
			mu.Unlock()
			go io.Copy(d, c) //nolint:errcheck // ends when either side closes
			go io.Copy(c, d) //nolint:errcheck
		}
	}()
	return stop
}

// waitForStatus polls h until service reports want, or fails after 10s.
func waitForStatus(t *testing.T, h *health.Server, want healthpb.HealthCheckResponse_ServingStatus) {
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
	dbURL := testdb.URL(t)
	real, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}

	// The service is given an address where the database is not (yet).
	addr := deadAddress(t)
	given := *real
	given.Host = addr
	pool, err := pgxpool.New(t.Context(), testdb.WithQuery(t, given.String(), "connect_timeout", "1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)

	_, h := server.NewGRPCServer(server.New(pool, nil, slog.New(slog.DiscardHandler)), slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go server.WatchDatabase(ctx, pool, h, 50*time.Millisecond, slog.New(slog.DiscardHandler))

	waitForStatus(t, h, healthpb.HealthCheckResponse_NOT_SERVING)
	stop := forward(t, addr, real.Host)
	waitForStatus(t, h, healthpb.HealthCheckResponse_SERVING)
	stop()
	waitForStatus(t, h, healthpb.HealthCheckResponse_NOT_SERVING)
}
