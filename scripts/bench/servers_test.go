package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
	"github.com/agynio/users/internal/testing/testdb"
)

// TestMain runs as a subcommand (the reference or the floor) when the
// tests start this test binary as one, as the bench starts itself, and
// otherwise runs the tests against a throwaway PostgreSQL.
func TestMain(m *testing.M) {
	runSubcommand()
	os.Exit(testdb.Run(m))
}

// usersClient starts srv, stops it when t ends, and returns a client of it.
func usersClient(t *testing.T, srv *server) usersv1.UsersServiceClient {
	t.Helper()
	t.Cleanup(srv.Stop)
	cc, err := grpc.NewClient("passthrough:///"+srv.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return usersv1.NewUsersServiceClient(cc)
}

func TestReferenceServerAnswersEveryRPC(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	ref, err := startReference(ctx, testdb.URL(t), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c := usersClient(t, ref)

	login := &usersv1.ResolveOrCreateUserRequest{OidcSubject: "auth0|alice", Name: "Alice", Email: "alice@example.com", PhotoUrl: "https://example.com/a.png"}
	first, err := c.ResolveOrCreateUser(ctx, login)
	if err != nil {
		t.Fatalf("first login: %v", err)
	}
	alice := first.GetUser()
	id, err := uuid.Parse(alice.GetMeta().GetId())
	if err != nil || id.Version() != 7 {
		t.Errorf("identity id %q: want a UUIDv7 (%v)", alice.GetMeta().GetId(), err)
	}
	if !first.GetCreated() || alice.GetName() != "Alice" || alice.GetEmail() != "alice@example.com" || alice.GetPhotoUrl() != "https://example.com/a.png" {
		t.Errorf("first login = %v, want created with the claims", first)
	}
	again, err := c.ResolveOrCreateUser(ctx, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "auth0|alice", Name: "Other"})
	if err != nil {
		t.Fatalf("second login: %v", err)
	}
	if diff := cmp.Diff(&usersv1.ResolveOrCreateUserResponse{User: alice}, again, protocmp.Transform()); diff != "" {
		t.Errorf("second login: want the stored user, not created (-want +got):\n%s", diff)
	}

	got, err := c.GetUser(ctx, &usersv1.GetUserRequest{IdentityId: alice.GetMeta().GetId()})
	if diff := cmp.Diff(alice, got.GetUser(), protocmp.Transform()); err != nil || diff != "" {
		t.Errorf("GetUser: %v (-want +got):\n%s", err, diff)
	}
	bySubject, err := c.GetUserByOIDCSubject(ctx, &usersv1.GetUserByOIDCSubjectRequest{OidcSubject: "auth0|alice"})
	if diff := cmp.Diff(alice, bySubject.GetUser(), protocmp.Transform()); err != nil || diff != "" {
		t.Errorf("GetUserByOIDCSubject: %v (-want +got):\n%s", err, diff)
	}

	bob, err := c.ResolveOrCreateUser(ctx, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "auth0|bob"})
	if err != nil {
		t.Fatal(err)
	}
	missing := uuid.NewString()
	batch, err := c.BatchGetUsers(ctx, &usersv1.BatchGetUsersRequest{IdentityIds: []string{bob.GetUser().GetMeta().GetId(), missing, alice.GetMeta().GetId()}})
	if err != nil {
		t.Fatalf("BatchGetUsers: %v", err)
	}
	// The reference does not order the batch.
	wantBatch := []*usersv1.User{alice, bob.GetUser()}
	if diff := cmp.Diff(wantBatch, batch.GetUsers(), protocmp.Transform(), protocmp.SortRepeated(func(a, b *usersv1.User) bool {
		return a.GetOidcSubject() < b.GetOidcSubject()
	})); diff != "" {
		t.Errorf("BatchGetUsers (-want +got):\n%s", diff)
	}

	name := "Alice Liddell"
	updated, err := c.UpdateUser(ctx, &usersv1.UpdateUserRequest{IdentityId: alice.GetMeta().GetId(), Name: &name})
	if err != nil {
		t.Fatalf("UpdateUser: %v", err)
	}
	if u := updated.GetUser(); u.GetName() != name || u.GetEmail() != alice.GetEmail() || u.GetPhotoUrl() != alice.GetPhotoUrl() ||
		u.GetMeta().GetUpdatedAt().AsTime().Before(alice.GetMeta().GetUpdatedAt().AsTime()) {
		t.Errorf("UpdateUser = %v, want the name changed and nothing else", u)
	}

	for _, c := range []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"GetUser of a missing id", func() error { _, err := c.GetUser(ctx, &usersv1.GetUserRequest{IdentityId: missing}); return err }, codes.NotFound},
		{"GetUser of a malformed id", func() error { _, err := c.GetUser(ctx, &usersv1.GetUserRequest{IdentityId: "x"}); return err }, codes.InvalidArgument},
		{"GetUserByOIDCSubject of a missing subject", func() error {
			_, err := c.GetUserByOIDCSubject(ctx, &usersv1.GetUserByOIDCSubjectRequest{OidcSubject: "nobody"})
			return err
		}, codes.NotFound},
		{"UpdateUser of a missing id", func() error {
			_, err := c.UpdateUser(ctx, &usersv1.UpdateUserRequest{IdentityId: missing, Name: &name})
			return err
		}, codes.NotFound},
		{"a login without a subject", func() error { _, err := c.ResolveOrCreateUser(ctx, &usersv1.ResolveOrCreateUserRequest{}); return err }, codes.InvalidArgument},
	} {
		if got := status.Code(c.call()); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}

