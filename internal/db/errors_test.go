package db_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/puddle/v2"

	"github.com/agynio/users/internal/db"
)

func pgErr(code string) error {
	return fmt.Errorf("query: %w", &pgconn.PgError{Code: code, Message: "from the server"})
}

// pgErrOn is a PostgreSQL error that names the constraint it broke.
func pgErrOn(code, constraint string) error {
	return fmt.Errorf("query: %w", &pgconn.PgError{Code: code, Message: "from the server", ConstraintName: constraint})
}

func TestErrorKinds(t *testing.T) {
	t.Parallel()
	type kinds struct{ notFound, unavailable, constraint, conflict, duplicateID bool }
	tests := []struct {
		name string
		err  error
		want kinds
	}{
		{"no error is no kind", nil, kinds{}},
		{"no rows is not found", fmt.Errorf("get: %w", pgx.ErrNoRows), kinds{notFound: true}},
		{"a connection exception is unavailable", pgErr(pgerrcode.ConnectionFailure), kinds{unavailable: true}},
		{"an administrator shutdown is unavailable", pgErr(pgerrcode.AdminShutdown), kinds{unavailable: true}},
		{"a server starting up is unavailable", pgErr(pgerrcode.CannotConnectNow), kinds{unavailable: true}},
		{"too many connections is unavailable", pgErr(pgerrcode.TooManyConnections), kinds{unavailable: true}},
		{"a full disk is unavailable", pgErr(pgerrcode.DiskFull), kinds{unavailable: true}},
		{"a server out of memory is unavailable", pgErr(pgerrcode.OutOfMemory), kinds{unavailable: true}},
		{"a configuration limit reached is unavailable", pgErr(pgerrcode.ConfigurationLimitExceeded), kinds{unavailable: true}},
		{"a closed pool is unavailable", puddle.ErrClosedPool, kinds{unavailable: true}},
		{"an unexpected EOF is unavailable", fmt.Errorf("read: %w", io.ErrUnexpectedEOF), kinds{unavailable: true}},
		{"a lock_timeout is unavailable", pgErr(pgerrcode.LockNotAvailable), kinds{unavailable: true}},
		{"a statement_timeout is unavailable", pgErr(pgerrcode.QueryCanceled), kinds{unavailable: true}},
		{"a write on a standby is unavailable", pgErr(pgerrcode.ReadOnlySQLTransaction), kinds{unavailable: true}},
		{"a serialization failure is a conflict", pgErr(pgerrcode.SerializationFailure), kinds{conflict: true}},
		{"a deadlock is a conflict", pgErr(pgerrcode.DeadlockDetected), kinds{conflict: true}},
		{"a check violation is a constraint violation", pgErr(pgerrcode.CheckViolation), kinds{constraint: true}},
		{"a NUL byte refused by text is a constraint violation", pgErr(pgerrcode.CharacterNotInRepertoire), kinds{constraint: true}},
		{"an overlong value is a constraint violation", pgErr(pgerrcode.StringDataRightTruncationDataException), kinds{constraint: true}},
		{"a missing table is no kind", pgErr(pgerrcode.UndefinedTable), kinds{}},
		{"a unique violation on the primary key is a duplicate id", pgErrOn(pgerrcode.UniqueViolation, "users_pkey"), kinds{duplicateID: true}},
		{"a unique violation on the OIDC subject is no kind", pgErrOn(pgerrcode.UniqueViolation, "users_oidc_subject_key"), kinds{}},
		{"a unique violation naming no constraint is no kind", pgErr(pgerrcode.UniqueViolation), kinds{}},
		{"another error naming the primary key is no duplicate id", pgErrOn(pgerrcode.CheckViolation, "users_pkey"), kinds{constraint: true}},
		{"a plain error is no kind", errors.New("boom"), kinds{}},
		{"a cancelled context is no kind", context.Canceled, kinds{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := kinds{db.IsNotFound(tt.err), db.IsUnavailable(tt.err), db.IsConstraintViolation(tt.err), db.IsConflict(tt.err), db.IsDuplicateID(tt.err)}
			if got != tt.want {
				t.Errorf("kinds = %+v, want %+v", got, tt.want)
			}
		})
	}
}
