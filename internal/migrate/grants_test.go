package migrate_test

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/agynio/users/internal/config"
	"github.com/agynio/users/internal/migrate"
	"github.com/agynio/users/internal/testing/testdb"
)

// servePrivileges is every privilege ServeRole holds on the schema's
// objects, its own or PUBLIC's, as sql/grants.sql should leave them. A
// grant added there must be added here too, on purpose.
var servePrivileges = []string{
	"schema public: USAGE",
	"table api_tokens: DELETE",
	"table api_tokens: INSERT (expires_at, id, identity_id, name, token_hash, token_prefix)",
	"table api_tokens: SELECT",
	"table api_tokens: UPDATE (last_used_at)",
	"table outbox: DELETE",
	"table outbox: INSERT (actor_identity_id, actor_service, changed_fields, data, identity_id, kind)",
	"table outbox: SELECT",
	"table users: DELETE",
	"table users: INSERT (cluster_role, email, email_verified, identity_id, name, nickname, oidc_subject, photo_url, username)",
	"table users: SELECT",
	"table users: UPDATE (cluster_role, email, name, nickname, photo_url, updated_at, username)",
	"function outbox_uuidv7(): EXECUTE",
	"function users_free_username(text): EXECUTE",
	"function users_normalize_username(text): EXECUTE",
	"function users_username_base(text,text,text,text): EXECUTE",
}

// privilegesQuery lists what role $1 may do in schema public, by the
// has_*_privilege functions, which count PUBLIC's grants too: whole-table
// privileges, and the columns of a privilege held on some columns only.
const privilegesQuery = `
SELECT 'schema public: ' || p
FROM unnest(ARRAY['USAGE', 'CREATE']) p
WHERE has_schema_privilege($1, 'public', p)
UNION ALL
SELECT format('table %s: %s', c.relname, p)
FROM pg_class c, unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) p
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND has_table_privilege($1, c.oid, p)
UNION ALL
SELECT format('table %s: %s (%s)', c.relname, p, string_agg(a.attname, ', ' ORDER BY a.attname))
FROM pg_class c
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped,
     unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'REFERENCES']) p
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND NOT has_table_privilege($1, c.oid, p)
  AND has_column_privilege($1, c.oid, a.attnum, p)
GROUP BY c.relname, p
UNION ALL
SELECT format('sequence %s: %s', c.relname, p)
FROM pg_class c, unnest(ARRAY['USAGE', 'SELECT', 'UPDATE']) p
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'S'
  AND has_sequence_privilege($1, c.oid, p)
UNION ALL
SELECT format('function %s: EXECUTE', f.oid::regprocedure)
FROM pg_proc f
WHERE f.pronamespace = 'public'::regnamespace
  AND has_function_privilege($1, f.oid, 'EXECUTE')`

// privileges returns what role may do in the database at dbURL.
func privileges(t *testing.T, dbURL, role string) []string {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), testdb.AsSuperuser(t, dbURL))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(t.Context()))
	rows, err := conn.Query(t.Context(), privilegesQuery, role)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return sorted(got)
}

// The role the service connects as holds exactly the privileges of
// sql/grants.sql, on a database migrated with DB_SERVE_ROLE as the test
// databases are.
func TestServeRoleHoldsExactlyItsGrants(t *testing.T) {
	t.Parallel()
	got := privileges(t, testdb.URL(t), testdb.ServeRole)
	if diff := cmp.Diff(sorted(servePrivileges), got); diff != "" {
		t.Errorf("privileges of %s (-want +got):\n%s", testdb.ServeRole, diff)
	}
}

// The service's role cannot empty a table, change the schema, read the
// migrations' bookkeeping or run the migrations' own routines: each is
// refused as insufficient_privilege.
func TestServeRoleCannotChangeTheSchema(t *testing.T) {
	t.Parallel()
	conn, err := pgx.Connect(t.Context(), testdb.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(t.Context()))

	for _, stmt := range []string{
		"TRUNCATE users",
		"TRUNCATE outbox",
		"CREATE TABLE notes (note text)",
		"CREATE FUNCTION one() RETURNS integer LANGUAGE sql AS 'SELECT 1'",
		"ALTER TABLE users ADD COLUMN note text",
		"ALTER TABLE api_tokens DROP COLUMN last_used_at",
		"CREATE INDEX users_name ON users (name)",
		"DROP TABLE outbox",
		"SELECT version FROM schema_migrations",
		"INSERT INTO schema_migrations (version) VALUES ('99999999999999')",
		"CREATE TRIGGER noop BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION users_assign_username()",
		"CALL users_backfill_usernames()",
		"UPDATE users SET oidc_subject = 'someone else'",
		"UPDATE api_tokens SET token_hash = repeat('0', 64)",
		"INSERT INTO outbox (seq, kind, identity_id, actor_service, data) OVERRIDING SYSTEM VALUE VALUES (1, 'user.created', gen_random_uuid(), 'x', '{}')",
	} {
		_, err := conn.Exec(t.Context(), stmt)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != pgerrcode.InsufficientPrivilege {
			t.Errorf("%s: %v, want insufficient_privilege (42501)", stmt, err)
		}
	}
}

