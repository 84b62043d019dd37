-- migrate:up
-- The profile fields of the platform's later v1: nickname, username,
-- email_verified and the cluster role. Every step here is safe on a live
-- table of millions of rows:
--   * each new column has a constant default (or none), so ADD COLUMN
--     rewrites nothing and holds its ACCESS EXCLUSIVE lock for
--     milliseconds;
--   * the CHECK constraints are added NOT VALID: new and updated rows are
--     checked from now on, and the scan of the existing ones waits for
--     20261130000005, which takes only a SHARE UPDATE EXCLUSIVE lock
--     (reads and writes go on);
--   * the indexes are built CONCURRENTLY, each in a migration of its own
--     (20261130000002, 20261130000003), and existing users get their
--     usernames in batches that commit as they go (20261130000004).
-- username is COLLATE "C" so that its unique index, in byte order, also
-- serves SearchUsers' prefix ranges.
ALTER TABLE users
    ADD COLUMN nickname       text NOT NULL DEFAULT '',
    ADD COLUMN username       text COLLATE "C",
    ADD COLUMN email_verified boolean NOT NULL DEFAULT false,
    ADD COLUMN cluster_role   text;

ALTER TABLE users
    ADD CONSTRAINT users_nickname_length CHECK (char_length(nickname) <= 256) NOT VALID,
    ADD CONSTRAINT users_username_format CHECK (username ~ '^[a-z0-9_-]{1,32}$') NOT VALID,
    -- Until 20261130000006 makes the column NOT NULL, with this
    -- constraint's scan saving that one.
    ADD CONSTRAINT users_username_present CHECK (username IS NOT NULL) NOT VALID,
    -- NULL is no role; 'admin' is CLUSTER_ROLE_ADMIN.
    ADD CONSTRAINT users_cluster_role_known CHECK (cluster_role IN ('admin')) NOT VALID;

-- The username a user gets when none is given: the first of the
-- preferred_username claim, the email's local part, the name, that is
-- not empty once normalised, else "user-" and the first 8 hex digits of
-- the subject's SHA-256. Normalising lowers ASCII letters, turns each run
-- of characters other than [a-z0-9_-] into one "-", trims "-" from both
-- ends and cuts to 32 characters. The service derives usernames only
-- here, so that logins, CreateUser and this migration's backfill agree.
CREATE FUNCTION users_normalize_username(s text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT NULLIF(left(btrim(regexp_replace(lower(s COLLATE "C"), '[^a-z0-9_-]+', '-', 'g'), '-'), 32), '')
$$;

CREATE FUNCTION users_username_base(preferred_username text, email text, name text, oidc_subject text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT COALESCE(
        users_normalize_username(preferred_username),
        -- The local part: everything before the last "@".
        users_normalize_username(substring(email FROM '^(.*)@[^@]*$')),
        users_normalize_username(name),
        'user-' || left(encode(sha256(convert_to(oidc_subject, 'UTF8')), 'hex'), 8)
    )
$$;

-- The first of base, base-2 ... base-99 that no user has, else base and a
-- random 4-hex-digit suffix; the base is cut so that the whole fits in 32
-- characters. Each try is one probe of the username index. Two
-- transactions may still pick the same name at once: the unique index
-- lets one of them in, and the other's statement inserts nothing (the
-- service then tries again, see ResolveOrCreateUser).
CREATE FUNCTION users_free_username(base text) RETURNS text
    LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    candidate text := base;
BEGIN
    IF NOT EXISTS (SELECT FROM users WHERE username = candidate) THEN
        RETURN candidate;
    END IF;
    FOR n IN 2..99 LOOP
        candidate := left(base, 31 - length(n::text)) || '-' || n;
        IF NOT EXISTS (SELECT FROM users WHERE username = candidate) THEN
            RETURN candidate;
        END IF;
    END LOOP;
    FOR attempt IN 1..100 LOOP
        candidate := left(base, 27) || '-' || left(md5(random()::text), 4);
        IF NOT EXISTS (SELECT FROM users WHERE username = candidate) THEN
            RETURN candidate;
        END IF;
    END LOOP;
    RAISE EXCEPTION 'no free username for base %', base;
END
$$;

-- A row inserted without a username (by a release from before this
-- migration, still serving during a rolling upgrade, or by hand) gets one
-- derived from what the row holds. So does a row updated before the
-- backfill has reached it: users_username_present, NOT VALID as it is,
-- checks every updated row, and would fail the previous release's
-- UpdateUser of any user still without a username. Such a user takes its
-- name ahead of older users the backfill has yet to reach.
-- The lock on the base, until the transaction ends, makes writers of one
-- base take turns with each other and with the backfill: each then sees
-- the name the one before took, rather than picking the same and failing
-- on the unique index.
CREATE FUNCTION users_assign_username() RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    base text := users_username_base(NULL, NEW.email, NEW.name, NEW.oidc_subject);
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('users.username:' || base));
    NEW.username := users_free_username(base);
    RETURN NEW;
