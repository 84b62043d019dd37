package main

import (
	"context"
	"net/http"
	"path"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/agynio/users/internal/apitoken"
	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
	"github.com/agynio/users/internal/server"
	"github.com/agynio/users/internal/testing/testdb"
)

// upgradeAdmin is the administrator CLUSTER_ADMIN_SUBJECTS declares to both
// releases.
const upgradeAdmin = "https://issuer.example.com|upgrade-admin"

// TestPreviousReleaseServesTheNewSchema: the previous release, built from
// the git history (see previousRelease), serves on the schema of this
// tree's migrations, as its pods do while an upgrade rolls out and again
// after a rollback, which migrates nothing back. Its own "migrate up", which
// an Argo CD sync to the older revision runs as the PreSync hook, applies
// nothing and succeeds; it is ready (its readiness reads every column its
// queries read); and every RPC it has serves. Then this tree's binary
// serves what it wrote.
func TestPreviousReleaseServesTheNewSchema(t *testing.T) {
	t.Parallel()
	rev, why := previousRelease(t)
	t.Logf("previous release: %.12s, %s", rev, why)
	oldBin := buildRelease(t, rev)

	// This tree's migrations, applied, and the serving role's grants: the
	// previous release serves with the privileges this tree grants.
	dbURL := testdb.URL(t)
	ownerURL := testdb.AsOwner(t, dbURL)
	env := map[string]string{"DATABASE_URL": dbURL, "CLUSTER_ADMIN_SUBJECTS": upgradeAdmin}
	migrated := appliedMigrations(t, ownerURL)
	if res := runBinary(t, oldBin, map[string]string{"DATABASE_URL": ownerURL}, "migrate", "up"); res.code != 0 {
		t.Fatalf("the previous release's migrate up on the new schema: exit code %d\nstdout:\n%s\nstderr:\n%s", res.code, res.stdout, res.stderr)
	}
	if diff := cmp.Diff(migrated, appliedMigrations(t, ownerURL)); diff != "" {
		t.Fatalf("the previous release's migrate up changed the applied migrations (-before +after):\n%s", diff)
	}

	old, oldAddr := startServeBinary(t, oldBin, env)
	waitForStatus(t, old, "/readyz", http.StatusOK)
	served := &servedMethods{ok: map[string]bool{}}
	w := writeAsPreviousRelease(t, usersv1.NewUsersServiceClient(dialRecording(t, oldAddr, served)))
	if missing := served.missing(releaseRPCs(t, rev)); len(missing) > 0 {
		t.Errorf("the previous release has RPCs this test did not call on it successfully: %v; add them to writeAsPreviousRelease", missing)
	}
	// Its last uses of API tokens are written as it stops.
	old.terminate(t)
	if code := old.wait(t, waitTimeout); code != 0 {
		t.Fatalf("the previous release after SIGTERM: exit code %d", code)
	}
	if !releaseHasEvents(rev) {
		// A release before events writes none: after a rollback to it, its
		// pods' changes publish nothing (README: Events).
		conn, err := pgx.Connect(rpcContext(t), ownerURL)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		if n := outboxRows(t, conn); n != 0 {
			t.Errorf("a release without events left %d rows in the outbox", n)
		}
	}

	cur, addr := startServe(t, env)
	waitForStatus(t, cur, "/readyz", http.StatusOK)
	readAsThisRelease(t, usersv1.NewUsersServiceClient(dial(t, addr)), w)
}

// written is what the previous release wrote, as it answered.
type written struct {
	users       []*usersv1.User // every user it left, in identity id order
	roles       map[string]usersv1.ClusterRole
	deleted     string              // a user it deleted
	admin       string              // the declared administrator's id
	owner       string              // alice, who holds the tokens
	tokens      []*usersv1.APIToken // alice's, as it listed them
	kept        string              // the plaintext of the token in tokens
	revoked     string              // the plaintext of a token it revoked
	searched    []*usersv1.UserDirectoryEntry
	searchedFor string
	pageToken   string // its ListUsers token for the page after the first
	secondPage  []*usersv1.User
}

