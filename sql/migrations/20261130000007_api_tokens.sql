-- migrate:up
-- Personal API tokens. The token itself is never stored: token_hash is the
-- SHA-256 of the whole token as 64 lowercase hex digits, what the gateway
-- sends to resolve it, and token_prefix its first 8 characters, for people
-- to tell their tokens apart. A revoked token's row is deleted; a user's
-- tokens go with the user. The table is new, so its indexes are built
-- here, not CONCURRENTLY.
CREATE TABLE api_tokens (
    id           uuid        PRIMARY KEY,
    identity_id  uuid        NOT NULL REFERENCES users (identity_id) ON DELETE CASCADE,
    name         text        NOT NULL,
    token_hash   text        COLLATE "C" NOT NULL,
    token_prefix text        NOT NULL,
    expires_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,

    CONSTRAINT api_tokens_token_hash_key UNIQUE (token_hash),
    CONSTRAINT api_tokens_token_hash_format CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    CONSTRAINT api_tokens_token_prefix_format CHECK (token_prefix ~ '^agyn_[0-9A-Za-z]{3}$'),
    CONSTRAINT api_tokens_name_length CHECK (char_length(name) BETWEEN 1 AND 100)
)
-- Every used token's row is rewritten once a second with its last use,
-- a column no index holds. Room left free on each page lets the new
-- version stay on its page (a HOT update), so that the write skips the
-- three indexes: on 100,000 tokens, a write of 8,000 uses took 85-95 ms
-- and a third of the WAL, against 100-210 ms with full pages.
WITH (fillfactor = 70);

-- A user's tokens, newest first: ListAPITokens reads it in order, the cap
-- below counts with it, and DeleteUser's cascade finds them by it.
CREATE INDEX api_tokens_owner ON api_tokens (identity_id, created_at DESC, id DESC);

-- The per-user bounds, kept for every inserted token: at most 100 live
-- (unexpired) tokens, one more refused with SQLSTATE UT001 for the
-- service to answer FAILED_PRECONDITION naming the limit; and at most
-- 1000 in all, expired ones included, so that the table stays bounded
-- however tokens are made. At that bound, rather than refuse a script
-- that makes a short-lived token every run, the token that expired
-- longest ago makes room (with fewer than 100 live, 900 have expired).
-- The trigger first locks the owner's users row, so that a user's
-- concurrent inserts are counted one after the other: in READ COMMITTED
-- each statement of this function reads a snapshot of its own, and the
-- count, taken after the lock, sees every token committed before it. A
-- count in the INSERT statement itself would read the statement's
-- snapshot, taken before the wait, and a burst would slip past.
-- "Expired" is by the database's clock here; ResolveAPIToken tells by the
-- service's.
CREATE FUNCTION api_tokens_within_caps() RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    live integer;
    held integer;
BEGIN
    PERFORM FROM users WHERE identity_id = NEW.identity_id FOR NO KEY UPDATE;
    SELECT count(*) FILTER (WHERE expires_at IS NULL OR expires_at > now()), count(*)
      INTO live, held
      FROM api_tokens
     WHERE identity_id = NEW.identity_id;
    IF live >= 100 THEN
        RAISE EXCEPTION 'the user holds 100 live API tokens, the most allowed'
            USING ERRCODE = 'UT001';
    END IF;
    IF held >= 1000 THEN
        DELETE FROM api_tokens
         WHERE id IN (SELECT id
                        FROM api_tokens
                       WHERE identity_id = NEW.identity_id AND expires_at <= now()
                       ORDER BY expires_at, id
                       LIMIT held - 999);
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER api_tokens_within_caps
    BEFORE INSERT ON api_tokens
    FOR EACH ROW EXECUTE FUNCTION api_tokens_within_caps();

-- migrate:down
-- Dropping the table revokes every token at once, and their owners must
-- make new ones: refused while it holds rows, as 20261123000000's down
-- is, unless users.allow_data_loss is on ("users migrate down --force").
LOCK TABLE api_tokens IN ACCESS EXCLUSIVE MODE;
DO $$
BEGIN
    IF EXISTS (SELECT FROM api_tokens) AND current_setting('users.allow_data_loss', true) IS DISTINCT FROM 'on' THEN
        RAISE EXCEPTION 'refusing to drop table api_tokens: it holds tokens, which would all stop working'
            USING ERRCODE = 'UD001',
                  HINT = 'To drop it anyway, set users.allow_data_loss = on for the session (users migrate down --force does).';
    END IF;
END
$$;
DROP TABLE api_tokens;
DROP FUNCTION api_tokens_within_caps();
