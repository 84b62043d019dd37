-- name: ResolveOrCreateUser :one
-- Login path: one round trip for both a new and a returning subject.
-- The INSERT arbitrates on the unique oidc_subject: a new subject is inserted
-- (created = true); a known one is left untouched, because profile claims are
-- taken only at first login, and the second branch returns the stored row
-- (created = false).
-- Under a concurrent first login of the same subject the INSERT waits for the
-- winner and then does nothing, but the SELECT still reads the statement's
-- snapshot, taken before the winner committed, and so returns no row: the
-- caller then reads the winner's row with GetUserByOIDCSubject.
WITH inserted AS (
    INSERT INTO users (identity_id, oidc_subject, name, email, photo_url)
    VALUES (@identity_id, @oidc_subject, @name, @email, @photo_url)
    ON CONFLICT (oidc_subject) DO NOTHING
    RETURNING identity_id, oidc_subject, name, email, photo_url, created_at, updated_at
)
SELECT identity_id, oidc_subject, name, email, photo_url, created_at, updated_at, true AS created
FROM inserted
UNION ALL
SELECT identity_id, oidc_subject, name, email, photo_url, created_at, updated_at, false AS created
FROM users
WHERE oidc_subject = @oidc_subject
    AND NOT EXISTS (SELECT 1 FROM inserted);

-- name: GetUser :one
SELECT identity_id, oidc_subject, name, email, photo_url, created_at, updated_at
FROM users
WHERE identity_id = @identity_id;

-- name: GetUserByOIDCSubject :one
SELECT identity_id, oidc_subject, name, email, photo_url, created_at, updated_at
FROM users
WHERE oidc_subject = @oidc_subject;

-- name: BatchGetUsers :many
-- Users in the order of their first occurrence in identity_ids; ids with no
-- user are left out, and a repeated id yields its user once.
SELECT identity_id, oidc_subject, name, email, photo_url, created_at, updated_at
FROM users
WHERE identity_id = ANY(@identity_ids::uuid[])
ORDER BY array_position(@identity_ids::uuid[], identity_id);

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
