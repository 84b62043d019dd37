package main

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/agynio/users/internal/testing/testdb"
)

// TestReadyzFollowsTheSchema: a replica whose table is dropped under it
// (a rollback, a restore gone wrong) can serve no call, so it stops being
// ready, while staying alive, as it would for an unreachable database.
func TestReadyzFollowsTheSchema(t *testing.T) {
	t.Parallel()
	dbURL := testdb.URL(t)
	p, addr := startServe(t, map[string]string{"DATABASE_URL": dbURL})
	waitForStatus(t, p, "/readyz", http.StatusOK)

	conn, err := pgx.Connect(rpcContext(t), testdb.AsOwner(t, dbURL)) // the service's role may not drop it
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(rpcContext(t), "DROP TABLE users CASCADE"); err != nil {
		t.Fatal(err)
	}

	waitForStatus(t, p, "/readyz", http.StatusServiceUnavailable)
	if got := healthStatus(t, dial(t, addr)); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("gRPC health = %s, want NOT_SERVING", got)
	}
	if code, body := adminGet(t, p, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: %d %q, want 200: restarting would not bring the table back", code, body)
	}
	if !strings.Contains(p.stdout.String(), `relation \"users\" does not exist`) {
		t.Errorf("the log does not say why the replica is not ready:\n%s", p.stdout)
	}
}
