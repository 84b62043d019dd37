package main

import (
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
	"github.com/agynio/users/internal/testing/testdb"
)

// healthIntervalUnderTest is the health watch's interval in the binary
// under test, built with it in place of the 2s that ships
// (healthinterval.go): a test that waits for a health check to happen
// waits a fraction of a second.
const healthIntervalUnderTest = 500 * time.Millisecond

func init() {
	buildFlags = append(buildFlags, "-ldflags=-X=main.healthIntervalOverride="+healthIntervalUnderTest.String())
}

// A service whose every pooled connection is busy is still healthy: the
// health check pings on a connection of its own, not one from that pool.
func TestHealthStaysServingWhileThePoolIsBusy(t *testing.T) {
	t.Parallel()
	dbURL := testdb.URL(t)
	_, addr := startServe(t, map[string]string{"DATABASE_URL": testdb.WithQuery(t, dbURL, "pool_max_conns", "1")})
	cc := dial(t, addr)
	users := usersv1.NewUsersServiceClient(cc)
	user := createUser(t, users, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "busy"})

	// The pool's only connection waits on a row lock.
	lock := lockUser(t, dbURL, user.GetMeta().GetId())
	update := startUpdate(t, users, user.GetMeta().GetId(), "Busy")
	lock.waitForWaiter(t)

	// Past one health interval and its ping timeout.
	time.Sleep(2*healthIntervalUnderTest + 500*time.Millisecond)
	resp, err := healthpb.NewHealthClient(cc).Check(rpcContext(t), &healthpb.HealthCheckRequest{Service: usersService})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health with a busy pool: %v, %v; want SERVING", resp.GetStatus(), err)
	}
	lock.release(t)
	if res := update.result(t); res.err != nil {
		t.Errorf("UpdateUser: %v", res.err)
	}
}
