package server_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"

	"github.com/agynio/users/internal/db"
	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
	"github.com/agynio/users/internal/identity"
	"github.com/agynio/users/internal/server"
	"github.com/agynio/users/internal/testing/tcpproxy"
	"github.com/agynio/users/internal/testing/testdb"
)

// lockRow holds FOR UPDATE on a user's row until t ends, so that an
// UpdateUser of it blocks inside PostgreSQL.
func lockRow(t *testing.T, pool *pgxpool.Pool, identityID string) {
	t.Helper()
	tx, err := pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Rollback(context.Background()) }) //nolint:errcheck // the test's own lock
	if _, err := tx.Exec(t.Context(), "SELECT 1 FROM users WHERE identity_id = $1 FOR UPDATE", identityID); err != nil {
		t.Fatal(err)
	}
}

// lockWaiters counts the statements of this database that wait for a lock.
func lockWaiters(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(),
		"SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// eventually polls cond every 20ms until it holds, failing after 10s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 10s: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A statement that the database does not finish within DB_TIMEOUT is
// UNAVAILABLE at DB_TIMEOUT, whatever the caller's own deadline.
func TestDBTimeoutBoundsEveryStatement(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	const dbTimeout = 300 * time.Millisecond
	e := newEnvOn(t, db.NewBounded(pool, time.Second, dbTimeout))
	u := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "slow"})
	lockRow(t, pool, u.GetMeta().GetId())

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	start := time.Now()
	_, err := e.client.UpdateUser(ctx, &usersv1.UpdateUserRequest{IdentityId: u.GetMeta().GetId(), Name: proto.String("n")})
	elapsed := time.Since(start)
	wantCode(t, err, codes.Unavailable)
	if elapsed < dbTimeout || elapsed > 3*time.Second {
		t.Errorf("answered after %s, want about DB_TIMEOUT (%s)", elapsed, dbTimeout)
	}
	eventually(t, "the timed-out statement still waits in PostgreSQL", func() bool { return lockWaiters(t, pool) == 0 })
}

// A caller's deadline earlier than DB_TIMEOUT wins, and is reported as the
// caller's.
func TestCallerDeadlineEarlierThanDBTimeout(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	e := newEnvOn(t, db.NewBounded(pool, time.Second, time.Minute))
	u := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "slow"})
	lockRow(t, pool, u.GetMeta().GetId())

	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	_, err := e.client.UpdateUser(ctx, &usersv1.UpdateUserRequest{IdentityId: u.GetMeta().GetId(), Name: proto.String("n")})
	wantCode(t, err, codes.DeadlineExceeded)
}

