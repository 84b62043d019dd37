package migrate_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/jackc/pgx/v5"

	"github.com/agynio/users/internal/migrate"
	"github.com/agynio/users/internal/testing/pgtest"
	"github.com/agynio/users/internal/testing/testdb"
)

// TestUpOverTLS: when the service reaches its database over TLS, asked for
// (require), negotiated by pgx's default (prefer), or fallen back to
// (allow), dbmate's lib/pq must use TLS too. The server here refuses every
// connection that does not.
func TestUpOverTLS(t *testing.T) {
	t.Parallel()
	srv := pgtest.LocalTLS(t)
	admin, err := pgx.Connect(t.Context(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())

	for i, sslmode := range []string{"require", "", "allow"} {
		t.Run("sslmode="+sslmode, func(t *testing.T) {
			name := []string{"tls_required", "tls_preferred", "tls_allowed"}[i]
			if _, err := admin.Exec(t.Context(), "CREATE DATABASE "+name); err != nil {
				t.Fatal(err)
			}
			dbURL, err := testdb.WithDatabase(srv.URL, name)
			if err != nil {
				t.Fatal(err)
			}
			given := testdb.WithQuery(t, dbURL, "sslmode", sslmode)

			var log bytes.Buffer
			if err := migrate.Up(t.Context(), given, &log); err != nil {
				t.Fatalf("Up(%q): %v\n%s", given, err, &log)
			}
			want := schema{UsersTable: true, Versions: migrationVersions(t)}
			if diff := cmp.Diff(want, schemaOf(t, dbURL), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("schema mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