// writeAsPreviousRelease calls each RPC the previous release has, through
// users, as a short story of logins, reads, profile changes, provisioning
// and tokens, and returns what it wrote.
func writeAsPreviousRelease(t *testing.T, users usersv1.UsersServiceClient) written {
	t.Helper()
	ctx := rpcContext(t)
	as := func(id string) context.Context {
		return metadata.AppendToOutgoingContext(ctx, server.IdentityHeader, id)
	}
	w := written{roles: map[string]usersv1.ClusterRole{}}

	admin := createUser(t, users, &usersv1.ResolveOrCreateUserRequest{OidcSubject: upgradeAdmin, Name: "Admin"})
	w.admin = admin.GetMeta().GetId()
	aliceReq := &usersv1.ResolveOrCreateUserRequest{
		OidcSubject:       "https://issuer.example.com|upgrade-alice",
		Name:              "Alice",
		Email:             "alice@example.com",
		PhotoUrl:          "https://example.com/alice.png",
		PreferredUsername: proto.String("alice"),
		EmailVerified:     true,
	}
	alice := createUser(t, users, aliceReq)
	w.owner = alice.GetMeta().GetId()
	again, err := users.ResolveOrCreateUser(ctx, aliceReq)
	if err != nil || again.GetCreated() {
		t.Fatalf("returning login: created=%v, %v; want the stored user", again.GetCreated(), err)
	}
	wantSame(t, "returning login", alice, again.GetUser())

	got, err := users.GetUser(ctx, &usersv1.GetUserRequest{IdentityId: alice.GetMeta().GetId()})
	if err != nil {
		t.Fatalf("GetUser: %v", err)
	}
	wantSame(t, "GetUser", alice, got.GetUser())
	bySubject, err := users.GetUserByOIDCSubject(ctx, &usersv1.GetUserByOIDCSubjectRequest{OidcSubject: aliceReq.GetOidcSubject()})
	if err != nil {
		t.Fatalf("GetUserByOIDCSubject: %v", err)
	}
	wantSame(t, "GetUserByOIDCSubject", alice, bySubject.GetUser())
	batch, err := users.BatchGetUsers(ctx, &usersv1.BatchGetUsersRequest{IdentityIds: []string{alice.GetMeta().GetId(), admin.GetMeta().GetId()}})
	if err != nil {
		t.Fatalf("BatchGetUsers: %v", err)
	}
	wantSame(t, "BatchGetUsers", []*usersv1.User{alice, admin}, batch.GetUsers())

	updated, err := users.UpdateUser(ctx, &usersv1.UpdateUserRequest{
		IdentityId: alice.GetMeta().GetId(),
		Nickname:   proto.String("Al"),
		Email:      proto.String("alice@new.example.com"),
	})
	if err != nil {
		t.Fatalf("UpdateUser: %v", err)
	}
	if u := updated.GetUser(); u.GetNickname() != "Al" || u.GetEmail() != "alice@new.example.com" {
		t.Errorf("UpdateUser = %v, want the nickname and email set", u)
	}
	me, err := users.GetMe(as(w.owner), &usersv1.GetMeRequest{})
	if err != nil {
		t.Fatalf("GetMe: %v", err)
	}
	wantSame(t, "GetMe", updated.GetUser(), me.GetUser())
	renamed, err := users.UpdateMe(as(w.owner), &usersv1.UpdateMeRequest{Name: proto.String("Alice Before"), Username: proto.String("alice-before")})
	if err != nil {
		t.Fatalf("UpdateMe: %v", err)
	}
	alice = renamed.GetUser()
	w.searchedFor = "alice-b"
	search, err := users.SearchUsers(as(w.owner), &usersv1.SearchUsersRequest{Prefix: w.searchedFor})
	if err != nil {
		t.Fatalf("SearchUsers: %v", err)
	}
	w.searched = search.GetUsers()
	wantSame(t, "SearchUsers", []*usersv1.UserDirectoryEntry{{
		IdentityId: alice.GetMeta().GetId(), Username: "alice-before", Name: "Alice Before", PhotoUrl: alice.GetPhotoUrl(),
	}}, w.searched)

	bob, err := users.CreateUser(as(w.admin), &usersv1.CreateUserRequest{
		OidcSubject: "https://issuer.example.com|upgrade-bob",
		Name:        proto.String("Bob"),
		Nickname:    proto.String("B"),
		Username:    proto.String("bob"),
	})
	if err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	granted, err := users.UpdateUser(as(w.admin), &usersv1.UpdateUserRequest{
		IdentityId:  bob.GetUser().GetMeta().GetId(),
		ClusterRole: usersv1.ClusterRole_CLUSTER_ROLE_ADMIN.Enum(),
	})
	if err != nil {
		t.Fatalf("UpdateUser granting the administrator role: %v", err)
	}
	carol, err := users.CreateUser(as(w.admin), &usersv1.CreateUserRequest{OidcSubject: "https://issuer.example.com|upgrade-carol"})
	if err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	w.deleted = carol.GetUser().GetMeta().GetId()
	if _, err := users.DeleteUser(as(w.admin), &usersv1.DeleteUserRequest{IdentityId: w.deleted}); err != nil {
		t.Fatalf("DeleteUser: %v", err)
	}

	w.users = []*usersv1.User{admin, alice, granted.GetUser()}
	slices.SortFunc(w.users, func(a, b *usersv1.User) int { return strings.Compare(a.GetMeta().GetId(), b.GetMeta().GetId()) })
	w.roles[w.admin] = usersv1.ClusterRole_CLUSTER_ROLE_ADMIN
	w.roles[alice.GetMeta().GetId()] = usersv1.ClusterRole_CLUSTER_ROLE_UNSPECIFIED
	w.roles[granted.GetUser().GetMeta().GetId()] = usersv1.ClusterRole_CLUSTER_ROLE_ADMIN
	first, err := users.ListUsers(as(w.admin), &usersv1.ListUsersRequest{PageSize: 2})
	if err != nil {
		t.Fatalf("ListUsers: %v", err)
	}
	w.pageToken = first.GetNextPageToken()
	second, err := users.ListUsers(as(w.admin), &usersv1.ListUsersRequest{PageSize: 2, PageToken: w.pageToken})
	if err != nil {
		t.Fatalf("ListUsers, the second page: %v", err)
	}
	w.secondPage = second.GetUsers()
	wantSame(t, "ListUsers' two pages", w.users, append(first.GetUsers(), w.secondPage...))

	revoked, err := users.CreateAPIToken(as(w.owner), &usersv1.CreateAPITokenRequest{Name: "revoked before the upgrade"})
	if err != nil {
		t.Fatalf("CreateAPIToken: %v", err)
	}
	kept, err := users.CreateAPIToken(as(w.owner), &usersv1.CreateAPITokenRequest{Name: "kept across the upgrade"})
	if err != nil {
		t.Fatalf("CreateAPIToken: %v", err)
	}
	w.revoked, w.kept = revoked.GetPlaintextToken(), kept.GetPlaintextToken()
	if _, err := users.ResolveAPIToken(ctx, &usersv1.ResolveAPITokenRequest{TokenHash: apitoken.Hash(w.revoked)}); err != nil {
		t.Fatalf("ResolveAPIToken: %v", err)
	}
	if _, err := users.RevokeAPIToken(as(w.owner), &usersv1.RevokeAPITokenRequest{TokenId: revoked.GetToken().GetId()}); err != nil {
		t.Fatalf("RevokeAPIToken: %v", err)
	}
	if _, err := users.ResolveAPIToken(ctx, &usersv1.ResolveAPITokenRequest{TokenHash: apitoken.Hash(w.revoked)}); status.Code(err) != codes.NotFound {
		t.Fatalf("ResolveAPIToken of the revoked token: %v, want %s", err, codes.NotFound)
	}
	used, err := users.ResolveAPIToken(ctx, &usersv1.ResolveAPITokenRequest{TokenHash: apitoken.Hash(w.kept)})
	if err != nil {
		t.Fatalf("ResolveAPIToken: %v", err)
	}
	if used.GetToken().GetLastUsedAt() == nil {
		t.Errorf("ResolveAPIToken: no last_used_at")
	}
	list, err := users.ListAPITokens(as(w.owner), &usersv1.ListAPITokensRequest{})
	if err != nil {
		t.Fatalf("ListAPITokens: %v", err)
	}
	w.tokens = list.GetTokens()
	wantSame(t, "ListAPITokens", []*usersv1.APIToken{used.GetToken()}, w.tokens)
	return w
}

