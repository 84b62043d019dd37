// Package sql embeds the SQL that the users binary runs beside its
// migrations (sql/migrations) and its queries (sql/queries, compiled by
// sqlc into internal/db).
package sql

import _ "embed"

// Grants is grants.sql: the serve role's privileges, applied by "users
// migrate up" with the role's quoted name in place of :"serve_role".
//
//go:embed grants.sql
var Grants string

// Roles is roles.sql, which a DBA runs with psql and the binary never
// does: for the tests, which run its roles part on their servers.
//
//go:embed roles.sql
var Roles string
