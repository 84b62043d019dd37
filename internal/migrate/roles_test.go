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
// change nothing that matters), makes a database that migrate up, as
// users_owner with DB_SERVE_ROLE=users_serve, migrates and serve, as
// users_serve, works on; with each role's settings, no temporary tables
// and no CREATE on the schema for anyone but the owner.
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

	for run := 1; run <= 2; run++ {
		// The passwords the other tests' connections use: the server is
		// shared with them.
		cmd := exec.CommandContext(ctx, psql, "--no-psqlrc", "--quiet",
			"-v", "owner_password="+testdb.RolePassword,
			"-v", "serve_password="+testdb.RolePassword,
			"-v", "database="+name,
			"-f", "-", server)
		cmd.Stdin = strings.NewReader(usersql.Roles)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("psql -f sql/roles.sql, run %d: %v\n%s", run, err, out.String())
		}
	}

	var owner, encoding, schemaOwner string
	var publicTemp, publicCreate bool
	err = superuser.QueryRow(ctx, `
		SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding),
		       has_database_privilege('public', oid, 'TEMPORARY')
		FROM pg_database WHERE datname = $1`, name).Scan(&owner, &encoding, &publicTemp)
	if err != nil {
		t.Fatalf("the database %s: %v", name, err)
	}
	if owner != testdb.OwnerRole || encoding != "UTF8" || publicTemp {
		t.Errorf("database owned by %s, encoding %s, temporary tables for all %v; want %s, UTF8, false",
			owner, encoding, publicTemp, testdb.OwnerRole)
	}

	dbURL, err := testdb.WithDatabase(server, name)
	if err != nil {
		t.Fatal(err)
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
