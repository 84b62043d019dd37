package server_test

import (
	"context"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"golang.org/x/net/http2"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/agynio/users/internal/apitoken"
	"github.com/agynio/users/internal/db"
	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
	"github.com/agynio/users/internal/identity"
	"github.com/agynio/users/internal/server"
	"github.com/agynio/users/internal/testing/syncbuf"
	"github.com/agynio/users/internal/testing/testdb"
)

func TestMain(m *testing.M) {
	os.Exit(testdb.Run(m))
}

// env is one test's service: a gRPC client talking through the real gRPC
// stack (in memory) to a Server on the test's own database.
type env struct {
	cc     *grpc.ClientConn
	client usersv1.UsersServiceClient
	srv    *server.Server
	health *server.Health
	conn   db.DBTX
	logs   *syncbuf.Buffer
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvOn(t, testdb.New(t))
}

func newEnvOn(t *testing.T, conn db.DBTX) *env {
	t.Helper()
	return newEnvWith(t, conn, identity.Local{})
}

// newEnvWith serves with the same gRPC server the binary builds
// (interceptors, codec, health), allocating ids with ids.
func newEnvWith(t *testing.T, conn db.DBTX, ids identity.Allocator, opts ...server.Option) *env {
	t.Helper()
	return newEnvFor(t, conn, func(log *slog.Logger) *server.Server { return server.New(conn, ids, log) }, opts...)
}

// newEnvFor serves the Server that build returns, given the env's log.
func newEnvFor(t *testing.T, conn db.DBTX, build func(*slog.Logger) *server.Server, opts ...server.Option) *env {
	t.Helper()
	logs := &syncbuf.Buffer{}
	// Every line, debug ones included, also goes to allLogs, which the
	// secrets check below reads.
	allLogs := &syncbuf.Buffer{}
	log := slog.New(slog.NewMultiHandler(
		slog.NewJSONHandler(logs, nil),
		slog.NewJSONHandler(allLogs, &slog.HandlerOptions{Level: slog.LevelDebug}),
	))
	srv := build(log)

	lis := bufconn.Listen(1 << 20)
	gs, health := server.NewGRPCServer(srv, log, opts...)
	go gs.Serve(lis) //nolint:errcheck // returns when stopped
	t.Cleanup(gs.Stop)

	issued := &issuedTokens{}
	cc, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUnaryInterceptor(issued.record))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	// Registered after the test's database, so it runs before the
	// database is dropped.
	t.Cleanup(func() { issued.check(t, conn, allLogs.String()) })
	return &env{cc: cc, client: usersv1.NewUsersServiceClient(cc), srv: srv, health: health, conn: conn, logs: logs}
}

// issuedTokens are the plaintext API tokens an env's client was given.
// When the test ends, no table of its database may hold one, and no log
// line one or its hash: the plaintext exists only in the response that
// created it, and the hash is as secret.
type issuedTokens struct {
	mu         sync.Mutex
	plaintexts []string
}

func (it *issuedTokens) record(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	err := invoker(ctx, method, req, reply, cc, opts...)
	if r, ok := reply.(*usersv1.CreateAPITokenResponse); ok && err == nil {
		it.mu.Lock()
		it.plaintexts = append(it.plaintexts, r.GetPlaintextToken())
		it.mu.Unlock()
	}
	return err
}

func (it *issuedTokens) check(t *testing.T, conn db.DBTX, logs string) {
	t.Helper()
	it.mu.Lock()
	defer it.mu.Unlock()
	if len(it.plaintexts) == 0 {
		return
	}
	dump := dumpTables(t, conn)
	for _, p := range it.plaintexts {
		// The part after the prefix: the plaintext, however it were
		// stored, holds it.
		secret := strings.TrimPrefix(p, apitoken.Prefix)
		if strings.Contains(dump, secret) {
			t.Errorf("a table holds an issued API token's plaintext")
		}
		if strings.Contains(logs, secret) {
			t.Errorf("the log holds an issued API token's plaintext")
		}
		if strings.Contains(logs, apitoken.Hash(p)) {
			t.Errorf("the log holds an issued API token's hash")
		}
	}
}

// asOwner connects to service's database, service being a connection as
// the service's role, as the owner of its tables: for what a test does
// that the service's role may not (rows backdated, triggers of the
// test's own, a table dropped). Closed when t ends.
func asOwner(t *testing.T, service db.DBTX) *pgx.Conn {
	t.Helper()
	return connectAs(t, service, testdb.AsOwner)
}

// connectAs connects to service's database as the role of as (one of
// testdb's As* functions), until t ends.
func connectAs(t *testing.T, service db.DBTX, as func(testing.TB, string) string) *pgx.Conn {
	t.Helper()
	ctx := context.WithoutCancel(t.Context())
	var database string
	if err := service.QueryRow(ctx, "SELECT current_database()").Scan(&database); err != nil {
		t.Fatal(err)
	}
	dbURL, err := testdb.WithDatabase(testdb.ServerURL(t), database)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, as(t, dbURL))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(ctx) })
	return conn
}

