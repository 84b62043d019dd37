package db_test

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/agynio/users/internal/db"
	"github.com/agynio/users/internal/testing/testdb"
)

func TestMain(m *testing.M) {
	os.Exit(testdb.Run(m))
}

// obviousInsert is the textbook upsert the ResolveOrCreateUser query is
// measured against: INSERT ... ON CONFLICT DO NOTHING, and when that
// returns nothing (the subject exists: every login but the first), a
// second statement to read the row.
const obviousInsert = `INSERT INTO users (identity_id, oidc_subject, name, email, photo_url)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (oidc_subject) DO NOTHING
RETURNING identity_id, oidc_subject, name, email, photo_url, created_at, updated_at`

// BenchmarkLoginOfAKnownUser compares, side by side in one run, the two
// ways to serve the common login: a subject that already has a row.
func BenchmarkLoginOfAKnownUser(b *testing.B) {
	pool := testdb.New(b)
	q := db.New(pool)
	ctx := context.Background()
	params := db.ResolveOrCreateUserParams{OidcSubject: "bench|known", Name: "Known", Email: "known@example.com", ActorService: &testActor}
	params.IdentityID = uuid.Must(uuid.NewV7())
	if _, err := q.ResolveOrCreateUser(ctx, params); err != nil {
		b.Fatal(err)
	}

	b.Run("one-statement", func(b *testing.B) {
		for b.Loop() {
			params.IdentityID = uuid.Must(uuid.NewV7())
			row, err := q.ResolveOrCreateUser(ctx, params)
			if err != nil || row.Created {
				b.Fatalf("created=%v err=%v", row.Created, err)
			}
		}
	})
	b.Run("insert-then-select", func(b *testing.B) {
		for b.Loop() {
			var u db.User
			err := pool.QueryRow(ctx, obviousInsert, uuid.Must(uuid.NewV7()), params.OidcSubject, params.Name, params.Email, params.PhotoUrl).
				Scan(&u.IdentityID, &u.OidcSubject, &u.Name, &u.Email, &u.PhotoUrl, &u.CreatedAt, &u.UpdatedAt)
			if !errors.Is(err, pgx.ErrNoRows) {
				b.Fatalf("insert of a known subject: %v", err)
			}
			if _, err := q.GetUserByOIDCSubject(ctx, params.OidcSubject); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkBatchGetUsers reads a full batch of 100 ids in one statement.
func BenchmarkBatchGetUsers(b *testing.B) {
	pool := testdb.New(b)
	q := db.New(pool)
	ctx := context.Background()
	ids := make([]uuid.UUID, 100)
	for i := range ids {
		ids[i] = uuid.Must(uuid.NewV7())
		if _, err := q.ResolveOrCreateUser(ctx, db.ResolveOrCreateUserParams{IdentityID: ids[i], OidcSubject: ids[i].String(), ActorService: &testActor}); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		users, err := q.BatchGetUsers(ctx, ids)
		if err != nil || len(users) != len(ids) {
			b.Fatalf("%d users, err %v", len(users), err)
		}
	}
}
