package main

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
	"github.com/agynio/users/internal/testing/testdb"
)

// TestShutdownDrainsInFlightRPCs holds an UpdateUser in flight on a row
// lock, sends SIGTERM, and checks the order of a graceful stop: health goes
// NOT_SERVING at once, the process waits for the RPC, the RPC completes,
// and the process exits 0.
func TestShutdownDrainsInFlightRPCs(t *testing.T) {
	t.Parallel()
	dbURL := testdb.URL(t)
	p, addr := startServe(t, map[string]string{"DATABASE_URL": dbURL, "SHUTDOWN_TIMEOUT": "10s"})
	cc := dial(t, addr)
	users := usersv1.NewUsersServiceClient(cc)
	user := createUser(t, users, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "https://issuer.example.com|drain"})

	lock := lockUser(t, dbURL, user.GetMeta().GetId())
	update := startUpdate(t, users, user.GetMeta().GetId(), "Drained")
	lock.waitForWaiter(t)

	// Watch before the signal, and see its first answer, so that the
	// stream is open on the server when the shutdown starts.
	watchCtx, cancelWatch := context.WithTimeout(t.Context(), waitTimeout)
	defer cancelWatch()
	watch, err := healthpb.NewHealthClient(cc).Watch(watchCtx, &healthpb.HealthCheckRequest{Service: usersService})
	if err != nil {
		t.Fatalf("health Watch: %v", err)
	}
	if resp, err := watch.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health Watch before SIGTERM: %v, %v; want SERVING", resp.GetStatus(), err)
	}

	p.terminate(t)
	if resp, err := watch.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health Watch after SIGTERM: %v, %v; want NOT_SERVING", resp.GetStatus(), err)
	}
	// The server ends the stream itself: GracefulStop would otherwise wait
	// for it until SHUTDOWN_TIMEOUT.
	if _, err := watch.Recv(); status.Code(err) != codes.Canceled {
		t.Fatalf("health Watch after NOT_SERVING: %v; want the server to end it (CANCELED)", err)
	}

	time.Sleep(300 * time.Millisecond)
	if p.hasExited() {
		t.Fatalf("users exited (code %d) with UpdateUser still in flight", p.cmd.ProcessState.ExitCode())
	}
	lock.release(t)

	res := update.result(t)
	if res.err != nil {
		t.Fatalf("in-flight UpdateUser: %v, want it to complete while the server drains", res.err)
	}
	if got := res.user.GetName(); got != "Drained" {
		t.Errorf("in-flight UpdateUser: name = %q, want %q", got, "Drained")
	}
	if code := p.wait(t, waitTimeout); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	want := []string{eventsPruned, plaintextWarning, "serving", "shutting down", "drained"}
	if diff := cmp.Diff(want, p.stdout.messages()); diff != "" {
		t.Errorf("log messages (-want +got):\n%s", diff)
	}
}

// TestShutdownTimeoutCutsOffInFlightRPCs holds an UpdateUser in flight past
// SHUTDOWN_TIMEOUT: the process must give up on it, fail it, and still exit
// 0 soon after the timeout rather than wait for the lock.
func TestShutdownTimeoutCutsOffInFlightRPCs(t *testing.T) {
	t.Parallel()
	const timeout = time.Second
	dbURL := testdb.URL(t)
	p, addr := startServe(t, map[string]string{"DATABASE_URL": dbURL, "SHUTDOWN_TIMEOUT": timeout.String()})
	users := usersv1.NewUsersServiceClient(dial(t, addr))
	user := createUser(t, users, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "https://issuer.example.com|stuck"})

	lock := lockUser(t, dbURL, user.GetMeta().GetId()) // released only by cleanup, after the process is gone
	update := startUpdate(t, users, user.GetMeta().GetId(), "Never")
	lock.waitForWaiter(t)

	start := time.Now()
	p.terminate(t)
	code := p.wait(t, 10*time.Second)
	elapsed := time.Since(start)
	if code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	if elapsed < timeout {
		t.Errorf("exited %s after SIGTERM, before SHUTDOWN_TIMEOUT (%s)", elapsed, timeout)
	}

	res := update.result(t)
	if res.err == nil {
		t.Errorf("in-flight UpdateUser succeeded (name %q), want it cut off", res.user.GetName())
	} else if status.Code(res.err) == codes.OK {
		t.Errorf("in-flight UpdateUser: %v, want a non-OK status", res.err)
	}
	want := []string{eventsPruned, plaintextWarning, "serving", "shutting down", "shutdown timeout: cancelling in-flight RPCs"}
	if diff := cmp.Diff(want, p.stdout.messages()); diff != "" {
		t.Errorf("log messages (-want +got):\n%s", diff)
	}
}

// rowLock is a transaction holding FOR UPDATE on one user's row, and a
// second connection to watch who waits for it.
type rowLock struct {
	tx       pgx.Tx
	holder   uint32 // backend pid of tx
	observer *pgx.Conn
}

// lockUser locks the user's row until release or the end of t.
func lockUser(t *testing.T, dbURL, identityID string) *rowLock {
	t.Helper()
	ctx := rpcContext(t)
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	observer, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { observer.Close(context.Background()) })

	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	l := &rowLock{tx: tx, holder: conn.PgConn().PID(), observer: observer}
	t.Cleanup(func() { l.release(t) })
	var one int
	if err := tx.QueryRow(ctx, "SELECT 1 FROM users WHERE identity_id = $1 FOR UPDATE", identityID).Scan(&one); err != nil {
		t.Fatalf("lock user %s: %v", identityID, err)
	}
	return l
}

// waitForWaiter returns once another backend is blocked on the lock, that
// is, once the RPC is in flight in the server and not merely sent.
func (l *rowLock) waitForWaiter(t *testing.T) {
	t.Helper()
	ctx := rpcContext(t)
	for {
		var blocked bool
		err := l.observer.QueryRow(ctx,
			"SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE $1::int = ANY(pg_blocking_pids(pid)))",
			int64(l.holder)).Scan(&blocked)
		if err != nil {
			t.Fatalf("no backend blocked on the row lock (%v)", err)
		}
		if blocked {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// release rolls the locking transaction back; later calls do nothing.
func (l *rowLock) release(t *testing.T) {
	t.Helper()
	if err := l.tx.Rollback(context.Background()); err != nil && !errors.Is(err, pgx.ErrTxClosed) {
		t.Errorf("release row lock: %v", err)
	}
}

// pendingUpdate is an UpdateUser running in its own goroutine.
type pendingUpdate chan updateResult

type updateResult struct {
	user *usersv1.User
	err  error
}

// startUpdate starts UpdateUser setting the user's name.
func startUpdate(t *testing.T, users usersv1.UsersServiceClient, identityID, name string) pendingUpdate {
	t.Helper()
	ctx := rpcContext(t)
	done := make(pendingUpdate, 1)
	go func() {
		resp, err := users.UpdateUser(ctx, &usersv1.UpdateUserRequest{IdentityId: identityID, Name: proto.String(name)})
		done <- updateResult{user: resp.GetUser(), err: err}
	}()
	return done
}

// result waits for the RPC to return.
func (u pendingUpdate) result(t *testing.T) updateResult {
	t.Helper()
	select {
	case r := <-u:
		return r
	case <-time.After(waitTimeout):
		t.Fatalf("UpdateUser still running %s later", waitTimeout)
		return updateResult{}
	}
}
