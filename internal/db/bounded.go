package db

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrAcquireTimeout is returned when no pool connection came free within
// the acquire timeout: the database is too slow or too far away to keep up,
// and the call is better refused now than queued until its deadline.
var ErrAcquireTimeout = errors.New("timed out waiting for a database connection")

// Bounded is the pool as the handlers use it (a DBTX): each statement waits
// at most acquireTimeout for a connection and runs at most queryTimeout in
// all, or less if the caller's deadline is earlier. Without it a call would
// wait as long as its caller let it, and a caller without a deadline
// forever, while the database is unreachable or overloaded.
type Bounded struct {
	pool           *pgxpool.Pool
	acquireTimeout time.Duration
	queryTimeout   time.Duration
}

// NewBounded bounds the statements run on pool. An acquireTimeout longer
// than queryTimeout has no effect.
func NewBounded(pool *pgxpool.Pool, acquireTimeout, queryTimeout time.Duration) *Bounded {
	return &Bounded{pool: pool, acquireTimeout: acquireTimeout, queryTimeout: queryTimeout}
}

var _ DBTX = (*Bounded)(nil)

// acquire returns a connection and the context to run one statement in;
// done releases both.
func (b *Bounded) acquire(ctx context.Context) (_ *pgxpool.Conn, _ context.Context, done func(), err error) {
	ctx, cancel := context.WithTimeout(ctx, b.queryTimeout)
	acquireCtx := ctx
	if b.acquireTimeout < b.queryTimeout { // else the query timeout bounds it
		var cancelAcquire context.CancelFunc
		acquireCtx, cancelAcquire = context.WithTimeout(ctx, b.acquireTimeout)
		defer cancelAcquire()
	}
	conn, err := b.pool.Acquire(acquireCtx)
	if err != nil {
		// Only the acquire timeout itself is ErrAcquireTimeout; a caller's
		// deadline or the query timeout stays what it is. (Ask before
		// cancel, which would end ctx too.)
		if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w (%s): %w", ErrAcquireTimeout, b.acquireTimeout, err)
		}
		cancel()
		return nil, nil, nil, err
	}
	return conn, ctx, func() { conn.Release(); cancel() }, nil
}

func (b *Bounded) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	conn, ctx, done, err := b.acquire(ctx)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	defer done()
	return conn.Exec(ctx, sql, args...)
}

func (b *Bounded) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	conn, ctx, done, err := b.acquire(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		done()
		return nil, err
	}
	return &releasingRows{Rows: rows, done: done}, nil
}

func (b *Bounded) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	conn, ctx, done, err := b.acquire(ctx)
	if err != nil {
		return errRow{err}
	}
	return releasingRow{row: conn.QueryRow(ctx, sql, args...), done: done}
}

// releasingRows gives the connection back when the rows are closed.
type releasingRows struct {
	pgx.Rows
	done func()
}

func (r *releasingRows) Close() {
	r.Rows.Close()
	if r.done != nil {
		r.done()
		r.done = nil
	}
}

// releasingRow gives the connection back once the row is scanned, as
// pgxpool's own QueryRow does; generated code always scans.
type releasingRow struct {
	row  pgx.Row
	done func()
}

func (r releasingRow) Scan(dest ...any) error {
	defer r.done()
	return r.row.Scan(dest...)
}

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }
