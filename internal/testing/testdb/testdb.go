// Package testdb gives every test its own migrated PostgreSQL database.
//
// The server is TEST_DATABASE_URL or DATABASE_URL when set (make test sets
// TEST_DATABASE_URL to one throwaway server for all packages), else a
// throwaway one of the test binary's own from pgtest. Migrations run once
// per server and migration set, into a template database that every
// package shares; each test gets a CREATE DATABASE ... TEMPLATE clone,
// dropped WITH (FORCE) when the test ends, so tests run in parallel without
// seeing each other's rows.
//
// The tests connect as production does. The server gets the roles of
// sql/roles.sql (the file's own statements, its roles part), under test
// names of their own, so that a server that also holds the service's real
// roles keeps them as they are; the databases are owned by OwnerRole, which migrates the template with
// DB_SERVE_ROLE's grants (migrate.UpAndGrant, as "users migrate up"
// does); and URL hands out ServeRole's connection string, which holds
// exactly the privileges of sql/grants.sql. A test that does what the
// service may not (a migration, a dropped table, another backend
// terminated) asks for AsOwner or AsSuperuser of its database.
//
// Nothing starts until a test first asks for a database: a run of only
// the pure tests of a package (its fuzz targets, its validators) needs no
// PostgreSQL at all. Run, in TestMain, stops what was started.
package testdb

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/agynio/users/internal/migrate"
	"github.com/agynio/users/internal/testing/pgtest"
	usersql "github.com/agynio/users/sql"
	"github.com/agynio/users/sql/migrations"
)

// The roles of sql/roles.sql, as the tests name them: not the file's
// defaults (users_owner, users_serve), whose passwords and settings a run
// on a server that has them would otherwise change.
const (
	// OwnerRole owns every test database and migrates it.
	OwnerRole = "users_test_owner"
	// ServeRole is what URL connects as: the service's role.
	ServeRole = "users_test_serve"
	// RolePassword is both roles' password on the test servers, set by
	// each test binary's run of the roles part.
	RolePassword = "users-test"
)

var (
	serverURL string        // superuser connection to the server
	admin     *pgxpool.Pool // on serverURL, for CREATE/DROP DATABASE
	template  string        // name of the migrated template database
)

var (
	running bool // Run has been called: someone will stop what starts

	startOnce sync.Once
	startErr  error  // why the server or the template is not there
	stop      func() // undoes what the start did, if it did anything
)

// Run is called from TestMain: it runs the tests and then stops the
// server and closes the connections that the first test to want a
// database set up, returning the exit code for os.Exit.
func Run(m *testing.M) int {
	running = true
	code := m.Run()
	if stop != nil {
		stop()
	}
	return code
}

// start sets up the server and the template once per test binary, on the
// first call, and fails t if that failed (then, or for an earlier test).
// Tests that start in parallel wait here for the first one's set-up.
func start(t testing.TB) {
	t.Helper()
	if !running {
		t.Fatal("testdb: call testdb.Run from TestMain")
	}
	startOnce.Do(func() {
		// Not t's context: the server outlives the test that started it.
		stop, startErr = setUp(context.Background())
	})
	if startErr != nil {
		t.Fatalf("testdb: %v", startErr)
	}
}

func setUp(ctx context.Context) (func(), error) {
	var stops []func()
	cleanup := func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	fail := func(err error) (func(), error) {
		cleanup()
		return nil, err
	}

	serverURL = cmp.Or(os.Getenv("TEST_DATABASE_URL"), os.Getenv("DATABASE_URL"))
	if serverURL == "" {
		srv, err := pgtest.Start(ctx, os.Stderr)
		if err != nil {
			return fail(err)
		}
		stops = append(stops, func() { srv.Close() })
		serverURL = srv.URL
	}

	var err error
	admin, err = pgxpool.New(ctx, serverURL)
	if err != nil {
		return fail(err)
	}
	stops = append(stops, admin.Close)

	if err := ensureRoles(ctx); err != nil {
		return fail(err)
	}
	if template, err = ensureTemplate(ctx); err != nil {
		return fail(err)
	}
	return cleanup, nil
}

