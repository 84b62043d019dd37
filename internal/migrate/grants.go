package migrate

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	usersql "github.com/agynio/users/sql"
)

// checkServeRole refuses a serveRole that grants.sql cannot be applied to
// as it means: a role that does not exist, and the role migrate connects
// as, which would revoke its own rights on the tables it owns (those of
// schema_migrations included) and keep only the service's.
func checkServeRole(ctx context.Context, conn *pgx.Conn, role string) error {
	var exists, self bool
	err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1), $1 = current_user::text", role).Scan(&exists, &self)
	if err != nil {
		return fmt.Errorf("DB_SERVE_ROLE: %w", err)
	}
	if !exists {
		return fmt.Errorf("DB_SERVE_ROLE: role %q does not exist; create it first (sql/roles.sql creates users_serve)", role)
	}
	if self {
		return fmt.Errorf("DB_SERVE_ROLE: %q is the role migrate connects as (DATABASE_URL); name the role serve connects as", role)
	}
	return nil
}

// grant applies grants.sql to role, in one transaction, so that the
// service never sees the moment between the revocations and the grants.
func grant(ctx context.Context, conn *pgx.Conn, role string) error {
	stmts := strings.ReplaceAll(usersql.Grants, `:"serve_role"`, pgx.Identifier{role}.Sanitize())
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, stmts)
		return err
	})
	if err != nil {
		return fmt.Errorf("grant DB_SERVE_ROLE %q its privileges (sql/grants.sql): %w", role, err)
	}
	return nil
}
