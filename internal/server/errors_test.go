package server_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
	"github.com/agynio/users/internal/testing/testdb"
)

// An address nothing listens on: a port we held and released.
func deadAddress(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// silentAddress is a server that accepts connections and never answers,
// like a database host that is up but wedged.
func silentAddress(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	return l.Addr().String()
}

func TestUnreachableDatabaseIsUnavailable(t *testing.T) {
	t.Parallel()
	databases := []struct {
		name  string
		addr  string
		cause string // what the log must say
	}{
		{"a refused connection", deadAddress(t), "refused"},
		{"a server that never answers", silentAddress(t), "timeout"},
	}
	for _, d := range databases {
		t.Run(d.name, func(t *testing.T) {
			t.Parallel()
			pool, err := pgxpool.New(t.Context(), fmt.Sprintf("postgres://users@%s/users?connect_timeout=1&sslmode=disable", d.addr))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(pool.Close)
			e := newEnvOn(t, pool)
			for name, call := range allRPCs(e) {
				st := wantCode(t, call(t.Context()), codes.Unavailable)
				if strings.Contains(st.Message(), "127.0.0.1") || strings.Contains(st.Message(), d.cause) {
					t.Errorf("%s: status message %q leaks the driver's error", name, st.Message())
				}
			}
			if !strings.Contains(e.logs.String(), d.cause) {
				t.Errorf("the cause is not logged; logs:\n%s", e.logs)
			}
		})
	}
}

// allRPCs calls each RPC with a valid request.
func allRPCs(e *env) map[string]func(context.Context) error {
	return map[string]func(context.Context) error{
		"ResolveOrCreateUser": func(ctx context.Context) error {
			_, err := e.client.ResolveOrCreateUser(ctx, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "s"})
			return err
		},
		"GetUser": func(ctx context.Context) error {
			_, err := e.client.GetUser(ctx, &usersv1.GetUserRequest{IdentityId: uuid.NewString()})
			return err
		},
		"GetUserByOIDCSubject": func(ctx context.Context) error {
			_, err := e.client.GetUserByOIDCSubject(ctx, &usersv1.GetUserByOIDCSubjectRequest{OidcSubject: "s"})
			return err
		},
		"BatchGetUsers": func(ctx context.Context) error {
			_, err := e.client.BatchGetUsers(ctx, &usersv1.BatchGetUsersRequest{IdentityIds: []string{uuid.NewString()}})
			return err
		},
		"UpdateUser": func(ctx context.Context) error {
			_, err := e.client.UpdateUser(ctx, &usersv1.UpdateUserRequest{IdentityId: uuid.NewString(), Name: proto.String("n")})
			return err
		},
	}
}

// A connection the server ends (restart, failover) is UNAVAILABLE, and the
// next call gets a new connection.
func TestDroppedConnectionIsUnavailableThenRecovers(t *testing.T) {
	t.Parallel()
	url := testdb.URL(t)
	cfg, err := pgxpool.ParseConfig(testdb.WithQuery(t, url, "pool_max_conns", "1"))
	if err != nil {
		t.Fatal(err)
	}
	// pgxpool pings a connection idle for over a second and quietly
	// replaces a dead one; this test wants the dead one used.
	cfg.ShouldPing = func(context.Context, pgxpool.ShouldPingParams) bool { return false }
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	e := newEnvOn(t, pool)
	u := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "s"})

	admin, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(t.Context(), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid()`); err != nil {
		t.Fatal(err)
	}

	req := &usersv1.GetUserRequest{IdentityId: u.GetMeta().GetId()}
	_, err = e.client.GetUser(t.Context(), req)
	wantCode(t, err, codes.Unavailable)
	if _, err := e.client.GetUser(t.Context(), req); err != nil {
		t.Errorf("call after the reconnect: %v", err)
	}
}

// Anything unforeseen is INTERNAL with a generic message; the database's
// words go to the log only.
func TestUnexpectedDatabaseErrorIsInternalAndLogged(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if _, err := asOwner(t, e.conn).Exec(t.Context(), "DROP TABLE users CASCADE"); err != nil {
		t.Fatal(err)
	}
	_, err := e.client.GetUser(t.Context(), &usersv1.GetUserRequest{IdentityId: uuid.NewString()})
	st := wantCode(t, err, codes.Internal)
	if st.Message() != "internal error" {
		t.Errorf("message = %q, want the generic %q", st.Message(), "internal error")
	}
	if logs := e.logs.String(); !strings.Contains(logs, `relation \"users\" does not exist`) || !strings.Contains(logs, "GetUser") {
		t.Errorf("the cause and method are not logged; logs:\n%s", logs)
	}
}

