package migrate_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/agynio/users/internal/db"
	"github.com/agynio/users/internal/migrate"
	"github.com/agynio/users/internal/testing/pgtest"
	"github.com/agynio/users/internal/testing/testdb"
	usersql "github.com/agynio/users/sql"
)

// sql/roles.sql, run by psql as a DBA would (twice: the second run must
// change nothing that matters, and take back what was granted to PUBLIC
// since), makes a database that migrate up, as the owner role with
// DB_SERVE_ROLE naming the serve role, migrates and serve, as the serve
// role, works on; with each role's settings, and no connections,
// temporary tables or CREATE on the schema for anyone but the two roles.
// The roles are the tests' own (-v owner_role, -v serve_role), the
// passwords come from the environment.
func TestRolesSQL(t *testing.T) {
	t.Parallel()
	psql := findPSQL(t)
	ctx := t.Context()
	server := testdb.ServerURL(t)
	name := "users_roles_" + randomHex(6)
	superuser, err := pgx.Connect(ctx, server)
	if err != nil {
		t.Fatal(err)
	}
	defer superuser.Close(context.WithoutCancel(ctx))
	t.Cleanup(func() {
		superuser.Exec(context.WithoutCancel(ctx), "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)") //nolint:errcheck // a leftover database is harmless
	})

	dbURL, err := testdb.WithDatabase(server, name)
	if err != nil {
		t.Fatal(err)
	}
	// The passwords the other tests' connections use: the server is
	// shared with them.
	runRolesSQL(t, psql, server, "database="+name, "owner_role="+testdb.OwnerRole, "serve_role="+testdb.ServeRole)
	// What PostgreSQL 14 and older grant PUBLIC in a new database, and a
	// DBA might since: the second run takes it back.
	inDatabase, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{
		"GRANT CREATE ON SCHEMA public TO PUBLIC",
		"GRANT CONNECT, TEMPORARY ON DATABASE " + pgx.Identifier{name}.Sanitize() + " TO PUBLIC",
	} {
		if _, err := inDatabase.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	inDatabase.Close(ctx) //nolint:errcheck // a failed close leaves a session behind, dropped with the database
	runRolesSQL(t, psql, server, "database="+name, "owner_role="+testdb.OwnerRole, "serve_role="+testdb.ServeRole)

	var owner, encoding, schemaOwner string
	var publicConnect, publicTemp, serveConnect, publicCreate bool
	err = superuser.QueryRow(ctx, `
		SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding),
		       has_database_privilege('public', oid, 'CONNECT'),
		       has_database_privilege('public', oid, 'TEMPORARY'),
		       has_database_privilege($2, oid, 'CONNECT')
		FROM pg_database WHERE datname = $1`, name, testdb.ServeRole).Scan(&owner, &encoding, &publicConnect, &publicTemp, &serveConnect)
	if err != nil {
		t.Fatalf("the database %s: %v", name, err)
	}
	if owner != testdb.OwnerRole || encoding != "UTF8" || publicConnect || publicTemp || !serveConnect {
		t.Errorf("database owned by %s, encoding %s, connections for all %v, temporary tables for all %v, connections for %s %v; want %s, UTF8, false, false, true",
			owner, encoding, publicConnect, publicTemp, testdb.ServeRole, serveConnect, testdb.OwnerRole)
	}
	ownerURL, serveURL := testdb.AsOwner(t, dbURL), testdb.AsServe(t, dbURL)
	asOwner, err := pgx.Connect(ctx, ownerURL)
	if err != nil {
		t.Fatal(err)
	}
	defer asOwner.Close(context.WithoutCancel(ctx))
	err = asOwner.QueryRow(ctx, `
		SELECT pg_get_userbyid(nspowner), has_schema_privilege('public', oid, 'CREATE')
		FROM pg_namespace WHERE nspname = 'public'`).Scan(&schemaOwner, &publicCreate)
	if err != nil {
		t.Fatal(err)
	}
	if schemaOwner != testdb.OwnerRole || publicCreate {
		t.Errorf("schema public owned by %s, CREATE for all %v; want %s, false", schemaOwner, publicCreate, testdb.OwnerRole)
	}
	wantSettings(t, asOwner, map[string]string{"lock_timeout": "2s"})

	if err := migrate.UpAndGrant(ctx, ownerURL, testdb.ServeRole, io.Discard); err != nil {
		t.Fatalf("migrate up as %s: %v", testdb.OwnerRole, err)
	}

	asServe, err := db.Connect(ctx, serveURL)
	if err != nil {
		t.Fatal(err)
	}
	defer asServe.Close(context.WithoutCancel(ctx))
	wantSettings(t, asServe, map[string]string{"statement_timeout": "10s", "idle_in_transaction_session_timeout": "1min"})
	q := db.New(asServe)
	if err := q.CheckSchema(ctx); err != nil {
		t.Errorf("CheckSchema as %s: %v", testdb.ServeRole, err)
	}
	if _, err := q.ResolveOrCreateUser(ctx, db.ResolveOrCreateUserParams{OidcSubject: "roles", IdentityID: uuid.New(), Name: "Roles", ActorService: ptr("roles test")}); err != nil {
		t.Errorf("ResolveOrCreateUser as %s: %v", testdb.ServeRole, err)
	}
	_, err = asServe.Exec(ctx, "CREATE TEMPORARY TABLE scratch (x integer)")
	if pgErr := (*pgconn.PgError)(nil); !errors.As(err, &pgErr) || pgErr.Code != pgerrcode.InsufficientPrivilege {
		t.Errorf("CREATE TEMPORARY TABLE as %s: %v, want insufficient_privilege", testdb.ServeRole, err)
	}
}

// sql/roles.sql keeps the passwords out of the server's log, on a server
// that logs every statement, and out of psql's command line (they come
// from the environment).
func TestRolesSQLKeepsPasswordsOutOfTheLog(t *testing.T) {
	t.Parallel()
	psql := findPSQL(t)
	ctx := t.Context()
	srv, err := pgtest.Start(ctx, io.Discard, "logging_collector=on", "log_statement=all")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close() //nolint:errcheck // a throwaway server
	runRolesSQL(t, psql, srv.URL)

	conn, err := pgx.Connect(ctx, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	const marker = "roles.sql logged up to here"
	var log string
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(log, marker); {
		if time.Now().After(deadline) {
			t.Fatalf("the server's log never showed %q:\n%s", marker, log)
		}
		if _, err := conn.Exec(ctx, "SELECT '"+marker+"'"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		if err := conn.QueryRow(ctx, "SELECT pg_read_file(pg_current_logfile())").Scan(&log); err != nil {
			t.Fatal(err)
		}
	}
	if !strings.Contains(log, "CREATE DATABASE") {
		t.Errorf("the log shows no statement of roles.sql: does it log them at all?\n%s", log)
	}
	if strings.Contains(log, testdb.RolePassword) {
		t.Errorf("the server's log holds the password:\n%s", log)
	}
}

// runRolesSQL runs sql/roles.sql through psql on server with the psql
// variables vars (name=value), the passwords in the environment as the
// file wants them, both testdb.RolePassword.
func runRolesSQL(t *testing.T, psql, server string, vars ...string) {
	t.Helper()
	args := []string{"--no-psqlrc", "--quiet"}
	for _, v := range vars {
		args = append(args, "-v", v)
	}
	cmd := exec.CommandContext(t.Context(), psql, append(args, "-f", "-", server)...)
	cmd.Env = append(os.Environ(), "OWNER_PASSWORD="+testdb.RolePassword, "SERVE_PASSWORD="+testdb.RolePassword)
	cmd.Stdin = strings.NewReader(usersql.Roles)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("psql -f sql/roles.sql %v: %v\n%s", vars, err, out.String())
	}
}

// wantSettings checks the session's settings, as the role's defaults made
// them.
func wantSettings(t *testing.T, conn *pgx.Conn, want map[string]string) {
	t.Helper()
	for name, value := range want {
		var got string
		if err := conn.QueryRow(t.Context(), "SELECT current_setting($1)", name).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != value {
			t.Errorf("%s of %s = %s, want %s", name, conn.Config().User, got, value)
		}
	}
}

// findPSQL returns the psql beside the PostgreSQL server binaries that
// pgtest runs, else the one on PATH.
func findPSQL(t *testing.T) string {
	t.Helper()
	if dir, err := pgtest.FindBinaries(); err == nil {
		if p, err := exec.LookPath(filepath.Join(dir, "psql")); err == nil {
			return p
		}
	}
	p, err := exec.LookPath("psql")
	switch {
	case err != nil && os.Getenv(pgtest.BackendEnv) == "local":
		// CI runs the local backend: there, a missing psql fails.
		t.Fatal("no psql to run sql/roles.sql with (Debian: apt-get install postgresql-client)")
	case err != nil:
		t.Skip("no psql to run sql/roles.sql with (Debian: apt-get install postgresql-client)")
	}
	return p
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) //nolint:errcheck // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}

func ptr[T any](v T) *T { return &v }
