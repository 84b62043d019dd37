package db_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/agynio/users/internal/db"
	"github.com/agynio/users/internal/testing/testdb"
)

// A database that cannot store text as UTF-8 is refused at connect, with
// an error that says why, and reads as unavailable (UNAVAILABLE to callers,
// NOT_SERVING to readiness).
func TestConnectRefusesADatabaseNotInUTF8(t *testing.T) {
	t.Parallel()
	for _, encoding := range []string{"SQL_ASCII", "LATIN1"} {
		t.Run(encoding, func(t *testing.T) {
			t.Parallel()
			dbURL := testdb.EncodedURL(t, encoding)
			pool, err := db.NewPool(t.Context(), dbURL, db.PoolOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			err = pool.Ping(t.Context())
			if !errors.Is(err, db.ErrNotUTF8) {
				t.Fatalf("Ping: %v, want ErrNotUTF8", err)
			}
			if !db.IsUnavailable(err) {
				t.Errorf("IsUnavailable(%v) = false, want true", err)
			}
			if !strings.Contains(err.Error(), encoding) || !strings.Contains(err.Error(), "UTF8") {
				t.Errorf("error %q does not name the encoding found and the one needed", err)
			}
		})
	}
}

// Text reaches the database as the UTF-8 it is, whatever client_encoding
// the database or role would give a session: a 100-character CJK name is
// stored as 100 characters, not as 300 mangled ones that break the CHECK.
func TestTextIsSentAsUTF8(t *testing.T) {
	t.Parallel()
	dbURL := testdb.URL(t)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := pgx.Connect(t.Context(), testdb.AsOwner(t, dbURL)) // the database's owner may set its defaults
	if err != nil {
		t.Fatal(err)
	}
	database := pgx.Identifier{strings.TrimPrefix(u.Path, "/")}.Sanitize()
	_, err = admin.Exec(t.Context(), "ALTER DATABASE "+database+" SET client_encoding = 'LATIN1'")
	admin.Close(context.Background())
	if err != nil {
		t.Fatal(err)
	}

	pool, err := db.NewPool(t.Context(), dbURL, db.PoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	name := strings.Repeat("名", 100)
	row, err := db.New(pool).ResolveOrCreateUser(t.Context(), db.ResolveOrCreateUserParams{
		IdentityID: uuid.Must(uuid.NewV7()), OidcSubject: "cjk", Name: name, ActorService: &testActor,
	})
	if err != nil {
		t.Fatalf("ResolveOrCreateUser with a 100-character CJK name: %v", err)
	}
	if row.Name != name {
		t.Errorf("name came back as %q, want %q", row.Name, name)
	}
	var chars int
	if err := pool.QueryRow(t.Context(), "SELECT char_length(name) FROM users WHERE oidc_subject = 'cjk'").Scan(&chars); err != nil {
		t.Fatal(err)
	}
	if chars != 100 {
		t.Errorf("stored name is %d characters, want 100", chars)
	}
}

// testActor is the actor of the changes these tests make: the outbox's
// CHECK wants one.
var testActor = "db tests"
