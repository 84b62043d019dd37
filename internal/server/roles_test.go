package server_test

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
	"github.com/agynio/users/internal/identity"
	"github.com/agynio/users/internal/server"
	"github.com/agynio/users/internal/testing/testdb"
)

// storedRole reads the users row's cluster_role as stored: "" for none
// (NULL), "admin" for an administrator.
func (e *env) storedRole(t *testing.T, identityID string) string {
	t.Helper()
	var role *string
	if err := e.conn.QueryRow(context.Background(), "SELECT cluster_role FROM users WHERE identity_id = $1", identityID).Scan(&role); err != nil {
		t.Fatalf("reading the stored role of %s: %v", identityID, err)
	}
	if role == nil {
		return ""
	}
	return *role
}

// makeAdmins stores the users as administrators directly, as an
// administrator's grant would, for tests that need administrators and no
// CLUSTER_ADMIN_SUBJECTS.
func (e *env) makeAdmins(t *testing.T, identityIDs ...string) {
	t.Helper()
	if _, err := e.conn.Exec(context.Background(), "UPDATE users SET cluster_role = 'admin' WHERE identity_id = ANY($1::uuid[])", identityIDs); err != nil {
		t.Fatalf("storing administrators: %v", err)
	}
}

// countAdmins is how many users are stored as administrators.
func (e *env) countAdmins(t *testing.T) int {
	t.Helper()
	var n int
	if err := e.conn.QueryRow(context.Background(), "SELECT count(*) FROM users WHERE cluster_role = 'admin'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

var (
	roleAdmin = usersv1.ClusterRole_CLUSTER_ROLE_ADMIN
	roleNone  = usersv1.ClusterRole_CLUSTER_ROLE_UNSPECIFIED
)

// GetUser, GetMe and UpdateMe answer with the effective role: the stored
// one, or administrator for a subject CLUSTER_ADMIN_SUBJECTS declares,
// whatever is stored for it.
func TestEffectiveClusterRoleIsReturned(t *testing.T) {
	t.Parallel()
	e := newEnvWithAdmins(t, "declared", "declared-unstored")
	declared := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "declared"})
	unstored := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "declared-unstored"})
	granted := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "granted"})
	plain := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "plain"})
	e.makeAdmins(t, granted.GetMeta().GetId())
	// As before PromoteDeclaredAdmins has run for a subject added to
	// CLUSTER_ADMIN_SUBJECTS.
	if _, err := e.conn.Exec(t.Context(), "UPDATE users SET cluster_role = NULL WHERE oidc_subject = 'declared-unstored'"); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		user *usersv1.User
		want usersv1.ClusterRole
	}{
		{"a declared administrator is an administrator", declared, roleAdmin},
		{"a declared administrator with no stored role is an administrator", unstored, roleAdmin},
		{"a stored administrator is an administrator", granted, roleAdmin},
		{"a user without a role has none", plain, roleNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			id := tt.user.GetMeta().GetId()
			ctx := asCaller(t.Context(), id)
			got, err := e.client.GetUser(t.Context(), &usersv1.GetUserRequest{IdentityId: id})
			if err != nil {
				t.Fatal(err)
			}
			if r := got.GetClusterRole(); r != tt.want {
				t.Errorf("GetUser: cluster_role = %s, want %s", r, tt.want)
			}
			me, err := e.client.GetMe(ctx, &usersv1.GetMeRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if r := me.GetClusterRole(); r != tt.want {
				t.Errorf("GetMe: cluster_role = %s, want %s", r, tt.want)
			}
			updated, err := e.client.UpdateMe(ctx, &usersv1.UpdateMeRequest{Name: proto.String("renamed")})
			if err != nil {
				t.Fatal(err)
			}
			if r := updated.GetClusterRole(); r != tt.want {
				t.Errorf("UpdateMe: cluster_role = %s, want %s", r, tt.want)
			}
		})
	}
}