// ensureRoles runs the roles part of sql/roles.sql, from its BEGIN to its
// COMMIT, for OwnerRole and ServeRole with RolePassword for both
// passwords, its psql variables replaced as psql would. Every test binary
// runs it: roles belong to the whole server, and the part creates only
// what is missing, taking turns with other runs.
func ensureRoles(ctx context.Context) error {
	begin := strings.Index(usersql.Roles, "\nBEGIN;\n")
	commit := strings.Index(usersql.Roles, "\nCOMMIT;\n")
	if begin < 0 || commit < begin {
		return errors.New("sql/roles.sql: no roles part, from a line BEGIN; to a line COMMIT;")
	}
	var pairs []string
	for name, value := range map[string]string{
		"owner_role": OwnerRole, "serve_role": ServeRole,
		"owner_password": RolePassword, "serve_password": RolePassword,
	} {
		pairs = append(pairs,
			":'"+name+"'", "'"+strings.ReplaceAll(value, "'", "''")+"'",
			`:"`+name+`"`, pgx.Identifier{value}.Sanitize())
	}
	part := strings.NewReplacer(pairs...).Replace(usersql.Roles[begin : commit+len("\nCOMMIT;\n")])
	if v := psqlVariable.FindString(part); v != "" {
		return fmt.Errorf("sql/roles.sql: its roles part uses the psql variable %s, which testdb does not set", v)
	}
	if _, err := admin.Exec(ctx, part); err != nil {
		return fmt.Errorf("sql/roles.sql, roles part: %w", err)
	}
	return nil
}

// psqlVariable matches a psql variable interpolated as a literal or an
// identifier.
var psqlVariable = regexp.MustCompile(`:['"][A-Za-z_][A-Za-z0-9_]*['"]`)

// ensureTemplate returns the name of a database holding the current
// migrations and ServeRole's grants, creating it if the server has none
// yet. Its name is a digest of the migration files and sql/grants.sql, so
// every test package of a run (and later runs on the same server) share
// one, and a changed migration or grant gets a new one.
// It is built under another name and renamed when complete, so a run that
// dies half-way leaves no broken template behind.
func ensureTemplate(ctx context.Context) (string, error) {
	digest, err := migrationsDigest()
	if err != nil {
		return "", err
	}
	name := "users_template_" + digest

	conn, err := admin.Acquire(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Release()
	// Test packages start in parallel: one builds, the others wait.
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock(hashtext($1))", name); err != nil {
		return "", err
	}
	defer conn.Exec(context.Background(), "SELECT pg_advisory_unlock(hashtext($1))", name) //nolint:errcheck // released with the session anyway

	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return "", err
	}
	if exists {
		return name, nil
	}

	building := name + "_building_" + randomSuffix()
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{building}.Sanitize()+" OWNER "+pgx.Identifier{OwnerRole}.Sanitize()); err != nil {
		return "", fmt.Errorf("create template database (the test role must be a superuser): %w", err)
	}
	buildingURL, err := WithDatabase(serverURL, building)
	if err != nil {
		return "", err
	}
	if buildingURL, err = withRole(buildingURL, OwnerRole); err != nil {
		return "", err
	}
	if err := migrate.UpAndGrant(ctx, buildingURL, ServeRole, io.Discard); err != nil {
		dropDatabase(ctx, building)
		return "", fmt.Errorf("migrate template: %w", err)
	}
	err = retryInUse(ctx, func() error {
		_, err := conn.Exec(ctx, fmt.Sprintf("ALTER DATABASE %s RENAME TO %s",
			pgx.Identifier{building}.Sanitize(), pgx.Identifier{name}.Sanitize()))
		return err
	})
	if err != nil {
		dropDatabase(ctx, building)
		return "", err
	}
	return name, nil
}

func migrationsDigest() (string, error) {
	h := sha256.New()
	err := fs.WalkDir(migrations.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(migrations.FS, path)
		fmt.Fprintf(h, "%s\x00%d\x00", path, len(b))
		h.Write(b)
		return err
	})
	fmt.Fprintf(h, "grants.sql\x00%d\x00%s", len(usersql.Grants), usersql.Grants)
	return hex.EncodeToString(h.Sum(nil))[:16], err
}

// retryInUse retries op while PostgreSQL says the database is in use: a
// backend whose client has just disconnected takes a moment to exit.
func retryInUse(ctx context.Context, op func() error) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := op()
		var pgErr *pgconn.PgError
		if err == nil || !errors.As(err, &pgErr) || pgErr.Code != pgerrcode.ObjectInUse || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// URL returns ServeRole's connection string to a new database, migrated
// and empty, that is dropped when t ends: what the service connects
// with.
func URL(t testing.TB) string {
	t.Helper()
	start(t) // sets template, so before reading it
	return AsServe(t, newDatabase(t, template))
}

// EmptyURL returns OwnerRole's connection string to a new database with
// no migrations applied, dropped when t ends: what "users migrate"
// connects with.
func EmptyURL(t testing.TB) string {
	t.Helper()
	return AsOwner(t, newDatabase(t, "template0"))
}

