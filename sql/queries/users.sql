-- name: ResolveOrCreateUser :one
-- Login path: one round trip for both a new and a returning subject.
-- Every login but the first finds its row, so the statement reads first:
-- when existing finds the subject, the INSERT has no row to insert and
-- never reaches the unique index, and the stored row comes back untouched
-- (created = false), because profile claims are taken only at first
-- login. An INSERT ... ON CONFLICT alone would have PostgreSQL attempt
-- the insert of a known subject at every login, for about 1.6 times the
-- database CPU.
-- A new subject is inserted (created = true) with a username derived
-- from its claims (see users_free_username in sql/migrations), and the
-- INSERT still arbitrates on the unique oidc_subject and username. Under
-- a concurrent first login of the same subject, existing reads the
-- statement's snapshot, taken before the winner committed, and finds
-- nothing, and the INSERT waits for the winner. If the winner commits,
-- the INSERT does nothing, so the statement returns no row, and the
-- caller then reads the winner's row with GetUserByOIDCSubject; if it
-- rolls back, the INSERT goes ahead (created = true). Two new subjects
-- that picked the same free username at once end the same way for the
-- loser: no row, and no user under its subject either, so the caller
-- runs the statement again, which now sees the winner's username taken.
-- A user inserted writes its user.created event (see sql/migrations'
-- outbox) in the same statement; a returning login writes nothing.
WITH existing AS (
    SELECT identity_id, oidc_subject, name, email, photo_url, created_at, updated_at, nickname, username, email_verified, cluster_role
    FROM users
    WHERE users.oidc_subject = @oidc_subject
), inserted AS (
    INSERT INTO users (identity_id, oidc_subject, name, email, photo_url, email_verified, cluster_role, username)
    SELECT @identity_id, @oidc_subject, @name, @email, @photo_url, @email_verified, sqlc.narg(cluster_role),
           users_free_username(users_username_base(sqlc.narg(preferred_username), @email, @name, @oidc_subject))
    WHERE NOT EXISTS (SELECT 1 FROM existing)
    ON CONFLICT DO NOTHING
    RETURNING identity_id, oidc_subject, name, email, photo_url, created_at, updated_at, nickname, username, email_verified, cluster_role
), event AS (
    INSERT INTO outbox (kind, identity_id, actor_identity_id, actor_service, data)
    SELECT 'user.created', i.identity_id, sqlc.narg(actor_identity_id)::uuid, sqlc.narg(actor_service)::text, to_jsonb(i)
    FROM inserted i
)
SELECT identity_id, oidc_subject, name, email, photo_url, created_at, updated_at, nickname, username, email_verified, cluster_role, false AS created
FROM existing
UNION ALL
SELECT identity_id, oidc_subject, name, email, photo_url, created_at, updated_at, nickname, username, email_verified, cluster_role, true AS created
FROM inserted;

-- name: GetUser :one
SELECT identity_id, oidc_subject, name, email, photo_url, created_at, updated_at, nickname, username, email_verified, cluster_role
FROM users
WHERE identity_id = @identity_id;

-- name: GetUserByOIDCSubject :one
SELECT identity_id, oidc_subject, name, email, photo_url, created_at, updated_at, nickname, username, email_verified, cluster_role
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
SELECT identity_id, oidc_subject, name, email, photo_url, created_at, updated_at, nickname, username, email_verified, cluster_role
FROM users
WHERE identity_id = ANY(@identity_ids::uuid[]);

-- name: GetUsersByOIDCSubjects :many
-- The users with these subjects, each once, in no particular order;
-- subjects with no user are left out. The service reads the concurrent
-- GetUserByOIDCSubject calls and logins queued behind the running ones
-- with it, at once (see internal/coalesce); the unique index answers
-- each subject.
SELECT identity_id, oidc_subject, name, email, photo_url, created_at, updated_at, nickname, username, email_verified, cluster_role
FROM users
WHERE oidc_subject = ANY(@oidc_subjects::text[]);

-- name: CheckSchema :exec
-- Readiness, every 2 s on a connection of its own: reads no row, but
-- PostgreSQL must resolve every column the queries in this file read or
-- write (every change writes the outbox), so it fails (undefined table
-- or column) on a schema the service cannot serve, as it does when the
-- database is unreachable.
SELECT u.identity_id, u.oidc_subject, u.name, u.email, u.photo_url, u.created_at, u.updated_at, u.nickname, u.username, u.email_verified, u.cluster_role,
       t.id, t.identity_id, t.name, t.token_hash, t.token_prefix, t.expires_at, t.created_at, t.last_used_at,
       o.seq, o.id, o.kind, o.identity_id, o.actor_identity_id, o.actor_service, o.occurred_at, o.changed_fields, o.data