// An administrator grants the role with UpdateUser or CreateUser and
// takes it away with UpdateUser; the role is stored and acts at once.
func TestAdministratorGrantsAndRevokesTheRole(t *testing.T) {
	t.Parallel()
	e := newEnvWithAdmins(t, "root")
	asRoot := e.admin(t, "root")
	u := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "promoted", Name: "Kept"})
	id := u.GetMeta().GetId()
	asUser := asCaller(t.Context(), id)

	roleOf := func(t *testing.T, id string) usersv1.ClusterRole {
		t.Helper()
		got, err := e.client.GetUser(t.Context(), &usersv1.GetUserRequest{IdentityId: id})
		if err != nil {
			t.Fatal(err)
		}
		return got.GetClusterRole()
	}

	resp, err := e.client.UpdateUser(asRoot, &usersv1.UpdateUserRequest{IdentityId: id, ClusterRole: &roleAdmin})
	if err != nil {
		t.Fatalf("granting: %v", err)
	}
	if resp.GetUser().GetName() != "Kept" {
		t.Errorf("granting changed the name: %v", resp.GetUser())
	}
	if r := roleOf(t, id); r != roleAdmin {
		t.Errorf("after the grant: cluster_role = %s, want admin", r)
	}
	if r := e.storedRole(t, id); r != "admin" {
		t.Errorf("after the grant: stored role = %q, want admin", r)
	}
	if _, err := e.client.ListUsers(asUser, &usersv1.ListUsersRequest{}); err != nil {
		t.Errorf("ListUsers by the new administrator: %v", err)
	}

	if _, err := e.client.UpdateUser(asRoot, &usersv1.UpdateUserRequest{IdentityId: id, ClusterRole: &roleNone}); err != nil {
		t.Fatalf("revoking: %v", err)
	}
	if r := roleOf(t, id); r != roleNone {
		t.Errorf("after the revocation: cluster_role = %s, want none", r)
	}
	if r := e.storedRole(t, id); r != "" {
		t.Errorf("after the revocation: stored role = %q, want none", r)
	}
	_, err = e.client.ListUsers(asUser, &usersv1.ListUsersRequest{})
	wantCode(t, err, codes.PermissionDenied)

	for _, tt := range []struct {
		subject    string
		role       usersv1.ClusterRole
		wantStored string
	}{
		{"created-admin", roleAdmin, "admin"},
		{"created-user", roleNone, ""},
	} {
		created, err := e.client.CreateUser(asRoot, &usersv1.CreateUserRequest{OidcSubject: tt.subject, ClusterRole: tt.role})
		if err != nil {
			t.Fatalf("CreateUser(%s): %v", tt.role, err)
		}
		if r := roleOf(t, created.GetUser().GetMeta().GetId()); r != tt.role {
			t.Errorf("CreateUser(%s): cluster_role = %s", tt.role, r)
		}
		if r := e.storedRole(t, created.GetUser().GetMeta().GetId()); r != tt.wantStored {
			t.Errorf("CreateUser(%s): stored role = %q, want %q", tt.role, r, tt.wantStored)
		}
	}
}

// CLUSTER_ADMIN_SUBJECTS' administrators stay administrators: no one
// demotes or deletes them through the API, another administrator
// included, and neither do they themselves.
func TestDeclaredAdministratorCannotBeDemotedOrDeleted(t *testing.T) {
	t.Parallel()
	e := newEnvWithAdmins(t, "root")
	root := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "root", Name: "Root"})
	other := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "other"})
	e.makeAdmins(t, other.GetMeta().GetId())
	asRoot, asOther := asCaller(t.Context(), root.GetMeta().GetId()), asCaller(t.Context(), other.GetMeta().GetId())
	rootID := root.GetMeta().GetId()

	tests := []struct {
		name string
		call func() error
	}{
		{"another administrator demoting it", func() error {
			_, err := e.client.UpdateUser(asOther, &usersv1.UpdateUserRequest{IdentityId: rootID, ClusterRole: &roleNone, Name: proto.String("Demoted")})
			return err
		}},
		{"another administrator deleting it", func() error {
			_, err := e.client.DeleteUser(asOther, &usersv1.DeleteUserRequest{IdentityId: rootID})
			return err
		}},
		{"demoting itself", func() error {
			_, err := e.client.UpdateUser(asRoot, &usersv1.UpdateUserRequest{IdentityId: rootID, ClusterRole: &roleNone})
			return err
		}},
		{"deleting itself", func() error {
			_, err := e.client.DeleteUser(asRoot, &usersv1.DeleteUserRequest{IdentityId: rootID})
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			wantCode(t, tt.call(), codes.FailedPrecondition)
		})
	}
	t.Cleanup(func() {
		got, err := e.client.GetUser(context.Background(), &usersv1.GetUserRequest{IdentityId: rootID})
		if err != nil {
			t.Fatalf("the declared administrator is gone: %v", err)
		}
		if got.GetUser().GetName() != "Root" {
			t.Errorf("a refused demotion wrote the rest of its request: %v", got.GetUser())
		}
		if r := e.storedRole(t, rootID); r != "admin" {
			t.Errorf("declared administrator's stored role = %q, want admin", r)
		}
	})
}

