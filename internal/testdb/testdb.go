// Package testdb gives every test its own migrated PostgreSQL database.
//
// One server per test binary: TEST_DATABASE_URL or DATABASE_URL when set
// (make test sets TEST_DATABASE_URL to one server shared by all packages),
// else a throwaway one from pgtest. Migrations run once, into a template
// database; each test gets a CREATE DATABASE ... TEMPLATE clone, dropped
// WITH (FORCE) when the test ends, so tests run in parallel without seeing
// each other's rows.
package testdb

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/url"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/agynio/users/internal/migrate"
	"github.com/agynio/users/internal/pgtest"
)

var (
	serverURL string        // superuser connection to the server
	admin     *pgxpool.Pool // on serverURL, for CREATE/DROP DATABASE
	template  string        // name of the migrated template database
)

// Run is called from TestMain: it prepares the server and the template,
// runs the tests and cleans up, returning the exit code for os.Exit.
func Run(m *testing.M) int {
	ctx := context.Background()
	stop, err := setUp(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testdb:", err)
		return 1
	}
	defer stop()
	return m.Run()
}

func setUp(ctx context.Context) (stop func(), err error) {
	var stops []func()
	stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()

	serverURL = firstNonEmpty(os.Getenv("TEST_DATABASE_URL"), os.Getenv("DATABASE_URL"))
	if serverURL == "" {
		srv, err := pgtest.Start(ctx, os.Stderr)
		if err != nil {
			return nil, err
		}
		stops = append(stops, func() { srv.Close() })
		serverURL = srv.URL
	}

	admin, err = pgxpool.New(ctx, serverURL)
	if err != nil {
		return nil, err
	}
	stops = append(stops, admin.Close)

	template = "users_template_" + randomSuffix()
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{template}.Sanitize()); err != nil {
		return nil, fmt.Errorf("create template database (the test role needs CREATEDB): %w", err)
	}
	stops = append(stops, func() { dropDatabase(context.Background(), template) })

	templateURL, err := WithDatabase(serverURL, template)
	if err != nil {
		return nil, err
	}
	if err := migrate.Up(ctx, templateURL, io.Discard); err != nil {
		return nil, fmt.Errorf("migrate template: %w", err)
	}
	return stop, nil
}

// URL returns the connection string of a new database, migrated and empty,
// that is dropped when t ends.
func URL(t testing.TB) string {
	t.Helper()
	return newDatabase(t, template)
}

// EmptyURL returns the connection string of a new database with no
// migrations applied, dropped when t ends.
func EmptyURL(t testing.TB) string {
	t.Helper()
	return newDatabase(t, "template0")
}

// New returns a pool on a new migrated database, closed and dropped when t
// ends.
func New(t testing.TB) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(t.Context(), URL(t))
	if err != nil {
		t.Fatalf("testdb: %v", err)
	}
	t.Cleanup(pool.Close) // runs before the drop registered by URL
	return pool
}

func newDatabase(t testing.TB, from string) string {
	t.Helper()
	if admin == nil {
		t.Fatal("testdb: call testdb.Run from TestMain")
	}
	ctx := context.Background()
	name := "users_test_" + randomSuffix()
	if _, err := admin.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s",
		pgx.Identifier{name}.Sanitize(), pgx.Identifier{from}.Sanitize())); err != nil {
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

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
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