func TestReferenceServerCreatesAConcurrentFirstLoginOnce(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	ref, err := startReference(ctx, testdb.URL(t), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c := usersClient(t, ref)

	const logins = 16
	resps := make([]*usersv1.ResolveOrCreateUserResponse, logins)
	errs := make([]error, logins)
	var wg sync.WaitGroup
	for i := range logins {
		wg.Go(func() {
			resps[i], errs[i] = c.ResolveOrCreateUser(ctx, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "auth0|carol"})
		})
	}
	wg.Wait()
	created := 0
	for i, r := range resps {
		if errs[i] != nil {
			t.Fatalf("login %d: %v", i, errs[i])
		}
		if r.GetCreated() {
			created++
		}
		if r.GetUser().GetMeta().GetId() != resps[0].GetUser().GetMeta().GetId() {
			t.Errorf("login %d: id %s, login 0: %s", i, r.GetUser().GetMeta().GetId(), resps[0].GetUser().GetMeta().GetId())
		}
	}
	if created != 1 {
		t.Errorf("%d logins say created, want 1", created)
	}
}

// TestReferenceServerResolvesTokens: the reference writes each use as it
// resolves, and answers an unknown, an expired and a malformed token as
// the service does.
func TestReferenceServerResolvesTokens(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	dbURL := testdb.URL(t)
	const users = 10
	if err := seed(ctx, testdb.AsSuperuser(t, dbURL), users); err != nil {
		t.Fatal(err)
	}
	// Backdated as the superuser, as seeded: the service's role writes no
	// created_at.
	conn, err := pgx.Connect(ctx, testdb.AsSuperuser(t, dbURL))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.WithoutCancel(ctx)) })
	const expired = users + 1 // a hash no seeded token has
	if _, err := conn.Exec(ctx, `INSERT INTO api_tokens (id, identity_id, name, token_hash, token_prefix, created_at, expires_at)
		VALUES (gen_random_uuid(), $1, 'expired', $2, 'agyn_old', now() - interval '2 hours', now() - interval '1 hour')`,
		identityID(3), tokenHash(expired)); err != nil {
		t.Fatal(err)
	}
	ref, err := startReference(ctx, dbURL, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c := usersClient(t, ref)

	before := time.Now()
	got, err := c.ResolveAPIToken(ctx, &usersv1.ResolveAPITokenRequest{TokenHash: tokenHash(7)})
	if err != nil {
		t.Fatalf("ResolveAPIToken of user 7's token: %v", err)
	}
	tok := got.GetToken()
	if got.GetIdentityId() != identityID(7) || tok.GetId() != identityID(7) || tok.GetIdentityId() != identityID(7) ||
		tok.GetName() != tokenName(7) || tok.GetTokenPrefix() != tokenPrefix(7) || tok.GetExpiresAt() != nil {
		t.Errorf("ResolveAPIToken of user 7's token = %v, want user 7's seeded token", got)
	}
	var stored time.Time
	if err := conn.QueryRow(ctx, "SELECT last_used_at FROM api_tokens WHERE token_hash = $1", tokenHash(7)).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if used := tok.GetLastUsedAt().AsTime(); !used.Equal(stored) || used.Before(before.Add(-time.Second)) {
		t.Errorf("last_used_at: answered %v, stored %v; want the same, now", used, stored)
	}

	for _, bad := range []struct {
		name string
		hash string
		want codes.Code
	}{
		{"a token no one holds", tokenHash(users + 2), codes.NotFound},
		{"an expired token", tokenHash(expired), codes.Unauthenticated},
		{"a hash of 63 digits", tokenHash(7)[1:], codes.InvalidArgument},
		{"a hash that is not hex", strings.Repeat("g", 64), codes.InvalidArgument},
	} {
		_, err := c.ResolveAPIToken(ctx, &usersv1.ResolveAPITokenRequest{TokenHash: bad.hash})
		if got := status.Code(err); got != bad.want {
			t.Errorf("%s: %s, want %s", bad.name, got, bad.want)
		}
	}
}

