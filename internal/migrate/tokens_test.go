package migrate_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/agynio/users/internal/migrate"
	"github.com/agynio/users/internal/testing/testdb"
)

// The api_tokens table holds only what the service means it to: a hash in
// lowercase hex, a prefix of the token's form, a name of 1 to 100
// characters.
func TestAPITokenConstraints(t *testing.T) {
	t.Parallel()
	// As the owner: the service's role inserts no created_at.
	pool, err := pgxpool.New(t.Context(), testdb.AsOwner(t, testdb.URL(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	owner := uuid.New()
	if _, err := pool.Exec(t.Context(), "INSERT INTO users (identity_id, oidc_subject) VALUES ($1, 'owner')", owner); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name           string
		set            string // SQL overriding one column of a valid token
		wantConstraint string // empty: the insert succeeds
	}{
		{"a valid token is accepted", "", ""},
		{"a name of 100 characters is accepted", "name = repeat('é', 100)", ""},
		{"a name of 101 characters is rejected", "name = repeat('n', 101)", "api_tokens_name_length"},
		{"an empty name is rejected", "name = ''", "api_tokens_name_length"},
		{"an upper-case hash is rejected", "token_hash = upper(token_hash)", "api_tokens_token_hash_format"},
		{"a short hash is rejected", "token_hash = left(token_hash, 63)", "api_tokens_token_hash_format"},
		{"a prefix not of the token's form is rejected", "token_prefix = 'ghp_abcd'", "api_tokens_token_prefix_format"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A valid token in a temporary table of the same shape, changed
			// by set, then inserted for real.
			tx, err := pool.Begin(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(context.WithoutCancel(t.Context())) //nolint:errcheck // read only on failure
			if _, err := tx.Exec(t.Context(), `CREATE TEMP TABLE candidate ON COMMIT DROP AS
				SELECT $1::uuid AS id, $2::uuid AS identity_id, 'a token'::text AS name, $3::text AS token_hash,
				       'agyn_Ab1'::text AS token_prefix, now() + interval '1 day' AS expires_at, now() AS created_at`,
				uuid.New(), owner, fmt.Sprintf("%s%02x", strings.Repeat("ab", 31), i)); err != nil { // a hash of its own per case
				t.Fatal(err)
			}
			if tt.set != "" {
				if _, err := tx.Exec(t.Context(), "UPDATE candidate SET "+tt.set); err != nil {
					t.Fatal(err)
				}
			}
			_, err = tx.Exec(t.Context(), `INSERT INTO api_tokens (id, identity_id, name, token_hash, token_prefix, expires_at, created_at)
				SELECT id, identity_id, name, token_hash, token_prefix, expires_at, created_at FROM candidate`)
			if tt.wantConstraint == "" {
				if err != nil {
					t.Fatalf("insert failed: %v", err)
				}
				return
			}
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.ConstraintName != tt.wantConstraint {
				t.Fatalf("insert: %v, want a violation of %s", err, tt.wantConstraint)
			}
		})
	}
}

// Rolling back the tokens' migration would make every token stop
// working: refused while one exists, done when forced.
func TestDownRefusesToDropTokens(t *testing.T) {
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
	owner := uuid.New()
	if _, err := conn.Exec(ctx, "INSERT INTO users (identity_id, oidc_subject) VALUES ($1, 'alice')", owner); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO api_tokens (id, identity_id, name, token_hash, token_prefix)
		VALUES ($1, $2, 'kept', repeat('a', 64), 'agyn_Ab1')`, uuid.New(), owner); err != nil {
		t.Fatal(err)
	}

	// The outbox's migration, the last, goes first: the token was
	// inserted here, not by the service, so it left no event behind.
	if err := migrate.Down(ctx, databaseURL, io.Discard); err != nil {
		t.Fatalf("Down of the empty outbox: %v", err)
	}
	err = migrate.Down(ctx, databaseURL, io.Discard)
	if !errors.Is(err, migrate.ErrDataLoss) || !strings.Contains(err.Error(), "api_tokens") {
		t.Fatalf("Down with a token: %v, want ErrDataLoss naming api_tokens", err)
	}
	if got := schemaOf(t, databaseURL).Versions; len(got) != len(all)-1 {
		t.Errorf("applied migrations after the refusal: %v, want all %d but the outbox's", got, len(all))
	}
	if err := migrate.ForceDown(ctx, databaseURL, io.Discard); err != nil {
		t.Fatalf("ForceDown: %v", err)
	}
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass('api_tokens') IS NOT NULL").Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Errorf("api_tokens still there after the forced rollback")
	}
	if got := schemaOf(t, databaseURL).Versions; len(got) != len(all)-2 {
		t.Errorf("applied migrations after the forced rollback: %v, want all but the last two", got)
	}
}