// readAsThisRelease reads through users, this tree's serve, what the
// previous release wrote, and finds it as that release answered it.
func readAsThisRelease(t *testing.T, users usersv1.UsersServiceClient, w written) {
	t.Helper()
	ctx := rpcContext(t)
	as := func(id string) context.Context {
		return metadata.AppendToOutgoingContext(ctx, server.IdentityHeader, id)
	}
	for _, u := range w.users {
		got, err := users.GetUser(ctx, &usersv1.GetUserRequest{IdentityId: u.GetMeta().GetId()})
		if err != nil {
			t.Fatalf("GetUser(%s): %v", u.GetUsername(), err)
		}
		wantSame(t, "GetUser("+u.GetUsername()+")", &usersv1.GetUserResponse{User: u, ClusterRole: w.roles[u.GetMeta().GetId()]}, got)
	}
	if _, err := users.GetUser(ctx, &usersv1.GetUserRequest{IdentityId: w.deleted}); status.Code(err) != codes.NotFound {
		t.Errorf("GetUser of the user it deleted: %v, want %s", err, codes.NotFound)
	}
	all, err := users.ListUsers(as(w.admin), &usersv1.ListUsersRequest{})
	if err != nil {
		t.Fatalf("ListUsers: %v", err)
	}
	wantSame(t, "ListUsers", w.users, all.GetUsers())
	// A client that walks the list while the pods roll over.
	second, err := users.ListUsers(as(w.admin), &usersv1.ListUsersRequest{PageSize: 2, PageToken: w.pageToken})
	if err != nil {
		t.Fatalf("ListUsers with the previous release's page token: %v", err)
	}
	wantSame(t, "ListUsers' second page, by the previous release's token", w.secondPage, second.GetUsers())
	search, err := users.SearchUsers(as(w.owner), &usersv1.SearchUsersRequest{Prefix: w.searchedFor})
	if err != nil {
		t.Fatalf("SearchUsers: %v", err)
	}
	wantSame(t, "SearchUsers", w.searched, search.GetUsers())

	tokens, err := users.ListAPITokens(as(w.owner), &usersv1.ListAPITokensRequest{})
	if err != nil {
		t.Fatalf("ListAPITokens: %v", err)
	}
	// last_used_at included: the previous release wrote its use as it stopped.
	wantSame(t, "ListAPITokens", w.tokens, tokens.GetTokens())
	resolved, err := users.ResolveAPIToken(ctx, &usersv1.ResolveAPITokenRequest{TokenHash: apitoken.Hash(w.kept)})
	if err != nil {
		t.Fatalf("ResolveAPIToken of the token it issued: %v", err)
	}
	if resolved.GetIdentityId() != w.owner {
		t.Errorf("ResolveAPIToken: owner %s, want %s", resolved.GetIdentityId(), w.owner)
	}
	if _, err := users.ResolveAPIToken(ctx, &usersv1.ResolveAPITokenRequest{TokenHash: apitoken.Hash(w.revoked)}); status.Code(err) != codes.NotFound {
		t.Errorf("ResolveAPIToken of the token it revoked: %v, want %s", err, codes.NotFound)
	}
}