// The caller's deadline or cancellation, reaching the database mid-query,
// is reported as such and not as a database failure.
func TestCallerDeadlineAndCancellation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	u := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "locked"})
	id := u.GetMeta().GetId()

	// Hold the row so that UpdateUser blocks inside PostgreSQL.
	tx, err := e.conn.(*pgxpool.Pool).Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // the test's own lock
	if _, err := tx.Exec(t.Context(), "SELECT 1 FROM users WHERE identity_id = $1 FOR UPDATE", id); err != nil {
		t.Fatal(err)
	}
	req := &usersv1.UpdateUserRequest{IdentityId: id, Name: proto.String("blocked")}

	t.Run("deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		_, err := e.srv.UpdateUser(ctx, req)
		wantCode(t, err, codes.DeadlineExceeded)
	})
	t.Run("deadline set by a client, through gRPC", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		_, err := e.client.UpdateUser(ctx, req)
		wantCode(t, err, codes.DeadlineExceeded)
		// The server saw the deadline too: its query was cancelled
		// rather than left waiting for the lock (cancellation is
		// asynchronous, so allow it a moment).
		var waiting int
		for range 100 {
			if err := e.conn.QueryRow(context.Background(),
				"SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'").Scan(&waiting); err != nil {
				t.Fatal(err)
			}
			if waiting == 0 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if waiting != 0 {
			t.Errorf("%d queries still wait for the lock after the deadline", waiting)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(200*time.Millisecond, cancel)
		_, err := e.srv.UpdateUser(ctx, req)
		wantCode(t, err, codes.Canceled)
	})
	if strings.Contains(e.logs.String(), "internal error") {
		t.Errorf("a caller's deadline was logged as an internal error:\n%s", e.logs)
	}
}

// A lock_timeout from DATABASE_URL that expires is the database unable to
// serve in time, a retryable UNAVAILABLE, not an INTERNAL error.
func TestDatabaseLockTimeoutIsUnavailable(t *testing.T) {
	t.Parallel()
	url := testdb.URL(t)
	pool, err := pgxpool.New(t.Context(), testdb.WithQuery(t, url, "lock_timeout", "200ms"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	e := newEnvOn(t, pool)
	u := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "locked"})

	tx, err := pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // the test's own lock
	if _, err := tx.Exec(t.Context(), "SELECT 1 FROM users WHERE identity_id = $1 FOR UPDATE", u.GetMeta().GetId()); err != nil {
		t.Fatal(err)
	}
	_, err = e.client.UpdateUser(t.Context(), &usersv1.UpdateUserRequest{IdentityId: u.GetMeta().GetId(), Name: proto.String("n")})
	wantCode(t, err, codes.Unavailable)
}

// fixedIDs allocates the same identity id every time, as a remote
// allocator with a bug, or two of them racing, might.
type fixedIDs uuid.UUID

func (f fixedIDs) NewIdentityID(context.Context, string) (uuid.UUID, error) {
	return uuid.UUID(f), nil
}

// A new subject given an identity id that is taken breaks the primary key:
// a retry allocates again, so the call is ABORTED, not INTERNAL.
func TestTakenIdentityIDIsAborted(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, testdb.New(t), fixedIDs(uuid.Must(uuid.NewV7())))
	e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "first"})

	_, err := e.client.ResolveOrCreateUser(t.Context(), &usersv1.ResolveOrCreateUserRequest{OidcSubject: "second"})
	st := wantCode(t, err, codes.Aborted)
	if strings.Contains(st.Message(), "users_pkey") {
		t.Errorf("status message %q leaks the database's words", st.Message())
	}
	if logs := e.logs.String(); !strings.Contains(logs, "users_pkey") {
		t.Errorf("the cause is not logged; logs:\n%s", logs)
	}
	if n := e.countUsers(t); n != 1 {
		t.Errorf("users rows = %d, want 1", n)
	}
}

// Each SQLSTATE, raised by the real server while it runs the login's
// INSERT (a trigger raises it, as the server itself would on a full disk),
// gets the status code of the error contract.
func TestServerErrorsByCode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		sqlstate string
		want     codes.Code
	}{
		{"a full disk is UNAVAILABLE", pgerrcode.DiskFull, codes.Unavailable},
		{"a server out of memory is UNAVAILABLE", pgerrcode.OutOfMemory, codes.Unavailable},
		{"too many connections is UNAVAILABLE", pgerrcode.TooManyConnections, codes.Unavailable},
		{"a serialization failure is ABORTED", pgerrcode.SerializationFailure, codes.Aborted},
		{"a deadlock is ABORTED", pgerrcode.DeadlockDetected, codes.Aborted},
		{"an unforeseen error is INTERNAL", pgerrcode.DataCorrupted, codes.Internal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			pool := testdb.New(t)
			// The code is a constant of the test's own, so formatting it
			// into the statement is safe. The trigger is the tables'
			// owner's to create.
			if _, err := asOwner(t, pool).Exec(t.Context(), fmt.Sprintf(`
				CREATE FUNCTION fail() RETURNS trigger LANGUAGE plpgsql AS $$
				BEGIN RAISE EXCEPTION 'raised by the test' USING ERRCODE = '%s'; END $$;
				CREATE TRIGGER fail BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION fail();`, tt.sqlstate)); err != nil {
				t.Fatal(err)
			}
			e := newEnvOn(t, pool)
			_, err := e.client.ResolveOrCreateUser(t.Context(), &usersv1.ResolveOrCreateUserRequest{OidcSubject: "s"})
			st := wantCode(t, err, tt.want)
			if strings.Contains(st.Message(), "raised by the test") {
				t.Errorf("status message %q leaks the database's words", st.Message())
			}
		})
	}
}
