-- migrate:up
-- One row per person who has logged in through OIDC. identity_id is generated
-- by the service (UUIDv7, so new rows land at the right edge of the primary
-- key index); oidc_subject is the login key. The CHECK constraints mirror the
-- API's validation so that the database enforces what the API promises, even
-- for writes that do not come through the API.
CREATE TABLE users (
    identity_id  uuid        PRIMARY KEY,
    oidc_subject text        NOT NULL,
    name         text        NOT NULL DEFAULT '',
    email        text        NOT NULL DEFAULT '',
    photo_url    text        NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT users_oidc_subject_key UNIQUE (oidc_subject),
    CONSTRAINT users_oidc_subject_length CHECK (char_length(oidc_subject) BETWEEN 1 AND 255),
    CONSTRAINT users_name_length CHECK (char_length(name) <= 256),
    CONSTRAINT users_email_length CHECK (char_length(email) <= 254),
    CONSTRAINT users_photo_url_length CHECK (char_length(photo_url) <= 2048)
);

-- migrate:down
-- Dropping the table deletes every user, and with them every identity id
-- the rest of the platform refers to. So this refuses while the table holds
-- rows, unless the session says data loss is meant: users.allow_data_loss
-- set to on, as "users migrate down --force" does (with dbmate or psql:
-- PGOPTIONS='-c users.allow_data_loss=on'). The lock keeps a row from
-- arriving between the check and the drop. SQLSTATE UD001 is this refusal's
-- own, so that the migrate command can tell it from any other failure.
LOCK TABLE users IN ACCESS EXCLUSIVE MODE;
DO $$
BEGIN
    IF EXISTS (SELECT FROM users) AND current_setting('users.allow_data_loss', true) IS DISTINCT FROM 'on' THEN
        RAISE EXCEPTION 'refusing to drop table users: it holds rows, which would be lost'
            USING ERRCODE = 'UD001',
                  HINT = 'Back the table up first. To drop it anyway, set users.allow_data_loss = on for the session (users migrate down --force does).';
    END IF;
END
$$;
DROP TABLE users;
