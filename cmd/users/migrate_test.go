package main

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/agynio/users/internal/testing/tcpproxy"
	"github.com/agynio/users/internal/testing/testdb"
)

// TestMigrateDownRefusesWhileUsersExist: migrate down on a table holding
// users fails, says how to force it, and changes nothing; migrate down
// --force rolls back.
func TestMigrateDownRefusesWhileUsersExist(t *testing.T) {
	t.Parallel()
	dbURL := testdb.EmptyURL(t)
	env := map[string]string{"DATABASE_URL": dbURL}
	files := embeddedMigrations(t)
	if res := runUsers(t, env, "migrate", "up"); res.code != 0 {
		t.Fatalf("migrate up: exit code %d\n%s", res.code, res.stderr)
	}
	conn, err := pgx.Connect(rpcContext(t), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(rpcContext(t), "INSERT INTO users (identity_id, oidc_subject) VALUES ($1, 'alice')", uuid.New()); err != nil {
		t.Fatal(err)
	}

	// The migrations after the one that added usernames delete no data:
	// each rolls back. Rolling that one back would drop every username.
	lossy := slices.Index(files, "20261130000001_usernames_and_roles.sql")
	if lossy < 0 {
		t.Fatalf("no usernames migration among %v", files)
	}
	for range files[lossy+1:] {
		if res := runUsers(t, env, "migrate", "down"); res.code != 0 {
			t.Fatalf("migrate down of a migration that deletes nothing: exit code %d\n%s", res.code, res.stderr)
		}
	}
	files = files[:lossy+1]

	res := runUsers(t, env, "migrate", "down")
	if res.code != 1 {
		t.Errorf("migrate down: exit code %d, want 1", res.code)
	}
	for _, want := range []string{"holds rows", "nothing was rolled back", "users migrate down --force"} {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("stderr does not say %q:\n%s", want, res.stderr)
		}
	}
	if strings.Contains(res.stdout, "Rolled back") {
		t.Errorf("stdout claims a rollback that was refused:\n%s", res.stdout)
	}
	if diff := cmp.Diff(files, appliedMigrations(t, dbURL)); diff != "" {
		t.Errorf("schema_migrations after the refusal (-want +got):\n%s", diff)
	}

	res = runUsers(t, env, "migrate", "down", "--force")
	if res.code != 0 || res.stderr != "" {
		t.Fatalf("migrate down --force: exit code %d, stderr %q; want 0 and nothing", res.code, res.stderr)
	}
	if diff := cmp.Diff(files[:len(files)-1], appliedMigrations(t, dbURL)); diff != "" {
		t.Errorf("schema_migrations after the forced rollback (-want +got):\n%s", diff)
	}
}

// TestMigrateForceCommandLine: --force belongs to migrate down alone, and
// the usage says so.
func TestMigrateForceCommandLine(t *testing.T) {
	t.Parallel()
	// Valid, so that only the command line is at fault; never connected to.
	env := map[string]string{"DATABASE_URL": "postgres://u:pw@127.0.0.1:1/users"}
	for _, args := range [][]string{
		{"migrate", "up", "--force"},
		{"migrate", "status", "--force"},
		{"migrate", "--force", "down"},
		{"migrate", "down", "--force", "--force"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			t.Parallel()
			res := runUsers(t, env, args...)
			if res.code != 2 || !strings.Contains(res.stderr, "users migrate down --force") {
				t.Errorf("exit code %d, stderr:\n%s\nwant 2 and the usage", res.code, res.stderr)
			}
		})
	}
	if res := runUsers(t, env, "help"); !strings.Contains(res.stdout, "migrate down --force") {
		t.Errorf("help does not show migrate down --force:\n%s", res.stdout)
	}
}

// TestMigrateGivesUpOnASilentServer: a database host that accepts and
// never answers fails migrate up within the default connect timeout, as it
// does serve's calls, instead of hanging a deploy job.
func TestMigrateGivesUpOnASilentServer(t *testing.T) {
	t.Parallel()
	l, err := tcpproxy.StartSilent()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	start := time.Now()
	res := runUsers(t, map[string]string{"DATABASE_URL": "postgres://users@" + l.Addr() + "/users?sslmode=disable"}, "migrate", "up")
	if elapsed := time.Since(start); res.code != 1 || elapsed > 10*time.Second {
		t.Errorf("migrate up: exit code %d after %s, want 1 after about 2s\nstderr:\n%s", res.code, elapsed, res.stderr)
	}
	if !strings.Contains(res.stderr, "timeout") {
		t.Errorf("stderr does not say it timed out:\n%s", res.stderr)
	}
}