// dumpTables is every row of every table of conn's database, as text,
// read as the superuser: the service's role may not read them all.
func dumpTables(t *testing.T, service db.DBTX) string {
	t.Helper()
	ctx := context.WithoutCancel(t.Context())
	conn := connectAs(t, service, testdb.AsSuperuser)
	rows, err := conn.Query(ctx, `SELECT format('%I.%I', schemaname, tablename) FROM pg_tables
		WHERE schemaname NOT IN ('pg_catalog', 'information_schema')`)
	if err != nil {
		t.Fatalf("list tables: %v", err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("list tables: %v", err)
	}
	var dump strings.Builder
	for _, table := range tables {
		rows, err := conn.Query(ctx, "SELECT t::text FROM "+table+" t")
		if err != nil {
			t.Fatalf("dump %s: %v", table, err)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatalf("dump %s: %v", table, err)
		}
		for _, l := range lines {
			dump.WriteString(l)
			dump.WriteByte('\n')
		}
	}
	return dump.String()
}

// createUser resolves a new user and fails the test unless it was created.
func (e *env) createUser(t *testing.T, req *usersv1.ResolveOrCreateUserRequest) *usersv1.User {
	t.Helper()
	resp, err := e.client.ResolveOrCreateUser(t.Context(), req)
	if err != nil {
		t.Fatalf("ResolveOrCreateUser: %v", err)
	}
	if !resp.GetCreated() {
		t.Fatalf("ResolveOrCreateUser(%q): created = false, want true", req.GetOidcSubject())
	}
	return resp.GetUser()
}

// countUsers returns how many rows the users table holds.
func (e *env) countUsers(t *testing.T) int {
	t.Helper()
	var n int
	if err := e.conn.QueryRow(context.Background(), "SELECT count(*) FROM users").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// wantCode fails the test unless err is a status with the given code.
func wantCode(t *testing.T, err error, want codes.Code) *status.Status {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("error %v is not a gRPC status", err)
	}
	if st.Code() != want {
		t.Fatalf("code = %s (%q), want %s", st.Code(), st.Message(), want)
	}
	return st
}

// wantViolations fails the test unless err is INVALID_ARGUMENT carrying a
// BadRequest whose field violations name exactly the given fields.
func wantViolations(t *testing.T, err error, fields ...string) {
	t.Helper()
	st := wantCode(t, err, codes.InvalidArgument)
	var got []string
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, fv := range br.GetFieldViolations() {
				got = append(got, fv.GetField())
			}
		}
	}
	if diff := cmp.Diff(fields, got); diff != "" {
		t.Fatalf("field violations (-want +got):\n%s\nstatus: %s", diff, st.Message())
	}
}

// serveTCP serves what NewGRPCServer builds, with no database, on a
// loopback port, for tests that speak raw HTTP/2 to it, and returns the
// address.
func serveTCP(t *testing.T, log *slog.Logger, opts ...server.Option) string {
	t.Helper()
	gs, _ := server.NewGRPCServer(server.New(nil, identity.Local{}, log), log, opts...)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis) //nolint:errcheck // returns when stopped
	t.Cleanup(gs.Stop)
	return lis.Addr().String()
}

// dialHTTP2 opens an HTTP/2 connection to addr as a gRPC client would, up
// to its SETTINGS frame, bounded to 10 s in all, and returns its framer:
// for what no well-behaved client library would send.
func dialHTTP2(t *testing.T, addr string) *http2.Framer {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second)) //nolint:errcheck // bounds the test
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return fr
}

// asCaller is ctx with the caller named in x-identity-id, as the
// platform's gateway sends it.
func asCaller(ctx context.Context, identityID string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, server.IdentityHeader, identityID)
}

// newEnvWithAdmins serves with subjects declared cluster administrators
// (CLUSTER_ADMIN_SUBJECTS), on the test's own database.
func newEnvWithAdmins(t *testing.T, subjects ...string) *env {
	t.Helper()
	conn := testdb.New(t)
	return newEnvFor(t, conn, func(log *slog.Logger) *server.Server {
		return server.New(conn, identity.Local{}, log, server.WithDeclaredAdmins(subjects))
	})
}

// admin logs in a declared administrator (see newEnvWithAdmins) and returns
// a context that calls as it.
func (e *env) admin(t *testing.T, subject string) context.Context {
	t.Helper()
	resp, err := e.client.ResolveOrCreateUser(t.Context(), &usersv1.ResolveOrCreateUserRequest{OidcSubject: subject})
	if err != nil {
		t.Fatalf("ResolveOrCreateUser(%q): %v", subject, err)
	}
	return asCaller(t.Context(), resp.GetUser().GetMeta().GetId())
}
