package main

import (
	"context"
	"io/fs"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"github.com/agynio/users/internal/testing/testdb"
	"github.com/agynio/users/sql/migrations"
)

// TestMigrate runs the migrate commands in the order an operator would, on
// an empty database, checking after each step both what the command printed
// and what dbmate recorded in schema_migrations.
func TestMigrate(t *testing.T) {
	t.Parallel()
	dbURL := testdb.EmptyURL(t)
	env := map[string]string{"DATABASE_URL": dbURL}

	files := embeddedMigrations(t)
	last := files[len(files)-1]
	allButLast := files[:len(files)-1]

	for _, step := range []struct {
		name        string
		args        []string
		wantOutput  []string // each must begin a line of stdout
		wantApplied []string
	}{
		{
			name:        "up applies every migration",
			args:        []string{"migrate", "up"},
			wantOutput:  prefixed("Applying: ", files),
			wantApplied: files,
		},
		{
			name:        "status lists every migration as applied",
			args:        []string{"migrate", "status"},
			wantOutput:  append(prefixed("[X] ", files), "Pending: 0"),
			wantApplied: files,
		},
		{
			name:        "down rolls back the latest migration",
			args:        []string{"migrate", "down"},
			wantOutput:  []string{"Rolling back: " + last},
			wantApplied: allButLast,
		},
		{
			name:        "status lists the rolled back migration as pending",
			args:        []string{"migrate", "status"},
			wantOutput:  append(prefixed("[X] ", allButLast), "[ ] "+last, "Pending: 1"),
			wantApplied: allButLast,
		},
		{
			name:        "up applies it again",
			args:        []string{"migrate", "up"},
			wantOutput:  []string{"Applying: " + last},
			wantApplied: files,
		},
	} {
		ok := t.Run(step.name, func(t *testing.T) {
			res := runUsers(t, env, step.args...)
			if res.code != 0 || res.stderr != "" {
				t.Fatalf("users %s: exit code %d, stderr %q; want 0 and nothing", strings.Join(step.args, " "), res.code, res.stderr)
			}
			lines := strings.Split(res.stdout, "\n")
			for _, want := range step.wantOutput {
				if !hasLinePrefix(lines, want) {
					t.Errorf("output has no line %q:\n%s", want, res.stdout)
				}
			}
			if diff := cmp.Diff(step.wantApplied, appliedMigrations(t, dbURL)); diff != "" {
				t.Errorf("schema_migrations (-want +got):\n%s", diff)
			}
		})
		if !ok {
			break // later steps build on this one
		}
	}
}

// TestMigrateUpAcceptsPoolSettings runs migrate up with a DATABASE_URL that
// carries a pgxpool setting, as the one serve uses may (see
// internal/config): the migration must not send it to the server.
func TestMigrateUpAcceptsPoolSettings(t *testing.T) {
	t.Parallel()
	dbURL := testdb.EmptyURL(t)
	res := runUsers(t, map[string]string{"DATABASE_URL": testdb.WithQuery(t, dbURL, "pool_max_conns", "4")}, "migrate", "up")
	if res.code != 0 {
		t.Fatalf("exit code %d, want 0\nstderr:\n%s", res.code, res.stderr)
	}
	if diff := cmp.Diff(embeddedMigrations(t), appliedMigrations(t, dbURL)); diff != "" {
		t.Errorf("schema_migrations (-want +got):\n%s", diff)
	}
}

// TestConfigurationErrors checks that a bad environment stops the binary
// before it does anything: exit code 2, and one line on stderr naming the
// variable at fault and never echoing a password.
func TestConfigurationErrors(t *testing.T) {
	t.Parallel()
	// Syntactically valid; nothing listens there, and nothing should try.
	const goodURL = "postgres://u:pw@127.0.0.1:1/users"
	for _, tc := range []struct {
		name     string
		args     []string
		env      map[string]string
		variable string
		secret   string // must not appear on stderr
	}{
		{
			name:     "serve without DATABASE_URL",
			args:     []string{"serve"},
			env:      map[string]string{"GRPC_ADDRESS": "127.0.0.1:0"},
			variable: "DATABASE_URL",
		},
		{
			name:     "migrate without DATABASE_URL",
			args:     []string{"migrate", "up"},
			env:      map[string]string{},
			variable: "DATABASE_URL",
		},
		{
			name:     "DATABASE_URL with a bad pool setting, without leaking its password",
			args:     []string{"serve"},
			env:      map[string]string{"DATABASE_URL": "postgres://u:secretpw@h/db?pool_max_conns=abc", "GRPC_ADDRESS": "127.0.0.1:0"},
			variable: "DATABASE_URL",
			secret:   "secretpw",
		},
		{
			name:     "GRPC_ADDRESS that is not host:port",
			args:     []string{"serve"},
			env:      map[string]string{"DATABASE_URL": goodURL, "GRPC_ADDRESS": "nonsense"},
			variable: "GRPC_ADDRESS",
		},
		{
			name:     "SHUTDOWN_TIMEOUT that is not a duration",
			args:     []string{"serve"},
			env:      map[string]string{"DATABASE_URL": goodURL, "GRPC_ADDRESS": "127.0.0.1:0", "SHUTDOWN_TIMEOUT": "soon"},
			variable: "SHUTDOWN_TIMEOUT",
		},
		{
			name:     "NATS_URL that the NATS client refuses, without leaking its password",
			args:     []string{"serve"},
			env:      map[string]string{"DATABASE_URL": goodURL, "GRPC_ADDRESS": "127.0.0.1:0", "NATS_URL": "nats://u:natspw@h:notaport"},
			variable: "NATS_URL",
			secret:   "natspw",
		},
		{
			name:     "NATS_CREDS_FILE that cannot be read",
			args:     []string{"serve"},
			env:      map[string]string{"DATABASE_URL": goodURL, "GRPC_ADDRESS": "127.0.0.1:0", "NATS_URL": "nats://127.0.0.1:1", "NATS_CREDS_FILE": "/nonexistent/users.creds"},
			variable: "NATS_CREDS_FILE",
		},
		{
			name:     "SHUTDOWN_TIMEOUT that is negative",
			args:     []string{"serve"},
			env:      map[string]string{"DATABASE_URL": goodURL, "GRPC_ADDRESS": "127.0.0.1:0", "SHUTDOWN_TIMEOUT": "-1s"},
			variable: "SHUTDOWN_TIMEOUT",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res := runUsers(t, tc.env, tc.args...)
			if res.code != 2 {
				t.Errorf("exit code %d, want 2", res.code)
			}
			msg := strings.TrimSuffix(res.stderr, "\n")
			if msg == "" || strings.Contains(msg, "\n") {
				t.Errorf("stderr is not one line:\n%s", res.stderr)
			}
			if !strings.Contains(msg, tc.variable) {
				t.Errorf("stderr %q does not name %s", msg, tc.variable)
			}
			if tc.secret != "" && strings.Contains(res.stdout+res.stderr, tc.secret) {
				t.Errorf("output leaks the password %q:\nstderr: %s\nstdout: %s", tc.secret, res.stderr, res.stdout)
			}
			if res.stdout != "" {
				t.Errorf("stdout = %q, want nothing", res.stdout)
			}
		})
	}
}