// Without CLUSTER_ADMIN_SUBJECTS, the API never takes away the last
// stored administrator, by demotion or deletion; one of two may go.
func TestLastAdministratorCannotBeDemotedOrDeleted(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	first := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "first"})
	firstID := first.GetMeta().GetId()
	e.makeAdmins(t, firstID)
	asFirst := asCaller(t.Context(), firstID)
	plain := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "plain"})

	demote := func(ctx context.Context, id string) error {
		_, err := e.client.UpdateUser(ctx, &usersv1.UpdateUserRequest{IdentityId: id, ClusterRole: &roleNone})
		return err
	}
	del := func(ctx context.Context, id string) error {
		_, err := e.client.DeleteUser(ctx, &usersv1.DeleteUserRequest{IdentityId: id})
		return err
	}

	wantCode(t, demote(asFirst, firstID), codes.FailedPrecondition)
	wantCode(t, del(asFirst, firstID), codes.FailedPrecondition)
	if r := e.storedRole(t, firstID); r != "admin" {
		t.Fatalf("the last administrator's stored role = %q, want admin", r)
	}
	// What is not an administrator's removal goes ahead meanwhile.
	if err := demote(asFirst, plain.GetMeta().GetId()); err != nil {
		t.Errorf("taking no role from a user without one: %v", err)
	}
	if err := del(asFirst, plain.GetMeta().GetId()); err != nil {
		t.Errorf("deleting a user without a role: %v", err)
	}

	// With a second administrator, the first may go, and then the second
	// is the last.
	second := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "second"})
	secondID := second.GetMeta().GetId()
	asSecond := asCaller(t.Context(), secondID)
	if _, err := e.client.UpdateUser(asFirst, &usersv1.UpdateUserRequest{IdentityId: secondID, ClusterRole: &roleAdmin}); err != nil {
		t.Fatalf("granting: %v", err)
	}
	if err := demote(asSecond, firstID); err != nil {
		t.Fatalf("demoting one of two administrators: %v", err)
	}
	wantCode(t, demote(asSecond, secondID), codes.FailedPrecondition)
	wantCode(t, del(asSecond, secondID), codes.FailedPrecondition)

	if _, err := e.client.UpdateUser(asSecond, &usersv1.UpdateUserRequest{IdentityId: firstID, ClusterRole: &roleAdmin}); err != nil {
		t.Fatalf("granting again: %v", err)
	}
	if err := del(asFirst, secondID); err != nil {
		t.Fatalf("deleting one of two administrators: %v", err)
	}
	wantCode(t, del(asFirst, firstID), codes.FailedPrecondition)
	if n := e.countAdmins(t); n != 1 {
		t.Errorf("administrators = %d, want 1", n)
	}
}

// Two administrators, the only two, demoting each other at the same
// moment leave one: exactly one demotion succeeds. Each round meets in the
// database at a lock the test holds on both rows, so that both statements
// have passed the caller's check and wait for the rows together, as a
// real race at worst does; the statement that gets them second sees the
// first's demotion and is refused. The free race, without the test's
// lock, may also end with the loser no longer an administrator when its
// own check runs: PERMISSION_DENIED, just as safe.
func TestConcurrentDemotionsLeaveAnAdministrator(t *testing.T) {
	t.Parallel()
	const rounds = 20
	tests := []struct {
		name      string
		holdRows  bool
		loserWant []codes.Code
	}{
		{"meeting at the rows", true, []codes.Code{codes.FailedPrecondition}},
		{"racing freely", false, []codes.Code{codes.FailedPrecondition, codes.PermissionDenied}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			pool, err := pgxpool.New(t.Context(), testdb.WithQuery(t, testdb.URL(t), "pool_max_conns", "8"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(pool.Close)
			e := newEnvOn(t, pool)
			a := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "a"}).GetMeta().GetId()
			b := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "b"}).GetMeta().GetId()
			demote := func(caller, target string) error {
				_, err := e.client.UpdateUser(asCaller(t.Context(), caller), &usersv1.UpdateUserRequest{IdentityId: target, ClusterRole: &roleNone})
				return err
			}

			for round := range rounds {
				e.makeAdmins(t, a, b)
				var tx pgx.Tx
				if tt.holdRows {
					tx, err = pool.Begin(t.Context())
					if err != nil {
						t.Fatal(err)
					}
					if _, err := tx.Exec(t.Context(), "SELECT 1 FROM users WHERE identity_id = ANY($1::uuid[]) FOR UPDATE", []string{a, b}); err != nil {
						t.Fatal(err)
					}
				}
				var (
					wg    sync.WaitGroup
					start = make(chan struct{})
					errA  error // a demoting b
					errB  error // b demoting a
				)
				wg.Go(func() { <-start; errA = demote(a, b) })
				wg.Go(func() { <-start; errB = demote(b, a) })
				close(start)
				if tt.holdRows {
					waitForLockWaiters(t, pool, 2)
					if err := tx.Commit(t.Context()); err != nil {
						t.Fatal(err)
					}
				}
				wg.Wait()

				winner, loser, loserErr := a, b, errB
				if errA != nil {
					winner, loser, loserErr = b, a, errA
				}
				if (errA == nil) == (errB == nil) {
					t.Fatalf("round %d: a demoting b: %v; b demoting a: %v; want exactly one to succeed", round, errA, errB)
				}
				if code := status.Code(loserErr); !slices.Contains(tt.loserWant, code) {
					t.Fatalf("round %d: the refused demotion is %s (%v), want one of %v", round, code, loserErr, tt.loserWant)
				}
				if r := e.storedRole(t, winner); r != "admin" {
					t.Fatalf("round %d: the winner's stored role = %q, want admin", round, r)
				}
				if r := e.storedRole(t, loser); r != "" {
					t.Fatalf("round %d: the loser's stored role = %q, want none", round, r)
				}
			}
		})
	}
}