// wantSame fails t if got differs from want.
func wantSame(t *testing.T, what string, want, got any) {
	t.Helper()
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("%s (-want +got):\n%s", what, diff)
	}
}

// servedMethods records the UsersService methods that answered OK.
type servedMethods struct {
	mu sync.Mutex
	ok map[string]bool
}

func (s *servedMethods) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	err := invoker(ctx, method, req, reply, cc, opts...)
	if err == nil && path.Dir(method) == "/"+usersService {
		s.mu.Lock()
		s.ok[path.Base(method)] = true
		s.mu.Unlock()
	}
	return err
}

// missing returns those of rpcs that never answered OK.
func (s *servedMethods) missing(rpcs []string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, m := range rpcs {
		if !s.ok[m] {
			out = append(out, m)
		}
	}
	return out
}

// dialRecording dials addr as dial does, recording in s what answered.
func dialRecording(t *testing.T, addr string, s *servedMethods) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithUnaryInterceptor(s.intercept))
	if err != nil {
		t.Fatalf("grpc.NewClient(%q): %v", addr, err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// releaseHasEvents reports whether rev has the migration that made every
// change write its event.
func releaseHasEvents(rev string) bool {
	_, err := git("cat-file", "-e", rev+":sql/migrations/20261130000008_outbox.sql")
	return err == nil
}
