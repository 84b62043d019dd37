package main

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
	"github.com/agynio/users/internal/testing/testdb"
)

// TestMigrateUpGrantsTheServeRole: "users migrate up" run as the owner
// with DB_SERVE_ROLE grants that role what "users serve" needs, and serve
// connected as it answers; without DB_SERVE_ROLE it grants nothing, and
// serve as that role is refused by the database.
func TestMigrateUpGrantsTheServeRole(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		env  map[string]string
		want codes.Code
	}{
		{"with DB_SERVE_ROLE", map[string]string{"DB_SERVE_ROLE": testdb.ServeRole}, codes.OK},
		{"without", nil, codes.Internal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ownerURL := testdb.EmptyURL(t)
			env := map[string]string{"DATABASE_URL": ownerURL}
			for k, v := range tc.env {
				env[k] = v
			}
			if res := runUsers(t, env, "migrate", "up"); res.code != 0 {
				t.Fatalf("migrate up: exit code %d\n%s", res.code, res.stderr)
			}
			_, addr := startServe(t, map[string]string{"DATABASE_URL": testdb.AsServe(t, ownerURL)})
			users := usersv1.NewUsersServiceClient(dial(t, addr))
			_, err := users.ResolveOrCreateUser(rpcContext(t), &usersv1.ResolveOrCreateUserRequest{OidcSubject: "granted", Name: "Granted"})
			if got := status.Code(err); got != tc.want {
				t.Errorf("ResolveOrCreateUser as %s: %v, want %s", testdb.ServeRole, err, tc.want)
			}
		})
	}
}

// TestMigrateUpRefusesAnUnknownServeRole: a DB_SERVE_ROLE that names no
// role stops migrate up as a configuration error, with exit code 2 and an
// error naming the variable and the role, before anything is migrated.
func TestMigrateUpRefusesAnUnknownServeRole(t *testing.T) {
	t.Parallel()
	dbURL := testdb.EmptyURL(t)
	res := runUsers(t, map[string]string{"DATABASE_URL": dbURL, "DB_SERVE_ROLE": "users_nobody"}, "migrate", "up")
	if res.code != 2 {
		t.Errorf("exit code %d, want 2", res.code)
	}
	if !strings.Contains(res.stderr, `DB_SERVE_ROLE: role "users_nobody" does not exist`) {
		t.Errorf("stderr does not name DB_SERVE_ROLE and the role:\n%s", res.stderr)
	}
	if strings.Contains(res.stdout, "Applying") {
		t.Errorf("migrate up applied migrations with a role it refused:\n%s", res.stdout)
	}
}
