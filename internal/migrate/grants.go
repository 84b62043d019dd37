package migrate

import (
	"context"
	"fmt"
	"io/fs"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/agynio/users/internal/config"
	usersql "github.com/agynio/users/sql"
	"github.com/agynio/users/sql/migrations"
)

// serveRoleVariable is the setting that names the serve role, which a
// refusal of it names.
const serveRoleVariable = "DB_SERVE_ROLE"

// checkServeRole refuses a role that grants.sql cannot be applied to as
// it means, as a configuration error: a role that does not exist; the
// role migrate connects as, which would revoke its own rights on the
// tables it owns (those of schema_migrations included) and keep only the
// service's; and a role whose rights go beyond any grant: a superuser,
// or a member of the role that owns (or will own) the tables, which holds
// the owner's rights whatever is revoked from it.
func checkServeRole(ctx context.Context, conn *pgx.Conn, role string) error {
	var exists bool
	err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)", role).Scan(&exists)
	if err != nil {
		return fmt.Errorf("%s: %w", serveRoleVariable, err)
	}
	if !exists {
		return config.Errorf(serveRoleVariable, "role %q does not exist; create it first (sql/roles.sql creates users_serve)", role)
	}
	var self, super bool
	var owner string
	err = conn.QueryRow(ctx, `
		SELECT $1 = current_user::text,
		       (SELECT rolsuper FROM pg_roles WHERE rolname = $1),
		       coalesce((SELECT o.rolname::text
		                 FROM pg_roles o
		                 WHERE (o.rolname = current_user
		                        OR o.oid IN (SELECT relowner FROM pg_class WHERE relnamespace = 'public'::regnamespace))
		                   AND pg_has_role($1, o.oid, 'MEMBER')
		                 ORDER BY o.rolname LIMIT 1), '')`, role).Scan(&self, &super, &owner)
	if err != nil {
		return fmt.Errorf("%s: %w", serveRoleVariable, err)
	}
	switch {
	case self:
		return config.Errorf(serveRoleVariable, "%q is the role migrate connects as (DATABASE_URL); name the role serve connects as", role)
	case super:
		return config.Errorf(serveRoleVariable, "%q is a superuser, which no grant limits; name a role without SUPERUSER", role)
	case owner != "":
		return config.Errorf(serveRoleVariable, "%q is a member of %q, which owns the tables, so it holds the owner's rights whatever is granted; name a role that is not", role, owner)
	}
	return nil
}

// newerVersions returns the versions in schema_migrations that this
// release's migrations do not have: a newer release's, whose schema this
// release serves on (after a rollback, or an Argo CD sync back) but whose
// grants it does not know.
func newerVersions(ctx context.Context, conn *pgx.Conn) ([]string, error) {
	known := map[string]bool{}
	err := fs.WalkDir(migrations.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		v, _, _ := strings.Cut(path, "_")
		known[v] = true
		return nil
	})
	if err != nil {
		return nil, err
	}
	rows, err := conn.Query(ctx, "SELECT version::text FROM schema_migrations ORDER BY version")
	if err != nil {
		return nil, err
	}
	applied, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(applied, func(v string) bool { return known[v] }), nil
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
