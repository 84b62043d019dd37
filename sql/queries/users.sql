-- name: ResolveOrCreateUser :one
-- Login path: one round trip for both a new and a returning subject.
-- Every login but the first finds its row, so the statement reads first:
-- when existing finds the subject, the INSERT has no row to insert and
-- never reaches the unique index, and the stored row comes back untouched
-- (created = false), because profile claims are taken only at first
-- login. An INSERT ... ON CONFLICT alone would have PostgreSQL attempt
-- the insert of a known subject at every login, for about 1.6 times the
-- database CPU.
-- A new subject is inserted (created = true), and the INSERT still
-- arbitrates on the unique oidc_subject. Under a concurrent first login
-- of the same subject, existing reads the statement's snapshot, taken
-- before the winner committed, and finds nothing, and the INSERT waits
-- for the winner. If the winner commits, the INSERT does nothing, so the
-- statement returns no row, and the caller then reads the winner's row
-- with GetUserByOIDCSubject; if it rolls back, the INSERT goes ahead
-- (created = true).
WITH existing AS (
    SELECT identity_id, oidc_subject, name, email, photo_url, created_at, updated_at
    FROM users
    WHERE users.oidc_subject = @oidc_subject
), inserted AS (
    INSERT INTO users (identity_id, oidc_subject, name, email, photo_url)
    SELECT @identity_id, @oidc_subject, @name, @email, @photo_url
    WHERE NOT EXISTS (SELECT 1 FROM existing)
    ON CONFLICT (oidc_subject) DO NOTHING
    RETURNING identity_id, oidc_subject, name, email, photo_url, created_at, updated_at
)
SELECT identity_id, oidc_subject, name, email, photo_url, created_at, updated_at, false AS created
FROM existing
UNION ALL
SELECT identity_id, oidc_subject, name, email, photo_url, created_at, updated_at, true AS created
FROM inserted;

-- name: GetUser :one
SELECT identity_id, oidc_subject, name, email, photo_url, created_at, updated_at
FROM users
WHERE identity_id = @identity_id;

-- name: GetUserByOIDCSubject :one
SELECT identity_id, oidc_subject, name, email, photo_url, created_at, updated_at
FROM users
WHERE oidc_subject = @oidc_subject;

-- name: BatchGetUsers :many
-- The users with these ids, each once, in no particular order; ids with no
-- user are left out. The caller puts them in the order of the ids' first
-- occurrence, in one pass over the ids: ORDER BY array_position(...)
-- would search the array once per row, about a quarter of this
-- statement's database CPU for 100 ids. Also what concurrent GetUser
-- calls queued behind the running ones are read with, at once (see
-- internal/coalesce).
SELECT identity_id, oidc_subject, name, email, photo_url, created_at, updated_at
FROM users
WHERE identity_id = ANY(@identity_ids::uuid[]);

-- name: GetUsersByOIDCSubjects :many
-- The users with these subjects, each once, in no particular order;
-- subjects with no user are left out. The service reads the concurrent
-- GetUserByOIDCSubject calls and logins queued behind the running ones
-- with it, at once (see internal/coalesce); the unique index answers
-- each subject.
SELECT identity_id, oidc_subject, name, email, photo_url, created_at, updated_at
FROM users
WHERE oidc_subject = ANY(@oidc_subjects::text[]);

-- name: UpdateUser :one
-- Partial update: a NULL argument keeps the stored value; any other value,
-- the empty string included, replaces it. updated_at moves forward even if
-- the server's clock has stepped back since the last write.
UPDATE users
SET name       = COALESCE(sqlc.narg(name), name),
    email      = COALESCE(sqlc.narg(email), email),
    photo_url  = COALESCE(sqlc.narg(photo_url), photo_url),
    updated_at = GREATEST(now(), updated_at + interval '1 microsecond')
WHERE identity_id = @identity_id
RETURNING identity_id, oidc_subject, name, email, photo_url, created_at, updated_at;

-- name: CheckSchema :exec
-- Readiness, every 2 s on a connection of its own: reads no row, but
-- PostgreSQL must resolve every column the queries above read, so it fails
-- (undefined table or column) on a schema the service cannot serve, as it
-- does when the database is unreachable.
SELECT identity_id, oidc_subject, name, email, photo_url, created_at, updated_at
FROM users
LIMIT 0;
