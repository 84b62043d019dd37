package migrate_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/google/uuid"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/agynio/users/internal/db"
	"github.com/agynio/users/internal/migrate"
	"github.com/agynio/users/internal/testing/tcpproxy"
	"github.com/agynio/users/internal/testing/testdb"
	"github.com/agynio/users/sql/migrations"
)

func TestMain(m *testing.M) {
	os.Exit(testdb.Run(m))
}

// schema is what a migration run leaves behind that the tests look at.
type schema struct {
	UsersTable bool
	Versions   []string // schema_migrations rows, in order
}

func TestUpDownUp(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	databaseURL := testdb.EmptyURL(t)
	all := migrationVersions(t)

	type step struct {
		name        string
		run         func(ctx context.Context, databaseURL string, log io.Writer) error
		want        schema
		wantPending int
	}
	steps := []step{{
		name:        "up creates the users table and records every version",
		run:         migrate.Up,
		want:        schema{UsersTable: true, Versions: all},
		wantPending: 0,
	}}
	// Down, once per migration, undoes each and forgets its version, to
	// the empty database.
	for n := len(all) - 1; n >= 0; n-- {
		steps = append(steps, step{
			name:        fmt.Sprintf("down forgets %s", all[n]),
			run:         migrate.Down,
			want:        schema{UsersTable: n > 0, Versions: all[:n]},
			wantPending: len(all) - n,
		})
	}
	steps = append(steps, step{
		name:        "up again brings the users table back",
		run:         migrate.Up,
		want:        schema{UsersTable: true, Versions: all},
		wantPending: 0,
	})
	// The steps build on each other: they run in order, and a failed step
	// stops the rest.
	for _, step := range steps {
		ok := t.Run(step.name, func(t *testing.T) {
			var log bytes.Buffer
			if err := step.run(ctx, databaseURL, &log); err != nil {
				t.Fatalf("migration failed: %v\n%s", err, &log)
			}
			if diff := cmp.Diff(step.want, schemaOf(t, databaseURL), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("schema mismatch (-want +got):\n%s", diff)
			}
			log.Reset()
			pending, err := migrate.Status(ctx, databaseURL, &log)
			if err != nil {
				t.Fatalf("Status: %v\n%s", err, &log)
			}
			if pending != step.wantPending {
				t.Errorf("Status reports %d pending, want %d\n%s", pending, step.wantPending, &log)
			}
		})
		if !ok {
			return
		}
	}
}

// TestConcurrentUp is what the advisory lock is for: replicas starting
// together all run "migrate up" against one database.
func TestConcurrentUp(t *testing.T) {
	t.Parallel()
	const replicas = 16
	ctx := t.Context()
	databaseURL := testdb.EmptyURL(t)

	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		errs  = make([]error, replicas)
	)
	for i := range replicas {
		wg.Go(func() {
			<-start
			errs[i] = migrate.Up(ctx, databaseURL, io.Discard)
		})
	}
	close(start)
	wg.Wait()

	for i, err := range errs {
		if err != nil {
			t.Errorf("Up #%d: %v", i, err)
		}
	}
	want := schema{UsersTable: true, Versions: migrationVersions(t)}
	if diff := cmp.Diff(want, schemaOf(t, databaseURL), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("schema mismatch (-want +got):\n%s", diff)
	}
}

