package main

import (
	"context"
	"io/fs"
	"net/http"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
	"github.com/agynio/users/internal/testing/testdb"
	"github.com/agynio/users/sql/migrations"
)

// TestMigrateUpRefusesADatabaseNotInUTF8: migrate up exits non-zero and
// says what is wrong with the database and what it needs.
func TestMigrateUpRefusesADatabaseNotInUTF8(t *testing.T) {
	t.Parallel()
	res := runUsers(t, map[string]string{"DATABASE_URL": testdb.EncodedURL(t, "SQL_ASCII")}, "migrate", "up")
	if res.code != 1 {
		t.Errorf("exit code %d, want 1", res.code)
	}
	if !strings.Contains(res.stderr, "server_encoding SQL_ASCII") || !strings.Contains(res.stderr, "ENCODING 'UTF8'") {
		t.Errorf("stderr does not say the database is SQL_ASCII and needs UTF8:\n%s", res.stderr)
	}
	if strings.Contains(res.stdout, "Applying") {
		t.Errorf("migrate up applied migrations to the database it refused:\n%s", res.stdout)
	}
}

// TestServeOnADatabaseNotInUTF8: serve stays up (alive, not ready), every
// call is UNAVAILABLE, and the log says why. The database has the schema
// (applied around migrate up, which would refuse it): served, it would
// count the bytes of a valid 100-character CJK name as 300 characters.
func TestServeOnADatabaseNotInUTF8(t *testing.T) {
	t.Parallel()
	dbURL := testdb.EncodedURL(t, "SQL_ASCII")
	applySchema(t, dbURL)
	p, addr := startServe(t, map[string]string{"DATABASE_URL": dbURL})
	if code, body := adminGet(t, p, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: %d %q, want 200", code, body)
	}
	if code, body := adminGet(t, p, "/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz: %d %q, want 503", code, body)
	}
	users := usersv1.NewUsersServiceClient(dial(t, addr))
	_, err := users.ResolveOrCreateUser(rpcContext(t), &usersv1.ResolveOrCreateUserRequest{OidcSubject: "s", Name: strings.Repeat("名", 100)})
	if got := status.Code(err); got != codes.Unavailable {
		t.Errorf("ResolveOrCreateUser: code %s (%v), want %s", got, err, codes.Unavailable)
	}

	p.terminate(t)
	if code := p.wait(t, waitTimeout); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	records := logRecords(t, p.stdout.String())
	for _, msg := range []string{"database unreachable", "database unavailable"} { // the health watch's, the call's
		r := findRecord(records, func(r logRecord) bool { return r["msg"] == msg })
		if errText, _ := r["error"].(string); !strings.Contains(errText, "server_encoding SQL_ASCII") {
			t.Errorf("%q line: error = %q, want it to name the database's encoding", msg, errText)
		}
	}
}

// applySchema runs the up sections of the migrations on dbURL directly.
func applySchema(t *testing.T, dbURL string) {
	t.Helper()
	conn, err := pgx.Connect(rpcContext(t), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, f := range embeddedMigrations(t) {
		b, err := fs.ReadFile(migrations.FS, f)
		if err != nil {
			t.Fatal(err)
		}
		up, _, _ := strings.Cut(string(b), "-- migrate:down")
		if _, err := conn.Exec(rpcContext(t), up); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
}