// "users migrate up" with DB_SERVE_ROLE grants again what was revoked by
// hand, and revokes what was granted beyond grants.sql, to the role or to
// PUBLIC.
func TestUpAndGrantRestoresTheGrants(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	serveURL := testdb.URL(t)
	ownerURL := testdb.AsOwner(t, serveURL)
	owner, err := pgx.Connect(ctx, ownerURL)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close(context.WithoutCancel(ctx))
	role := pgx.Identifier{testdb.ServeRole}.Sanitize()
	for _, stmt := range []string{
		"REVOKE SELECT ON users FROM " + role,
		"REVOKE UPDATE (last_used_at) ON api_tokens FROM " + role,
		"GRANT TRUNCATE ON outbox TO " + role,
		"GRANT ALL ON schema_migrations TO " + role,
		"GRANT SELECT ON schema_migrations TO PUBLIC",
		"GRANT TRUNCATE ON users TO PUBLIC",
	} {
		if _, err := owner.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	if diff := cmp.Diff(sorted(servePrivileges), privileges(t, serveURL, testdb.ServeRole)); diff == "" {
		t.Fatal("the privileges changed by hand are those of grants.sql: the test changes nothing")
	}

	if err := migrate.UpAndGrant(ctx, ownerURL, testdb.ServeRole, io.Discard); err != nil {
		t.Fatalf("UpAndGrant: %v", err)
	}
	if diff := cmp.Diff(sorted(servePrivileges), privileges(t, serveURL, testdb.ServeRole)); diff != "" {
		t.Errorf("privileges of %s after migrate up (-want +got):\n%s", testdb.ServeRole, diff)
	}
}

// An older release's "migrate up" with DB_SERVE_ROLE, on a newer
// release's schema (a rollback's, or an Argo CD sync back's PreSync
// hook), leaves the role's grants as the newer release made them, which
// its triggers may need, and says so.
func TestUpAndGrantLeavesANewerReleasesGrants(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	serveURL := testdb.URL(t)
	ownerURL := testdb.AsOwner(t, serveURL)
	owner, err := pgx.Connect(ctx, ownerURL)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close(context.WithoutCancel(ctx))
	role := pgx.Identifier{testdb.ServeRole}.Sanitize()
	// A newer release's migration, and grants that differ from this
	// release's.
	for _, stmt := range []string{
		"INSERT INTO schema_migrations (version) VALUES ('99991231000000')",
		"REVOKE SELECT ON users FROM " + role,
		"GRANT TRUNCATE ON outbox TO " + role,
	} {
		if _, err := owner.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	newer := privileges(t, serveURL, testdb.ServeRole)

	var log strings.Builder
	if err := migrate.UpAndGrant(ctx, ownerURL, testdb.ServeRole, &log); err != nil {
		t.Fatalf("UpAndGrant: %v", err)
	}
	if diff := cmp.Diff(newer, privileges(t, serveURL, testdb.ServeRole)); diff != "" {
		t.Errorf("privileges of %s changed on a newer release's schema (-before +after):\n%s", testdb.ServeRole, diff)
	}
	if want := "the schema is a newer release's (migrations 99991231000000,"; !strings.Contains(log.String(), want) {
		t.Errorf("migrate up's output does not say %q:\n%s", want, log.String())
	}
}

// A DB_SERVE_ROLE that grants.sql cannot mean is refused, as a
// configuration error naming the variable, before any migration runs: a
// role that does not exist; the role migrate itself connects as, which
// would revoke its own rights; and roles no grant limits: a superuser,
// and a member of the tables' owner.
func TestUpAndGrantRefusesABadServeRole(t *testing.T) {
	t.Parallel()
	server := testdb.ServerURL(t)
	superuser, err := pgx.Connect(t.Context(), server)
	if err != nil {
		t.Fatal(err)
	}
	defer superuser.Close(context.WithoutCancel(t.Context()))
	member := "users_member_" + randomHex(6)
	if _, err := superuser.Exec(t.Context(), "CREATE ROLE "+member+" IN ROLE "+pgx.Identifier{testdb.OwnerRole}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		superuser.Exec(context.Background(), "DROP ROLE IF EXISTS "+member) //nolint:errcheck // a leftover role without rights is harmless
	})
	tests := []struct {
		name string
		role string
		want string
	}{
		{"a role that does not exist", "users_nobody", `DB_SERVE_ROLE: role "users_nobody" does not exist`},
		{"the role migrate connects as", testdb.OwnerRole, `DB_SERVE_ROLE: "` + testdb.OwnerRole + `" is the role migrate connects as`},
		{"a superuser", superuser.Config().User, `DB_SERVE_ROLE: "` + superuser.Config().User + `" is a superuser`},
		{"a member of the tables' owner", member, `DB_SERVE_ROLE: "` + member + `" is a member of "` + testdb.OwnerRole + `"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			databaseURL := testdb.EmptyURL(t)
			err := migrate.UpAndGrant(t.Context(), databaseURL, tt.role, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !config.IsError(err) {
				t.Fatalf("UpAndGrant with %q: %v, want a configuration error saying %q", tt.role, err, tt.want)
			}
			conn, err := pgx.Connect(t.Context(), databaseURL)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(context.WithoutCancel(t.Context()))
			var touched bool
			if err := conn.QueryRow(t.Context(), "SELECT to_regclass('public.schema_migrations') IS NOT NULL OR to_regclass('public.users') IS NOT NULL").Scan(&touched); err != nil {
				t.Fatal(err)
			}
			if touched {
				t.Error("the database was migrated although the role was refused")
			}
		})
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