END
$$;

CREATE TRIGGER users_username_default
    BEFORE INSERT OR UPDATE ON users
    FOR EACH ROW
    WHEN (NEW.username IS NULL)
    EXECUTE FUNCTION users_assign_username();

-- Gives the users that existed before this migration their usernames,
-- oldest first, so that an earlier user keeps the plain name: called by
-- 20261130000004, outside a transaction. One UPDATE per row, because each
-- row's free name depends on the names given before it, and an UPDATE of
-- many rows gives them in whatever order its plan reads the table (a hash
-- join reads it in physical order), whatever order the rows were picked
-- in. The rows are read and sorted once, their bases derived in that one
-- query: derived in each row's UPDATE, the SQL functions would be planned
-- again for every row, at several times the cost.
-- While it runs, the previous release still serves, and the trigger above
-- names the rows it inserts or updates. So that the two never wait for
-- each other:
--   * a commit every batch rows keeps each row, and each base's lock,
--     held only briefly (at 10,000 rows a batch, a write of the previous
--     release waited up to 5 s on a 1M-row table);
--   * a row locked by a writer is skipped (SKIP LOCKED), not waited for:
--     the trigger names it, or a later pass does;
--   * the base's lock, as in the trigger, makes a writer of the same base
--     wait for the batch's commit and then pick the next free name.
-- A row whose email, name or subject changed since it was read is derived
-- again from what it holds now. Passes repeat until no row is left
-- without a name.
CREATE PROCEDURE users_backfill_usernames(batch integer DEFAULT 500)
    LANGUAGE plpgsql
AS $$
DECLARE
    todo record;
    done bigint := 0;
    skipped boolean;
    base text;
BEGIN
    LOOP
        skipped := false;
        FOR todo IN
            SELECT identity_id, email, name, oidc_subject,
                   users_username_base(NULL, email, name, oidc_subject) AS base
            FROM users
            WHERE username IS NULL
            ORDER BY created_at, identity_id
        LOOP
            -- A COMMIT inside the loop materialises its query, so the
            -- rows are locked here, one at a time.
            SELECT CASE WHEN (email, name, oidc_subject) = (todo.email, todo.name, todo.oidc_subject)
                        THEN todo.base
                        ELSE users_username_base(NULL, email, name, oidc_subject)
                   END
            INTO base
            FROM users
            WHERE identity_id = todo.identity_id AND username IS NULL
            FOR UPDATE SKIP LOCKED;
            IF NOT FOUND THEN
                -- Named meanwhile, deleted, or locked by a writer.
                skipped := skipped OR EXISTS (SELECT FROM users WHERE identity_id = todo.identity_id AND username IS NULL);
                CONTINUE;
            END IF;
            PERFORM pg_advisory_xact_lock(hashtext('users.username:' || base));
            UPDATE users SET username = users_free_username(base) WHERE identity_id = todo.identity_id;
            done := done + 1;
            IF done % batch = 0 THEN
                COMMIT;
            END IF;
        END LOOP;
        COMMIT;
        EXIT WHEN NOT skipped AND NOT EXISTS (SELECT FROM users WHERE username IS NULL);
        PERFORM pg_sleep(0.1); -- for the writers holding the skipped rows
    END LOOP;
END
$$;

-- migrate:down
-- Dropping the columns deletes every user's username, nickname and role,
-- which exist nowhere else: refused while the table holds rows, as
-- 20261123000000's down is, unless users.allow_data_loss is on ("users
-- migrate down --force").
LOCK TABLE users IN ACCESS EXCLUSIVE MODE;
DO $$
BEGIN
    IF EXISTS (SELECT FROM users) AND current_setting('users.allow_data_loss', true) IS DISTINCT FROM 'on' THEN
        RAISE EXCEPTION 'refusing to drop the username, nickname, email_verified and cluster_role columns: table users holds rows, whose values would be lost'
            USING ERRCODE = 'UD001',
                  HINT = 'Back the table up first. To drop them anyway, set users.allow_data_loss = on for the session (users migrate down --force does).';
    END IF;
END
$$;
DROP PROCEDURE users_backfill_usernames(integer);
DROP TRIGGER users_username_default ON users;
DROP FUNCTION users_assign_username();
DROP FUNCTION users_free_username(text);
DROP FUNCTION users_username_base(text, text, text, text);
DROP FUNCTION users_normalize_username(text);
ALTER TABLE users
    DROP COLUMN cluster_role,
    DROP COLUMN email_verified,
    DROP COLUMN username,
    DROP COLUMN nickname;