// waitForLockWaiters waits, for up to 10 s, until n of the database's
// sessions wait for a lock.
func waitForLockWaiters(t *testing.T, pool *pgxpool.Pool, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var waiting int
		if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions wait for a lock after 10 s, want %d", waiting, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A declared subject is stored as an administrator from its first login,
// and from CreateUser whatever role it asks for, so that it counts when
// the service makes sure an administrator is left; other subjects are
// stored with no role.
func TestDeclaredSubjectIsStoredAsAdministrator(t *testing.T) {
	t.Parallel()
	e := newEnvWithAdmins(t, "declared", "declared-later")
	declared := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "declared"})
	plain := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "plain"})
	created, err := e.client.CreateUser(asCaller(t.Context(), declared.GetMeta().GetId()), &usersv1.CreateUserRequest{OidcSubject: "declared-later", ClusterRole: roleNone})
	if err != nil {
		t.Fatal(err)
	}

	for _, tt := range []struct {
		name string
		id   string
		want string
	}{
		{"a declared subject's first login", declared.GetMeta().GetId(), "admin"},
		{"a declared subject's CreateUser with no role", created.GetUser().GetMeta().GetId(), "admin"},
		{"another subject's first login", plain.GetMeta().GetId(), ""},
	} {
		if got := e.storedRole(t, tt.id); got != tt.want {
			t.Errorf("%s: stored role = %q, want %q", tt.name, got, tt.want)
		}
	}
}

// PromoteDeclaredAdmins, at start-up, stores as administrators the users
// that CLUSTER_ADMIN_SUBJECTS now declares and that logged in before: only
// those, once.
func TestPromoteDeclaredAdmins(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	later := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "later-admin", Name: "Later"})
	already := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "already-admin"})
	bystander := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "bystander"})
	e.makeAdmins(t, already.GetMeta().GetId())

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	restarted := server.New(e.conn, identity.Local{}, log, server.WithDeclaredAdmins([]string{"later-admin", "already-admin", "never-logged-in"}))
	n, err := restarted.PromoteDeclaredAdmins(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("promoted %d users, want 1 (later-admin)", n)
	}
	for _, tt := range []struct {
		user *usersv1.User
		want string
	}{
		{later, "admin"},
		{already, "admin"},
		{bystander, ""},
	} {
		if got := e.storedRole(t, tt.user.GetMeta().GetId()); got != tt.want {
			t.Errorf("%s: stored role = %q, want %q", tt.user.GetOidcSubject(), got, tt.want)
		}
	}
	if n := e.countUsers(t); n != 3 {
		t.Errorf("users rows = %d, want 3: promotion creates no user", n)
	}
	got, err := e.client.GetUser(t.Context(), &usersv1.GetUserRequest{IdentityId: later.GetMeta().GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if !got.GetUser().GetMeta().GetUpdatedAt().AsTime().After(later.GetMeta().GetUpdatedAt().AsTime()) {
		t.Errorf("promotion did not move updated_at: %v -> %v", later.GetMeta().GetUpdatedAt().AsTime(), got.GetUser().GetMeta().GetUpdatedAt().AsTime())
	}

	// At the next start, there is nothing left to promote.
	if n, err := restarted.PromoteDeclaredAdmins(t.Context()); err != nil || n != 0 {
		t.Errorf("second PromoteDeclaredAdmins = %d, %v; want 0, nil", n, err)
	}
	// Nor with no declared administrators at all.
	if n, err := server.New(e.conn, identity.Local{}, log).PromoteDeclaredAdmins(t.Context()); err != nil || n != 0 {
		t.Errorf("PromoteDeclaredAdmins without declared administrators = %d, %v; want 0, nil", n, err)
	}
	if r := e.storedRole(t, already.GetMeta().GetId()); r != "admin" {
		t.Errorf("already-admin: stored role = %q after restarts, want admin", r)
	}
}
