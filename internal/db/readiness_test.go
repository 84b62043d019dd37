package db_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/agynio/users/internal/db"
	"github.com/agynio/users/internal/testing/testdb"
)

// TestReadiness: the readiness check passes on the migrated schema and
// fails on one the queries cannot run against.
func TestReadiness(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change string // run on the migrated database first
		ready  bool
	}{
		{"the migrated schema is ready", "", true},
		{"the migrated schema holding a user is ready", "INSERT INTO users (identity_id, oidc_subject) VALUES (gen_random_uuid(), 's')", true},
		{"a dropped table is not ready", "DROP TABLE users CASCADE", false},
		{"a dropped tokens table is not ready", "DROP TABLE api_tokens", false},
		{"a dropped token column is not ready", "ALTER TABLE api_tokens DROP COLUMN last_used_at", false},
		{"a dropped outbox is not ready: every change writes it", "DROP TABLE outbox", false},
		{"a dropped column is not ready", "ALTER TABLE users DROP COLUMN photo_url", false},
		{"a renamed column is not ready", "ALTER TABLE users RENAME COLUMN oidc_subject TO subject", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dbURL := testdb.URL(t)
			if tt.change != "" {
				// As the tables' owner: the service's role may not change them.
				owner, err := pgx.Connect(t.Context(), testdb.AsOwner(t, dbURL))
				if err != nil {
					t.Fatal(err)
				}
				_, err = owner.Exec(t.Context(), tt.change)
				owner.Close(context.WithoutCancel(t.Context()))
				if err != nil {
					t.Fatal(err)
				}
			}
			pool, err := pgxpool.New(t.Context(), dbURL)
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			err = db.NewReadiness(pool).Ping(t.Context())
			if ready := err == nil; ready != tt.ready {
				t.Errorf("Ping: %v; want ready = %v", err, tt.ready)
			}
		})
	}
}