FROM users u, api_tokens t, outbox o
LIMIT 0;

-- name: UpdateUserProfile :one
-- UpdateUser and UpdateMe, unless the role is taken away (see
-- RevokeClusterRole). A NULL argument keeps the stored value; any other
-- value, the empty string included, replaces it; cluster_role is NULL or
-- 'admin', which grants it. updated_at moves forward even if the
-- server's clock has stepped back since the last write. The updated user
-- and changed_fields, the fields the call set, make its user.updated
-- event, written by the same statement.
WITH updated AS (
    UPDATE users
    SET name         = COALESCE(sqlc.narg(name), name),
        email        = COALESCE(sqlc.narg(email), email),
        photo_url    = COALESCE(sqlc.narg(photo_url), photo_url),
        nickname     = COALESCE(sqlc.narg(nickname), nickname),
        username     = COALESCE(sqlc.narg(username), username),
        cluster_role = COALESCE(sqlc.narg(cluster_role), cluster_role),
        updated_at   = GREATEST(now(), updated_at + interval '1 microsecond')
    WHERE users.identity_id = @identity_id
    RETURNING identity_id, oidc_subject, name, email, photo_url, created_at, updated_at, nickname, username, email_verified, cluster_role
), event AS (
    INSERT INTO outbox (kind, identity_id, actor_identity_id, actor_service, changed_fields, data)
    SELECT 'user.updated', u.identity_id, sqlc.narg(actor_identity_id)::uuid, sqlc.narg(actor_service)::text, @changed_fields::text[], to_jsonb(u)
    FROM updated u
)
SELECT identity_id, oidc_subject, name, email, photo_url, created_at, updated_at, nickname, username, email_verified, cluster_role
FROM updated;

-- name: RevokeClusterRole :one
-- UpdateUser taking the role away, with the other fields as
-- UpdateUserProfile sets them, in one statement. Refused (the row is
-- left as it is, and refusal says why) when the subject is one of
-- declared_admins (CLUSTER_ADMIN_SUBJECTS), or when no other
-- administrator would be left. To count the others without a race, the
-- statement locks every administrator's row first, in id order: of two
-- concurrent demotions of the last two administrators, the second waits
-- for the first, then sees it gone, and is refused. A statement of its
-- own, so that every other update stays a plain UPDATE of one row. An
-- update made writes its user.updated event; a refusal writes none.
WITH target AS (
    SELECT identity_id, oidc_subject, name, email, photo_url, created_at, updated_at, nickname, username, email_verified, cluster_role
    FROM users
    WHERE users.identity_id = @identity_id
), admins AS (
    SELECT identity_id
    FROM users
    WHERE cluster_role = 'admin'
    ORDER BY identity_id
    FOR UPDATE
), refusal AS (
    SELECT CASE
        WHEN t.oidc_subject = ANY(@declared_admins::text[]) THEN 'declared_admin'
        WHEN t.cluster_role = 'admin' AND NOT EXISTS (SELECT 1 FROM admins a WHERE a.identity_id <> t.identity_id) THEN 'last_admin'
    END AS reason
    FROM target t
), updated AS (
    UPDATE users
    SET name         = COALESCE(sqlc.narg(name), name),
        email        = COALESCE(sqlc.narg(email), email),
        photo_url    = COALESCE(sqlc.narg(photo_url), photo_url),
        nickname     = COALESCE(sqlc.narg(nickname), nickname),
        username     = COALESCE(sqlc.narg(username), username),
        cluster_role = NULL,
        updated_at   = GREATEST(now(), updated_at + interval '1 microsecond')
    WHERE users.identity_id = @identity_id
      AND NOT EXISTS (SELECT 1 FROM refusal WHERE reason IS NOT NULL)
    RETURNING identity_id, oidc_subject, name, email, photo_url, created_at, updated_at, nickname, username, email_verified, cluster_role
), event AS (
    INSERT INTO outbox (kind, identity_id, actor_identity_id, actor_service, changed_fields, data)
    SELECT 'user.updated', u.identity_id, sqlc.narg(actor_identity_id)::uuid, sqlc.narg(actor_service)::text, @changed_fields::text[], to_jsonb(u)
    FROM updated u
)
SELECT identity_id, oidc_subject, name, email, photo_url, created_at, updated_at, nickname, username, email_verified, cluster_role, ''::text AS refusal
FROM updated
UNION ALL
SELECT t.identity_id, t.oidc_subject, t.name, t.email, t.photo_url, t.created_at, t.updated_at, t.nickname, t.username, t.email_verified, t.cluster_role, r.reason
FROM target t, refusal r
WHERE r.reason IS NOT NULL;

