package migrate_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/agynio/users/internal/migrate"
	"github.com/agynio/users/internal/testing/testdb"
)

// outbox_uuidv7 makes RFC 9562 version 7 UUIDs: the variant and version
// bits set, the first 48 bits the time in milliseconds, the rest random.
func TestOutboxUUIDv7(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	before := time.Now().Truncate(time.Millisecond)
	rows, err := pool.Query(t.Context(), "SELECT outbox_uuidv7() FROM generate_series(1, 1000)")
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	seen := make(map[uuid.UUID]bool)
	for _, id := range ids {
		if id.Version() != 7 || id.Variant() != uuid.RFC4122 {
			t.Fatalf("%s: version %d, variant %s, want 7 of RFC 9562", id, id.Version(), id.Variant())
		}
		sec, nsec := id.Time().UnixTime()
		if at := time.Unix(sec, nsec); at.Before(before) || at.After(after) {
			t.Fatalf("%s: time %s, not between %s and %s", id, at, before, after)
		}
		if seen[id] {
			t.Fatalf("%s made twice", id)
		}
		seen[id] = true
	}
}

// The outbox holds only events of a known kind, by one actor, and never a
// token's hash.
func TestOutboxConstraints(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	for name, tt := range map[string]struct{ sql, constraint string }{
		"an unknown kind": {`INSERT INTO outbox (kind, identity_id, actor_service, data) VALUES ('user.renamed', gen_random_uuid(), 'x', '{}')`, "outbox_kind"},
		"no actor":        {`INSERT INTO outbox (kind, identity_id, data) VALUES ('user.updated', gen_random_uuid(), '{}')`, "outbox_one_actor"},
		"two actors":      {`INSERT INTO outbox (kind, identity_id, actor_identity_id, actor_service, data) VALUES ('user.updated', gen_random_uuid(), gen_random_uuid(), 'x', '{}')`, "outbox_one_actor"},
		"a token's hash":  {`INSERT INTO outbox (kind, identity_id, actor_service, data) VALUES ('api_token.created', gen_random_uuid(), 'x', jsonb_build_object('token_hash', repeat('a', 64)))`, "outbox_no_token_hash"},
	} {
		_, err := pool.Exec(t.Context(), tt.sql)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.ConstraintName != tt.constraint {
			t.Errorf("%s: %v, want a violation of %s", name, err, tt.constraint)
		}
	}
}

// Rolling back the outbox's migration would lose the events not yet
// published: refused while one is pending, done when forced.
func TestDownRefusesToDropPendingEvents(t *testing.T) {
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
	if _, err := conn.Exec(ctx, `INSERT INTO outbox (kind, identity_id, actor_service, data) VALUES ('user.updated', gen_random_uuid(), 'x', '{}')`); err != nil {
		t.Fatal(err)
	}

	err = migrate.Down(ctx, databaseURL, io.Discard)
	if !errors.Is(err, migrate.ErrDataLoss) || !strings.Contains(err.Error(), "outbox") {
		t.Fatalf("Down with a pending event: %v, want ErrDataLoss naming the outbox", err)
	}
	if got := schemaOf(t, databaseURL).Versions; len(got) != len(all) {
		t.Errorf("applied migrations after the refusal: %v, want all %d", got, len(all))
	}
	if err := migrate.ForceDown(ctx, databaseURL, io.Discard); err != nil {
		t.Fatalf("ForceDown: %v", err)
	}
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass('outbox') IS NOT NULL OR to_regproc('outbox_uuidv7') IS NOT NULL").Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Errorf("the outbox or its function still there after the forced rollback")
	}
	// And back up: the down left the tokens' trigger as it was before.
	if err := migrate.Up(ctx, databaseURL, io.Discard); err != nil {
		t.Fatalf("Up again: %v", err)
	}
}