// A call that cannot get a pool connection within the acquire timeout is
// UNAVAILABLE then, rather than queued until its deadline.
func TestPoolAcquireTimeout(t *testing.T) {
	t.Parallel()
	pool, err := db.NewPool(t.Context(), testdb.URL(t), db.PoolOptions{MaxConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	const acquireTimeout = 200 * time.Millisecond
	e := newEnvOn(t, db.NewBounded(pool, acquireTimeout, time.Minute))

	held, err := pool.Acquire(t.Context()) // the only connection
	if err != nil {
		t.Fatal(err)
	}
	// The driver's error says it was the wait for a connection...
	var n int
	err = db.NewBounded(pool, acquireTimeout, time.Minute).QueryRow(t.Context(), "SELECT 1").Scan(&n)
	if !errors.Is(err, db.ErrAcquireTimeout) {
		t.Errorf("QueryRow with no free connection: %v, want ErrAcquireTimeout", err)
	}
	// ...and the client hears UNAVAILABLE at the acquire timeout.
	start := time.Now()
	_, err = e.client.GetUser(t.Context(), &usersv1.GetUserRequest{IdentityId: uuid.NewString()})
	elapsed := time.Since(start)
	wantCode(t, err, codes.Unavailable)
	if elapsed < acquireTimeout || elapsed > 3*time.Second {
		t.Errorf("answered after %s, want about the acquire timeout (%s)", elapsed, acquireTimeout)
	}
	if !strings.Contains(e.logs.String(), db.ErrAcquireTimeout.Error()) {
		t.Errorf("the log does not name the acquire timeout as the cause:\n%s", e.logs)
	}

	held.Release()
	_, err = e.client.GetUser(t.Context(), &usersv1.GetUserRequest{IdentityId: uuid.NewString()})
	wantCode(t, err, codes.NotFound)
}

// A database host that accepts TCP but never answers (a hung server, a
// black-holed route) is UNAVAILABLE within the default connect timeout,
// with no connect_timeout in the URL and no deadline from the caller.
func TestSilentDatabaseFailsFast(t *testing.T) {
	t.Parallel()
	l, err := tcpproxy.StartSilent()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })

	pool, err := db.NewPool(t.Context(), "postgres://users@"+l.Addr()+"/users?sslmode=disable", db.PoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	// An acquire timeout longer than the connect timeout, so that the
	// connect timeout is what must end the call.
	e := newEnvOn(t, db.NewBounded(pool, time.Minute, time.Minute))
	start := time.Now()
	_, err = e.client.GetUser(t.Context(), &usersv1.GetUserRequest{IdentityId: uuid.NewString()})
	elapsed := time.Since(start)
	wantCode(t, err, codes.Unavailable)
	if elapsed > db.DefaultConnectTimeout+2*time.Second {
		t.Errorf("answered after %s, want about the default connect timeout (%s)", elapsed, db.DefaultConnectTimeout)
	}
}

// A client that goes away mid-call does not keep a pool connection: the
// statement is cancelled in PostgreSQL and the connection comes back.
func TestDisconnectedClientReleasesItsConnection(t *testing.T) {
	t.Parallel()
	url := testdb.URL(t)
	pool, err := pgxpool.New(t.Context(), url) // the test's own: locks, pg_stat_activity
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	servicePool, err := db.NewPool(t.Context(), url, db.PoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(servicePool.Close)
	log := slog.New(slog.DiscardHandler)
	gs, _ := server.NewGRPCServer(server.New(db.NewBounded(servicePool, time.Second, time.Minute), identity.Local{}, log), log)
	lis := bufconn.Listen(1 << 20)
	go gs.Serve(lis) //nolint:errcheck // returns when stopped
	t.Cleanup(gs.Stop)
	dial := func() *grpc.ClientConn {
		cc, err := grpc.NewClient("passthrough:///bufnet",
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
			grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		return cc
	}

	keep := dial()
	defer keep.Close()
	resp, err := usersv1.NewUsersServiceClient(keep).ResolveOrCreateUser(t.Context(), &usersv1.ResolveOrCreateUserRequest{OidcSubject: "leaver"})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetUser().GetMeta().GetId()
	lockRow(t, pool, id)

	leaver := dial()
	done := make(chan error, 1)
	go func() {
		_, err := usersv1.NewUsersServiceClient(leaver).UpdateUser(context.Background(), &usersv1.UpdateUserRequest{IdentityId: id, Name: proto.String("gone")})
		done <- err
	}()
	eventually(t, "UpdateUser never reached the lock", func() bool { return lockWaiters(t, pool) == 1 })
	if got := servicePool.Stat().AcquiredConns(); got != 1 {
		t.Fatalf("acquired connections while the call waits = %d, want 1", got)
	}
	leaver.Close() // the client disconnects mid-call

	eventually(t, "the pool connection was not given back", func() bool { return servicePool.Stat().AcquiredConns() == 0 })
	eventually(t, "the statement still waits in PostgreSQL", func() bool { return lockWaiters(t, pool) == 0 })
	if err := <-done; err == nil {
		t.Errorf("UpdateUser on a closed connection succeeded")
	}
}

// A request bigger than MaxRequestBytes (far bigger than any valid one,
// and far below gRPC's own 4 MiB default) is refused before it is read,
// with RESOURCE_EXHAUSTED, and the server goes on serving.
func TestHugeRequestIsRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, size := range []int{server.MaxRequestBytes + 1024, 64 << 20} {
		_, err := e.client.GetUser(t.Context(), &usersv1.GetUserRequest{IdentityId: strings.Repeat("x", size)})
		st := wantCode(t, err, codes.ResourceExhausted)
		if !strings.Contains(st.Message(), "larger than max") {
			t.Errorf("%d bytes: message %q does not say the request is too large", size, st.Message())
		}
	}
	// Just under the limit is read, and answered on its merits.
	_, err := e.client.GetUser(t.Context(), &usersv1.GetUserRequest{IdentityId: strings.Repeat("x", server.MaxRequestBytes-16)})
	wantViolations(t, err, "identity_id")
}

// Bytes that are no protobuf message are the client's fault:
// INVALID_ARGUMENT naming the expected message, not INTERNAL.
func TestMalformedRequestIsInvalidArgument(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for name, payload := range map[string][]byte{
		"truncated varint": {0x0a, 0xff},
		"length past end":  {0x0a, 0x7f, 'a'},
		"bad wire type":    {0x0f},
		"field number 0":   {0x02, 0x00},
	} {
		t.Run(name, func(t *testing.T) {
			var reply []byte
			err := e.cc.Invoke(t.Context(), usersv1.UsersService_GetUser_FullMethodName, payload, &reply, grpc.ForceCodecV2(rawCodec{}))
			st := wantCode(t, err, codes.InvalidArgument)
			if !strings.Contains(st.Message(), "agynio.api.users.v1.GetUserRequest") {
				t.Errorf("message %q does not name the expected message", st.Message())
			}
		})
	}
	if strings.Contains(e.logs.String(), `"level":"ERROR"`) {
		t.Errorf("a malformed request was logged as an error:\n%s", e.logs)
	}
}

// The server holds each connection to its limit of concurrent calls: with
// a limit of 2 and two calls held in PostgreSQL, a third call to another
// user waits for a slot instead of running.
func TestMaxConcurrentStreamsPerConnection(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	e := newEnvWith(t, pool, identity.Local{}, server.WithMaxConcurrentStreams(2))
	locked := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "locked"})
	free := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "free"})
	lockRow(t, pool, locked.GetMeta().GetId())

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	for range 2 {
		go e.client.UpdateUser(ctx, &usersv1.UpdateUserRequest{IdentityId: locked.GetMeta().GetId(), Name: proto.String("n")}) //nolint:errcheck // cancelled at the end
	}
	eventually(t, "two calls never reached the lock", func() bool { return lockWaiters(t, pool) == 2 })

	waitCtx, waitCancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer waitCancel()
	_, err := e.client.GetUser(waitCtx, &usersv1.GetUserRequest{IdentityId: free.GetMeta().GetId()})
	wantCode(t, err, codes.DeadlineExceeded)

	cancel() // the two held calls end, and their slots free up
	if _, err := e.client.GetUser(t.Context(), &usersv1.GetUserRequest{IdentityId: free.GetMeta().GetId()}); err != nil {
		t.Fatalf("GetUser once slots are free: %v", err)
	}
}

// A client that pings far more often than the keepalive policy allows is
// sent GOAWAY ENHANCE_YOUR_CALM ("too_many_pings") rather than answered
// for ever: pings cost the server and can be a flood.
func TestKeepaliveRefusesPingFloods(t *testing.T) {
	t.Parallel()
	fr := dialHTTP2(t, serveTCP(t, slog.New(slog.DiscardHandler)))
	for i := range 10 {
		if err := fr.WritePing(false, [8]byte{byte(i)}); err != nil {
			break // the server may already have hung up
		}
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("connection ended without GOAWAY: %v", err)
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			if ga.ErrCode != http2.ErrCodeEnhanceYourCalm || string(ga.DebugData()) != "too_many_pings" {
				t.Fatalf("GOAWAY %v %q, want ENHANCE_YOUR_CALM too_many_pings", ga.ErrCode, ga.DebugData())
			}
			return
		}
	}
}