// TestUpAcceptsWhatTheServiceAccepts: "users migrate up" is given the
// service's DATABASE_URL, whatever form pgx accepts it in, and dbmate's
// lib/pq must reach the same server.
func TestUpAcceptsWhatTheServiceAccepts(t *testing.T) {
	t.Parallel()
	dsn := func(t *testing.T, rawURL string) string {
		u, err := url.Parse(rawURL)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("host=%s port=%s user=%s dbname=%s", u.Hostname(), u.Port(), u.User.Username(), strings.TrimPrefix(u.Path, "/"))
	}
	tests := []struct {
		name string
		form func(t *testing.T, rawURL string) string
	}{
		{"a URL with pgxpool settings", func(t *testing.T, u string) string { return testdb.WithQuery(t, u, "pool_max_conns", "4") }},
		{"a URL with pgx-only settings", func(t *testing.T, u string) string {
			return testdb.WithQuery(t, testdb.WithQuery(t, u, "default_query_exec_mode", "exec"), "statement_cache_capacity", "0")
		}},
		{"a URL without sslmode (pgx prefers TLS, lib/pq would require it)", func(t *testing.T, u string) string { return testdb.WithQuery(t, u, "sslmode", "") }},
		{"a URL with a run-time parameter", func(t *testing.T, u string) string {
			return testdb.WithQuery(t, u, "application_name", "users-migrate")
		}},
		{"a key=value string without sslmode", dsn},
		{"a URL whose first host is down (failover)", func(t *testing.T, u string) string {
			return strings.Replace(u, "@127.0.0.1:", "@127.0.0.1:1,127.0.0.1:", 1)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			databaseURL := testdb.EmptyURL(t)
			given := tt.form(t, databaseURL)
			var log bytes.Buffer
			if err := migrate.Up(t.Context(), given, &log); err != nil {
				t.Fatalf("Up(%q): %v\n%s", given, err, &log)
			}
			want := schema{UsersTable: true, Versions: migrationVersions(t)}
			if diff := cmp.Diff(want, schemaOf(t, databaseURL), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("schema mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestCheckConstraints: the schema enforces the API's length limits, in
// characters, for writes that bypass the API.
func TestCheckConstraints(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)

	// "é" is two bytes in UTF-8: the boundary cases only fit if the limits
	// count characters.
	tests := []struct {
		name           string
		column         string
		value          string
		wantConstraint string // empty: the insert succeeds
	}{
		{name: "an oidc_subject of 255 characters is accepted", column: "oidc_subject", value: strings.Repeat("é", 255)},
		{name: "an oidc_subject of 256 characters is rejected", column: "oidc_subject", value: strings.Repeat("s", 256), wantConstraint: "users_oidc_subject_length"},
		{name: "an empty oidc_subject is rejected", column: "oidc_subject", value: "", wantConstraint: "users_oidc_subject_length"},
		{name: "a name of 256 characters is accepted", column: "name", value: strings.Repeat("é", 256)},
		{name: "a name of 257 characters is rejected", column: "name", value: strings.Repeat("n", 257), wantConstraint: "users_name_length"},
		{name: "an email of 254 characters is accepted", column: "email", value: strings.Repeat("é", 254)},
		{name: "an email of 255 characters is rejected", column: "email", value: strings.Repeat("e", 255), wantConstraint: "users_email_length"},
		{name: "a photo_url of 2048 characters is accepted", column: "photo_url", value: strings.Repeat("é", 2048)},
		{name: "a photo_url of 2049 characters is rejected", column: "photo_url", value: strings.Repeat("p", 2049), wantConstraint: "users_photo_url_length"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			row := map[string]string{
				"oidc_subject": "subject-" + uuid.NewString(), // unique, so cases do not collide
				"name":         "",
				"email":        "",
				"photo_url":    "",
			}
			if _, ok := row[tt.column]; !ok {
				t.Fatalf("unknown column %q", tt.column)
			}
			row[tt.column] = tt.value

			_, err := pool.Exec(t.Context(),
				`INSERT INTO users (identity_id, oidc_subject, name, email, photo_url) VALUES ($1, $2, $3, $4, $5)`,
				uuid.New(), row["oidc_subject"], row["name"], row["email"], row["photo_url"])

			if tt.wantConstraint == "" {
				if err != nil {
					t.Fatalf("insert failed: %v", err)
				}
				return
			}
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) {
				t.Fatalf("insert returned %v, want a PostgreSQL error", err)
			}
			got := violation{Code: pgErr.Code, Constraint: pgErr.ConstraintName}
			want := violation{Code: pgerrcode.CheckViolation, Constraint: tt.wantConstraint}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("insert error mismatch (-want +got):\n%s\nerror: %v", diff, err)
			}
		})
	}
}

type violation struct {
	Code       string
	Constraint string
}

// migrationVersions lists the versions of the embedded migration files, in
// the order dbmate applies them.
func migrationVersions(t *testing.T) []string {
	t.Helper()
	files, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no embedded migration files")
	}
	versions := make([]string, 0, len(files))
	for _, f := range files {
		v, _, ok := strings.Cut(f, "_")
		if !ok {
			t.Fatalf("migration file %q is not named <version>_<name>.sql", f)
		}
		versions = append(versions, v)
	}
	return versions // fs.Glob sorts, and versions are fixed-width timestamps
}

func schemaOf(t *testing.T, databaseURL string) schema {
	t.Helper()
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	var s schema
	if err := conn.QueryRow(ctx, `SELECT to_regclass('public.users') IS NOT NULL`).Scan(&s.UsersTable); err != nil {
		t.Fatalf("look up users table: %v", err)
	}
	rows, err := conn.Query(ctx, `SELECT version FROM schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatalf("read schema_migrations: %v", err)
	}
	s.Versions, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("read schema_migrations: %v", err)
	}
	return s
}

// TestUpGivesUpOnASilentServer: a database host that accepts connections
// and never answers fails the migration within the service's default
// connect timeout, rather than hanging it until someone notices.
func TestUpGivesUpOnASilentServer(t *testing.T) {
	t.Parallel()
	l, err := tcpproxy.StartSilent()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })

	// The test's own bound, well past the default, so that a hang fails
	// the test instead of stalling it.
	ctx, cancel := context.WithTimeout(t.Context(), db.DefaultConnectTimeout+10*time.Second)
	defer cancel()
	start := time.Now()
	err = migrate.Up(ctx, "postgres://users@"+l.Addr()+"/users?sslmode=disable", io.Discard)
	elapsed := time.Since(start)
	if err == nil {
		t.Fatal("Up against a silent server succeeded")
	}
	if ctx.Err() != nil || elapsed > db.DefaultConnectTimeout+2*time.Second {
		t.Errorf("Up gave up after %s (%v), want about the default connect timeout (%s)", elapsed, err, db.DefaultConnectTimeout)
	}
}

// TestUpRefusesADatabaseNotInUTF8: a database that would store text wrong
// is refused before anything is applied to it.
func TestUpRefusesADatabaseNotInUTF8(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	databaseURL := testdb.EncodedURL(t, "SQL_ASCII")

	err := migrate.Up(ctx, databaseURL, io.Discard)
	if !errors.Is(err, db.ErrNotUTF8) {
		t.Fatalf("Up on a SQL_ASCII database: %v, want ErrNotUTF8", err)
	}
	var migrated bool
	check, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer check.Close(context.WithoutCancel(ctx))
	if err := check.QueryRow(ctx, "SELECT to_regclass('public.schema_migrations') IS NOT NULL OR to_regclass('public.users') IS NOT NULL").Scan(&migrated); err != nil {
		t.Fatal(err)
	}
	if migrated {
		t.Error("Up left tables behind in the database it refused")
	}
}

// TestDownRefusesToDeleteUsers: rolling back the migration that creates
// the users table refuses while it holds rows, and
// changes nothing, unless forced; the refusal is in the migration's SQL, so
// it holds for whoever runs it.
func TestDownRefusesToDeleteUsers(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	databaseURL := testdb.EmptyURL(t)
	all := migrationVersions(t)
	if err := migrate.Up(ctx, databaseURL, io.Discard); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "INSERT INTO users (identity_id, oidc_subject) VALUES ($1, 'alice')", uuid.New()); err != nil {
		t.Fatal(err)
	}
	// Forced back to the first migration: the later ones' own refusal is
	// another test's (usernames_test.go).
	for range all[1:] {
		if err := migrate.ForceDown(ctx, databaseURL, io.Discard); err != nil {
			t.Fatal(err)
		}
	}
	all = all[:1]
	migrated := schema{UsersTable: true, Versions: all}

	t.Run("down refuses and changes nothing", func(t *testing.T) {
		var log bytes.Buffer
		err := migrate.Down(ctx, databaseURL, &log)
		if !errors.Is(err, migrate.ErrDataLoss) {
			t.Fatalf("Down: %v, want ErrDataLoss\n%s", err, &log)
		}
		if !strings.Contains(err.Error(), "users") {
			t.Errorf("error %q does not name the table", err)
		}
		if strings.Contains(log.String(), "Rolled back") {
			t.Errorf("the output claims a rollback that was refused:\n%s", &log)
		}
		if diff := cmp.Diff(migrated, schemaOf(t, databaseURL), cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("schema mismatch (-want +got):\n%s", diff)
		}
	})

	t.Run("the down SQL refuses on its own, as with dbmate or psql", func(t *testing.T) {
		files, err := fs.Glob(migrations.FS, "*_create_users.sql")
		if err != nil || len(files) != 1 {
			t.Fatalf("the migration creating users: %v, %v", files, err)
		}
		b, err := fs.ReadFile(migrations.FS, files[0])
		if err != nil {
			t.Fatal(err)
		}
		_, downSQL, ok := strings.Cut(string(b), "-- migrate:down")
		if !ok {
			t.Fatal("no down section")
		}
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // the transaction fails anyway
		_, err = tx.Exec(ctx, downSQL)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "UD001" || pgErr.Hint == "" {
			t.Errorf("down section: %v, want SQLSTATE UD001 with a hint", err)
		}
	})

	t.Run("forced, down drops the table", func(t *testing.T) {
		var log bytes.Buffer
		if err := migrate.ForceDown(ctx, databaseURL, &log); err != nil {
			t.Fatalf("ForceDown: %v\n%s", err, &log)
		}
		want := schema{UsersTable: false, Versions: all[:len(all)-1]}
		if diff := cmp.Diff(want, schemaOf(t, databaseURL), cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("schema mismatch (-want +got):\n%s", diff)
		}
	})
}
