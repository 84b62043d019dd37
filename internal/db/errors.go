// Package db is the data layer: the query code that sqlc generates from
// sql/queries/users.sql (never edit those files; run make generate), and
// hand-written files: this one, which classifies the driver's errors by
// kind so that callers never look at error text; conn.go, what every
// connection needs (a connect timeout, UTF-8); pool.go, the pool's
// defaults; bounded.go, the timeouts every statement runs under.
package db

import (
	"context"
	"errors"
	"io"
	"net"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/puddle/v2"
)

// ErrNotFound is what a :one query returns when it finds no row.
var ErrNotFound = pgx.ErrNoRows

// IsNotFound reports whether a :one query found no row.
func IsNotFound(err error) bool {
	return errors.Is(err, pgx.ErrNoRows)
}

// IsUnavailable reports whether err means the database could not be reached,
// went away, or could not serve the statement in time (a lock_timeout or
// statement_timeout from the URL, a standby after a failover): a retry,
// later or on another replica, may succeed. The caller's own deadline is
// the caller's to tell apart.
func IsUnavailable(err error) bool {
	if err == nil {
		return false
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &connectErr), // dial, TLS or authentication failed
		errors.As(err, &netErr),                                     // connection lost mid-query
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), // server closed the connection
		errors.Is(err, puddle.ErrClosedPool), // pool closed during shutdown
		errors.Is(err, ErrAcquireTimeout),    // every connection busy for too long
		// Bounded's query timeout (DB_TIMEOUT), or a connect_timeout: callers
		// tell their own deadline apart first.
		errors.Is(err, context.DeadlineExceeded),
		pgconn.SafeToRetry(err): // failed before the query was sent
		return true
	case errors.As(err, &pgErr):
		return pgerrcode.IsConnectionException(pgErr.Code) ||
			pgErr.Code == pgerrcode.AdminShutdown ||
			pgErr.Code == pgerrcode.CrashShutdown ||
			pgErr.Code == pgerrcode.CannotConnectNow ||
			// Class 53, insufficient resources: disk full, out of memory,
			// too many connections. The server is short of something for
			// now; the statement itself is fine.
			pgerrcode.IsInsufficientResources(pgErr.Code) ||
			pgErr.Code == pgerrcode.LockNotAvailable ||
			pgErr.Code == pgerrcode.QueryCanceled ||
			pgErr.Code == pgerrcode.ReadOnlySQLTransaction
	}
	return false
}

// IsConflict reports whether the statement lost to a concurrent one
// (serialization failure, deadlock): the whole call may be retried.
func IsConflict(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) &&
		(pgErr.Code == pgerrcode.SerializationFailure || pgErr.Code == pgerrcode.DeadlockDetected)
}

// PrimaryKey is the users table's primary key constraint (PostgreSQL's
// default name for it, see sql/migrations).
const PrimaryKey = "users_pkey"

// IsDuplicateID reports whether an insert lost because its identity id is
// taken: the primary key, not the OIDC subject (ResolveOrCreateUser settles
// that one itself). With local UUIDv7 ids this does not happen; with ids
// from a remote allocator a retry, which allocates again, may succeed.
func IsDuplicateID(err error) bool { return isUniqueViolation(err, PrimaryKey) }

// IsConstraintViolation reports whether the database refused a value that
// the API's validation should already have refused: a CHECK constraint, an
// overlong string, or a byte the text type cannot hold.
func IsConstraintViolation(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch pgErr.Code {
	case pgerrcode.CheckViolation,
		pgerrcode.StringDataRightTruncationDataException,
		pgerrcode.CharacterNotInRepertoire,
		pgerrcode.UntranslatableCharacter:
		return true
	}
	return false
}

// Unique constraints a caller can run into (see sql/migrations).
const (
	usernameKey = "users_username_key"
	subjectKey  = "users_oidc_subject_key"
)

// IsUsernameTaken reports whether a write lost because another user has
// the username.
func IsUsernameTaken(err error) bool { return isUniqueViolation(err, usernameKey) }

// IsSubjectTaken reports whether an insert lost because a user has the
// OIDC subject already.
func IsSubjectTaken(err error) bool { return isUniqueViolation(err, subjectKey) }

func isUniqueViolation(err error, constraint string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) &&
		pgErr.Code == pgerrcode.UniqueViolation && pgErr.ConstraintName == constraint
}

// tokenOwnerKey is api_tokens' foreign key to users (PostgreSQL's default
// name for it, see sql/migrations).
const tokenOwnerKey = "api_tokens_identity_id_fkey"

// IsUnknownOwner reports whether a token insert failed because no user
// has its owner's identity id.
func IsUnknownOwner(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) &&
		pgErr.Code == pgerrcode.ForeignKeyViolation && pgErr.ConstraintName == tokenOwnerKey
}

// tooManyLiveTokens is the SQLSTATE of api_tokens' cap on a user's live
// tokens (see sql/migrations).
const tooManyLiveTokens = "UT001"

// IsTooManyLiveTokens reports whether a token insert was refused because
// its owner holds the most live tokens allowed.
func IsTooManyLiveTokens(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == tooManyLiveTokens
}
