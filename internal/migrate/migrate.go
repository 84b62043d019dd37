// Package migrate applies the embedded dbmate migrations, serialized across
// processes by a PostgreSQL advisory lock.
package migrate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"

	"github.com/amacneil/dbmate/v2/pkg/dbmate"
	_ "github.com/amacneil/dbmate/v2/pkg/driver/postgres" // registers the postgres:// and postgresql:// schemes
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/agynio/users/sql/migrations"
)

// lockKey identifies the advisory lock held while migrating. dbmate takes no
// lock of its own, so without it two replicas running "migrate up" together
// would both see a migration as pending and both try to apply it.
// The value is arbitrary but fixed for good: were it to change, an old and a
// new release could migrate at the same time.
const lockKey int64 = 0x3b1f5f2c6a4e7d01

// Up applies every pending migration.
func Up(ctx context.Context, databaseURL string, log io.Writer) error {
	return withLock(ctx, databaseURL, log, (*dbmate.DB).Migrate)
}

// Down rolls back the most recent migration.
func Down(ctx context.Context, databaseURL string, log io.Writer) error {
	return withLock(ctx, databaseURL, log, (*dbmate.DB).Rollback)
}

// Status writes which migrations are applied and returns how many are pending.
func Status(ctx context.Context, databaseURL string, log io.Writer) (pending int, err error) {
	err = withLock(ctx, databaseURL, log, func(db *dbmate.DB) error {
		pending, err = db.Status(false)
		return err
	})
	return pending, err
}

// withLock runs fn while holding the migration advisory lock on a separate
// connection. The lock is session-scoped, so it is released when that
// connection closes even if this process dies half-way.
func withLock(ctx context.Context, databaseURL string, log io.Writer, fn func(*dbmate.DB) error) error {
	db, err := newDBMate(databaseURL, log)
	if err != nil {
		return err
	}

	// pgxpool's parser takes the pool_* settings out of the URL, which
	// pgx.Connect would send to the server as unknown run-time parameters.
	poolCfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return err
	}
	conn, err := pgx.ConnectConfig(ctx, poolCfg.ConnConfig)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", lockKey); err != nil {
		return fmt.Errorf("acquire migration lock: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", lockKey) //nolint:errcheck // closing the connection releases it anyway

	return fn(db)
}

func newDBMate(databaseURL string, log io.Writer) (*dbmate.DB, error) {
	u, err := url.Parse(databaseURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return nil, errors.New("migrations need a postgres:// or postgresql:// URL")
	}
	// dbmate connects with lib/pq, which would send pgxpool's settings to
	// the server as unknown run-time parameters too.
	q := u.Query()
	for k := range q {
		if strings.HasPrefix(k, "pool_") {
			q.Del(k)
		}
	}
	u.RawQuery = q.Encode()

	db := dbmate.New(u)
	db.FS = migrations.FS
	db.MigrationsDir = []string{"."}
	db.AutoDumpSchema = false // needs pg_dump, and the schema lives in sql/migrations already
	db.Log = log
	return db, nil
}