// TestCommandLine checks the command words: a bad command line exits 2 with
// the short usage on stderr, help prints the long one and exits 0 (the
// tests of help itself are in usage_test.go).
func TestCommandLine(t *testing.T) {
	t.Parallel()
	// Valid, so that only the command line is at fault; never connected to.
	env := map[string]string{"DATABASE_URL": "postgres://u:pw@127.0.0.1:1/users", "GRPC_ADDRESS": "127.0.0.1:0"}
	const usageLine = "usage: users [serve] | users migrate up|down|status"
	for _, tc := range []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string // substring; "" means stdout must be empty
		wantStderr []string
	}{
		{name: "an unknown command", args: []string{"frobnicate"}, wantCode: 2, wantStderr: []string{"frobnicate", usageLine}},
		{name: "serve with an argument", args: []string{"serve", "now"}, wantCode: 2, wantStderr: []string{"now", usageLine}},
		{name: "migrate without an action", args: []string{"migrate"}, wantCode: 2, wantStderr: []string{"migrate", usageLine}},
		{name: "migrate with an unknown action", args: []string{"migrate", "sideways"}, wantCode: 2, wantStderr: []string{"sideways", usageLine}},
		{name: "version with an argument", args: []string{"version", "now"}, wantCode: 2, wantStderr: []string{"now", usageLine}},
		{name: "help", args: []string{"help"}, wantCode: 0, wantStdout: "\nCommands"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res := runUsers(t, env, tc.args...)
			if res.code != tc.wantCode {
				t.Errorf("exit code %d, want %d\nstderr:\n%s", res.code, tc.wantCode, res.stderr)
			}
			for _, want := range tc.wantStderr {
				if !strings.Contains(res.stderr, want) {
					t.Errorf("stderr does not contain %q:\n%s", want, res.stderr)
				}
			}
			if tc.wantStderr == nil && res.stderr != "" {
				t.Errorf("stderr = %q, want nothing", res.stderr)
			}
			if tc.wantStdout == "" && res.stdout != "" {
				t.Errorf("stdout = %q, want nothing", res.stdout)
			}
			if !strings.Contains(res.stdout, tc.wantStdout) {
				t.Errorf("stdout = %q, want it to contain %q", res.stdout, tc.wantStdout)
			}
		})
	}
}

// embeddedMigrations returns the migration files the binary carries, in
// the order dbmate applies them.
func embeddedMigrations(t *testing.T) []string {
	t.Helper()
	files, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil || len(files) == 0 {
		t.Fatalf("no migrations embedded (%v)", err)
	}
	sort.Strings(files)
	return files
}

func prefixed(prefix string, ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = prefix + s
	}
	return out
}

// hasLinePrefix reports whether one of lines starts with prefix (dbmate
// appends timings to some lines).
func hasLinePrefix(lines []string, prefix string) bool {
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

// appliedMigrations returns the migration files that schema_migrations
// records as applied, in order, as file names for comparison with the
// embedded ones.
func appliedMigrations(t *testing.T, dbURL string) []string {
	t.Helper()
	ctx := rpcContext(t)
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var versions []string
	if err := conn.QueryRow(ctx, "SELECT coalesce(array_agg(version ORDER BY version), '{}') FROM schema_migrations").Scan(&versions); err != nil {
		t.Fatalf("read schema_migrations: %v", err)
	}
	files := embeddedMigrations(t)
	byVersion := make(map[string]string, len(files))
	for _, f := range files {
		version, _, _ := strings.Cut(f, "_")
		byVersion[version] = f
	}
	applied := make([]string, len(versions))
	for i, v := range versions {
		applied[i] = byVersion[v]
		if applied[i] == "" {
			applied[i] = v + " (no such file)"
		}
	}
	return applied
}