func TestFloorAnswersEveryRPCWithAUser(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	floor, err := startFloor(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c := usersClient(t, floor)

	var users []*usersv1.User
	r1, err := c.ResolveOrCreateUser(ctx, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "1"})
	users = append(users, r1.GetUser())
	if err == nil {
		var r *usersv1.GetUserResponse
		r, err = c.GetUser(ctx, &usersv1.GetUserRequest{IdentityId: identityID(1)})
		users = append(users, r.GetUser())
	}
	if err == nil {
		var r *usersv1.GetUserByOIDCSubjectResponse
		r, err = c.GetUserByOIDCSubject(ctx, &usersv1.GetUserByOIDCSubjectRequest{OidcSubject: "1"})
		users = append(users, r.GetUser())
	}
	if err == nil {
		var r *usersv1.UpdateUserResponse
		r, err = c.UpdateUser(ctx, &usersv1.UpdateUserRequest{IdentityId: identityID(1)})
		users = append(users, r.GetUser())
	}
	if err == nil {
		var r *usersv1.GetMeResponse
		r, err = c.GetMe(ctx, &usersv1.GetMeRequest{})
		users = append(users, r.GetUser())
	}
	if err != nil {
		t.Fatal(err)
	}
	for i, u := range users {
		if u.GetMeta().GetId() == "" || u.GetOidcSubject() == "" || u.GetName() == "" || u.GetUsername() == "" {
			t.Errorf("answer %d: %v, want a whole user", i, u)
		}
	}
	batch, err := c.BatchGetUsers(ctx, &usersv1.BatchGetUsersRequest{IdentityIds: []string{identityID(1)}})
	if err != nil || len(batch.GetUsers()) != batchSize {
		t.Errorf("BatchGetUsers: %d users, %v; want %d, as a full batch's answer", len(batch.GetUsers()), err, batchSize)
	}
	found, err := c.SearchUsers(ctx, &usersv1.SearchUsersRequest{Prefix: "user1"})
	if err != nil || len(found.GetUsers()) != searchLimit || found.GetUsers()[0].GetUsername() == "" {
		t.Errorf("SearchUsers: %v, %v; want %d whole entries, as a full search's answer", found, err, searchLimit)
	}
	page, err := c.ListUsers(ctx, &usersv1.ListUsersRequest{})
	if err != nil || len(page.GetUsers()) != listPageSize || page.GetNextPageToken() == "" {
		t.Errorf("ListUsers: %d users, %v; want %d and a next page, as a full page's answer", len(page.GetUsers()), err, listPageSize)
	}
	resolved, err := c.ResolveAPIToken(ctx, &usersv1.ResolveAPITokenRequest{TokenHash: tokenHash(1)})
	if tok := resolved.GetToken(); err != nil || resolved.GetIdentityId() == "" || tok.GetId() == "" || tok.GetName() == "" ||
		tok.GetTokenPrefix() == "" || tok.GetLastUsedAt() == nil {
		t.Errorf("ResolveAPIToken: %v, %v; want an owner and a whole token, just used", resolved, err)
	}
}

// TestPgbenchRunsEveryStatement runs pgbench on each workload's two
// statements, bound as the bench binds them, for a second each: a
// statement the binding does not fit, or first logins that collide with
// an earlier run's, fail here rather than in the middle of a bench.
func TestPgbenchRunsEveryStatement(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	pgbench, err := findPgbench()
	if err != nil {
		t.Fatal(err)
	}
	stmts, err := queries(filepath.Join("..", "..", "sql", "queries", "users.sql"))
	if err != nil {
		t.Fatal(err)
	}
	dbURL := testdb.URL(t)
	cfg := config{users: 1000, concurrency: 2, duration: time.Second}
	if err := seed(ctx, testdb.AsSuperuser(t, dbURL), cfg.users); err != nil {
		t.Fatal(err)
	}
	b := &bench{cfg: cfg, db: &database{URL: dbURL}, pgbench: pgbench}
	for _, w := range workloads {
		for _, sql := range []string{w.cheapest, stmts[w.query]} {
			r, err := b.measureStatement(ctx, w, sql)
			if err != nil {
				t.Fatalf("%s: %v", w.name, err)
			}
			if r.Pgbench.Transactions == 0 || r.Pgbench.Failed > 0 {
				t.Errorf("%s: %d transactions, %d failed: %s", w.name, r.Pgbench.Transactions, r.Pgbench.Failed, oneLine(sql))
			}
		}
	}
}
