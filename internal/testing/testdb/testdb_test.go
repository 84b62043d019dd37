package testdb

import (
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestMain(m *testing.M) { os.Exit(Run(m)) }

// The test set-up's run of sql/roles.sql leaves the roles the service
// runs as in production (users_owner, users_serve) as they were on a
// server that has them: a developer's DATABASE_URL may name one.
func TestRolesLeaveTheServiceRolesAlone(t *testing.T) {
	start(t)
	ctx := t.Context()
	for _, role := range []string{"users_owner", "users_serve"} {
		var exists bool
		if err := admin.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)", role).Scan(&exists); err != nil {
			t.Fatal(err)
		}
		if exists {
			continue // a server's own, or this package's: compared as it is
		}
		if _, err := admin.Exec(ctx, "CREATE ROLE "+role+" LOGIN PASSWORD 'production'"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { admin.Exec(ctx, "DROP ROLE "+role) }) //nolint:errcheck // a leftover role without rights is harmless
		if _, err := admin.Exec(ctx, "ALTER ROLE "+role+" SET work_mem = '1MB'"); err != nil {
			t.Fatal(err)
		}
	}
	// The password's SCRAM hash has a salt of its own each time it is set:
	// setting the same password again changes it too.
	const query = `SELECT a.rolname || ': ' || a.rolcanlogin || ' ' || coalesce(a.rolpassword, '') || ' ' || coalesce(array_to_string(r.rolconfig, ','), '')
		FROM pg_authid a JOIN pg_roles r USING (oid)
		WHERE a.rolname IN ('users_owner', 'users_serve') ORDER BY a.rolname`
	snapshot := func() []string {
		t.Helper()
		rows, err := admin.Query(ctx, query)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			out = append(out, s)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	before := snapshot()
	if err := ensureRoles(ctx); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(before, snapshot()); diff != "" {
		t.Errorf("the roles users_owner and users_serve changed (-before +after):\n%s", diff)
	}
}