-- name: CreateUser :one
-- An administrator's pre-provisioning of a user before their first login,
-- which then finds this row and keeps it as it is. With no username
-- given, one is derived from the name, else the subject, as at a login.
-- A taken subject or username fails on its unique index. The new user
-- makes its user.created event, written by the same statement.
WITH inserted AS (
    INSERT INTO users (identity_id, oidc_subject, name, nickname, photo_url, cluster_role, username)
    VALUES (
        @identity_id, @oidc_subject, @name, @nickname, @photo_url, sqlc.narg(cluster_role),
        COALESCE(sqlc.narg(username)::text, users_free_username(users_username_base(NULL, NULL, @name, @oidc_subject)))
    )
    RETURNING identity_id, oidc_subject, name, email, photo_url, created_at, updated_at, nickname, username, email_verified, cluster_role
), event AS (
    INSERT INTO outbox (kind, identity_id, actor_identity_id, actor_service, data)
    SELECT 'user.created', i.identity_id, sqlc.narg(actor_identity_id)::uuid, sqlc.narg(actor_service)::text, to_jsonb(i)
    FROM inserted i
)
SELECT identity_id, oidc_subject, name, email, photo_url, created_at, updated_at, nickname, username, email_verified, cluster_role
FROM inserted;

-- name: DeleteUser :one
-- Deletes a user, freeing the username and the subject (a later login of
-- the subject creates a new user). Refused, as by RevokeClusterRole and
-- for the same reasons, for a declared administrator or the last one.
-- deleted is false and refusal empty when there is no such user. The
-- user as it was makes its user.deleted event, written by the same
-- statement; the user's API tokens go with it (ON DELETE CASCADE), with
-- no events of their own.
WITH target AS (
    SELECT identity_id, oidc_subject, cluster_role
    FROM users
    WHERE users.identity_id = @identity_id
), admins AS (
    SELECT identity_id
    FROM users
    WHERE cluster_role = 'admin' AND EXISTS (SELECT 1 FROM target WHERE target.cluster_role = 'admin')
    ORDER BY identity_id
    FOR UPDATE
), refusal AS (
    SELECT CASE
        WHEN t.oidc_subject = ANY(@declared_admins::text[]) THEN 'declared_admin'
        WHEN t.cluster_role = 'admin' AND NOT EXISTS (SELECT 1 FROM admins a WHERE a.identity_id <> t.identity_id) THEN 'last_admin'
    END AS reason
    FROM target t
), deleted AS (
    DELETE FROM users
    WHERE users.identity_id = @identity_id
      AND NOT EXISTS (SELECT 1 FROM refusal WHERE reason IS NOT NULL)
    RETURNING identity_id, oidc_subject, name, email, photo_url, created_at, updated_at, nickname, username, email_verified, cluster_role
), event AS (
    INSERT INTO outbox (kind, identity_id, actor_identity_id, actor_service, data)
    SELECT 'user.deleted', d.identity_id, sqlc.narg(actor_identity_id)::uuid, sqlc.narg(actor_service)::text, to_jsonb(d)
    FROM deleted d
)
SELECT EXISTS (SELECT 1 FROM deleted) AS deleted, COALESCE((SELECT reason FROM refusal), '')::text AS refusal;

-- name: PromoteDeclaredAdmins :one
-- At start-up: the users of CLUSTER_ADMIN_SUBJECTS who exist already
-- become administrators (those who do not, at their first login). Each
-- writes a user.updated event, the users service itself its actor.
WITH promoted AS (
    UPDATE users
    SET cluster_role = 'admin',
        updated_at   = GREATEST(now(), updated_at + interval '1 microsecond')
    WHERE oidc_subject = ANY(@subjects::text[])
      AND cluster_role IS DISTINCT FROM 'admin'
    RETURNING identity_id, oidc_subject, name, email, photo_url, created_at, updated_at, nickname, username, email_verified, cluster_role
), event AS (
    INSERT INTO outbox (kind, identity_id, actor_service, changed_fields, data)
    SELECT 'user.updated', p.identity_id, 'users', ARRAY['cluster_role'], to_jsonb(p)
    FROM promoted p
)
SELECT count(*) FROM promoted;

-- name: SearchUsers :many
-- The directory: usernames that start with prefix, in byte order, which
-- puts the exact match, if any, first. prefix holds only [a-z0-9_-] (the
-- service checks), all below "~" in byte order, so every username with
-- the prefix lies in [prefix, prefix || '~'): one range scan of the
-- username index (COLLATE "C"), stopping after max rows.
SELECT identity_id, username, name, photo_url
FROM users
WHERE username >= @prefix::text AND username < @prefix::text || '~'
ORDER BY username
LIMIT @max;

