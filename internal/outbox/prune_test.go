package outbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/agynio/users/internal/db"
	"github.com/agynio/users/internal/outbox"
	"github.com/agynio/users/internal/testing/testdb"
)

// With the relay off, the events older than the retention are deleted,
// however many, and the newer ones kept.
func TestPruneDeletesOnlyEventsPastTheRetention(t *testing.T) {
	t.Parallel()
	pool, dbURL := newDatabase(t)
	q := db.New(pool)
	// The events are backdated as the tables' owner: the service's role
	// writes no occurred_at.
	owner, err := pgx.Connect(t.Context(), testdb.AsOwner(t, dbURL))
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close(context.WithoutCancel(t.Context()))
	// More old events than one statement deletes, written before the
	// new ones, as time goes.
	const old = 25000
	if _, err := owner.Exec(t.Context(), `INSERT INTO outbox (kind, identity_id, actor_service, occurred_at, data)
		SELECT 'user.updated', gen_random_uuid(), 'test', now() - interval '25 hours', '{}' FROM generate_series(1, $1::int)`, old); err != nil {
		t.Fatal(err)
	}
	kept := newUser(t, q, "kept")
	if _, err := owner.Exec(t.Context(), `INSERT INTO outbox (kind, identity_id, actor_service, occurred_at, data)
		VALUES ('user.updated', gen_random_uuid(), 'test', now() - interval '23 hours', '{}')`); err != nil {
		t.Fatal(err)
	}

	n, err := outbox.PruneOnce(t.Context(), q, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if n != old {
		t.Errorf("pruned %d events, want the %d older than 24h", n, old)
	}
	var left int
	var keptLeft bool
	if err := pool.QueryRow(t.Context(), "SELECT count(*), bool_or(identity_id = $1) FROM outbox", kept).Scan(&left, &keptLeft); err != nil {
		t.Fatal(err)
	}
	if left != 2 || !keptLeft {
		t.Errorf("%d events left (the new user's among them: %v), want the 2 newer than 24h", left, keptLeft)
	}
	if n, err := outbox.PruneOnce(t.Context(), q, 24*time.Hour); err != nil || n != 0 {
		t.Errorf("pruning again: %d, %v; want nothing to prune", n, err)
	}
}