// New returns a pool on a new migrated database, as ServeRole, closed and
// dropped when t ends.
func New(t testing.TB) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(t.Context(), URL(t))
	if err != nil {
		t.Fatalf("testdb: %v", err)
	}
	t.Cleanup(pool.Close) // runs before the drop registered by URL
	return pool
}

// EncodedURL returns OwnerRole's connection string to a new database with
// no migrations applied whose server encoding is encoding (in the C
// locale, which takes any), dropped when t ends: a database the service
// must refuse unless encoding is UTF8.
func EncodedURL(t testing.TB, encoding string) string {
	t.Helper()
	return AsOwner(t, newDatabase(t, "template0", "ENCODING", encoding, "LC_COLLATE", "C", "LC_CTYPE", "C"))
}

// AsServe returns dbURL, a connection string from this package, as
// ServeRole: the service's rights, exactly those of sql/grants.sql.
func AsServe(t testing.TB, dbURL string) string {
	t.Helper()
	u, err := withRole(dbURL, ServeRole)
	if err != nil {
		t.Fatalf("testdb: %v", err)
	}
	return u
}

// AsOwner returns dbURL, a connection string from this package, as
// OwnerRole, the owner of the database and of its tables: for a test
// that migrates, or changes the schema under the service.
func AsOwner(t testing.TB, dbURL string) string {
	t.Helper()
	u, err := withRole(dbURL, OwnerRole)
	if err != nil {
		t.Fatalf("testdb: %v", err)
	}
	return u
}

// AsSuperuser returns dbURL, a connection string from this package, as
// the server's superuser: for a test that does what no role of the
// service may, such as terminating another role's sessions or changing
// server settings.
func AsSuperuser(t testing.TB, dbURL string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatalf("testdb: %v", err)
	}
	server, err := url.Parse(serverURL)
	if err != nil {
		t.Fatalf("testdb: %v", err)
	}
	u.User = server.User
	return u.String()
}

// ServerURL returns the superuser's connection string to the database
// testdb itself connects to on the server (not one of the tests'): for a
// test of the server's roles and databases themselves.
func ServerURL(t testing.TB) string {
	t.Helper()
	start(t)
	return serverURL
}

// withRole returns rawURL connecting as role, with RolePassword.
func withRole(rawURL, role string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", err
	}
	u.User = url.UserPassword(role, RolePassword)
	return u.String(), nil
}

// newDatabase creates a database owned by OwnerRole from the template
// from, with further CREATE DATABASE options as pairs of keyword and
// value, and returns the superuser's connection string to it.
func newDatabase(t testing.TB, from string, options ...string) string {
	t.Helper()
	start(t)
	ctx := context.Background()
	name := "users_test_" + randomSuffix()
	create := fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s OWNER %s",
		pgx.Identifier{name}.Sanitize(), pgx.Identifier{from}.Sanitize(), pgx.Identifier{OwnerRole}.Sanitize())
	for i := 0; i+1 < len(options); i += 2 {
		create += fmt.Sprintf(" %s '%s'", options[i], strings.ReplaceAll(options[i+1], "'", "''"))
	}
	err := retryInUse(ctx, func() error {
		_, err := admin.Exec(ctx, create)
		return err
	})
	if err != nil {
		t.Fatalf("testdb: create database: %v", err)
	}
	t.Cleanup(func() { dropDatabase(ctx, name) })
	u, err := WithDatabase(serverURL, name)
	if err != nil {
		t.Fatalf("testdb: %v", err)
	}
	return u
}

func dropDatabase(ctx context.Context, name string) {
	// FORCE ends connections a test leaked, rather than failing the drop.
	admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)") //nolint:errcheck // the server is throwaway or shared; a leftover is harmless
}

// WithDatabase returns rawURL pointing at database name instead.
func WithDatabase(rawURL, name string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", fmt.Errorf("test database URL must be a postgres:// URL")
	}
	u.Path = "/" + name
	return u.String(), nil
}

func randomSuffix() string {
	b := make([]byte, 6)
	rand.Read(b) //nolint:errcheck // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}

// WithQuery returns rawURL with query parameter key set to value, or
// removed if value is empty.
func WithQuery(t testing.TB, rawURL, key, value string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatalf("testdb: %v", err)
	}
	q := u.Query()
	if value == "" {
		q.Del(key)
	} else {
		q.Set(key, value)
	}
	u.RawQuery = q.Encode()
	return u.String()
}