-- name: ListUsers :many
-- A page of users in identity id order, after the last id of the previous
-- page (the nil UUID for the first): a range scan of the primary key,
-- however deep the page. The service asks for one row more than the page
-- holds, to know whether another page follows.
SELECT identity_id, oidc_subject, name, email, photo_url, created_at, updated_at, nickname, username, email_verified, cluster_role
FROM users
WHERE identity_id > @after
ORDER BY identity_id
LIMIT @max;

-- name: CreateAPIToken :one
-- A new personal API token: its SHA-256 and prefix, never the token. The
-- table's trigger refuses a user's 101st live token, and 1001st in all
-- (see sql/migrations), whatever else is inserting that user's tokens at
-- the same moment; an unknown owner fails on the foreign key. The token,
-- without its hash, makes its api_token.created event, written by the
-- same statement (after the trigger's: an expired token deleted to make
-- room writes its api_token.revoked event first).
WITH created AS (
    INSERT INTO api_tokens (id, identity_id, name, token_hash, token_prefix, expires_at)
    VALUES (@id, @identity_id, @name, @token_hash, @token_prefix, sqlc.narg(expires_at))
    RETURNING id, identity_id, name, token_hash, token_prefix, expires_at, created_at, last_used_at
), event AS (
    INSERT INTO outbox (kind, identity_id, actor_identity_id, actor_service, data)
    SELECT 'api_token.created', c.identity_id, sqlc.narg(actor_identity_id)::uuid, sqlc.narg(actor_service)::text, to_jsonb(c) - 'token_hash'
    FROM created c
)
SELECT id, identity_id, name, token_hash, token_prefix, expires_at, created_at, last_used_at
FROM created;

-- name: ListAPITokens :many
-- A user's tokens, expired ones included, newest first: the owner index,
-- read in order.
SELECT id, identity_id, name, token_hash, token_prefix, expires_at, created_at, last_used_at
FROM api_tokens
WHERE identity_id = @identity_id
ORDER BY created_at DESC, id DESC;

-- name: RevokeAPIToken :one
-- Revoking deletes the row, so that the token resolves no more, on every
-- replica, from the commit on. Nothing for a token that is unknown or
-- someone else's: the service answers both alike. The token as it was,
-- without its hash, makes its api_token.revoked event, written by the
-- same statement. The owner's users row is locked first, as every other
-- change of a user's locks it, so that the user's events take their
-- order in the outbox in the order they commit.
WITH owner AS (
    SELECT users.identity_id
    FROM users
    WHERE users.identity_id = @identity_id
    FOR NO KEY UPDATE
), revoked AS (
    DELETE FROM api_tokens
    WHERE api_tokens.id = @id AND api_tokens.identity_id = (SELECT o.identity_id FROM owner o)
    RETURNING id, identity_id, name, token_hash, token_prefix, expires_at, created_at, last_used_at
), event AS (
    INSERT INTO outbox (kind, identity_id, actor_identity_id, actor_service, data)
    SELECT 'api_token.revoked', r.identity_id, sqlc.narg(actor_identity_id)::uuid, sqlc.narg(actor_service)::text, to_jsonb(r) - 'token_hash'
    FROM revoked r
)
SELECT count(*) FROM revoked;

-- name: ResolveAPIToken :one
-- The gateway's hot path: one probe of the unique hash index. It only
-- reads; the service records last_used_at in memory and writes it with
-- RecordAPITokenUse.
SELECT id, identity_id, name, token_hash, token_prefix, expires_at, created_at, last_used_at
FROM api_tokens
WHERE token_hash = @token_hash;

-- name: ResolveAPITokens :many
-- The tokens with these hashes, each once, in no particular order: what
-- concurrent ResolveAPIToken calls queued behind the running ones are
-- read with, at once (see internal/coalesce).
SELECT id, identity_id, name, token_hash, token_prefix, expires_at, created_at, last_used_at
FROM api_tokens
WHERE token_hash = ANY(@token_hashes::text[]);

-- name: RecordAPITokenUse :exec
-- The last uses of every token resolved since the previous flush, one
-- statement for all of them, every second or so (see internal/lastused).
-- GREATEST keeps the latest of this replica's use and another's; a token
-- revoked meanwhile has no row left to update. The two arrays are as long
-- as each other, so the two unnests pair them up, row by row.
UPDATE api_tokens
SET last_used_at = GREATEST(api_tokens.last_used_at, used.at)
FROM (SELECT unnest(@ids::uuid[]) AS id, unnest(@used_at::timestamptz[]) AS at) AS used
WHERE api_tokens.id = used.id;
