package db

import "context"

// Readiness is the database as the readiness probe sees it (a Pinger for
// the health watch): reachable, and holding the table and the columns the
// queries read. A bare ping would call a replica ready while every call
// fails on a dropped table or a migration rolled back under it.
type Readiness struct{ queries *Queries }

// NewReadiness checks the database through conn: give it a pool of its own,
// so that a busy service does not read as an unreachable database.
func NewReadiness(conn DBTX) Readiness { return Readiness{queries: New(conn)} }

// Ping runs CheckSchema.
func (r Readiness) Ping(ctx context.Context) error { return r.queries.CheckSchema(ctx) }
