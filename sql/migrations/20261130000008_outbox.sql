-- migrate:up
-- The transactional outbox of the change events (see the README's
-- "Events"). Every statement in sql/queries that changes a user or an API
-- token writes its event here in the same statement, so that a change
-- that commits leaves exactly one event and one that fails leaves none.
-- The relay in "users serve" publishes the rows to NATS JetStream in seq
-- order and deletes each once JetStream has acknowledged it; with no NATS
-- configured, rows older than OUTBOX_RETENTION are deleted instead.
--
-- seq is the order of publication. Every statement that writes an event
-- first holds a lock on the user's row (the row it changes, or, for a
-- token, its owner's), taken before seq is drawn and kept until commit,
-- so one user's events take seq values in the order they commit.
--
-- kind names the event, the subject without its "agyn.users." prefix.
-- data is the user or token row, as to_jsonb makes it, after the change
-- (before it, for a deletion); a token's never holds token_hash. The
-- actor is a user (actor_identity_id) or a service (actor_service),
-- never both.
CREATE FUNCTION outbox_uuidv7() RETURNS uuid
    LANGUAGE sql VOLATILE
AS $$
    -- A random (version 4) UUID with its first 48 bits replaced by the
    -- Unix time in milliseconds and its version nibble set to 7
    -- (RFC 9562): bits 52 and 53 of the bytea are the nibble's two low
    -- bits, 0100 becoming 0111.
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;

CREATE TABLE outbox (
    seq               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id                uuid        NOT NULL DEFAULT outbox_uuidv7(),
    kind              text        NOT NULL,
    identity_id       uuid        NOT NULL,
    actor_identity_id uuid,
    actor_service     text,
    occurred_at       timestamptz NOT NULL DEFAULT now(),
    changed_fields    text[],
    data              jsonb       NOT NULL,

    CONSTRAINT outbox_kind CHECK (kind IN ('user.created', 'user.updated', 'user.deleted', 'api_token.created', 'api_token.revoked')),
    CONSTRAINT outbox_one_actor CHECK (num_nonnulls(actor_identity_id, actor_service) = 1),
    CONSTRAINT outbox_no_token_hash CHECK (NOT data ? 'token_hash')
);

-- The per-user bounds on API tokens, as 20261130000007 made them, with
-- one change: an expired token deleted to make room writes its
-- api_token.revoked event, the users service itself as its actor.
CREATE OR REPLACE FUNCTION api_tokens_within_caps() RETURNS trigger
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
        WITH evicted AS (
            DELETE FROM api_tokens
             WHERE id IN (SELECT id
                            FROM api_tokens
                           WHERE identity_id = NEW.identity_id AND expires_at <= now()
                           ORDER BY expires_at, id
                           LIMIT held - 999)
            RETURNING *
        )
        INSERT INTO outbox (kind, identity_id, actor_service, data)
        SELECT 'api_token.revoked', e.identity_id, 'users', to_jsonb(e) - 'token_hash'
          FROM evicted e
         ORDER BY e.expires_at, e.id;
    END IF;
    RETURN NEW;
END
$$;

-- migrate:down
-- Events not yet published would be lost: refused while the outbox holds
-- rows, unless users.allow_data_loss is on ("users migrate down --force").
LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE;
DO $$
BEGIN
    IF EXISTS (SELECT FROM outbox) AND current_setting('users.allow_data_loss', true) IS DISTINCT FROM 'on' THEN
        RAISE EXCEPTION 'refusing to drop table outbox: it holds events not yet published'
            USING ERRCODE = 'UD001',
                  HINT = 'To drop it anyway, set users.allow_data_loss = on for the session (users migrate down --force does).';
    END IF;
END
$$;
CREATE OR REPLACE FUNCTION api_tokens_within_caps() RETURNS trigger
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
DROP TABLE outbox;
DROP FUNCTION outbox_uuidv7();
